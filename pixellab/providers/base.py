"""The provider boundary: one small async interface every adapter implements.

Adapters translate; they never decide and never record. The runner calls :meth:`Provider.submit`
once per attempt, then :meth:`Provider.poll` until the job is terminal, and :meth:`Provider.cancel`
when it gives up on a job. Adapters raise only :class:`~pixellab.errors.ProviderError` subclasses,
each saying whether a retry of the same model can help.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pixellab.catalog import Model
from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
    InvalidRequest,
    MissingCredentials,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from pixellab.tasks import Task

__all__ = [
    "ContentRejected", "InvalidOutput", "InvalidRequest", "Job", "JobState", "MissingCredentials",
    "KeyedProvider", "Output", "Provider", "ProviderError", "ProviderRequest", "ProviderTimeout",
    "ProviderUnavailable", "RateLimited", "credential_from_env", "error_for_status",
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
    reported_cost_usd: float | None = None


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


@runtime_checkable
class Provider(Protocol):
    """What the runner needs from a provider adapter."""

    name: str

    def missing_credentials(self) -> str | None:
        """``None`` when the provider can be called, else why not (``"no REPLICATE_API_TOKEN"``)."""

    async def submit(self, request: ProviderRequest) -> Job:
        """Create the job. Called once per attempt; must not retry a create on its own."""

    async def poll(self, job: Job) -> Job:
        """Fetch the job's current state; safe to call any number of times."""

    async def cancel(self, job: Job) -> None:
        """Best effort: stop a job we no longer want, so it stops costing money."""


def error_for_status(status: int, message: str, *, model_id: str | None,
                     retry_after: float | None = None,
                     content_rejected: bool = False) -> ProviderError:
    """The one HTTP-status policy every adapter shares: 429 waits, content refusals and other
    4xx fail fast, 401/403 mean the key is wrong, 408/409/5xx (and no status) are transient."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after, model_id=model_id)
    if content_rejected:
        return ContentRejected(message, model_id=model_id)
    if status in (401, 403):
        return MissingCredentials(message, model_id=model_id)
    if status >= 500 or status in (0, 408, 409):
        return ProviderUnavailable(message, model_id=model_id)
    return InvalidRequest(message, model_id=model_id)


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
