"""The ``pixellab`` command: the same operations as the Python API, for scripts and CI.

Errors a user can fix print as one line (``error: <file>: <key>: <reason>``) with exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from pixellab.errors import PixellabError

if TYPE_CHECKING:  # the CLI imports heavy modules lazily so `--help` stays instant
    from pixellab.sweep import Sweep, SweepResult
    from pixellab.workbench import Workbench

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Decide, with evidence, which AI model to use per product category "
                       "and task.")
sweep_app = typer.Typer(no_args_is_help=True, help="Plan, run and resume sweeps.")
app.add_typer(sweep_app, name="sweep")
# Tables stay readable when output is piped (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False
             ) -> None:
    _state["debug"] = debug


class _Progress:
    """One tqdm bar per sweep, opened when the sweep knows how much is left to run."""

    def __init__(self) -> None:
        self.bar: tqdm[object] | None = None

    def planned(self, sweep_id: str, planned: int, todo: int) -> None:
        self.close()
        self.bar = tqdm(total=todo, desc=f"{sweep_id} ({planned - todo} cached)", unit="req",
                        dynamic_ncols=True)

    def done(self, outcome: object) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _summary_table(results: list[SweepResult]) -> Table:
    table = Table(title="Sweeps")
    table.add_column("sweep", no_wrap=True)
    for column in ("planned", "reused", "new ok", "failed", "stopped", "calls", "new scores"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.sweep_id, str(r.planned), str(r.cached), str(r.succeeded), str(r.failed),
                      str(r.stopped), str(r.provider_calls), str(r.scores_written))
    return table


def _leaderboard_table(workbench: Workbench, sweep_ids: list[str]) -> Table:
    from pixellab import report

    overall = report.task_summary(report.scored_requests(workbench.ledger, sweep_ids))
    table = Table(title="Leaderboard (all categories)")
    for column in ("task", "model"):
        table.add_column(column, no_wrap=True)
    for column in ("n", "pass", "score", "USD"):
        table.add_column(column, justify="right")
    for row in overall.itertuples(index=False):
        score = "—" if row.mean_score != row.mean_score else f"{row.mean_score:.3f}"
        table.add_row(row.task, row.arm, str(row.n), f"{row.pass_rate:.0%}", score,
                      f"${row.usd:.2f}")
    return table


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="Dataset name under datasets/ or a folder.")
                       ] = "sample",
    limit: Annotated[int | None, typer.Option(help="Only the first N products.")] = None,
    report: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = Path(
        "reports/demo.html"),
    home: Annotated[Path | None, typer.Option(help="Data dir (default $PIXELLAB_HOME or "
                                                   "./.pixellab).")] = None,
) -> None:
    """Run the sample dataset through the free local models and write an HTML report."""
    from pixellab.demo import run_demo
    from pixellab.workbench import Workbench

    started = time.monotonic()
    workbench = Workbench(home)
    progress = _Progress()
    try:
        result = run_demo(workbench, dataset=dataset, limit=limit, report_path=report,
                          on_planned=progress.planned, progress=progress.done)
    finally:
        progress.close()
    console.print(_summary_table(result.sweeps))
    console.print(_leaderboard_table(workbench, [r.sweep_id for r in result.sweeps]))
    failed = sum(r.failed for r in result.sweeps)
    if failed:
        console.print(f"[yellow]{failed} request(s) failed; the report lists each reason.[/]")
    console.print(f"Ledger: {workbench.ledger.path}   Outputs: {workbench.store.root}")
    console.print(f"[bold green]Report:[/] {result.report}   "
                  f"({time.monotonic() - started:.1f} s)")


def _run_sweep(sweep: Sweep) -> None:
    progress = _Progress()
    try:
        result = sweep.run(progress=progress.done, on_planned=progress.planned)
    finally:
        progress.close()
    console.print(_summary_table([result]))
    if result.stopped_reason:
        err_console.print(f"[yellow]stopped before exceeding the budget:[/] "
                          f"{result.stopped_reason}. Raise budget_usd and run "
                          f"`pixellab sweep resume {result.sweep_id}`.")
        raise typer.Exit(3)


@sweep_app.command("run")
def sweep_run(
    file: Annotated[Path, typer.Argument(help="Sweep spec (YAML or TOML).")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    notebook: Annotated[Path | None, typer.Option(
        help="Run this notebook with FILE as its papermill parameters instead, keeping the "
             "executed notebook and its HTML under REPORTS/<name>/<UTC time>/.")] = None,
    reports: Annotated[Path, typer.Option(help="Where --notebook runs are kept.")] = Path(
        "reports"),
) -> None:
    """Plan and run a sweep; requests that already succeeded are reused, not re-run."""
    from pixellab.sweep import Sweep, SweepSpec
    from pixellab.workbench import Workbench

    if notebook is not None:
        _run_notebook(file, notebook, reports, home)
        return
    _run_sweep(Sweep(SweepSpec.from_file(file), Workbench(home)))


def _run_notebook(file: Path, notebook: Path, reports: Path, home: Path | None) -> None:
    from pixellab import notebook as notebooks

    parameters = notebooks.read_parameters(file)
    declared = notebooks.declared_parameters(notebook)
    if home is not None:  # the kernel would otherwise use $PIXELLAB_HOME or ./.pixellab
        for key, value in (("ledger_path", home / "ledger.duckdb"), ("store_path", home / "store")):
            if key in declared:
                parameters.setdefault(key, str(value))
    run = notebooks.run_to_reports(notebook, parameters, reports=reports, source=str(file))
    console.print(f"Executed notebook: {run.executed}")
    console.print(f"[bold green]HTML:[/] {run.html}")
    if run.error is not None:
        err_console.print(f"[red]error:[/] {run.error}", soft_wrap=True, highlight=False)
        raise typer.Exit(3 if run.error.ename == "BudgetExceeded" else 1)


@sweep_app.command("estimate")
def sweep_estimate(
    file: Annotated[Path, typer.Argument(help="Sweep spec (YAML or TOML).")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """What the sweep would spend (catalog prices) before it spends; exit 3 over its budget."""
    from pixellab.sweep import Sweep, SweepSpec
    from pixellab.workbench import Workbench

    spec = SweepSpec.from_file(file)
    estimate = Sweep(spec, Workbench(home)).estimate()
    console.print(f"{estimate.to_run} of {estimate.planned} request(s) to run; "
                  f"estimated ${estimate.usd:.4f} ({estimate.credits:g} credits) if every "
                  f"first model succeeds, at most ${estimate.usd_worst:.4f} if every chain "
                  "runs to its end")
    for model_id, usd in sorted(estimate.by_model_usd.items()):
        console.print(f"  {model_id}: ${usd:.4f}")
    if estimate.exceeds(spec.budget_usd):
        err_console.print(f"[yellow]over budget:[/] ${estimate.usd:.4f} > budget_usd "
                          f"${spec.budget_usd:.2f}")
        raise typer.Exit(3)


@sweep_app.command("resume")
def sweep_resume(
    sweep_id: Annotated[str, typer.Argument(help="The sweep's name.")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Run what a sweep has not finished (after a crash, a budget stop, or new products)."""
    from pixellab.sweep import Sweep
    from pixellab.workbench import Workbench

    _run_sweep(Sweep.resume(sweep_id, Workbench(home)))


@app.command()
def score(
    sweep_id: Annotated[str, typer.Argument(help="The sweep's name.")],
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", "--metric", help="Only these metrics (repeat or comma-separate).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Score a sweep's outputs (already scored outputs are skipped)."""
    from pixellab.sweep import Sweep
    from pixellab.workbench import Workbench

    chosen = [m.strip() for item in metrics or [] for m in item.split(",") if m.strip()]
    written = Sweep.resume(sweep_id, Workbench(home)).score(chosen or None)
    console.print(f"{written} score row(s) written")


@app.command()
def costs(
    sweep_id: Annotated[list[str] | None, typer.Argument(help="Sweeps (default: all).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Spend by sweep and model, in credits and USD."""
    from pixellab import report
    from pixellab.workbench import Workbench

    frame = report.costs(Workbench(home).ledger, sweep_id or None)
    table = Table(title="Costs")
    for column in ("sweep", "provider", "model", "calls", "credits", "USD", "of which estimated"):
        table.add_column(column)
    for row in frame.itertuples(index=False):
        table.add_row(row.sweep_id or "—", row.provider, row.model_id, str(row.calls),
                      f"{row.credits:.2f}", f"${row.usd:.4f}", f"${row.usd_estimated:.4f}")
    console.print(table)
    console.print(f"Total: ${frame['usd'].sum():.4f}")


@app.command()
def catalog(
    task: Annotated[str | None, typer.Option(help="Only models serving this task.")] = None,
) -> None:
    """List the catalog's models and default chains (validates every catalog file)."""
    from pixellab.catalog import load_catalog

    cat = load_catalog()
    table = Table(title="Models")
    table.add_column("id", no_wrap=True)
    for column in ("tasks", "price", "timeout", "concurrency"):
        table.add_column(column)
    for model in cat.models.values():
        if task and task not in model.tasks:
            continue
        price = (f"${model.pricing.usd_per_unit:g} / {model.pricing.unit}"
                 f" ({model.pricing.credits_per_unit:g} credits)")
        table.add_row(model.id, ", ".join(model.tasks), price, f"{model.timeout_s:g} s",
                      str(model.max_concurrency))
    console.print(table)
    for chain_task, chain in cat.chains.items():
        console.print(f"chain [bold]{chain_task.value}[/]: {' → '.join(chain)}")


@app.command()
def emulate(
    latency: Annotated[float, typer.Option(help="Seconds each emulated job takes.")] = 0.5,
) -> None:
    """Serve the loopback Replicate/fal/OpenAI emulator for a zero-cost dry run.

    Prints the environment to export in the shell that runs the sweep; Ctrl-C stops it.
    """
    from pixellab.emulator import Emulator

    with Emulator(latency_s=latency) as emulator:
        for name, value in emulator.env().items():
            console.print(f"export {name}={value}", highlight=False, soft_wrap=True)
        console.print("export REPLICATE_API_TOKEN=r8_dryrun FAL_KEY=dry:run "
                      "OPENAI_API_KEY=sk-dryrun   # any value; the emulator bills nothing",
                      highlight=False, soft_wrap=True)
        console.print("[green]emulator running on 127.0.0.1; Ctrl-C to stop[/]")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopped")


def main() -> None:
    """Entry point: user-fixable errors print one line and exit 2."""
    try:
        # standalone_mode=False hands typer.Exit back as a return value, not an exception
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PixellabError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; `pixellab sweep resume NAME` continues where it stopped")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
