"""Async execution of requests: limits, retries, timeouts, fallback chains, budget.

The runner decides; adapters translate; the ledger records. For each request it walks the chain:
a model whose credentials are missing, whose provider ran out of credit during the run, or whose
earlier job for the request was paid for without a usable answer is skipped with the reason
recorded; otherwise each attempt reserves its estimated cost, is recorded *before* the provider
is called (on disk, for a paid create), runs under a deadline, and its output is validated before
it counts. A retryable error (rate limit, a job that failed or ran past its deadline) is retried
on the same model with backoff that honours ``retry_after``; a create whose outcome is unknown is
never retried blind (the provider is asked when it can be, see
:class:`~pixellab.providers.base.Reconciling`); anything else, or running out of retries, moves to
the next model. Each attempt is charged by its provider's billing rule
(:mod:`pixellab.billing`). If reserving the next attempt would exceed the budget, the runner stops
starting work, lets in-flight attempts settle, and reports why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from pixellab.background import background_pool
from pixellab.billing import BillingRule, Outcome, Usage
from pixellab.budget import Budget
from pixellab.catalog import Catalog, Model
from pixellab.errors import (
    BudgetExceeded,
    ConfigError,
    ContentRejected,
    DataRemoved,
    InvalidInputImage,
    InvalidOutput,
    MissingCredentials,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pixellab.heap import old_objects_frozen
from pixellab.ledger import Ledger, ResumeState, Row, Statement, now
from pixellab.media import MediaKind, kind_for
from pixellab.providers.base import Job, JobState, Provider, ProviderRequest, Reconciling
from pixellab.requests import Request
from pixellab.store import Store, sha256_hex
from pixellab.tasks import expected_output_size
from pixellab.validate import (
    MEDIA_TYPES,
    ImageCheck,
    read_usable_input,
)
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
    reconcile_timeout_s: float = 30.0
    """How long asking a provider whether an ambiguous create made a job may take."""


class WriteBehind(Protocol):
    """What the runner needs of the ledger's writer (:class:`LedgerWriter` in one process; on
    a cluster, a proxy to the one process that writes, see :mod:`pixellab.cluster`)."""

    def submit(self, statements: Sequence[Statement]) -> asyncio.Future[None]: ...

    def journal(self, row: Row) -> asyncio.Future[None]: ...

    def flush(self) -> None: ...


class Limits(Protocol):
    """Concurrency quotas per provider and per model: an attempt holds one slot of each while
    it talks to the provider."""

    def slot(self, model: Model) -> AbstractAsyncContextManager[None]: ...


class LocalLimits:
    """The quotas of one process: a semaphore per provider and per model."""

    def __init__(self, catalog: Catalog, providers: Iterable[str]) -> None:
        self._providers = {name: asyncio.Semaphore(catalog.provider_settings(name).max_concurrency)
                           for name in providers}
        self._models: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, model: Model) -> Any:
        limit = self._models.get(model.id)
        if limit is None:
            limit = self._models[model.id] = asyncio.Semaphore(model.max_concurrency)
        async with self._providers[model.provider], limit:
            yield


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
    stopped_providers: dict[str, str] = field(default_factory=dict)
    """Providers the run stopped calling, with why (an exhausted quota)."""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def _error_fields(error: BaseException) -> tuple[str, str | None, str]:
    reason = getattr(error, "reason", None)
    return type(error).__name__, reason, str(error) or type(error).__name__


@dataclass(frozen=True)
class _Input:
    """A usable input photo: its bytes (what a provider is sent, and what an output must not
    merely repeat) and what the runner needs to know of its pixels."""

    data: bytes
    size: tuple[int, int]
    format: str | None


_INPUT_CACHE_FILES = 16
_INPUT_CACHE_BYTES = 64 * 1024 * 1024


class Runner:
    """Runs requests against providers and records every attempt through ``writer``."""

    def __init__(self, *, catalog: Catalog, providers: dict[str, Provider], writer: WriteBehind,
                 store: Store, budget: Budget | None = None, sweep_id: str | None = None,
                 concurrency: int = 8, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_done: Callable[[RequestOutcome], None] | None = None,
                 signals: JobSignals | None = None, resume: ResumeState | None = None,
                 resubmit: bool = False, limits: Limits | None = None) -> None:
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
        self.resume = resume or ResumeState({}, {})
        """What earlier runs left (see :meth:`Ledger.resume_state`): attempts a crash cut short
        are finished (by polling their job, or by asking the provider whether the create made
        one) and never silently created again; models whose last job's outcome is unknown or
        whose output the provider deleted are not called again for that request unless
        ``resubmit``."""
        self.resubmit = resubmit
        self._stop: BudgetExceeded | None = None
        self._stopped_providers: dict[str, str] = {}
        self.limits = limits or LocalLimits(catalog, providers)
        self._backoff = (wait_exponential(multiplier=self.retry.initial_wait_s,
                                          max=self.retry.max_wait_s)
                         + wait_random(0, self.retry.initial_wait_s / 2))
        self.provider_calls = 0
        self.max_unconfirmed_writes = max(64, 4 * concurrency)
        """Write-behind bound: how many queued ledger writes may be waiting for their commit
        before workers stop taking new requests (backpressure; memory stays flat)."""
        self._unconfirmed: set[asyncio.Future[None]] = set()
        self._write_error: BaseException | None = None
        self._inputs: OrderedDict[str, tuple[tuple[int, int, int], _Input]] = OrderedDict()
        self._input_bytes = 0

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

        with old_objects_frozen():  # no full collection walks the whole heap meanwhile
            try:
                await asyncio.gather(*(worker() for _ in range(max(1, self.concurrency))))
            finally:
                await self._all_writes_durable()
        summary.stopped_reason = str(self._stop) if self._stop else None
        summary.provider_calls = self.provider_calls
        summary.stopped_providers = dict(self._stopped_providers)
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
        self._track(self.writer.submit(statements))

    def _journal(self, row: Row) -> None:
        """Put ``row`` on disk at once, and in the ledger behind (see
        :meth:`LedgerWriter.journal`): for a paid create's ``submitting`` attempt."""
        if self._write_error is not None:
            raise self._write_error
        self._track(self.writer.journal(row))

    def _track(self, future: asyncio.Future[None]) -> None:
        self._unconfirmed.add(future)
        future.add_done_callback(self._write_confirmed)

    def _write_confirmed(self, future: asyncio.Future[None]) -> None:
        self._unconfirmed.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._write_error = self._write_error or future.exception()

    async def _writes_keep_up(self) -> None:
        """Backpressure: do not start another request while too many writes await a commit.

        The writer gathers write-behind units for up to its batching window; past half the
        bound it is told to commit now, so that workers rarely have to stop for it."""
        if len(self._unconfirmed) >= self.max_unconfirmed_writes // 2:
            self.writer.flush()
        while len(self._unconfirmed) >= self.max_unconfirmed_writes:
            self.writer.flush()
            await asyncio.wait(set(self._unconfirmed), return_when=asyncio.FIRST_COMPLETED)
        if self._write_error is not None:
            raise self._write_error

    async def _all_writes_durable(self) -> None:
        while self._unconfirmed:
            self.writer.flush()
            await asyncio.wait(set(self._unconfirmed))
        if self._write_error is not None:
            raise self._write_error

    # -- one request -------------------------------------------------------------------------

    async def run_request(self, request: Request) -> RequestOutcome:
        outcome = RequestOutcome(request.request_key, "failed")
        try:
            kind = kind_for(request.task)
        except ConfigError as exc:  # a kind this pixellab cannot check: no call is made
            outcome.error_class, outcome.error_reason, outcome.error_message = _error_fields(exc)
            self._finish(request, outcome)
            return outcome
        try:
            if request.input_error is not None:
                raise request.input_error
            source = await self._input(request.image_path)
            angles = [(await self._input(path)).data for path in request.angle_paths]
        except InvalidInputImage as exc:
            outcome.error_class, outcome.error_reason, outcome.error_message = (
                _error_fields(exc))
            self._finish(request, outcome)
            return outcome
        unfinished = self.resume.unfinished.get(request.request_key)
        blocked = {} if self.resubmit else self.resume.blocked.get(request.request_key, {})
        last_error: BaseException | None = None
        for model in request.chain:
            provider = self.providers.get(model.provider)
            missing = (f"provider {model.provider!r} is not configured" if provider is None
                       else provider.missing_credentials())
            skip: ProviderError | None = None
            if missing is not None:
                skip = MissingCredentials(f"{model.id} skipped: {missing}", model_id=model.id)
            elif model.provider in self._stopped_providers:
                skip = QuotaExhausted(f"{model.id} skipped: {model.provider} stopped for this "
                                      f"run: {self._stopped_providers[model.provider]}",
                                      model_id=model.id)
            elif model.id in blocked and not (unfinished and unfinished["model_id"] == model.id):
                skip = _blocked_error(model, blocked[model.id])
            if skip is not None:
                outcome.attempts += 1
                self._record_skip(request, model, outcome.attempts, skip, message=missing)
                last_error = skip
                continue
            assert provider is not None
            expected = expected_output_size(request.task, source.size, request.params,
                                            preserves_size=model.preserves_size)
            megapixels = (expected[0] * expected[1] if expected
                          else source.size[0] * source.size[1]) / 1e6
            provider_request = ProviderRequest(
                request_key=request.request_key, model=model, task=request.task,
                image=source.data,
                image_media_type=MEDIA_TYPES.get(source.format or ""),
                params={**request.params, "prompt": request.prompt_text,
                        **({"angles": angles} if angles else {})})
            try:
                resume = (unfinished if unfinished and unfinished["model_id"] == model.id
                          else None)
                digest = await self._attempt_with_retries(
                    request, model, provider, provider_request, source_bytes=source.data,
                    expected=expected, megapixels=megapixels, outcome=outcome, resume=resume,
                    kind=kind)
            except BudgetExceeded as exc:
                self._stop = self._stop or exc
                outcome.status = "stopped"
                outcome.error_class, outcome.error_reason, outcome.error_message = (
                    _error_fields(exc))
                self._finish(request, outcome)
                return outcome
            except ProviderError as exc:
                last_error = exc
                if isinstance(exc, QuotaExhausted):
                    self._stopped_providers.setdefault(model.provider, str(exc))
                if exc.ends_request:
                    break
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

    async def _input(self, path: str) -> _Input:
        """:func:`read_usable_input`, once per file while it stays unchanged (same size, mtime
        and inode): a sweep runs each product arms × prompts × seeds times in a row, and
        decoding and blank-checking a photo costs 0.3 ms (64×48 PNG) to 9 ms (800² JPEG).
        Only the bytes are kept, for the last few files (bounded in count and bytes)."""
        try:
            stat = os.stat(path)
            signature: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size,
                                                      stat.st_ino)
        except OSError:
            signature = None  # read_usable_input says why
        cached = self._inputs.get(path)
        if cached is not None and cached[0] == signature:
            self._inputs.move_to_end(path)
            return cached[1]
        data, image = await asyncio.to_thread(read_usable_input, path)
        found = _Input(data, image.size, image.format)
        if signature is not None and len(data) <= _INPUT_CACHE_BYTES // 4:
            if (old := self._inputs.pop(path, None)) is not None:
                self._input_bytes -= len(old[1].data)
            self._inputs[path] = (signature, found)
            self._input_bytes += len(data)
            while (len(self._inputs) > _INPUT_CACHE_FILES
                   or self._input_bytes > _INPUT_CACHE_BYTES):
                self._input_bytes -= len(self._inputs.popitem(last=False)[1][1].data)
        return found

    def _finish(self, request: Request, outcome: RequestOutcome) -> None:
        pending, outcome.unwritten = outcome.unwritten, []
        self._write_behind([*pending, Ledger.finish_request(
            request.request_key, status=outcome.status, model_id=outcome.model_id,
            output_sha256=outcome.output_sha256, error_class=outcome.error_class,
            error_reason=outcome.error_reason, error_message=outcome.error_message)])

    def _record_skip(self, request: Request, model: Model, attempt_no: int,
                     error: ProviderError, *, message: str | None = None) -> None:
        attempt_id = uuid.uuid4().hex
        error_class, reason, text = _error_fields(error)
        message = message or text
        self._write_behind([
            Ledger.start_attempt(attempt_id, request.request_key, self.sweep_id, attempt_no,
                                 model.provider, model.id),
            Ledger.finish_attempt(attempt_id, status="skipped", latency_s=0.0,
                                  error_class=error_class, error_reason=reason,
                                  error_message=message, retryable=False),
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
                       outcome: RequestOutcome, kind: MediaKind,
                       resume: dict[str, Any] | None = None) -> str:
        """One call to one model, recorded and charged by the provider's billing rule.

        Money safety: a paid create is recorded as ``submitting`` and that record is on disk
        (the writer's journal) *before* the call leaves the process, and the job id is queued
        for the ledger the moment it is known; so a kill at any point leaves either a job id
        to poll or a ``submitting`` attempt that the next run settles (asks the provider, or
        charges it as unknown) instead of creating the job again."""
        estimate_usd = model.estimate_usd(megapixels=megapixels)
        estimate_credits = model.estimate_credits(megapixels=megapixels)
        rule = self.catalog.billing(model)
        guarded = rule.ever_billed and estimate_usd > 0  # else a crash has nothing to lose
        reservation = self.budget.reserve(estimate_usd, estimate_credits, model_id=model.id)
        outcome.attempts += 1
        started = time.monotonic()
        job: Job | None = None
        if resume is not None:  # a create a crash cut short: settle it, never create blindly
            attempt_id = resume["attempt_id"]
            since = resume["started_at"]
        else:
            attempt_id = uuid.uuid4().hex
            since = now()
            start = Ledger.start_attempt(attempt_id, request.request_key, self.sweep_id,
                                         outcome.attempts, model.provider, model.id,
                                         status="submitting" if guarded else "started")
            if guarded:  # on disk before the create leaves (the writer's journal)
                self._journal(start)
            else:
                self._write_behind([start])
        provider_request = dataclasses.replace(provider_request, attempt_id=attempt_id)
        try:
            async with self.limits.slot(model):
                try:
                    async with asyncio.timeout(model.timeout_s):
                        if resume is not None and resume["provider_job_id"]:
                            job = Job(resume["provider_job_id"], JobState.RUNNING,
                                      context=resume["provider_context"])
                        else:
                            if resume is not None:
                                job = await self._find_job(provider, provider_request, since)
                            if job is None:
                                self.provider_calls += 1
                                try:
                                    job = await provider.submit(provider_request)
                                except OutcomeUnknown as exc:
                                    job = await self._settle_unknown(
                                        provider, provider_request, since, exc)
                            if guarded and not job.state.terminal:
                                self._write_behind([Ledger.set_provider_job(
                                    attempt_id, job.provider_job_id, job.context)])
                        while not job.state.terminal:
                            await self._until_next_poll(model, job)
                            job = await self._poll(provider, job)
                except TimeoutError:
                    if job is None:
                        raise OutcomeUnknown(
                            f"{model.id}: no answer to the create call within "
                            f"{model.timeout_s:g} s; the job may exist and bill",
                            model_id=model.id) from None
                    await provider.cancel(job)
                    job = await self._after_cancel(provider, job)
                    cancelled = job.state is JobState.CANCELLED or (
                        job.error is not None and job.error.outcome == "canceled")
                    if cancelled or not job.state.terminal:
                        # Not seen cancelled: it may have finished, and billed, meanwhile.
                        raise ProviderTimeout(
                            f"{model.id} did not finish within {model.timeout_s:g} s; the job "
                            + ("was cancelled" if cancelled else "was asked to cancel"),
                            model_id=model.id, provider_job_id=job.provider_job_id,
                            outcome="canceled" if cancelled else "succeeded") from None
                    # It ended before the cancel landed: a failure is charged as one, and a
                    # finished job is paid for, so its output is used.
            if job.error is not None:
                raise job.error
            if job.output is None:
                raise InvalidOutput("no_output", f"{model.id} finished without an output",
                                    model_id=model.id)
            output = job.output
            check, stored, digest = await asyncio.get_running_loop().run_in_executor(
                background_pool(), self._check_and_store, kind, request, output.data,
                output.media_type, expected, source_bytes)
            if not check.ok:
                raise InvalidOutput(check.reason or "invalid", f"{model.id}: {check.message}",
                                    model_id=model.id, provider_job_id=job.provider_job_id)
            media_type = check.media_type or output.media_type
        except ProviderError as exc:
            billed = _billed_outcome(exc, job)
            usage = job.usage if job is not None else None
            usd, credits, estimated = self._charge(model, rule, billed, usage, estimate_usd,
                                                   estimate_credits)
            self.budget.settle(reservation, usd, credits)
            error_class, reason, message = _error_fields(exc)
            statements = [Ledger.finish_attempt(
                attempt_id, status="failed", latency_s=time.monotonic() - started,
                credits=credits, usd=usd, cost_estimated=estimated,
                provider_job_id=job.provider_job_id if job else exc.provider_job_id,
                error_class=error_class,
                error_reason=reason, error_message=message, retryable=exc.retryable)]
            if usd > 0 or credits > 0:
                statements.append(Ledger.record_cost(attempt_id, request.request_key,
                                                     self.sweep_id, model.provider, model.id,
                                                     credits, usd, estimated))
            self._write_behind(statements)
            raise
        except BaseException:
            exists = job is not None or resume is not None
            kept = exists and guarded  # the job may exist and bill: charge the estimate
            self.budget.settle(reservation, estimate_usd if kept else 0.0,
                               estimate_credits if kept else 0.0)
            raise
        usd, credits, estimated = self._charge(model, rule, "succeeded", output.usage,
                                               estimate_usd, estimate_credits)
        self.budget.settle(reservation, usd, credits)
        # Written together with the request's own final row, in one commit (see _finish).
        outcome.unwritten.extend([
            Ledger.record_output(digest, media_type, check.width, check.height, len(stored),
                                 check.duration_s),
            Ledger.finish_attempt(
                attempt_id, status="succeeded", latency_s=time.monotonic() - started,
                credits=credits, usd=usd, cost_estimated=estimated,
                output_sha256=digest, provider_job_id=job.provider_job_id),
            Ledger.record_cost(attempt_id, request.request_key, self.sweep_id, model.provider,
                               model.id, credits, usd, estimated),
        ])
        return digest

    def _check_and_store(self, kind: MediaKind, request: Request, data: bytes,
                         declared_media_type: str, expected: tuple[int, int] | None,
                         source: bytes) -> tuple[ImageCheck, bytes, str]:
        """Check an output and, if it passes, store it: in a low-priority worker thread
        (:mod:`pixellab.background`: decoding a large image would stall every other request,
        and even a small one's check, done at the loop's priority, delays the sends behind it),
        in one hop rather than two (a hop costs ~0.1 ms of CPU). The digest is empty for an
        output that failed its check."""
        check = kind.check(data, task=request.task, declared_media_type=declared_media_type,
                           expected_size=expected, source=source, params=request.params)
        if not check.ok:
            return check, b"", ""
        stored = kind.stored_form(request.request_key, data)
        return check, stored, self.store.put(stored, check.media_type or declared_media_type)

    @staticmethod
    def _charge(model: Model, rule: BillingRule, billed: Outcome | Literal["unknown"] | None,
                usage: Usage | None,
                estimate_usd: float, estimate_credits: float) -> tuple[float, float, bool]:
        """(USD, credits, estimated) for an attempt: nothing when no job was made or the
        provider does not bill this outcome; what the reported usage costs when it says;
        otherwise the estimate (an upper bound, so the ledger never under-counts)."""
        charge = "billed" if billed == "unknown" else (
            "free" if billed is None else rule.charge(billed))
        if charge == "free":
            return 0.0, 0.0, False
        if billed != "unknown":
            usd = model.pricing.cost_usd(usage)
            if usd is not None:
                return usd, model.pricing.credits_for(usd), False
            if charge == "usage" and billed != "succeeded" and model.pricing.per_output:
                return 0.0, 0.0, False  # billed per output, and it delivered none
        return estimate_usd, estimate_credits, True

    async def _poll(self, provider: Provider, job: Job) -> Job:
        """One poll. A poll that fails transiently (a 5xx, a reset) says nothing about the job,
        which keeps running and billing: it is polled again after a backoff, within the model's
        deadline, rather than failing the attempt and creating the job a second time."""
        failures = 0
        while True:
            try:
                return await provider.poll(job)
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                wait = (exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after
                        else min(self.retry.initial_wait_s * 2 ** (failures - 1),
                                 self.retry.max_wait_s))
                await self._sleep(wait)

    @staticmethod
    async def _after_cancel(provider: Provider, job: Job, wait_s: float = 5.0) -> Job:
        """The job as it stands once asked to cancel: cancelled (with what it used: a
        cancelled Replicate prediction reports the compute it billed), or already finished
        before the cancel landed; the job unchanged if the provider does not say quickly."""
        try:
            async with asyncio.timeout(wait_s):
                return await provider.poll(job)
        except (ProviderError, TimeoutError):
            return job

    async def _find_job(self, provider: Provider, request: ProviderRequest,
                        since: datetime) -> Job | None:
        """Whether a create that may have left made a job: the job, or None when the provider
        says it made none. A provider that cannot tell makes it :class:`OutcomeUnknown`."""
        if not isinstance(provider, Reconciling):
            raise OutcomeUnknown(
                f"{request.model.id}: a create was in flight when the previous run stopped; "
                f"{provider.name} cannot be asked whether it made a job", model_id=request.model.id)
        try:
            async with asyncio.timeout(self.retry.reconcile_timeout_s):
                return await provider.find_job(request, since)
        except TimeoutError:
            raise OutcomeUnknown(f"{request.model.id}: {provider.name} did not say within "
                                 f"{self.retry.reconcile_timeout_s:g} s whether a create made a "
                                 "job", model_id=request.model.id) from None

    async def _settle_unknown(self, provider: Provider, request: ProviderRequest,
                              since: datetime, error: OutcomeUnknown) -> Job:
        """A create answered ambiguously: adopt the job it made, or, when the provider says it
        made none, fail retryably (a retry cannot pay twice)."""
        if not isinstance(provider, Reconciling):
            raise error
        job = await self._find_job(provider, request, since)
        if job is None:
            raise ProviderUnavailable(f"{request.model.id}: the create failed and "
                                      f"{provider.name} made no job for it",
                                      model_id=request.model.id)
        return job

    async def _until_next_poll(self, model: Model, job: Job) -> None:
        """Polling is the truth; a webhook only makes the next poll come sooner. With webhooks
        on, the poll interval stretches by ``webhook_poll_factor``."""
        if self.signals is None:
            await self._sleep(self.retry.poll_interval_s)
            return
        await self.signals.wait(model.provider, job.provider_job_id,
                                self.retry.poll_interval_s * self.retry.webhook_poll_factor)


def _billed_outcome(error: ProviderError, job: Job | None) -> Outcome | Literal["unknown"] | None:
    """What happened to the job for billing (see :data:`pixellab.billing.Outcome`):
    ``unknown`` when it may or may not exist, None when the create was refused and no job
    exists."""
    if isinstance(error, OutcomeUnknown):
        return "unknown"
    if error.outcome is not None:
        return error.outcome  # type: ignore[return-value]
    if job is None:
        return None
    if isinstance(error, ContentRejected):
        return "rejected"
    if isinstance(error, InvalidOutput | DataRemoved):
        return "succeeded"
    if isinstance(error, ProviderTimeout):
        return "timeout"
    return "failed"


def _blocked_error(model: Model, reason: str) -> ProviderError:
    what = ("its output was deleted by the provider before it was fetched"
            if reason == DataRemoved.reason else "its outcome is unknown (it may have billed)")
    message = (f"{model.id} skipped: an earlier job for this request was paid for and {what}; "
               "`pixellab sweep resume NAME --resubmit` creates it again")
    if reason == DataRemoved.reason:
        return DataRemoved(message, model_id=model.id)
    return OutcomeUnknown(message, model_id=model.id)




__all__ = ["Request", "RequestOutcome", "RetryPolicy", "RunSummary", "Runner", "sha256_hex"]
