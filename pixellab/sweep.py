"""Sweeps: plan products × models (or one chain) × prompts × seeds for one task, run, resume.

``request_key`` is the sha256 of everything that determines an output: the task, the chain's
models with their endpoints, input mappings and defaults, the source image's bytes, the prompt's
id, content hash and rendered text, the params and the seed. It is the cache key and the
idempotency key: a request that already succeeded (in this sweep or any other) is never run
again, so running the demo twice makes zero provider calls the second time.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pixellab import adaptive, judge
from pixellab.adaptive import Drop
from pixellab.blocking import run_blocking
from pixellab.budget import Budget
from pixellab.catalog import Model
from pixellab.cluster import run_on_ray
from pixellab.config_files import read_mapping
from pixellab.datasets import Dataset, Product, load_dataset
from pixellab.errors import BudgetExceeded, ConfigError, InvalidInputImage
from pixellab.evidence import scored_requests
from pixellab.executors import Executor, make_executor
from pixellab.heap import bound_retention, release_freed
from pixellab.intel.records import latest_analyses, record_analyses
from pixellab.intel.taxonomy import product_data
from pixellab.ledger import Ledger, LedgerWriter, Statement, queries
from pixellab.media import kind_for
from pixellab.media.video import VideoExpectation
from pixellab.prompts import Prompt, load_prompt
from pixellab.requests import Request, file_sha256, inputs_sha256
from pixellab.runner import RequestOutcome, RetryPolicy, Runner, RunSummary
from pixellab.scoring import (
    BATCHED,
    JSON_METRICS,
    known_metric,
    scorer_version,
)
from pixellab.scoring.clip import ClipItem, ClipScorer, ClipSettings, caption_for
from pixellab.scoring.units import Recipe, ScoreUnit, measure
from pixellab.settings import ProjectLabel
from pixellab.stats import Interval
from pixellab.tasks import Task, expected_output_size
from pixellab.validate import (
    has_alpha,
    normalized_array,
    probe_input_image,
    read_usable_input,
)
from pixellab.verdicts import JudgeSpec
from pixellab.webhooks import JobSignals, WebhookSettings, webhooks_for
from pixellab.workbench import Workbench

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
MAX_BUDGET_USD = 1_000_000.0
"""A budget above this is a typo (or ``.inf``), not a plan: refused, so the cap means something."""
MAX_SEED = 2**32 - 1
CLIP_CHUNK = 64
"""Outputs decoded together for one CLIP pass (their images are held until it embeds them)."""
"""Seeds are unsigned 32-bit at every provider we call."""
PARAM_BOUNDS: dict[str, tuple[type, float, float]] = {
    "scale": (int, 1, 16),
    "size": (int, 16, 10_000),
    "width": (int, 16, 10_000),
    "height": (int, 16, 10_000),
    "duration_s": (float, 0.1, 120),
    "fps": (float, 1, 120),
    "num_outputs": (int, 1, 16),
}
"""Normalized parameters that size an output or a bill: each of its type and within bounds, so
``size: 1e9`` cannot ask the local provider for an exabyte canvas."""


class SweepSpec(BaseModel):
    """What a sweep file (YAML or TOML) or a notebook's parameters describe."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    task: Task
    dataset: str = "sample"
    categories: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1, le=10_000_000)
    models: list[str] = Field(default_factory=list)
    chain: list[str] = Field(default_factory=list)
    prompts: list[str] = Field(default_factory=list)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=1000)
    params: dict[str, Any] = Field(default_factory=dict)
    budget_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    concurrency: int = Field(default=8, ge=1, le=1024)
    adaptive: bool = False
    """Run the products in looks and stop running models that are already significantly
    worse than the leader (see :mod:`pixellab.adaptive`); the sweep ends when one model is
    left, the products run out or the budget does."""
    project: ProjectLabel | None = None
    """The project label its paid calls count under for the spend policy's caps (default
    ``PIXELLAB_PROJECT``)."""
    judge: JudgeSpec | None = None
    """Judge every two arms' outputs of a product with a vision model, in both orders, after
    the score pass (see :mod:`pixellab.judge`); its calls are priced in the estimate."""
    degrade: bool = True
    """upscale only: send each photo downscaled by ``params.scale`` (bicubic) and score the
    output against the original (PSNR/SSIM need ground truth). False upscales the photos as
    they are, with no reference metrics."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.', at most 80 characters")
        return value

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            _check_finite(item, str(key))
        for name, (kind, low, high) in PARAM_BOUNDS.items():
            if name not in value:
                continue
            number = value[name]
            if (isinstance(number, bool) or not isinstance(number, int | float)
                    or (kind is int and not isinstance(number, int))):
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{name} must be {what}, not {number!r}")
            if not low <= number <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, not {number!r}")
        try:  # a clip's aspect ratio or resolution that means nothing: say so before any call
            VideoExpectation.from_params(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        return cls.parse(read_mapping(path, what="sweep spec"), source=str(path))

    @classmethod
    def parse(cls, raw: Any, *, source: str | None = None) -> SweepSpec:
        if not isinstance(raw, dict):
            raise ConfigError("a sweep spec must be a mapping", path=source)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(str(err["msg"]).removeprefix("Value error, "), path=source,
                              key=".".join(str(p) for p in err["loc"]) or None) from None


def _check_finite(value: Any, where: str, depth: int = 0) -> None:
    """Refuse NaN and infinities anywhere in ``value`` (YAML's ``.inf``, ``.nan``)."""
    if depth > 16:
        raise ValueError(f"{where} is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, not {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]", depth + 1)


@dataclass(frozen=True)
class Arm:
    """One column of the comparison: a single model, or a whole fallback chain."""

    name: str
    chain: tuple[Model, ...]


@dataclass
class SweepResult:
    sweep_id: str
    planned: int
    cached: int
    succeeded: int = 0
    failed: int = 0
    stopped: int = 0
    provider_calls: int = 0
    scores_written: int = 0
    stopped_reason: str | None = None
    stopped_providers: dict[str, str] = field(default_factory=dict)
    """Providers the run stopped calling (an exhausted quota), with the provider's words."""
    outcomes: list[RequestOutcome] = field(default_factory=list)
    ledger_commits: int = 0
    ledger_cpu_s: float = 0.0
    """CPU seconds of the ledger's writer thread (diagnostics for benchmarks)."""
    dropped: list[Drop] = field(default_factory=list)
    """Adaptive sweeps: the models stopped early, with why."""
    not_run: int = 0
    """Adaptive sweeps: requests of the full plan never run (dropped models, an early stop)."""
    judged: SweepResult | None = None
    """The judge pass's run (its sweep ``<id>.judge``), when the spec turns the judge on."""

    def absorb(self, part: SweepResult) -> None:
        """Add one look's counts (adaptive sweeps run a sweep in parts)."""
        self.planned += part.planned
        self.cached += part.cached
        self.succeeded += part.succeeded
        self.failed += part.failed
        self.stopped += part.stopped
        self.provider_calls += part.provider_calls
        self.stopped_reason = self.stopped_reason or part.stopped_reason
        self.stopped_providers.update(part.stopped_providers)
        self.outcomes.extend(part.outcomes)
        self.ledger_commits += part.ledger_commits
        self.ledger_cpu_s += part.ledger_cpu_s


@dataclass(frozen=True)
class CostEstimate:
    """What a sweep would spend, from catalog prices, before it spends anything."""

    planned: int
    to_run: int
    """Requests not already answered by an earlier run (those cost nothing again)."""
    usd: float
    """Every request to run succeeds on its chain's first model."""
    usd_worst: float
    """Every model of every chain is tried once (all but the last fail over)."""
    credits: float
    by_model_usd: dict[str, float] = field(default_factory=dict)
    """First-model spend per model."""
    unusable: dict[str, str] = field(default_factory=dict)
    """Products whose input is refused from its header or path (product id → reason, e.g.
    ``unsupported_format``, ``outside_dataset``): they will fail before any call and cost
    nothing. Inputs that fail only when fully decoded (truncated pixel data, a blank photo)
    are priced: the estimate stays an upper bound."""

    judge_usd: float = 0.0
    """The judge pass at most (every pair it could judge, both orders, the judge's first
    model; ``usd`` and ``usd_worst`` include it)."""
    judge_calls: int = 0

    usd_per_product: float = 0.0
    """What one more product would cost through every arm, prompt and seed of the sweep
    (first models, the sweep's own products' mean size; the cache ignored)."""

    def usd_for_products(self, products: int) -> float:
        """The catalog price of running ``products`` more products like the sweep's own."""
        return products * self.usd_per_product

    def exceeds(self, budget_usd: float | None) -> bool:
        return budget_usd is not None and self.usd > budget_usd

    def ensure_within(self, budget_usd: float | None) -> None:
        """Raise :class:`BudgetExceeded` before anything is spent when the estimate is over."""
        if self.exceeds(budget_usd):
            assert budget_usd is not None
            raise BudgetExceeded(
                f"the estimate, ${self.usd:.4f} for {self.to_run} requests (worst case "
                f"${self.usd_worst:.4f}), exceeds budget_usd ${budget_usd:.4f}; nothing was "
                f"spent", cap_usd=budget_usd, committed_usd=0.0, reserved_usd=0.0,
                requested_usd=self.usd)


class Sweep:
    """A planned sweep bound to a workbench. ``run()`` executes what is not done yet."""

    def __init__(self, spec: SweepSpec, workbench: Workbench | None = None) -> None:
        self.spec = spec
        self.workbench = workbench or Workbench()
        self.dataset: Dataset = load_dataset(spec.dataset)
        self.task_scoring = self.workbench.task_scoring

    @property
    def sweep_id(self) -> str:
        return self.spec.name

    @classmethod
    def resume(cls, sweep_id: str, workbench: Workbench | None = None) -> Sweep:
        workbench = workbench or Workbench()
        spec = queries.sweep_spec(workbench.ledger, sweep_id)
        if spec is None:
            raise ConfigError(f"no sweep {sweep_id!r} in {workbench.ledger.path}")
        return cls(SweepSpec.parse(spec, source=f"sweep {sweep_id}"), workbench)

    # -- planning ----------------------------------------------------------------------------

    def arms(self) -> list[Arm]:
        catalog = self.workbench.catalog
        task = self.spec.task
        if self.spec.models and self.spec.chain:
            raise ConfigError("give either models (compared one by one) or chain, not both",
                              key="models")
        if self.spec.chain:
            chain = tuple(catalog.model(m) for m in self.spec.chain)
            arms = [Arm("chain:" + ">".join(m.id for m in chain), chain)]
        elif self.spec.models:
            arms = [Arm(m, (catalog.model(m),)) for m in self.spec.models]
        else:
            chain = catalog.chain(task)
            arms = [Arm("chain:" + ">".join(m.id for m in chain), chain)]
        for arm in arms:
            for model in arm.chain:
                if task not in model.tasks:
                    raise ConfigError(f"model {model.id!r} does not serve {task.value!r}",
                                      key="models")
        return arms

    def products(self) -> list[Product]:
        chosen = self.dataset.select(self.spec.categories or None, self.spec.products or None,
                                     self.spec.limit,
                                     with_angles=self.spec.task is Task.ANGLES_TO_VIDEO)
        if not chosen and self.spec.task is Task.ANGLES_TO_VIDEO:
            raise ConfigError("angles_to_video needs products with more photos (the manifest's "
                              "'angles' column), and none of the chosen products has any",
                              key="task")
        if not chosen:
            raise ConfigError("no products match the sweep's categories/products",
                              key="categories")
        return chosen

    def _prompts(self) -> list[Prompt | None]:
        prompts: list[Prompt | None] = [load_prompt(p) for p in self.spec.prompts]
        ledger = self.workbench.ledger
        for prompt in prompts:
            assert prompt is not None
            used = queries.prompt_hashes(ledger, prompt.id)
            if used and prompt.content_hash not in used:
                raise ConfigError(f"prompt {prompt.id} was edited after it was used; "
                                  f"bump its version (e.g. {prompt.name}@"
                                  f"{_next_version(prompt.version)}) instead",
                                  path=str(prompt.path))
        return prompts or [None]

    def plan(self) -> list[Request]:
        """Every request of the sweep, in a stable order."""
        task = self.spec.task
        planned: list[Request] = []
        prompts = self._prompts()
        arms = self.arms()
        products = self.products()
        analyses = (latest_analyses(self.workbench.ledger, [p.id for p in products])
                    if any(p is not None for p in prompts) else {})
        for product in products:
            image_path, input_error = self.prepared_input(product)
            input_sha256 = (f"unusable:{input_error.reason}:{product.id}" if input_error
                            else file_sha256(image_path))
            angle_paths: tuple[str, ...] = ()
            if task is Task.ANGLES_TO_VIDEO and input_error is None:
                angle_paths = tuple(str(a) for a in product.angles)
                input_sha256 = inputs_sha256(input_sha256, angle_paths)
            extra = ({"product": product_data(product.fields())}
                     if task is Task.ANALYZE else {})
            for arm in arms:
                for prompt in prompts:
                    text = (prompt.render(product.fields(), analyses.get(product.id))
                            if prompt else None)
                    for seed in self.spec.seeds:
                        planned.append(Request.build(
                            product_id=product.id, category=product.category, task=task,
                            chain=arm.chain, arm=arm.name, image_path=image_path,
                            input_sha256=input_sha256, prompt=prompt, prompt_text=text,
                            params={**self.spec.params, **extra, "seed": seed},
                            input_error=input_error, angle_paths=angle_paths))
        return planned

    @property
    def upscale_factor(self) -> int | None:
        """The factor upscale inputs are shrunk by, or None when inputs go as they are."""
        if self.spec.task is not Task.UPSCALE or not self.spec.degrade:
            return None
        scale = self.spec.params.get("scale", 2)
        if not isinstance(scale, int) or scale < 2:
            raise ConfigError(f"params.scale must be an integer >= 2, not {scale!r}",
                              key="params.scale")
        return scale

    def input_path(self, product: Product) -> Path:
        """The image the provider gets: the product photo, or for an upscale sweep its copy
        downscaled by :attr:`upscale_factor` (made once, under the workbench home)."""
        return self.prepared_input(product)[0]

    def prepared_input(self, product: Product) -> tuple[Path, InvalidInputImage | None]:
        """:meth:`input_path` and, when the input cannot be used, why: a product whose files
        lie outside its dataset, or an upscale input that cannot be decoded or is too small to
        shrink. That product's requests fail with the reason; the sweep goes on."""
        if product.refusal is not None:
            return product.image, product.refusal.error()
        factor = self.upscale_factor
        if factor is None:
            return product.image, None
        try:
            return self._downscaled(product, factor), None
        except InvalidInputImage as exc:
            return product.image, exc

    def _downscaled(self, product: Product, factor: int) -> Path:
        path = (self.workbench.home / "inputs" / f"downscale-x{factor}"
                / f"{file_sha256(product.image)}.png")
        if path.exists():
            return path
        original = read_usable_input(product.image)[1]  # shrinking can hide a blank photo
        size = (original.width // factor, original.height // factor)
        if min(size) < 1:
            raise InvalidInputImage("too_small", f"{product.image}: {original.width}×"
                                    f"{original.height} is too small to shrink by {factor} "
                                    "for an upscale sweep")
        mode = "RGBA" if has_alpha(original) else "RGB"  # PNG holds no CMYK or I;16
        small = Image.fromarray(normalized_array(original), mode).resize(
            size, Image.Resampling.BICUBIC)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        small.save(tmp, format="PNG")
        tmp.replace(path)
        return path

    def estimate(self) -> CostEstimate:
        """Catalog-priced cost of the requests that would run now (cached ones are free),
        computed the way the runner reserves budget: per call, from the expected output size.
        ``usd_per_product`` prices one more product like the sweep's own (cache ignored), so
        :meth:`CostEstimate.usd_for_products` can price the products a decision still needs
        (``pixellab select`` says how many)."""
        planned = self.plan()
        done = self.workbench.ledger.succeeded_request_keys([r.request_key for r in planned])
        unique = _unique(planned)
        todo = [r for r in unique if r.request_key not in done]
        sizes: dict[str, tuple[int, int] | InvalidInputImage] = {}
        usd = worst = credits = every_product = 0.0
        by_model: dict[str, float] = {}
        unusable: dict[str, str] = {}
        priced: set[str] = set()
        for request in unique:
            if request.input_error is None and request.image_path not in sizes:
                try:  # the header only: no decode
                    sizes[request.image_path] = probe_input_image(request.image_path)
                except InvalidInputImage as exc:
                    sizes[request.image_path] = exc
            source = request.input_error or sizes[request.image_path]
            to_run = request.request_key not in done
            if isinstance(source, InvalidInputImage):
                if to_run:
                    unusable[request.product_id] = source.reason
                continue
            priced.add(request.product_id)
            for position, model in enumerate(request.chain):
                expected = expected_output_size(request.task, source, request.params,
                                                preserves_size=model.preserves_size)
                megapixels = (expected[0] * expected[1] if expected
                              else source[0] * source[1]) / 1e6
                cost = model.estimate_usd(megapixels=megapixels)
                if position == 0:
                    every_product += cost
                if not to_run:
                    continue
                worst += cost
                if position == 0:
                    usd += cost
                    credits += model.estimate_credits(megapixels=megapixels)
                    by_model[model.id] = by_model.get(model.id, 0.0) + cost
        calls, judge_usd, judge_worst = self._judge_bound(unique)
        return CostEstimate(planned=len(planned), to_run=len(todo), usd=usd + judge_usd,
                            usd_worst=worst + judge_worst, credits=credits,
                            by_model_usd=by_model, unusable=unusable, judge_usd=judge_usd,
                            judge_calls=calls,
                            usd_per_product=every_product / len(priced) if priced else 0.0)

    def _judge_chain(self) -> tuple[Model, ...]:
        assert self.spec.judge is not None
        chain = tuple(self.workbench.catalog.model(m) for m in self.spec.judge.models)
        for model in chain:
            if Task.JUDGE not in model.tasks:
                raise ConfigError(f"{model.id} does not judge (its tasks: "
                                  f"{', '.join(t.value for t in model.tasks)})",
                                  key="judge.models")
        return chain

    def _judge_bound(self, planned: list[Request]) -> tuple[int, float, float]:
        """(calls, USD, USD worst case) of the judge pass at most: every two arms of each
        product, prompt and seed, twice; before any output exists, so an upper bound."""
        if self.spec.judge is None:
            return 0, 0.0, 0.0
        arms: dict[tuple[Any, ...], set[str]] = {}
        for request in planned:
            key = (request.product_id, request.prompt_id, request.params.get("seed"))
            arms.setdefault(key, set()).add(request.arm)
        pairs = sum(len(found) * (len(found) - 1) // 2 for found in arms.values())
        if self.spec.judge.max_pairs is not None:
            pairs = min(pairs, self.spec.judge.max_pairs)
        chain = self._judge_chain()
        calls = 2 * pairs
        return (calls, calls * chain[0].estimate_usd(megapixels=1.0),
                calls * sum(m.estimate_usd(megapixels=1.0) for m in chain))

    # -- running -----------------------------------------------------------------------------

    def run(self, *, progress: Callable[[RequestOutcome], None] | None = None,
            on_planned: Callable[[str, int, int], None] | None = None,
            retry: RetryPolicy | None = None, score: bool = True,
            signals: JobSignals | None = None, resubmit: bool = False) -> SweepResult:
        """Run synchronously; works inside a running event loop too (e.g. a notebook)."""
        return run_blocking(self.arun(progress=progress, on_planned=on_planned, retry=retry,
                                      score=score, signals=signals, resubmit=resubmit),
                            cleanup=self.workbench.aclose)

    async def arun(self, *, progress: Callable[[RequestOutcome], None] | None = None,
                   on_planned: Callable[[str, int, int], None] | None = None,
                   retry: RetryPolicy | None = None, score: bool = True,
                   signals: JobSignals | None = None, resubmit: bool = False) -> SweepResult:
        """Run what is not done yet. Provider webhooks wake the poll of the job they name:
        pass ``signals`` from your own :class:`WebhookReceiver`, or set ``PIXELLAB_WEBHOOK_URL``
        and the sweep runs a receiver itself (see :class:`WebhookSettings`).

        A model whose earlier job for a request was paid for but left no usable answer (its
        outcome unknown, or its output deleted by the provider) is not called again for that
        request unless ``resubmit``: paying twice is the user's decision."""
        spec = self.spec
        bound_retention()
        planned = self.plan()
        if not spec.adaptive:
            result = await self._execute(planned, progress=progress, on_planned=on_planned,
                                         retry=retry, signals=signals, resubmit=resubmit)
        else:
            result = await self._run_adaptive(planned, progress=progress,
                                              on_planned=on_planned, retry=retry,
                                              signals=signals, resubmit=resubmit)
        status = "stopped_budget" if result.stopped_reason else "finished"
        self.workbench.ledger.write([Ledger.set_sweep_status(self.sweep_id, status,
                                                             result.stopped_reason or "")])
        release_freed()  # the run's decoded inputs and outputs, before the score pass
        if score:
            result.scores_written += await asyncio.to_thread(self.score)
            if spec.judge is not None and not result.stopped_reason:
                result.judged = await self.ajudge(retry=retry, signals=signals)
        return result

    def judge(self, *, retry: RetryPolicy | None = None) -> SweepResult:
        """Run the judge pass now (see :meth:`ajudge`)."""
        return run_blocking(self.ajudge(retry=retry), cleanup=self.workbench.aclose)

    async def ajudge(self, *, retry: RetryPolicy | None = None,
                     signals: JobSignals | None = None) -> SweepResult:
        """The judge pass (the spec's ``judge:``): the pairs :func:`pixellab.judge.candidate_pairs`
        picks from the scored outputs, each judged in both orders in the sweep
        ``<id>.judge``, capped at the estimate's judge bound (and at what the sweep's
        ``budget_usd`` leaves); the verdicts are then recorded as the judge's ratings."""
        spec = self.spec.judge
        if spec is None:
            raise ConfigError(f"sweep {self.sweep_id!r} has no judge: section", key="judge")
        ledger, store = self.workbench.ledger, self.workbench.store
        chain = self._judge_chain()
        frame = scored_requests(ledger, [self.sweep_id], self.task_scoring)
        pairs = judge.candidate_pairs(frame, spec)
        requests = judge.judge_requests(
            pairs, chain=chain, inputs={p.id: self.input_path(p) for p in self.products()},
            store=store, spec=spec, task_scoring=self.task_scoring)
        _, cap, _ = self._judge_bound(self.plan())
        if self.spec.budget_usd is not None:
            cap = min(cap, max(0.0, self.spec.budget_usd
                               - queries.sweep_spent_usd(ledger, self.sweep_id)))
        result = await self._execute(requests, progress=None, on_planned=None, retry=retry,
                                     signals=signals, resubmit=False, judge_cap_usd=cap)
        status = "stopped_budget" if result.stopped_reason else "finished"
        ledger.write([Ledger.set_sweep_status(result.sweep_id, status,
                                              result.stopped_reason or "")])
        await asyncio.to_thread(judge.record_verdicts, ledger, store, [result.sweep_id])
        return result

    async def _execute(self, planned: list[Request], *,
                       progress: Callable[[RequestOutcome], None] | None,
                       on_planned: Callable[[str, int, int], None] | None,
                       retry: RetryPolicy | None, signals: JobSignals | None,
                       resubmit: bool, judge_cap_usd: float | None = None) -> SweepResult:
        """Record ``planned`` in the ledger and run what is not done yet: the sweep's own
        requests, or with ``judge_cap_usd`` its judge pass's, in the sweep ``<id>.judge``
        under that cap."""
        workbench, ledger, spec = self.workbench, self.workbench.ledger, self.spec
        judging = judge_cap_usd is not None
        sweep_id = judge.judge_sweep_id(self.sweep_id) if judging else self.sweep_id
        budget_usd = judge_cap_usd if judging else spec.budget_usd
        ledger.record_plan(
            Ledger.upsert_sweep(sweep_id, spec.name + judge.SUFFIX if judging else spec.name,
                                Task.JUDGE.value if judging else spec.task.value,
                                spec.model_dump(mode="json"), budget_usd, "running"),
            sweep_id, [r.row() for r in planned])
        done = ledger.succeeded_request_keys([r.request_key for r in planned])
        todo = _unique(r for r in planned if r.request_key not in done)
        if on_planned is not None:
            on_planned(sweep_id, len(planned), len(todo))
        spent = queries.sweep_spent_usd(ledger, sweep_id)
        writer = LedgerWriter(ledger, batch_window_s=workbench.settings.ledger_batch_window_s)
        if workbench.settings.executor == "ray":
            try:
                summary = await run_on_ray(
                    todo, catalog=workbench.catalog, store_url=workbench.store.root,
                    ledger=ledger, writer=writer, sweep_id=sweep_id,
                    concurrency=spec.concurrency, retry=retry, resubmit=resubmit,
                    cap_usd=budget_usd, spent_usd=spent,
                    policy_path=workbench.spend_policy_path,
                    project=spec.project or workbench.settings.project, progress=progress,
                    address=workbench.settings.ray_address)
            finally:
                writer.close()
            return self._result(sweep_id, planned, todo, summary, writer)
        governor = workbench.spend_governor(spec.project)
        budget = Budget(budget_usd, already_spent_usd=spent, governor=governor)
        settings = WebhookSettings.from_env() if signals is None else None
        try:
            async with webhooks_for(workbench.providers, settings) as configured:
                runner = Runner(catalog=workbench.catalog, providers=workbench.providers,
                                writer=writer, store=workbench.store, budget=budget,
                                sweep_id=sweep_id, concurrency=spec.concurrency,
                                retry=retry, on_done=progress,
                                signals=signals if signals is not None else configured,
                                resume=ledger.resume_state([r.request_key for r in todo]),
                                resubmit=resubmit)
                summary = await runner.run(todo)
        finally:
            writer.close()
            if governor is not None:
                await asyncio.to_thread(governor.flush)
        return self._result(sweep_id, planned, todo, summary, writer)

    @staticmethod
    def _result(sweep_id: str, planned: list[Request], todo: list[Request],
                summary: RunSummary, writer: LedgerWriter) -> SweepResult:
        return SweepResult(sweep_id=sweep_id, planned=len(planned),
                           cached=len(planned) - len(todo), outcomes=summary.outcomes,
                           succeeded=summary.count("succeeded"), failed=summary.count("failed"),
                           stopped=summary.count("stopped"),
                           provider_calls=summary.provider_calls,
                           stopped_reason=summary.stopped_reason,
                           stopped_providers=summary.stopped_providers,
                           ledger_commits=writer.commits, ledger_cpu_s=writer.thread_cpu_s)

    async def _run_adaptive(self, planned: list[Request], *,
                            progress: Callable[[RequestOutcome], None] | None,
                            on_planned: Callable[[str, int, int], None] | None,
                            retry: RetryPolicy | None, signals: JobSignals | None,
                            resubmit: bool) -> SweepResult:
        """Products in looks; after each, models significantly worse than the leader are
        dropped (see :mod:`pixellab.adaptive`). A resumed sweep replays the looks it has done
        from the ledger (cached requests, the same drops) and goes on."""

        ledger = self.workbench.ledger
        order = adaptive.interleaved(pd.DataFrame(
            [{"product_id": r.product_id, "category": r.category} for r in planned]))
        alive = list(dict.fromkeys(r.arm for r in planned))
        result = SweepResult(sweep_id=self.sweep_id, planned=0, cached=0)
        recorded: dict[int, list[Drop]] = {}
        for row in ledger.adaptive_drops([self.sweep_id]).itertuples(index=False):
            recorded.setdefault(int(row.look), []).append(Drop(
                arm=str(row.arm), look=int(row.look), products=int(row.products),
                leader=str(row.leader), p_value=float(row.p_value),
                threshold=float(row.threshold),
                difference=Interval(float(row.difference), float(row.difference_low),
                                    float(row.difference_high), int(row.products))))
        chosen: set[str] = set()
        for look, added in adaptive.looks(order):
            new = set(added)  # a look runs its new products only: a failure is retried by
            chosen |= new     # a resume, not by every look
            part = [r for r in planned if r.product_id in new and r.arm in alive]
            result.absorb(await self._execute(part, progress=progress, on_planned=on_planned,
                                              retry=retry, signals=signals,
                                              resubmit=resubmit))
            if result.stopped_reason or len(chosen) == len(order):
                break
            result.scores_written += await asyncio.to_thread(self.score)
            found = recorded.get(look)  # a resumed sweep keeps the drops it made
            if found is None:
                frame = scored_requests(ledger, [self.sweep_id], self.task_scoring)
                found = adaptive.drops(frame[frame["product_id"].isin(chosen)], alive, look)
            ledger.write([Ledger.record_drop(
                self.sweep_id, d.arm, look=d.look, products=d.products, leader=d.leader,
                difference=(d.difference.estimate, d.difference.low, d.difference.high),
                p_value=d.p_value, threshold=d.threshold, reason=d.reason) for d in found])
            result.dropped.extend(found)
            alive = adaptive.remaining(alive, found)
            if len(alive) <= 1:
                break
        result.not_run = len(planned) - result.planned
        return result

    # -- scoring -----------------------------------------------------------------------------

    def score(self, metrics: list[str] | None = None, *, clip: ClipScorer | None = None,
              chunk: int = 256, executor: Executor | None = None) -> int:
        """Score the sweep's outputs not scored yet; returns the number of score rows written.

        Per-output metrics run on ``executor`` (default: the workbench's, threads unless
        ``PIXELLAB_EXECUTOR=ray``; see :mod:`pixellab.executors`), each output a pure
        :func:`~pixellab.scoring.units.measure` whose bytes the worker reads from the store;
        CLIP metrics run batched over a chunk of outputs here. Only this process writes the
        ledger, chunk by chunk, so memory does not grow with the sweep. A CLIP score recorded
        missing because CLIP could not run is retried when it can.
        """
        ledger, store = self.workbench.ledger, self.workbench.store
        task_scoring = self.task_scoring.get(self.spec.task.value)
        kind = kind_for(self.spec.task)
        wanted = list(metrics or (task_scoring.metrics if task_scoring
                                  else kind.default_metrics))
        for metric in wanted:
            if not known_metric(metric):
                raise ConfigError(f"unknown metric {metric!r}", key="metrics")
        if kind.name == "json":  # answers are scored against labels, not decoded as pixels
            return self._score_json([m for m in wanted if m in JSON_METRICS])
        batched = [m for m in wanted if m in BATCHED]
        if batched and clip is None:
            clip = ClipScorer(ClipSettings.from_env(cache_dir=self.workbench.home / "cache"
                                                    / "clip"))
        versions = {m: (clip.version if m in BATCHED and clip is not None
                        else scorer_version(m)) for m in wanted}
        rows = queries.succeeded_outputs(ledger, self.sweep_id)
        have = queries.recorded_scores(ledger, self.sweep_id)
        retry_missing = bool(batched) and clip is not None and clip.unavailable_reason() is None
        products = {p.id: p for p in self.dataset.products}
        clip_reason = clip.unavailable_reason() if clip is not None and batched else None
        clip_runs = clip is not None and bool(batched) and clip_reason is None
        recipe = Recipe(task=self.spec.task.value, output_kind=self.spec.task.output_kind,
                        upscale_factor=self.upscale_factor,
                        marketplaces=self.workbench.marketplaces, store_url=store.root,
                        truth_only=frozenset(task_scoring.truth_only)
                        if task_scoring and not metrics else frozenset(),
                        clip_reason=clip_reason, clip_runs=clip_runs)
        # once per product, not once per output (an upscale input's path is found by hashing
        # the photo)
        inputs: dict[str, Path] = {}
        hashes: dict[str, str] = {}

        def input_of(product: Product) -> Path:
            if product.id not in inputs:
                inputs[product.id] = self.input_path(product)
            return inputs[product.id]

        def source_sha(product: Product) -> str:
            if product.id not in hashes:
                hashes[product.id] = file_sha256(input_of(product))
            return hashes[product.id]

        units: list[ScoreUnit] = []
        seen: set[str] = set()
        for product_id, digest, media_type in rows.itertuples(index=False):
            if digest in seen or product_id not in products:
                continue
            seen.add(digest)
            todo = tuple(m for m in wanted
                         if (key := (digest, m, versions[m])) not in have
                         or (retry_missing and m in BATCHED and have[key]))
            if todo:
                product = products[product_id]
                units.append(ScoreUnit(digest, media_type, product, todo, versions,
                                       input_of(product)))
        step = min(chunk, CLIP_CHUNK) if clip_runs else chunk
        written = 0
        owned = executor is None
        executor = executor or make_executor(self.workbench.settings.executor,
                                             address=self.workbench.settings.ray_address)
        try:
            for start in range(0, len(units), step):
                part = units[start:start + step]
                measured = list(executor.map(functools.partial(measure, recipe), part))
                statements: list[Statement] = []  # deletes first: inserts then merge
                ready = [(unit, done, done.context) for unit, done in zip(part, measured,
                                                                         strict=True)
                         if done.context is not None]
                if clip is not None and ready:
                    clip_scores = clip.score(
                        [ClipItem(unit.digest, ctx.output, caption=caption_for(
                            self.spec.task.value, unit.product.title, unit.product.category),
                            source_sha256=source_sha(unit.product), source=ctx.source,
                            products=done.crops)
                         for unit, done, ctx in ready], batched)
                    for unit, done, _ in ready:
                        for result in clip_scores[unit.digest]:
                            if result.metric not in unit.metrics:
                                continue
                            if have.get((unit.digest, result.metric, result.version)):
                                statements.append(Ledger.forget_missing_score(
                                    unit.digest, result.metric, result.version))
                            done.scores.append(result)
                        done.context = done.crops = None
                    ready.clear()
                for unit, done in zip(part, measured, strict=True):
                    for result in done.scores:
                        statements.append(Ledger.record_score(
                            unit.digest, result.metric, result.version, result.value,
                            result.missing_reason, result.details))
                        written += 1
                del measured
                ledger.write(statements)
                release_freed()  # this chunk's decoded images, before the next chunk's
        finally:
            if owned:
                executor.close()
        return written

    def _score_json(self, wanted: list[str]) -> int:
        """``category_match`` of each analysis against the product's labelled category."""
        ledger = self.workbench.ledger
        if not wanted:
            return 0
        record_analyses(ledger, self.workbench.store,
                        queries.sweep_request_keys(ledger, self.sweep_id))
        rows = queries.analyses_without(ledger, self.sweep_id, "category_match")
        taxonomy = self.workbench.taxonomy
        labels = {p.id: p.category for p in self.dataset.products}
        version = JSON_METRICS["category_match"]
        statements: list[Statement] = []
        for digest, product_id, category in rows.itertuples(index=False):
            label = labels.get(str(product_id))
            if label in taxonomy.categories:
                statements.append(Ledger.record_score(
                    digest, "category_match", version, float(category == label), None,
                    {"answered": category, "labelled": label}))
            else:
                statements.append(Ledger.record_score(
                    digest, "category_match", version, None,
                    f"no ground truth: the product's category {label!r} is not in the "
                    "taxonomy", {"answered": category}))
        ledger.write(statements)
        return len(statements)


def _unique(requests: Iterator[Request] | Any) -> list[Request]:
    seen: set[str] = set()
    unique = []
    for request in requests:
        if request.request_key not in seen:
            seen.add(request.request_key)
            unique.append(request)
    return unique


def _next_version(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else f"{version}.1"
