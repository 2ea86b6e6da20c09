"""``pixellab demo``: the sample dataset through the local provider, scored, as an HTML report.

Three sweeps (enhance, remove_background, packshot), each comparing two free local models, then
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
)


@dataclass
class DemoResult:
    sweeps: list[SweepResult]
    report: Path | None
    defaults: Path | None = None
    """The routing table the demo's evidence chose (``<home>/defaults.toml``)."""


def demo_sweeps(dataset: str = "sample", limit: int | None = None) -> list[SweepSpec]:
    return [SweepSpec.parse({**spec, "dataset": dataset, "limit": limit,
                             "concurrency": 4}) for spec in DEMO_SWEEPS]


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
