"""Async execution of requests: limits, retries, timeouts, fallback chains, budget.

The runner decides; adapters translate; the ledger records. For each request it walks the chain:
a model whose credentials are missing is skipped with the reason recorded; otherwise each attempt
reserves its estimated cost, is recorded *before* the provider is called, runs under a deadline,
and its output is validated before it counts. A retryable error (rate limit, timeout, 5xx) is
retried on the same model with backoff that honours ``retry_after``; anything else, or running out
of retries, moves to the next model. If reserving the next attempt would exceed the budget, the
runner stops starting work, lets in-flight attempts settle, and reports why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from pixellab.budget import Budget
from pixellab.catalog import Catalog, Model
from pixellab.errors import (
    BudgetExceeded,
    InvalidImage,
    InvalidOutput,
    MissingCredentials,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from pixellab.ledger import Ledger, LedgerWriter, Statement
from pixellab.providers.base import Job, JobState, Provider, ProviderRequest
from pixellab.store import Store, envelope_json, sha256_hex
from pixellab.tasks import Task, expected_output_size
from pixellab.validate import MEDIA_TYPES, check_image_output, check_json_output, decode_image
from pixellab.webhooks import JobSignals


@dataclass(frozen=True)
class RetryPolicy:
    """How many times one model is tried, and how long to wait in between.

    ``max_retry_after_s`` caps how long we obey a provider's Retry-After: asking us to wait longer
    is treated like any other failure and the chain moves on rather than stalling the sweep.
    """

    max_attempts: int = 3
    initial_wait_s: float = 0.5
    max_wait_s: float = 20.0
    max_retry_after_s: float = 60.0
    poll_interval_s: float = 1.0
    webhook_poll_factor: float = 4.0


@dataclass(frozen=True)
class Request:
    """One (product, task, chain, prompt, params, seed): what the runner executes.

    ``request_key`` hashes everything that determines the output (see :mod:`pixellab.sweep`).
    """

    request_key: str
    product_id: str
    category: str
    task: Task
    chain: tuple[Model, ...]
    image_path: str
    params: dict[str, Any] = field(default_factory=dict)
    prompt_id: str | None = None
    prompt_text: str | None = None


@dataclass
class RequestOutcome:
    request_key: str
    status: str  # succeeded | failed | stopped
    model_id: str | None = None
    output_sha256: str | None = None
    error_class: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    attempts: int = 0
    unwritten: list[Statement] = field(default_factory=list, repr=False)
    """Statements of the winning attempt, committed with the request's final row."""


@dataclass
class RunSummary:
    outcomes: list[RequestOutcome] = field(default_factory=list)
    stopped_reason: str | None = None
    provider_calls: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def _error_fields(error: BaseException) -> tuple[str, str | None, str]:
    reason = getattr(error, "reason", None)
    return type(error).__name__, reason, str(error) or type(error).__name__


class Runner:
    """Runs requests against providers and records every attempt through ``writer``."""

    def __init__(self, *, catalog: Catalog, providers: dict[str, Provider], writer: LedgerWriter,
                 store: Store, budget: Budget | None = None, sweep_id: str | None = None,
                 concurrency: int = 8, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_done: Callable[[RequestOutcome], None] | None = None,
                 signals: JobSignals | None = None,
                 unfinished: dict[str, dict[str, Any]] | None = None) -> None:
        self.catalog = catalog
        self.providers = providers
        self.writer = writer
        self.store = store
        self.budget = budget or Budget(None)
        self.sweep_id = sweep_id
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._on_done = on_done
        self.signals = signals
        self.unfinished = unfinished or {}
        """request_key → an attempt a crashed run left with a known job id (see
        :meth:`Ledger.unfinished_attempts`): resumed by polling, never re-created."""
        self._stop: BudgetExceeded | None = None
        self._provider_limits = {
            name: asyncio.Semaphore(catalog.provider_settings(name).max_concurrency)
            for name in providers}
        self._model_limits: dict[str, asyncio.Semaphore] = {}
        self._backoff = (wait_exponential(multiplier=self.retry.initial_wait_s,
                                          max=self.retry.max_wait_s)
                         + wait_random(0, self.retry.initial_wait_s / 2))
        self.provider_calls = 0
        self.max_unconfirmed_writes = max(64, 4 * concurrency)
        """Write-behind bound: how many queued ledger writes may be waiting for their commit
        before workers stop taking new requests (backpressure; memory stays flat)."""
        self._unconfirmed: set[asyncio.Future[None]] = set()
        self._write_error: BaseException | None = None

    # -- the sweep level ---------------------------------------------------------------------

    async def run(self, requests: Iterable[Request]) -> RunSummary:
        """Run every request with at most ``concurrency`` in flight; results stream to the ledger,
        nothing here grows with the number of requests but the list of outcomes."""
        summary = RunSummary()
        iterator = iter(requests)

        async def worker() -> None:
            for request in iterator:
                await self._writes_keep_up()
                if self._stop is not None:
                    outcome = RequestOutcome(request.request_key, "stopped",
                                             error_class="BudgetExceeded",
                                             error_message=str(self._stop))
                    self._write_behind([Ledger.finish_request(
                        request.request_key, status="stopped", error_class="BudgetExceeded",
                        error_message=str(self._stop))])
                else:
                    outcome = await self.run_request(request)
                summary.outcomes.append(outcome)
                if self._on_done is not None:
                    self._on_done(outcome)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, self.concurrency))))
        finally:
            await self._all_writes_durable()
        summary.stopped_reason = str(self._stop) if self._stop else None
        summary.provider_calls = self.provider_calls
        return summary

    # -- the ledger, written behind ---------------------------------------------------------

    def _write_behind(self, statements: Sequence[Statement]) -> None:
        """Queue one atomic unit of ledger writes without waiting for its commit.

        Waiting would not make anything safer: the window in which a kill loses a fact is the
        time from the provider's answer to the commit, whoever waits. Units commit in order, so
        an attempt's start always lands before its end. Waiting would only put a group commit
        (tens of ms under load) on every request's critical path, twice.
        """
        if self._write_error is not None:
            raise self._write_error
        future = self.writer.submit(statements)
        self._unconfirmed.add(future)
        future.add_done_callback(self._write_confirmed)

    def _write_confirmed(self, future: asyncio.Future[None]) -> None:
        self._unconfirmed.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._write_error = self._write_error or future.exception()

    async def _writes_keep_up(self) -> None:
        """Backpressure: do not start another request while too many writes await a commit."""
        while len(self._unconfirmed) >= self.max_unconfirmed_writes:
            await asyncio.wait(set(self._unconfirmed), return_when=asyncio.FIRST_COMPLETED)
        if self._write_error is not None:
            raise self._write_error

    async def _all_writes_durable(self) -> None:
        while self._unconfirmed:
            await asyncio.wait(set(self._unconfirmed))
        if self._write_error is not None:
            raise self._write_error

    # -- one request -------------------------------------------------------------------------

    async def run_request(self, request: Request) -> RequestOutcome:
        outcome = RequestOutcome(request.request_key, "failed")
        try:
            image_bytes = await asyncio.to_thread(_read_bytes, request.image_path)
            source = await asyncio.to_thread(decode_image, image_bytes)
        except (OSError, InvalidImage) as exc:
            reason = getattr(exc, "reason", "unreadable")
            outcome.error_class = "InvalidInputImage"
            outcome.error_reason = reason
            outcome.error_message = f"{request.image_path}: {exc}"
            self._finish(request, outcome)
            return outcome
        unfinished = self.unfinished.get(request.request_key)
        last_error: BaseException | None = None
        for model in request.chain:
            provider = self.providers.get(model.provider)
            missing = (f"provider {model.provider!r} is not configured" if provider is None
                       else provider.missing_credentials())
            if missing is not None:
                outcome.attempts += 1
                self._record_skip(request, model, outcome.attempts, missing)
                last_error = MissingCredentials(f"{model.id} skipped: {missing}",
                                                model_id=model.id)
                continue
            assert provider is not None
            expected = expected_output_size(request.task, source.size, request.params,
                                            preserves_size=model.preserves_size)
            megapixels = (expected[0] * expected[1] if expected
                          else source.width * source.height) / 1e6
            provider_request = ProviderRequest(
                request_key=request.request_key, model=model, task=request.task,
                image=image_bytes,
                image_media_type=MEDIA_TYPES.get(source.format or ""),
                params={**request.params, "prompt": request.prompt_text})
            try:
                resume = (unfinished if unfinished and unfinished["model_id"] == model.id
                          else None)
                digest = await self._attempt_with_retries(
                    request, model, provider, provider_request, source_bytes=image_bytes,
                    expected=expected, megapixels=megapixels, outcome=outcome, resume=resume)
            except BudgetExceeded as exc:
                self._stop = self._stop or exc
                outcome.status = "stopped"
                outcome.error_class, outcome.error_reason, outcome.error_message = (
                    _error_fields(exc))
                self._finish(request, outcome)
                return outcome
            except ProviderError as exc:
                last_error = exc
                continue
            outcome.status = "succeeded"
            outcome.model_id = model.id
            outcome.output_sha256 = digest
            self._finish(request, outcome)
            return outcome
        if last_error is not None:
            outcome.error_class, outcome.error_reason, outcome.error_message = (
                _error_fields(last_error))
        else:
            outcome.error_class, outcome.error_message = "ConfigError", "empty chain"
        self._finish(request, outcome)
        return outcome

    def _finish(self, request: Request, outcome: RequestOutcome) -> None:
        pending, outcome.unwritten = outcome.unwritten, []
        self._write_behind([*pending, Ledger.finish_request(
            request.request_key, status=outcome.status, model_id=outcome.model_id,
            output_sha256=outcome.output_sha256, error_class=outcome.error_class,
            error_reason=outcome.error_reason, error_message=outcome.error_message)])

    def _record_skip(self, request: Request, model: Model, attempt_no: int,
                           reason: str) -> None:
        attempt_id = uuid.uuid4().hex
        self._write_behind([
            Ledger.start_attempt(attempt_id, request.request_key, self.sweep_id, attempt_no,
                                 model.provider, model.id),
            Ledger.finish_attempt(attempt_id, status="skipped", latency_s=0.0,
                                  error_class="MissingCredentials", error_message=reason,
                                  retryable=False),
        ])

    # -- one model, with retries ---------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, ProviderError) or not error.retryable:
            return False
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after <= self.retry.max_retry_after_s
        return True

    async def _attempt_with_retries(self, request: Request, model: Model, provider: Provider,
                                    provider_request: ProviderRequest, **kwargs: Any) -> str:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        resume = kwargs.pop("resume", None)
        async for attempt in retrying:
            with attempt:
                pending, resume = resume, None
                return await self._attempt(request, model, provider, provider_request,
                                           resume=pending, **kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, request: Request, model: Model, provider: Provider,
                       provider_request: ProviderRequest, *, source_bytes: bytes,
                       expected: tuple[int, int] | None, megapixels: float,
                       outcome: RequestOutcome, resume: dict[str, Any] | None = None) -> str:
        estimate_usd = model.estimate_usd(megapixels=megapixels)
        estimate_credits = model.estimate_credits(megapixels=megapixels)
        reservation = self.budget.reserve(estimate_usd)
        outcome.attempts += 1
        started = time.monotonic()
        job: Job | None = None
        charged = False
        if resume is not None:  # a job created before a crash: poll it, never create a second
            attempt_id = resume["attempt_id"]
            job = Job(resume["provider_job_id"], JobState.RUNNING,
                      context=resume["provider_context"])
            charged = True
        else:
            attempt_id = uuid.uuid4().hex
            self._write_behind([Ledger.start_attempt(
                attempt_id, request.request_key, self.sweep_id, outcome.attempts,
                model.provider, model.id)])
        try:
            async with self._provider_limits[model.provider], self._model_limit(model):
                try:
                    async with asyncio.timeout(model.timeout_s):
                        if job is None:
                            self.provider_calls += 1
                            job = await provider.submit(provider_request)
                            charged = True
                            if not job.state.terminal:  # a synchronous API has nothing to resume
                                self._write_behind([Ledger.set_provider_job(
                                    attempt_id, job.provider_job_id, job.context)])
                        while not job.state.terminal:
                            await self._until_next_poll(model, job)
                            job = await provider.poll(job)
                except TimeoutError:
                    if job is not None:
                        await provider.cancel(job)
                        raise ProviderTimeout(
                            f"{model.id} did not finish within {model.timeout_s:g} s",
                            model_id=model.id, provider_job_id=job.provider_job_id) from None
                    raise OutcomeUnknown(
                        f"{model.id}: no answer to the create call within "
                        f"{model.timeout_s:g} s; the job may exist and bill",
                        model_id=model.id) from None
            if job.error is not None:
                raise job.error
            if job.output is None:
                raise InvalidOutput("no_output", f"{model.id} finished without an output",
                                    model_id=model.id)
            output = job.output
            answers_json = request.task.output_kind == "json"
            if answers_json:
                check = await asyncio.to_thread(check_json_output, output.data,
                                                request.task.value)
            else:
                check = await asyncio.to_thread(
                    check_image_output, output.data, declared_media_type=output.media_type,
                    expected_size=expected, source=source_bytes,
                    require_alpha=request.task is Task.REMOVE_BACKGROUND)
            if not check.ok:
                raise InvalidOutput(check.reason or "invalid", f"{model.id}: {check.message}",
                                    model_id=model.id, provider_job_id=job.provider_job_id)
            media_type = check.media_type or output.media_type
            stored = (envelope_json(request.request_key, output.data) if answers_json
                      else output.data)
            digest = await asyncio.to_thread(self.store.put, stored, media_type)
        except ProviderError as exc:
            charged = charged or isinstance(exc, OutcomeUnknown)
            usd = estimate_usd if charged else 0.0
            credits = estimate_credits if charged else 0.0
            self.budget.settle(reservation, usd)
            error_class, reason, message = _error_fields(exc)
            statements = [Ledger.finish_attempt(
                attempt_id, status="failed", latency_s=time.monotonic() - started,
                credits=credits, usd=usd, cost_estimated=True,
                provider_job_id=job.provider_job_id if job else None, error_class=error_class,
                error_reason=reason, error_message=message, retryable=exc.retryable)]
            if charged:
                statements.append(Ledger.record_cost(attempt_id, request.request_key,
                                                     self.sweep_id, model.provider, model.id,
                                                     credits, usd, True))
            self._write_behind(statements)
            raise
        except BaseException:
            self.budget.settle(reservation, estimate_usd if charged else 0.0)
            raise
        reported = output.reported_cost_usd
        usd = reported if reported is not None else estimate_usd
        credits = estimate_credits
        if reported is not None and model.pricing.usd_per_unit > 0:
            credits = reported / model.pricing.usd_per_unit * model.pricing.credits_per_unit
        self.budget.settle(reservation, usd)
        # Written together with the request's own final row, in one commit (see _finish).
        outcome.unwritten.extend([
            Ledger.record_output(digest, media_type, check.width, check.height, len(stored)),
            Ledger.finish_attempt(
                attempt_id, status="succeeded", latency_s=time.monotonic() - started,
                credits=credits, usd=usd, cost_estimated=reported is None,
                output_sha256=digest, provider_job_id=job.provider_job_id),
            Ledger.record_cost(attempt_id, request.request_key, self.sweep_id, model.provider,
                               model.id, credits, usd, reported is None),
        ])
        return digest

    async def _until_next_poll(self, model: Model, job: Job) -> None:
        """Polling is the truth; a webhook only makes the next poll come sooner. With webhooks
        on, the poll interval stretches by ``webhook_poll_factor``."""
        if self.signals is None:
            await self._sleep(self.retry.poll_interval_s)
            return
        await self.signals.wait(model.provider, job.provider_job_id,
                                self.retry.poll_interval_s * self.retry.webhook_poll_factor)

    def _model_limit(self, model: Model) -> asyncio.Semaphore:
        limit = self._model_limits.get(model.id)
        if limit is None:
            limit = self._model_limits[model.id] = asyncio.Semaphore(model.max_concurrency)
        return limit


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


__all__ = ["Request", "RequestOutcome", "RetryPolicy", "RunSummary", "Runner", "sha256_hex"]
