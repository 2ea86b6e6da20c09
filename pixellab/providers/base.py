"""The provider boundary: one small async interface every adapter implements.

Adapters translate; they never decide and never record. The runner calls :meth:`Provider.submit`
once per attempt, then :meth:`Provider.poll` until the job is terminal, and :meth:`Provider.cancel`
when it gives up on a job. Adapters raise only :class:`~pixellab.errors.ProviderError` subclasses,
each saying whether a retry of the same model can help.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pixellab.billing import Usage
from pixellab.catalog import Model
from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
    InvalidRequest,
    MissingCredentials,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pixellab.tasks import Task

__all__ = [
    "ContentRejected", "InvalidOutput", "InvalidRequest", "Job", "JobState", "MissingCredentials",
    "KeyedProvider", "LoopBound", "OutcomeUnknown", "Output", "Provider", "ProviderError",
    "ProviderRequest", "ProviderTimeout", "ProviderUnavailable", "RateLimited", "Reconciling",
    "Usage",
    "credential_from_env", "error_for_status", "transport_error",
]


@dataclass(frozen=True)
class ProviderRequest:
    """One call's worth of normalized inputs.

    ``image`` is the source image's bytes (tasks that take one); ``params`` are the normalized,
    provider-independent inputs (``prompt``, ``scale``, ``seed``, ``size``…) that
    :meth:`Model.provider_inputs` maps to the provider's own names.
    """

    request_key: str
    model: Model
    image: bytes | None = None
    image_media_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    task: Task | None = None
    """What the call is for, where one model serves several tasks (an LLM's ``analyze``)."""
    attempt_id: str | None = None
    """The ledger's id of this attempt: adapters that can tag a job (Replicate file metadata)
    attach it, so :meth:`Reconciling.find_job` can find the job after a crash."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Output:
    """A normalized output: the bytes, their declared media type, and what the provider said."""

    data: bytes
    media_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None
    """The billed units the provider reported (tokens by class, compute seconds), which the
    catalog's pricing turns into the charge; None when it reported none."""


@dataclass(frozen=True)
class Job:
    """A job's state as the provider reports it. ``output`` is set once SUCCEEDED; ``error`` once
    FAILED (already mapped to the pixellab hierarchy)."""

    provider_job_id: str
    state: JobState
    output: Output | None = None
    error: ProviderError | None = None
    queue_position: int | None = None
    context: dict[str, str] = field(default_factory=dict)
    """Adapter-private facts needed to poll or cancel (e.g. fal's application id)."""
    usage: Usage | None = None
    """Billed units the provider reported for the job itself: for one that ended without an
    output (a failed Replicate prediction reports the compute it used), and for a video that
    was delivered (its billed seconds), so a clip that then fails validation is still charged
    exactly what the provider bills."""


@runtime_checkable
class Provider(Protocol):
    """What the runner needs from a provider adapter. An adapter that holds connections open
    may also define ``async def aclose()``, called before a synchronous run's loop ends (see
    :class:`LoopBound`)."""

    name: str

    def missing_credentials(self) -> str | None:
        """``None`` when the provider can be called, else why not (``"no REPLICATE_API_TOKEN"``)."""

    async def submit(self, request: ProviderRequest) -> Job:
        """Create the job. Called once per attempt; must not retry a create on its own."""

    async def poll(self, job: Job) -> Job:
        """Fetch the job's current state; safe to call any number of times."""

    async def cancel(self, job: Job) -> None:
        """Best effort: stop a job we no longer want, so it stops costing money."""


@runtime_checkable
class Reconciling(Protocol):
    """A provider that can tell, after the fact, whether a create call made a job."""

    async def find_job(self, request: ProviderRequest, since: datetime) -> Job | None:
        """The job a create call for ``request`` (same :attr:`ProviderRequest.attempt_id`) made
        at or after ``since`` (UTC), or None when it certainly made none. Raises
        :class:`OutcomeUnknown` when the provider's answer cannot settle it."""


def error_for_status(status: int, message: str, *, model_id: str | None,
                     retry_after: float | None = None, content_rejected: bool = False,
                     creating: bool = False) -> ProviderError:
    """The one HTTP-status policy every adapter shares: 429 waits, content refusals and other
    4xx fail fast, 401/403 mean the key is wrong, 402 that the account is out of credit,
    408/409/5xx (and no status) are transient.

    On a job-creating call (``creating``) a 5xx is different: the server got the request and
    may have accepted (and billed) the job before failing to answer, so it is
    :class:`OutcomeUnknown`, never a blind retry. 408/409/429 and 4xx refuse the request."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after, model_id=model_id)
    if status == 402:  # Payment Required: out of credit (Replicate answers it so)
        return QuotaExhausted(message, model_id=model_id)
    if content_rejected:
        return ContentRejected(message, model_id=model_id)
    if status in (401, 403):
        return MissingCredentials(message, model_id=model_id)
    if creating and status >= 500:
        return OutcomeUnknown(f"{message} (after the create was sent: the job may exist and "
                              f"bill)", model_id=model_id)
    if status >= 500 or status in (0, 408, 409):
        return ProviderUnavailable(message, model_id=model_id)
    return InvalidRequest(message, model_id=model_id)


_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})
"""Transport errors raised before a request left (httpx and httpx2 spell them the same)."""


def transport_error(exc: BaseException, message: str, *, model_id: str | None,
                    creating: bool = False) -> ProviderError:
    """A transport failure (httpx or httpx2). Connection refused or no free connection: the
    request never left, so a retry is safe. Anything later (a read timeout, a reset, a server
    that hung up mid-answer) on a job-creating call may have created the job: OutcomeUnknown."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _NOT_SENT:
        return ProviderUnavailable(f"{message} ({type(exc).__name__})", model_id=model_id)
    if creating:
        return OutcomeUnknown(f"{message} ({type(exc).__name__} after the create was sent: the "
                              f"job may exist and bill)", model_id=model_id)
    if "TimeoutException" in names or isinstance(exc, TimeoutError):
        return ProviderTimeout(f"{message} ({type(exc).__name__})", model_id=model_id)
    return ProviderUnavailable(f"{message} ({type(exc).__name__})", model_id=model_id)


_Client = TypeVar("_Client")


class LoopBound(Generic[_Client]):
    """An async SDK client for the event loop that is running, made on first use in it.

    Why: an SDK's async client keeps connections, locks and tasks of the loop it was first used
    in. Each synchronous run (``Sweep.run``, ``pixellab.generate``) is a loop of its own, so a
    notebook's second sweep on one workbench would reuse them on a closed loop: fal-client then
    failed every call with "Event loop is closed", and the OpenAI SDK left a failing close task
    behind. A new loop gets a new client; :meth:`aclose` closes the running loop's, which the
    synchronous runs do before their loop ends (:meth:`pixellab.workbench.Workbench.aclose`).
    """

    def __init__(self, make: Callable[[], _Client],
                 close: Callable[[_Client], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> _Client:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # synchronous use (a sync SDK method): any loop's client will do
            loop = self._loop
        if self._client is None or loop is not self._loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def aclose(self) -> None:
        """Close the client of the running loop, if one was made (another loop's, which cannot
        be closed from here, is only let go)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await self._close(client)


class KeyedProvider:
    """Credential handling shared by the remote adapters: an explicit key, else the provider's
    environment variable; a missing key is a reason to skip, never an exception."""

    credential_env: str = ""

    def __init__(self, *, key: str | None = None) -> None:
        self._key = key

    def key(self) -> str | None:
        return self._key or credential_from_env(self.credential_env)

    def missing_credentials(self) -> str | None:
        return None if self.key() else f"no {self.credential_env}"

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}()"


def credential_from_env(variable: str) -> str | None:
    """A provider key from the environment only (never from parameters or files we write)."""
    value = os.environ.get(variable, "").strip()
    return value or None


def _seconds(value: Any) -> float | None:
    """A duration as the provider spells it (``5``, ``"5"``, ``"5s"``) in seconds, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).removesuffix("s"))
    except ValueError:
        return None


def video_inputs(model: Model, inputs: dict[str, Any],
                 table: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """``inputs`` with the normalized ``duration_s`` written as the model's own value (5 →
    ``5``, ``"5"`` or ``"5s"``, whichever it takes), and :class:`InvalidRequest` for a value
    the model does not take, before anything is uploaded or created. ``table`` is an adapter's
    published input values by endpoint prefix (matched whole or followed by ``/`` or ``-``);
    models it does not list pass unchanged."""
    allowed = next((values for prefix, values in table.items()
                    if model.endpoint == prefix or model.endpoint.startswith(prefix + "-")
                    or model.endpoint.startswith(prefix + "/")), None)
    if allowed is None:
        return inputs
    normalized = {provider: name for name, provider in model.inputs.items()}
    duration = model.inputs.get("duration_s")
    out = dict(inputs)
    for name, values in allowed.items():
        if name not in out:
            continue
        value = out[name]
        if name == duration:
            wanted = _seconds(value)
            match = [v for v in values if wanted is not None and _seconds(v) == wanted]
        else:
            match = [v for v in values if v == value]
        if not match:
            takes = ", ".join(str(v) for v in values)
            raise InvalidRequest(f"{model.id}: {normalized.get(name, name)} = {value!r} is not "
                                 f"one it takes ({takes})", model_id=model.id)
        out[name] = match[0]
    return out
