"""``pixellab demo``: the sample dataset through the local provider, scored, as an HTML report.

Three sweeps (enhance, remove_background, packshot), each comparing two free local models, then
``notebooks/90_report.ipynb`` executed with papermill and exported to ``reports/demo.html``.
Running it again reuses every output: zero provider calls, no new cost rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixellab import notebook
from pixellab.runner import RequestOutcome
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
    if not with_report:
        return DemoResult(results, None)
    executed = report_path.with_suffix(".ipynb")
    notebook.execute(notebook_path, executed, {
        "ledger_path": str(workbench.ledger.path),
        "store_path": str(workbench.store.root),
        "sweep_ids": [r.sweep_id for r in results],
        "title": f"pixellab demo — {dataset} dataset, local models",
    })
    return DemoResult(results, notebook.export_html(executed, report_path))
