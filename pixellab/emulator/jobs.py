"""Job state shared by the three providers: the job life cycle and its final bill.

A job is created when a create call is accepted, then runs as an asyncio task on the
emulator's loop: ``queued`` for the first part of its simulated time (plus what is left of the
model's cold start), ``processing`` for the rest while the image (or the video clip,
:mod:`pixellab.emulator.video`) is made in a worker thread, then ``succeeded``, ``failed`` or
``canceled``. Provider modules only translate this state
into their wire shapes (Replicate ``starting/processing/...``, fal ``IN_QUEUE/IN_PROGRESS/
COMPLETED``, OpenAI's synchronous response).

Nothing is charged at create: a job's bill is settled once, when it becomes terminal, by the
provider's published rule for its outcome (:mod:`pixellab.emulator.billing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pixellab.emulator.billing import BILLING_RULES, Charge, Outcome, Price, price_for, settle
from pixellab.emulator.drift import DEFAULT_HUE_SHIFT, drift
from pixellab.emulator.faults import Fault
from pixellab.emulator.files import FileStore, StoredFile
from pixellab.emulator.imaging import (
    EmulatedModelError,
    blank_like,
    choose_operation,
    corrupt_png,
    encode,
    render,
)
from pixellab.emulator.video import (
    VIDEO_FAULTS,
    VideoInputError,
    VideoPlan,
    plan_for,
    render_clip,
)

__all__ = [
    "CreateHook",
    "Job",
    "JobEngine",
    "JobRecord",
    "Listener",
]

_CONTENT_ERRORS = {
    "replicate": "NSFW content detected. Try running it again, or try a different prompt.",
    "fal": "The content could not be processed because it was flagged by a content checker.",
    "openai": "Your request was rejected by the safety system.",
}

FAL_MAX_RUNNER_ATTEMPTS = 10
"""fal retries a queued request on a new runner up to 10 times
(https://docs.fal.ai/model-apis/model-endpoints/reliability)."""


def _is_file_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("data:", "http://", "https://"))


def find_input_url(params: dict[str, Any]) -> str | None:
    """The URL of the input image in a request's input, if it has one.

    Any string value (or list element) that is a ``data:``/``http(s):`` URL counts; keys that
    name a mask or a reference come after the others, so ``image``/``image_url``/``input_image``
    win over ``mask``.
    """
    found: list[tuple[int, str]] = []
    for key, value in params.items():
        rank = 1 if any(word in key.lower() for word in ("mask", "reference", "style")) else 0
        values = value if isinstance(value, list) else [value]
        found.extend((rank, v) for v in values if _is_file_ref(v))
    found.sort(key=lambda item: item[0])
    return found[0][1] if found else None


def sanitize(value: Any) -> Any:
    """A JSON-able copy of a request input with payloads elided (data URIs, bytes)."""
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and value.startswith("data:") and len(value) > 80:
        header = value.partition(",")[0]
        return f"{header},<{len(value)} chars>"
    return value


@dataclass(frozen=True)
class JobRecord:
    """An accepted job, as :meth:`Emulator.creates` reports it.

    ``status`` uses one vocabulary for every provider: ``queued``, ``processing``, ``succeeded``,
    ``failed``, ``canceled``. ``input`` is the request input with data URIs and bytes elided.
    ``fault`` names the fault action the create call consumed, if any. ``cost_usd`` is what the
    provider finally bills for the job: 0 until it is terminal, then its settled bill (0 when
    the outcome is not billed); ``billing`` names the rule that settled it
    (``provider.outcome.charge``, None while running).
    """

    provider: str
    job_id: str
    model: str
    input: dict[str, Any]
    status: str
    created_at: float
    cost_usd: float
    fault: str | None = None
    billing: str | None = None
    completed_at: float | None = None


Listener = Callable[["Job"], Coroutine[Any, Any, None]]
CreateHook = Callable[[JobRecord], None]
"""Called with the record of each accepted job-creating call, before its response is sent."""


@dataclass
class Job:
    """Live state of one job (mutated only on the emulator's event loop)."""

    id: str
    provider: str
    model: str
    operation: str
    input: dict[str, Any]
    params: dict[str, Any]
    fault: Fault | None
    n_outputs: int
    output_format: str
    price: Price
    created_at: float
    official: bool = False
    cost_usd: float = 0.0
    bill_rule: str | None = None
    usage: dict[str, float] = field(default_factory=dict)
    usage_fn: Callable[[Job], dict[str, float]] | None = None
    start_timeout: float | None = None
    source_url: str | None = None
    status: str = "queued"
    started_at: float | None = None
    completed_at: float | None = None
    outputs: list[StoredFile] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None  # "failure" | "content" | "canceled" | "timeout" | "runner"
    logs: list[str] = field(default_factory=list)
    queue_s: float = 0.0
    run_s: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: list[Listener] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    video: VideoPlan | None = None
    """The clip a video job makes (its ``seconds`` are what a per-second price bills)."""

    @property
    def action(self) -> str | None:
        """The fault action this job carries, if any."""
        return self.fault.action if self.fault else None

    @property
    def terminal(self) -> bool:
        """Whether the job has finished (succeeded, failed or canceled)."""
        return self.status in ("succeeded", "failed", "canceled")

    @property
    def predict_time(self) -> float | None:
        """Simulated processing time in seconds, once the job has finished."""
        if self.started_at is None or self.completed_at is None:
            return None
        return round(self.completed_at - self.started_at, 4)

    @property
    def progress(self) -> int:
        """Approximate completion percentage (OpenAI's video ``progress``): 0 while queued, the
        share of the simulated processing time spent, 100 once it succeeded."""
        if self.status == "succeeded":
            return 100
        if self.status == "queued" or self.started_at is None:
            return 0
        end = self.completed_at or time.time()
        return max(0, min(99, int(100 * (end - self.started_at) / max(self.run_s, 1e-6))))

    @property
    def outcome(self) -> Outcome | None:
        """The billing outcome of a terminal job (None while it runs)."""
        if not self.terminal:
            return None
        if self.status == "succeeded":
            return "succeeded"
        if self.status == "canceled":
            return "canceled"
        return {"content": "content_rejected", "timeout": "timeout"}.get(
            self.error_kind or "", "failed")  # type: ignore[return-value]

    def record(self) -> JobRecord:
        """A frozen snapshot for :meth:`Emulator.creates`."""
        return JobRecord(self.provider, self.id, self.model, self.input, self.status,
                         self.created_at, self.cost_usd, self.action, self.bill_rule,
                         self.completed_at)


class JobEngine:
    """Creates, bills, runs and cancels jobs; owns the simulated clock.

    Timing of a job: ``latency_s`` (``video_latency_s`` for a video job, minutes in reality) +
    uniform(0, ``jitter_s``), plus whatever is left of the model's ``cold_start_s`` boot
    (started by its first job; spent while queued). The first 30 % of the warm time (and the
    boot) is the queued phase, the rest is processing; the output is made in a worker thread
    during processing, and the job finishes when both the simulated time and the real work are
    over. ``video_fps`` and ``video_max_side`` lower the frame rate and cap the size of the clips
    rendered (None: the model's own), so tests stay fast; the clip's duration and aspect ratio,
    and its bill, stay what was asked.
    """

    def __init__(self, files: FileStore, *, latency_s: float, jitter_s: float,
                 cold_start_s: float, seed: int,
                 output_ttl_s: dict[str, float] | None = None, video_latency_s: float = 0.3,
                 video_fps: float | None = None, video_max_side: int | None = None) -> None:
        self.files = files
        self.output_ttl_s = dict(output_ttl_s or {})
        self.create_hooks: list[CreateHook] = []
        self.latency_s = latency_s
        self.video_latency_s = video_latency_s
        self.video_fps = video_fps
        self.video_max_side = video_max_side
        self.jitter_s = jitter_s
        self.cold_start_s = cold_start_s
        self.rng = random.Random(seed)
        self.seed = seed
        self.jobs: list[Job] = []
        self.by_id: dict[str, Job] = {}
        self._ready_at: dict[str, float] = {}  # model -> monotonic time it is booted
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self.stopping: asyncio.Event | None = None

    # --- helpers for provider modules ------------------------------------------------------

    def new_id(self, prefix: str = "") -> str:
        """A fresh job/request id (hex, or prefixed)."""
        return prefix + uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task (cancelled when the emulator stops)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def webhook_due(self, job: Job) -> bool:
        """Apply the job's webhook fault: ``False`` when the terminal webhook is dropped; after
        the configured pause when it is delayed; otherwise at once."""
        if job.action == "drop_webhook":
            return False
        if job.fault is not None and job.action == "delay_webhook":
            await self.pause(float(job.fault.option("seconds", 1.0)))
        return True

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the emulator is stopping."""
        if self.stopping is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), max(seconds, 0.0))

    async def wait_done(self, job: Job, timeout: float | None) -> bool:
        """Wait until ``job`` is terminal, at most ``timeout`` s (None: no limit) and never past
        the emulator's shutdown; whether it is terminal."""
        if job.terminal:
            return True
        waiters = [asyncio.ensure_future(job.done.wait())]
        if self.stopping is not None:
            waiters.append(asyncio.ensure_future(self.stopping.wait()))
        _, pending = await asyncio.wait(waiters, timeout=timeout,
                                        return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return job.terminal

    def simulated_seconds(self, model: str, video: bool = False) -> tuple[float, float]:
        """(queued seconds, processing seconds) for the next job of ``model``.

        The first job of a model boots it (``cold_start_s``); jobs that arrive while it boots
        stay queued until it is up, as on a real cold worker.
        """
        base = self.video_latency_s if video else self.latency_s
        warm = base + (self.rng.uniform(0.0, self.jitter_s) if self.jitter_s else 0.0)
        now = time.monotonic()
        ready_at = self._ready_at.setdefault(model, now + self.cold_start_s)
        return max(0.0, ready_at - now) + 0.3 * warm, 0.7 * warm

    # --- life cycle --------------------------------------------------------------------------

    def create(self, provider: str, model: str, params: dict[str, Any], *,
               fault: Fault | None, operation: str | None = None, n_outputs: int = 1,
               output_format: str = "png", source: bytes | None = None,
               job_id: str | None = None, start: bool = True, official: bool = False,
               start_timeout: float | None = None, video: VideoPlan | None = None) -> Job:
        """Accept a job (billed when it ends); it starts running at once unless ``start`` is
        false. ``official``: a Replicate model-addressed prediction; ``start_timeout``: fal's
        ``X-Fal-Request-Timeout`` (seconds it may wait before processing starts); ``video``:
        the clip a video job makes (``operation`` is then ``video``)."""
        source_url = find_input_url(params) if source is None else None
        refused: str | None = None
        if video is not None:
            operation = "video"
        elif operation is None:
            operation = choose_operation(model, source is not None or source_url is not None)
        if operation == "video" and video is None:
            try:
                video = plan_for(provider, model, params)
            except VideoInputError as exc:  # the job fails (provider modules refuse first)
                refused = str(exc)
        job = Job(
            id=job_id or self.new_id(),
            provider=provider,
            model=model,
            operation=operation,
            input=sanitize(params),
            params=params,
            fault=fault,
            n_outputs=max(1, n_outputs),
            output_format=output_format,
            price=price_for(provider, model, operation),
            created_at=time.time(),
            official=official,
            start_timeout=start_timeout,
            source_url=source_url,
            video=video,
        )
        if video is not None:  # billed: the seconds asked for (with a soundtrack or not)
            job.usage = {"video_seconds": video.seconds,
                         "audio_seconds": video.seconds if video.audio else 0.0}
        job.extra["source"] = source
        if refused is not None:
            job.extra["video_error"] = refused
        job.queue_s, job.run_s = self.simulated_seconds(model, operation == "video")
        with self._lock:
            self.jobs.append(job)
            self.by_id[job.id] = job
        if start:
            self.start(job)
        return job

    def start(self, job: Job) -> None:
        """Start running a job made with ``create(..., start=False)`` (listeners attached)."""
        self.spawn(self._run(job))

    def accepted(self, job: Job) -> None:
        """Run the create hooks for ``job`` (the call was accepted; no response sent yet).

        Called by the provider modules on the loop thread, synchronously, right before the
        create's response is written (OpenAI: once the job has run and been billed).
        """
        record = job.record()
        for hook in list(self.create_hooks):
            hook(record)

    def records(self, provider: str | None = None) -> list[JobRecord]:
        """Snapshots of every accepted job (of one provider), oldest first."""
        with self._lock:
            jobs = list(self.jobs)
        return [j.record() for j in jobs if provider is None or j.provider == provider]

    def cancel(self, job: Job) -> bool:
        """Cancel a job that has not finished; whether it was cancelled."""
        if job.terminal:
            return False
        task = job.extra.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
        self.finish(job, "canceled", error=None, kind="canceled")
        return True

    async def shutdown(self) -> None:
        """Cancel every job and webhook task (the emulator is stopping)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def finish(self, job: Job, status: str, *, error: str | None = None,
               kind: str | None = None) -> None:
        """Move ``job`` to a terminal ``status`` (once) and notify its listeners."""
        if job.terminal:
            return
        job.status = status
        job.error = error
        job.error_kind = kind
        job.completed_at = time.time()
        if job.started_at is None:
            job.started_at = job.completed_at
        job.logs.append(f"emulator: {status}" + (f": {error}" if error else ""))
        self._settle(job)
        job.done.set()
        for listener in job.listeners:
            self.spawn(listener(job))

    def _settle(self, job: Job) -> None:
        """Bill a job that just ended, by its provider's rule for its outcome."""
        outcome = job.outcome
        assert outcome is not None
        charge: Charge | None = None
        if outcome == "content_rejected" and job.fault is not None and job.fault.option(
                "billed", False):
            charge = "price_requested"
        rule = charge or BILLING_RULES[job.provider][outcome].charge
        priced = outcome == "succeeded" or rule == "price_requested"
        if rule == "price_requested":  # nothing was delivered: price what was asked for
            job.sizes = job.sizes or [(1024, 1024)] * job.n_outputs
        if priced and job.usage_fn is not None:
            job.usage = job.usage_fn(job)
        bill = settle(job.provider, outcome, job.price,
                      n_outputs=(len(job.outputs) if outcome == "succeeded"
                                 else job.n_outputs) if priced else 0,
                      sizes=list(job.sizes) if priced else [],
                      usage=job.usage if priced else {},
                      predict_time=job.predict_time, charge=charge)
        job.cost_usd, job.bill_rule = bill.usd, bill.rule
        ttl = self.output_ttl_s.get(job.provider)
        if ttl is not None and job.completed_at is not None:
            for stored in job.outputs:
                self.files.expire_at(stored.id, job.completed_at + ttl)

    def _make_outputs(self, job: Job) -> None:
        """Worker-thread part: resolve the input, render, apply corrupt/blank/drift, store."""
        source = job.extra.get("source")
        if source is None and job.source_url is not None:
            source = self.files.resolve(job.source_url)
        if job.video is not None:
            action = job.action if job.action in VIDEO_FAULTS else None
            data, size = render_clip(job.video, source, job.params, action=action,
                                     fps=self.video_fps, max_side=self.video_max_side)
            file_id = uuid.uuid4().hex
            job.outputs.append(self.files.put(data, "video/mp4", f"{file_id}.mp4",
                                              file_id=file_id))
            job.sizes.append(size)
            return
        params = job.params
        if "video_error" in job.extra:
            params = {**params, "__video_error__": job.extra["video_error"]}
        image = render(job.operation, source, params)
        action = job.action
        if action == "identity_drift" and job.fault is not None:
            fault = job.fault
            image = drift(image, seed=self.seed, hue=float(fault.option("hue", DEFAULT_HUE_SHIFT)),
                          mirror=bool(fault.option("mirror", True)),
                          label=bool(fault.option("label", True)))
        for index in range(job.n_outputs):
            out: Image.Image = blank_like(image) if action == "blank" else image
            data, media_type, ext = encode(out, job.output_format)
            if action == "corrupt":
                data = corrupt_png(data, self.seed * 7919 + index + len(job.id))
                media_type, ext = "image/png", "png"
            file_id = uuid.uuid4().hex
            stored = self.files.put(data, media_type, f"{file_id}.{ext}", file_id=file_id)
            job.outputs.append(stored)
            job.sizes.append(out.size)

    async def _run(self, job: Job) -> None:
        job.extra["task"] = asyncio.current_task()
        job.logs.append(f"emulator: queued ({job.model})")
        if job.start_timeout is not None and job.start_timeout < job.queue_s:
            # fal ends a request that has not started processing within X-Fal-Request-Timeout
            await asyncio.sleep(job.start_timeout)
            self.finish(job, "failed", error="Request timed out", kind="timeout")
            return
        await asyncio.sleep(job.queue_s)
        job.status = "processing"
        job.started_at = time.time()
        job.logs.append(f"emulator: processing ({job.operation})")
        if job.action == "accept_then_hang":
            await asyncio.Event().wait()  # until cancelled, or the emulator stops
        fault = job.fault
        if fault is not None and fault.action == "runner_failure":
            if not await self._runner_attempts(job, fault):
                return
        if fault is not None and fault.action in ("job_failure", "content_rejected"):
            await asyncio.sleep(job.run_s)
            if fault.action == "content_rejected":
                error = fault.option("error", _CONTENT_ERRORS[job.provider])
                self.finish(job, "failed", error=str(error), kind="content")
            else:
                error = fault.option("error", "emulated model failure")
                self.finish(job, "failed", error=str(error), kind="failure")
            return
        work = asyncio.ensure_future(asyncio.to_thread(self._make_outputs, job))
        await asyncio.sleep(job.run_s)
        job.logs.append("  50%|#####     | 1/2 [emulated]")
        try:
            await work
        except EmulatedModelError as exc:
            self.finish(job, "failed", error=str(exc), kind="failure")
            return
        except Exception as exc:  # a bug in an op must fail the job, not kill the loop quietly
            self.finish(job, "failed", error=f"emulator error: {exc!r}", kind="failure")
            return
        job.logs.append(" 100%|##########| 2/2 [emulated]")
        self.finish(job, "succeeded", error=None, kind=None)

    async def _runner_attempts(self, job: Job, fault: Fault) -> bool:
        """The ``runner_failure`` fault: the first ``attempts`` runners die (503). fal's queue
        retries on a new runner up to 10 attempts unless the submit sent ``x-fal-no-retry``;
        whether a runner is left to serve the job."""
        failing = int(fault.option("attempts", 1))
        no_retry = bool(job.extra.get("no_retry"))
        for attempt in range(1, FAL_MAX_RUNNER_ATTEMPTS + 1):
            job.extra["runner_attempts"] = attempt
            if attempt > failing:
                return True
            await asyncio.sleep(job.run_s / 2)
            job.logs.append(f"emulator: runner disconnected (attempt {attempt})")
            if no_retry or attempt == FAL_MAX_RUNNER_ATTEMPTS:
                self.finish(job, "failed", error="Runner disconnected", kind="runner")
                return False
        return True
