"""The ``pixellab`` command: the same operations as the Python API, for scripts and CI.

Errors a user can fix print as one line (``error: <file>: <key>: <reason>``) with exit code 2,
and so do usage errors (a missing or extra argument, an unknown option); ``--debug`` shows the
traceback instead.

Messages carry text we do not control (file, product, dataset and model names, providers' error
messages), so the consoles parse no markup: ``[/bold]x`` or ``[fd00::1]`` print as written
instead of raising or vanishing. Styles are applied explicitly with :func:`_styled`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

from pixellab.errors import ConfigError, PixellabError
from pixellab.heap import bound_retention

if TYPE_CHECKING:  # the CLI imports heavy modules lazily so `--help` stays instant
    from pixellab.intel.analyze import AnalysisResult
    from pixellab.intel.scrape import FetchPolicy
    from pixellab.sweep import Sweep, SweepResult
    from pixellab.workbench import Workbench

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Decide, with evidence, which AI model to use per product category "
                       "and task.")
sweep_app = typer.Typer(no_args_is_help=True, help="Plan, run and resume sweeps.")
app.add_typer(sweep_app, name="sweep")
keys_app = typer.Typer(no_args_is_help=True, help="API keys and credit wallets of the service.")
app.add_typer(keys_app, name="keys")
# Tables stay readable when output is piped (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 120, markup=False)
err_console = Console(stderr=True, markup=False)


def _styled(style: str, label: str, *rest: object) -> Text:
    """``label`` in ``style``, then ``rest`` as plain text (never parsed as markup)."""
    return Text.assemble((label, style), *(str(part) for part in rest))
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
    from pixellab import evidence

    overall = evidence.task_summary(evidence.scored_requests(workbench.ledger, sweep_ids))
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
        console.print(_styled("yellow", f"{failed} request(s) failed; the report lists each "
                                        "reason."))
    console.print(f"Ledger: {workbench.ledger.path}   Outputs: {workbench.store.root}")
    console.print(f"Routing table: {result.defaults}   (try `pixellab generate --task packshot "
                  f"--image PHOTO --category kitchen`)", highlight=False)
    console.print(_styled("bold green", "Report:", f" {result.report}   "
                          f"({time.monotonic() - started:.1f} s)"))


def _run_sweep(sweep: Sweep, *, resubmit: bool = False) -> None:
    progress = _Progress()
    try:
        result = sweep.run(progress=progress.done, on_planned=progress.planned,
                           resubmit=resubmit)
    finally:
        progress.close()
    console.print(_summary_table([result]))
    for provider, why in sorted(result.stopped_providers.items()):
        err_console.print(_styled("yellow", f"{provider} stopped for this sweep:", f" {why}"),
                          soft_wrap=True, highlight=False)
    from pixellab.ledger import BLOCKING_REASONS

    unpaid = [o for o in result.outcomes if o.error_reason in BLOCKING_REASONS]
    if unpaid:
        err_console.print(_styled(
            "yellow", f"{len(unpaid)} request(s) were paid for without a usable answer",
            " (the create's outcome is unknown, or the provider deleted the output); they are "
            f"not created again unless you run `pixellab sweep resume {result.sweep_id} "
            "--resubmit`."), soft_wrap=True, highlight=False)
    if result.stopped_reason:
        hint = ("Raise that cap in spend.toml, or wait for its next period, and run"
                if " cap (" in result.stopped_reason else "Raise budget_usd and run")
        err_console.print(_styled("yellow", "stopped before exceeding the budget:",
                                  f" {result.stopped_reason}. {hint} "
                                  f"`pixellab sweep resume {result.sweep_id}`."))
        raise typer.Exit(3)


ExecutorOption = Annotated[str | None, typer.Option(
    "--executor", help="threads (default, $PIXELLAB_EXECUTOR) or ray: run on a Ray cluster "
                       "(pixellab[ray]).")]
AddressOption = Annotated[str | None, typer.Option(
    "--address", help="With --executor ray: the cluster to join (auto, ray://host:10001); none "
                      "starts a local one.")]


def _workbench(home: Path | None, executor: str | None = None,
               address: str | None = None) -> Workbench:
    """The workbench of ``home``, its executor and Ray address as the options say."""
    from pixellab.settings import current
    from pixellab.workbench import Workbench

    if executor not in (None, "threads", "ray"):
        raise ConfigError(f"--executor {executor!r}: threads or ray")
    update = {key: value for key, value in (("executor", executor), ("ray_address", address))
              if value}
    return Workbench(home, settings=current().model_copy(update=update))


@sweep_app.command("run")
def sweep_run(
    file: Annotated[Path, typer.Argument(help="Sweep spec (YAML or TOML).")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    notebook: Annotated[Path | None, typer.Option(
        help="Run this notebook with FILE as its papermill parameters instead, keeping the "
             "executed notebook and its HTML under REPORTS/<name>/<UTC time>/.")] = None,
    reports: Annotated[Path, typer.Option(help="Where --notebook runs are kept.")] = Path(
        "reports"),
) -> None:
    """Plan and run a sweep; requests that already succeeded are reused, not re-run."""
    from pixellab.sweep import Sweep, SweepSpec

    if notebook is not None:
        _run_notebook(file, notebook, reports, home)
        return
    _run_sweep(Sweep(SweepSpec.from_file(file), _workbench(home, executor, address)))


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
    console.print(_styled("bold green", "HTML:", f" {run.html}"))
    if run.error is not None:
        err_console.print(_styled("red", "error:", f" {run.error}"), soft_wrap=True,
                          highlight=False)
        raise typer.Exit(3 if run.error.ename == "BudgetExceeded" else 1)


@sweep_app.command("estimate")
def sweep_estimate(
    file: Annotated[Path, typer.Argument(help="Sweep spec (YAML or TOML).")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    more_products: Annotated[int, typer.Option(
        min=0, help="Also price N more products like the sweep's own (what `pixellab "
                    "select` says an undecided cell needs).")] = 0,
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
    if estimate.judge_calls:
        console.print(f"  judge: at most ${estimate.judge_usd:.4f} ({estimate.judge_calls} "
                      "calls: every pair it could judge, in both orders)")
    if more_products:
        console.print(f"{more_products} more product(s) like these: about "
                      f"${estimate.usd_for_products(more_products):.4f} "
                      f"(${estimate.usd_per_product:.4f} each through every arm)")
    if estimate.unusable:
        from collections import Counter

        reasons = Counter(estimate.unusable.values())
        console.print(_styled("yellow", f"{len(estimate.unusable)} product(s) cannot be sent",
                              " (they fail before any call and cost nothing): "
                              + ", ".join(f"{reason} ×{n}" for reason, n
                                          in sorted(reasons.items()))))
    if estimate.exceeds(spec.budget_usd):
        err_console.print(_styled("yellow", "over budget:", f" ${estimate.usd:.4f} > "
                                  f"budget_usd ${spec.budget_usd:.2f}"))
        raise typer.Exit(3)


@sweep_app.command("resume")
def sweep_resume(
    sweep_id: Annotated[str, typer.Argument(help="The sweep's name.")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    resubmit: Annotated[bool, typer.Option(
        "--resubmit", help="Create again the jobs that were paid for without a usable answer "
                           "(outcome unknown after a crash or a cut connection, or output "
                           "deleted by the provider). This may pay twice.")] = False,
    executor: ExecutorOption = None,
    address: AddressOption = None,
) -> None:
    """Run what a sweep has not finished (after a crash, a budget stop, or new products)."""
    from pixellab.sweep import Sweep

    _run_sweep(Sweep.resume(sweep_id, _workbench(home, executor, address)), resubmit=resubmit)


@app.command()
def score(
    sweep_id: Annotated[str, typer.Argument(help="The sweep's name.")],
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", "--metric", help="Only these metrics (repeat or comma-separate).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
) -> None:
    """Score a sweep's outputs (already scored outputs are skipped)."""
    from pixellab.executors import make_executor
    from pixellab.sweep import Sweep

    chosen = [m.strip() for item in metrics or [] for m in item.split(",") if m.strip()]
    workbench = _workbench(home, executor, address)
    settings = workbench.settings
    runner = make_executor(settings.executor, address=settings.ray_address)
    try:
        written = Sweep.resume(sweep_id, workbench).score(chosen or None, executor=runner)
    finally:
        runner.close()
    console.print(f"{written} score row(s) written on {runner.name}")


@app.command("select")
def select_command(
    sweep_ids: Annotated[list[str] | None, typer.Argument(
        metavar="SWEEP...", help="Sweeps whose evidence decides (default: every sweep).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where the routing table goes (default $PIXELLAB_DEFAULTS or "
             "<home>/defaults.toml).")] = None,
    min_products: Annotated[int | None, typer.Option(
        help="Products an arm needs to be compared (default: the fewest on which the test can "
             "show a difference, 6 at 95 %).")] = None,
    resamples: Annotated[int, typer.Option(
        help="Bootstrap resamples of people's ratings (>= 100).")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed (same seed, same intervals).")] = 0,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Pick the default chain per category × task, with intervals, and write defaults.toml."""
    from pixellab import routing
    from pixellab.ledger import queries
    from pixellab.selection import SelectionPolicy, select, write_defaults
    from pixellab.workbench import Workbench

    workbench = Workbench(home)
    if sweep_ids:
        known = queries.sweep_ids(workbench.ledger)
        unknown = [s for s in sweep_ids if s not in known]
        if unknown:
            raise ConfigError(f"no sweep {', '.join(map(repr, unknown))} in "
                              f"{workbench.ledger.path}")
    target = out or workbench.routes_path
    try:
        policy = SelectionPolicy(min_products=min_products, resamples=resamples, seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    previous = routing.load_routes(target)
    selection = select(workbench.ledger, sweep_ids or None, policy=policy,
                       current=routing.current_defaults(previous, workbench.catalog),
                       task_scoring=workbench.task_scoring)
    if not selection.decisions:
        raise ConfigError("the sweeps have no requests to decide on")
    table = Table(title="Default chain per task × category")
    for column in ("task", "category", "chain", "verdict", "products", "composite", "passed",
                   "p / q"):
        table.add_column(column, overflow="fold")
    for d, row in zip(selection.decisions, selection.table().to_dict("records"), strict=True):
        table.add_row(*(str(row[c]) for c in ("task", "category", "chain", "verdict",
                                               "products", "composite", "passed")),
                      d.p_and_q or "—")
    console.print(table)
    from pixellab.selection import FAMILY, TEST

    cells = {d.task: d.family for d in selection.decisions}
    console.print(f"Test: {TEST} at {1 - policy.level:.0%}, over {FAMILY} ("
                  + ", ".join(f"{task}: {n} cells" for task, n in cells.items())
                  + f"); intervals: Student's t over products; at least {policy.minimum} "
                  "products per model.", soft_wrap=True)
    for decision in selection.decisions:
        if decision.more_products:
            console.print(f"  {decision.task} · {decision.category}: {decision.more_products}",
                          soft_wrap=True)
    for task, agreement in selection.agreement.items():
        if agreement and agreement.get("n", 0) >= 2:
            console.print(f"{task}: people vs composite ranking, Kendall tau "
                          f"{agreement['kendall_tau']:.2f} over {int(agreement['n'])} models")
    for task, note in selection.judge.items():
        console.print(f"{task}: {note}", soft_wrap=True)
    console.print(_styled("bold green", "Routing table:",
                          f" {write_defaults(selection, target)}"))


@app.command()
def generate(
    task: Annotated[str, typer.Option(help="enhance, remove_background, packshot, upscale, …")],
    image: Annotated[Path, typer.Option(help="The product photo.")],
    category: Annotated[str | None, typer.Option(
        help="Product category (unknown or absent: the global default).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Also copy the output here (a file, or a folder).")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt template name@version.")] = None,
    routes: Annotated[Path | None, typer.Option(
        help="Routing table (default $PIXELLAB_DEFAULTS or <home>/defaults.toml).")] = None,
    seed: Annotated[int, typer.Option(help="Seed passed to the model.")] = 0,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Run one photo through the chain the routing table picks, with fallbacks; exit 1 if
    every model of the chain failed."""
    from pixellab import routing
    from pixellab.ledger import queries
    from pixellab.workbench import Workbench

    workbench = Workbench(home)
    table = routes or workbench.routes_path
    result = routing.generate(image, task, category=category, workbench=workbench,
                              routes=routing.load_routes(table), prompt=prompt, seed=seed,
                              out=out)
    console.print(f"Route: {' → '.join(result.route.model_ids)}", highlight=False)
    console.print(f"  from {result.route.source}", highlight=False, soft_wrap=True)
    attempts = queries.request_attempts(workbench.ledger, result.request_key)
    for row in attempts.itertuples(index=False):
        detail = (f" ({row.error_class}: {row.error_message})"
                  if isinstance(row.error_class, str) else "")
        console.print(f"  attempt {row.attempt_no}: {row.model_id} {row.status}{detail}",
                      highlight=False, soft_wrap=True)
    if not result.succeeded:
        err_console.print(_styled("red", "every model failed:",
                                  f" {result.outcome.error_class}: "
                                  f"{result.outcome.error_message}"),
                          soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    if result.reused:
        console.print("  reused the stored output of the same request (no provider call)")
    console.print(f"Model: {result.outcome.model_id}")
    console.print(_styled("bold green", "Output:", f" {result.stored_at}"), soft_wrap=True)
    if result.written_to is not None:
        console.print(f"Copied to: {result.written_to}", soft_wrap=True)


def _fetch_policy(allow: list[str] | None) -> FetchPolicy:
    from pixellab.intel.scrape import FetchPolicy

    return FetchPolicy(allow=frozenset(allow or ()))


def _refused_hint(exc: BaseException) -> NoReturn:
    """A refused private address gets the way out, for an intranet or a test server."""
    if getattr(exc, "reason", None) == "private_address":
        err_console.print(_styled("red", "error:", f" {exc}"), soft_wrap=True,
                          highlight=False)
        err_console.print("If this host is yours (an intranet, a test server), allow it with "
                          "--allow HOST[:PORT] (HOST: a name, an IP, [IPv6] or a CIDR network; "
                          "with no port, every port).", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    raise exc


AllowOption = Annotated[list[str] | None, typer.Option(
    "--allow", help="HOST[:PORT] that may be private (an intranet, a test server): a name, "
                    "an IP, [IPv6] or a CIDR network, e.g. 127.0.0.1:8080 or 10.0.0.0/8; "
                    "a port limits it to that port, at every redirect too. Repeatable. "
                    "Without it, private and loopback addresses are refused.")]


def _analysis_table(results: list[AnalysisResult]) -> Table:
    table = Table(title="Product analysis")
    for column in ("product", "category", "audience", "aesthetic", "tasks", "confidence",
                   "model"):
        table.add_column(column, overflow="fold")
    for result in results:
        a = result.analysis
        if a is None:
            table.add_row(result.product_id, "—", "—", "—", "—", "—", f"failed: {result.error}")
            continue
        table.add_row(result.product_id, a.category, a.audience, a.aesthetic,
                      ", ".join(a.suggested_tasks), f"{a.confidence:.2f}", str(result.model_id))
    return table


@app.command()
def analyze(
    target: Annotated[str, typer.Argument(
        help="A product page or store URL, an image file, or a dataset (name or folder).")],
    allow: AllowOption = None,
    title: Annotated[str | None, typer.Option(help="The product's title (image files).")
                     ] = None,
    limit: Annotated[int | None, typer.Option(help="At most N products.")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Category, audience, aesthetic and suggested tasks per product, through the analyze
    chain (an LLM with a key, the offline rules without); every answer is in the ledger."""
    from pixellab.datasets import Product, load_dataset
    from pixellab.errors import ConfigError
    from pixellab.intel.analyze import analyze_products
    from pixellab.workbench import Workbench

    workbench = Workbench(home)
    products: list[Product]
    if target.startswith(("http://", "https://")):
        from pixellab.intel.scrape import download_images, scrape

        policy = _fetch_policy(allow)
        products = []
        folder = workbench.home / "inputs" / "scraped"
        try:
            scraped = scrape(target, policy, max_products=limit or 50)
        except PixellabError as exc:
            _refused_hint(exc)
        for item in scraped:
            if not item.image_urls:
                err_console.print(f"skipped {item.id}: no image on the page")
                continue
            image = download_images(item, folder, policy, max_images=1)[0]
            products.append(Product(
                id=item.id, title=item.title, description=item.description,
                category="uncategorized", image=image,
                attributes={"category_hint": item.category_hint or "",
                            "breadcrumbs": item.breadcrumbs, "brand": item.brand or "",
                            "tags": item.tags}))
    elif Path(target).is_file():
        path = Path(target)
        products = [Product(id=path.stem, title=title or path.stem.replace("-", " "),
                            description="", category="uncategorized", image=path)]
    else:
        products = list(load_dataset(target).products[:limit])
    if not products:
        raise ConfigError(f"no products found at {target}")
    results = analyze_products(products, workbench)
    console.print(_analysis_table(results))
    console.print(f"Ledger: {workbench.ledger.path} (table analyses)")
    if any(r.analysis is None for r in results):
        raise typer.Exit(1)


@app.command("import")
def import_command(
    url: Annotated[str, typer.Argument(help="A product page or a store (Shopify, JSON-LD, "
                                            "OpenGraph or plain HTML).")],
    dataset: Annotated[str, typer.Option(help="Dataset name under datasets/, or a folder.")],
    allow: AllowOption = None,
    analyze_products_: Annotated[bool, typer.Option(
        "--analyze/--no-analyze", help="Set each new product's category from its analysis "
                                       "(the store's own words stay in store_category).")
                                 ] = True,
    limit: Annotated[int, typer.Option(help="At most N products.")] = 50,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Add a store's products, with one validated image each, to a dataset's manifest."""
    from pixellab.datasets import load_dataset
    from pixellab.intel.analyze import analyze_products
    from pixellab.intel.scrape import import_products, relabel
    from pixellab.workbench import Workbench

    folder = Path(dataset) if ("/" in dataset or Path(dataset).is_dir()) else (
        Path("datasets") / dataset)
    policy = _fetch_policy(allow)
    try:
        added = import_products(url, folder, policy, max_products=limit)
    except PixellabError as exc:
        _refused_hint(exc)
    console.print(f"{len(added)} product(s) added to {folder / 'manifest.csv'}")
    if not added or not analyze_products_:
        return
    workbench = Workbench(home)
    chosen = [p for p in load_dataset(folder).products if p.id in set(added)]
    results = analyze_products(chosen, workbench)
    console.print(_analysis_table(results))
    changed = relabel(folder, {r.product_id: r.analysis.category for r in results
                               if r.analysis is not None})
    console.print(f"{changed} categor{'y' if changed == 1 else 'ies'} set from the analysis")


@app.command()
def costs(
    sweep_id: Annotated[list[str] | None, typer.Argument(help="Sweeps (default: all).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Spend by sweep and model, in credits and USD."""
    from pixellab import evidence
    from pixellab.workbench import Workbench

    frame = evidence.costs(Workbench(home).ledger, sweep_id or None)
    table = Table(title="Costs")
    for column in ("sweep", "provider", "model", "calls", "credits", "USD", "of which estimated"):
        table.add_column(column)
    for row in frame.itertuples(index=False):
        table.add_row(row.sweep_id or "—", row.provider, row.model_id, str(row.calls),
                      f"{row.credits:.2f}", f"${row.usd:.4f}", f"${row.usd_estimated:.4f}")
    console.print(table)
    console.print(f"Total: ${frame['usd'].sum():.4f}")


@app.command()
def spend(
    home: Annotated[Path | None, typer.Option(help="Data dir (its spend.toml is read).")] = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="Print today's spend summary message.")] = False,
    send: Annotated[bool, typer.Option(
        "--send", help="With --summary: send it to the policy's webhook / e-mail, once a day "
        "(for a daily cron job).")] = False,
) -> None:
    """The spend policy's caps, how much of each is used this period, and the alerts sent."""
    import time
    from datetime import datetime

    from pixellab.workbench import Workbench

    workbench = Workbench(home)
    governor = workbench.spend_governor()
    if governor is None:
        console.print(f"No spend policy ({workbench.spend_policy_path} does not exist): "
                      "sweeps are held to their budget_usd only.")
        return
    if summary:
        message = governor.send_summary() if send else governor.summary()
        if message is None:
            console.print("Today's summary was already sent.")
            return
        console.print(message.text, highlight=False)
        governor.flush()
        return
    now = time.time()
    table = Table(title=f"Spend caps ({workbench.spend_policy_path})")
    for column in ("cap", "period", "used", "limit", "%"):
        table.add_column(column)
    for cap in governor.caps:
        label, used = governor.usage(cap, now)
        sign = "$" if cap.unit == "usd" else ""
        table.add_row(cap.name, label, f"{sign}{used:.2f}", f"{sign}{cap.limit:.2f}",
                      f"{float(used / cap.limit) * 100:.1f}")
    console.print(table)
    notices = governor.book.notices()
    if notices:
        sent = Table(title="Alerts")
        for column in ("when", "alert", "status", "detail"):
            sent.add_column(column)
        for notice in notices[-20:]:
            sent.add_row(datetime.fromtimestamp(notice.at, governor.zone).strftime(
                "%Y-%m-%d %H:%M"), notice.key, notice.status, notice.detail or "")
        console.print(sent)


@app.command()
def serve(
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Jobs run at once.", min=1, max=256)] = 4,
    rate: Annotated[str, typer.Option(
        help="Requests per key, e.g. 120/minute or 10/second.")] = "120/minute",
    allow: AllowOption = None,
) -> None:
    """Serve the routing table as a job API (see pixellab/serve.py; OpenAPI at /openapi.json)."""
    from limits import parse

    from pixellab.intel.fetch import FetchPolicy
    from pixellab.serve import ServiceConfig
    from pixellab.serve import serve as run_service
    from pixellab.workbench import Workbench

    try:
        parse(rate)
    except ValueError:
        raise ConfigError(f"--rate {rate!r} is not a rate such as 120/minute") from None
    config = ServiceConfig(workers=workers, rate=rate,
                           fetch=FetchPolicy(allow=frozenset(allow or ()), rate_per_host_s=0))
    console.print(f"pixellab job service on http://{host}:{port} (OpenAPI: /openapi.json)")
    run_service(Workbench(home), host=host, port=port, config=config)


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    credits: Annotated[float, typer.Option(help="Credits in its wallet.", min=0)] = 0.0,
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Make an API key; it is printed once, only its SHA-256 is kept."""
    from pixellab.ledger.jobs import JobBook
    from pixellab.workbench import Workbench

    book = JobBook(Workbench(home).home / "jobs.sqlite")
    console.print(book.create_key(name, credits), highlight=False, soft_wrap=True)


@keys_app.command("credit")
def keys_credit(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    credits: Annotated[float, typer.Argument(help="Credits to add (negative takes away).")],
    home: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
) -> None:
    """Add credits to a key's wallet."""
    from pixellab.ledger.jobs import JobBook
    from pixellab.workbench import Workbench

    try:
        left = JobBook(Workbench(home).home / "jobs.sqlite").add_credits(name, credits)
    except KeyError:
        raise ConfigError(f"no API key named {name!r}") from None
    console.print(f"{name}: {left:g} credits")


@keys_app.command("list")
def keys_list(home: Annotated[Path | None, typer.Option(help="Data dir.")] = None) -> None:
    """API keys by name with their wallets."""
    from pixellab.ledger.jobs import JobBook
    from pixellab.workbench import Workbench

    table = Table(title="API keys")
    table.add_column("name")
    table.add_column("credits")
    for key in JobBook(Workbench(home).home / "jobs.sqlite").keys():
        table.add_row(key.name, f"{key.credits:g}")
    console.print(table)


@app.command()
def catalog(
    task: Annotated[str | None, typer.Option(help="Only models serving this task.")] = None,
    home: Annotated[Path | None, typer.Option(help="Data dir (its catalog/ is read).")] = None,
) -> None:
    """List the catalog's models and default chains (validates every catalog file)."""
    from pixellab.catalog import load_catalog

    cat = load_catalog(home=home)
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
        console.print(Text.assemble("chain ", (chain_task.value, "bold"),
                                    f": {' → '.join(chain)}"))


@app.command()
def emulate(
    latency: Annotated[float, typer.Option(help="Seconds each emulated job takes.")] = 0.5,
) -> None:
    """Serve the loopback Replicate/fal/OpenAI emulator for a zero-cost dry run.

    Prints the environment to export in the shell that runs the sweep; Ctrl-C or SIGTERM stops
    it (also when started in the background) and deletes its TLS key.
    """
    import shlex

    from pixellab.emulator import Emulator
    from pixellab.emulator.__main__ import serve_until_signalled

    def announce(emulator: Emulator) -> None:
        for name, value in emulator.env().items():
            console.print(f"export {name}={shlex.quote(value)}", highlight=False,
                          soft_wrap=True)
        console.print("export REPLICATE_API_TOKEN=r8_dryrun FAL_KEY=dry:run "
                      "OPENAI_API_KEY=sk-dryrun   # any value; the emulator bills nothing",
                      highlight=False, soft_wrap=True)
        console.print(_styled("green", "emulator running on 127.0.0.1; Ctrl-C to stop"))
        console.file.flush()

    received = serve_until_signalled(Emulator(latency_s=latency), announce)
    console.print(f"stopped ({received.name})")


def main() -> None:
    """Entry point: user-fixable errors print one line and exit 2."""
    bound_retention()  # image arrays freed by a sweep do not stay resident (pixellab.heap)
    try:
        # standalone_mode=False hands typer.Exit back as a return value, not an exception
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PixellabError as exc:
        if _state["debug"]:
            raise
        err_console.print(_styled("red", "error:", f" {exc}"), soft_wrap=True, highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; `pixellab sweep resume NAME` continues where it stopped")
        sys.exit(130)
    except Exception as exc:  # usage errors arrive here in standalone_mode=False
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exception classes of a bad command line (exit code 2 for a usage error): click's,
    and, since typer 0.2x ships its own copy of click, typer's base of that copy's."""
    import click

    return (click.ClickException, *(
        [typer.exceptions.TyperException] if hasattr(typer, "exceptions")
        and hasattr(typer.exceptions, "TyperException") else []))


if __name__ == "__main__":
    main()
