"""``pixellab demo``: the sample dataset through the local provider, scored, as an HTML report.

The sweeps (enhance, remove_background and packshot, each comparing two free local models;
image-to-video clips of one product per category from two local baselines; Real-ESRGAN against
Lanczos upscaling one product per category; lifestyle scenes; the real photos; the multi-angle
products combined into clips), then
``notebooks/90_report.ipynb`` executed with papermill and exported to ``reports/demo.html``, and
the routing table its evidence picks written to ``<home>/defaults.toml`` (what ``pixellab
generate`` then follows).
Running it again reuses every output: zero provider calls, no new cost rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixellab import notebook
from pixellab.datasets import load_dataset
from pixellab.routing import current_defaults, load_routes
from pixellab.runner import RequestOutcome
from pixellab.selection import select, write_defaults
from pixellab.sweep import Sweep, SweepResult, SweepSpec
from pixellab.workbench import Workbench

DEMO_SWEEPS: tuple[dict[str, object], ...] = (
    {"name": "demo-enhance", "task": "enhance",
     "models": ["local:autoenhance", "local:autoenhance-gentle"]},
    {"name": "demo-remove_background", "task": "remove_background",
     "models": ["local:cutout", "local:cutout-threshold"]},
    {"name": "demo-packshot", "task": "packshot",
     "models": ["local:packshot", "local:packshot-threshold"], "params": {"size": 1600}},
    # Short vertical clips of one product per category: enough to compare the two baselines
    # on every category while the whole demo stays within its five minutes on two cores.
    {"name": "demo-image_to_video", "task": "image_to_video",
     "models": ["local:kenburns", "local:parallax"], "one_per_category": True,
     "params": {"duration_s": 3, "fps": 12, "aspect_ratio": "9:16", "resolution": "360p"}},
    # A neural model against a classical one: Real-ESRGAN's compact network (ncnn, weights
    # shipped in pixellab[upscale]) and Lanczos, each photo shrunk by two and scored against it.
    # Three categories' first products: the network takes seconds a photo on a CPU.
    {"name": "demo-upscale", "task": "upscale",
     "models": ["local:upscale-lanczos", "local:realesrgan-compact"], "one_per_category": 3,
     "params": {"scale": 2, "tile": 256}},
    # Each category's first product photographed into a scene, by the two free baselines.
    {"name": "demo-lifestyle", "task": "lifestyle", "models": ["local:scene", "local:backdrop"],
     "one_per_category": True},
    # The same cut-out and packshot models on real photos (datasets/real): beside the rendered
    # sample in the report, so no conclusion rests on procedural images alone.
    {"name": "demo-real-remove_background", "task": "remove_background", "dataset": "real",
     "models": ["local:cutout", "local:cutout-threshold"]},
    {"name": "demo-real-packshot", "task": "packshot", "dataset": "real",
     "models": ["local:packshot", "local:packshot-threshold"], "params": {"size": 1600}},
    # The products the sample renders from several angles, each combined into one clip.
    {"name": "demo-angles_to_video", "task": "angles_to_video", "models": ["local:angles"],
     "params": {"duration_s": 4, "fps": 12, "aspect_ratio": "1:1", "resolution": "360p"}},
)


@dataclass
class DemoResult:
    sweeps: list[SweepResult]
    report: Path | None
    defaults: Path | None = None
    """The routing table the demo's evidence chose (``<home>/defaults.toml``)."""


def demo_sweeps(dataset: str = "sample", limit: int | None = None) -> list[SweepSpec]:
    """The demo's sweeps over ``dataset`` (its first ``limit`` products): a video sweep takes
    the first product of each category, and the multi-angle one runs only where some product
    has more photos."""
    products = load_dataset(dataset).select(limit=limit)
    firsts = list({p.category: p.id for p in reversed(products)}.values())[::-1]
    specs = []
    for raw in DEMO_SWEEPS:
        spec = {k: v for k, v in raw.items() if k != "one_per_category"}
        if "dataset" in raw:  # the bundled real photos: beside the bundled sample only
            if dataset != "sample":
                continue
            specs.append(SweepSpec.parse({**spec, "concurrency": 4}))
            continue
        if raw.get("one_per_category"):  # True: every category; a number: the first N
            count = raw["one_per_category"]
            chosen = firsts[:count] if isinstance(count, int) and count is not True else firsts
            spec["products"] = sorted(chosen)
        if raw["task"] == "angles_to_video" and not any(p.angles for p in products):
            continue
        specs.append(SweepSpec.parse({**spec, "dataset": dataset, "limit": limit,
                                      "concurrency": 4}))
    return specs


def run_demo(workbench: Workbench, *, dataset: str = "sample", limit: int | None = None,
             report_path: Path = Path("reports/demo.html"),
             notebook_path: Path = Path("notebooks/90_report.ipynb"),
             on_planned: Callable[[str, int, int], None] | None = None,
             progress: Callable[[RequestOutcome], None] | None = None,
             with_report: bool = True) -> DemoResult:
    results = []
    for spec in demo_sweeps(dataset, limit):
        sweep = Sweep(spec, workbench)
        results.append(sweep.run(progress=progress, on_planned=on_planned))
    sweep_ids = [r.sweep_id for r in results]
    routes_path = workbench.routes_path
    selection = select(workbench.ledger, sweep_ids, current=current_defaults(
        load_routes(routes_path), workbench.catalog), task_scoring=workbench.task_scoring)
    html = None
    if with_report:
        executed = report_path.with_suffix(".ipynb")
        notebook.execute(notebook_path, executed, {
            "ledger_path": str(workbench.ledger.path),
            "store_path": str(workbench.store.root),
            "sweep_ids": sweep_ids,
            "routes_path": str(routes_path),  # compared against the table in use until now
            "title": f"pixellab demo — {dataset} dataset, local models",
        })
        html = notebook.export_html(executed, report_path)
    return DemoResult(results, html, write_defaults(selection, routes_path))
