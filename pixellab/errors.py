"""The one exception hierarchy of pixellab.

Every error a user can meet derives from :class:`PixellabError` and lives in this module, nowhere
else. Each class says what the caller can do about it: :attr:`ProviderError.retryable` tells the
runner whether calling the same model again can help, and user-facing messages are one line that
names the thing to fix (a file and key, a product, a model). Tracebacks are for ``--debug`` only.

    PixellabError
    ├── ConfigError                 a catalog, prompt, spec, manifest or settings value is wrong
    │   └── UnknownModel
    ├── InvalidImage                bytes that must not or cannot be decoded (``reason``)
    │   └── InvalidInputImage       a product's source image: fails before any call
    ├── InvalidVideo                video bytes refused or undecodable (``reason``)
    ├── BudgetExceeded              reserving the next attempt would pass the cap
    ├── ProviderError               a call gave no usable output (``retryable``, ``ends_request``)
    │   ├── RateLimited             429, ``retry_after``
    │   ├── ProviderTimeout         past the deadline after acceptance (retryable)
    │   │   └── OutcomeUnknown      may have been accepted and billed: never retried
    │   ├── QuotaExhausted          no credit left at that provider
    │   ├── DataRemoved             billed, output deleted by the provider
    │   ├── ProviderUnavailable     5xx, connection refused (retryable)
    │   ├── InvalidRequest          400/404/422
    │   ├── ContentRejected         a safety filter (``stage``)
    │   ├── MissingCredentials      no key: skipped, not called
    │   └── InvalidOutput           answered, failed validation (``reason``)
    ├── LedgerError                 the ledger file cannot be opened or written
    ├── NotebookError               a notebook cell failed (``ename``, ``executed``)
    ├── FetchRefused                a product-page fetch refused or failed (``reason``)
    ├── WebhookRejected             a delivery that must not be acted on (``http_status``)
    └── ClipUnavailable             CLIP cannot run here (no weights, no torch)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixellab.redact import display_url


class PixellabError(Exception):
    """Root of every pixellab error."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by state, not by calling ``__init__`` again (most take keyword-only
        arguments that ``args`` does not hold): so an error crosses a process boundary whole,
        as a Ray worker's does (:mod:`pixellab.cluster`)."""
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[PixellabError], args: tuple[Any, ...],
             state: dict[str, Any]) -> PixellabError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


# --- configuration -------------------------------------------------------------------------


class ConfigError(PixellabError):
    """A catalog, prompt, sweep spec or dataset manifest is malformed.

    The message names the file, the key and the reason, so the user can fix it without reading code.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        prefix = ""
        if path:
            prefix += f"{path}: "
        if key:
            prefix += f"{key}: "
        super().__init__(prefix + message)


class UnknownModel(ConfigError):
    """A model id is not in the catalog."""


# --- inputs ----------------------------------------------------------------------------------


class InvalidImage(PixellabError):
    """Image bytes that must not or cannot be decoded.

    ``reason`` is a stable machine code (``zero_bytes``, ``undecodable``, ``truncated``,
    ``unsupported_format``, ``too_large``, …) recorded in the ledger; the message is for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class InvalidInputImage(InvalidImage):
    """A product's source image is unusable: the request fails before any provider is called."""


class InvalidVideo(PixellabError):
    """Video bytes that must not or cannot be decoded (see :mod:`pixellab.media.video`).

    ``reason`` is a stable machine code (``zero_bytes``, ``not_a_video``, ``codec_not_allowed``,
    ``too_long``, ``truncated``, …) recorded in the ledger; the message is for people. Not an
    :class:`InvalidImage`: code that catches image failures must not swallow video ones.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# --- money -----------------------------------------------------------------------------------


class BudgetExceeded(PixellabError):
    """Reserving the estimated cost of the next attempt would exceed the sweep's budget.

    Raised before any money is spent; the sweep stops launching work and lets in-flight
    attempts settle.
    """

    def __init__(self, message: str, *, cap_usd: float, committed_usd: float,
                 reserved_usd: float, requested_usd: float) -> None:
        self.cap_usd = cap_usd
        self.committed_usd = committed_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        super().__init__(message)


# --- providers -------------------------------------------------------------------------------


class ProviderError(PixellabError):
    """A provider call did not produce a usable output.

    ``retryable`` answers one question for the runner: can calling the *same* model again help?
    A non-retryable error moves the chain to its next model at once.
    """

    retryable: bool = False
    ends_request: bool = False
    """True when no other model should be tried either (the chain stops here)."""

    def __init__(self, message: str, *, model_id: str | None = None,
                 provider_job_id: str | None = None, outcome: str | None = None) -> None:
        self.model_id = model_id
        self.provider_job_id = provider_job_id
        self.outcome = outcome
        """Set when the provider had accepted the work before this error, to what happened to
        it in billing terms (``succeeded``, ``failed``, ``canceled``, ``timeout``,
        ``rejected``; see :mod:`pixellab.billing`), e.g. an image refused at OpenAI's output
        stage is ``rejected``. None: the error's class and the job's existence decide."""
        super().__init__(message)


class RateLimited(ProviderError):
    """429: the provider asks us to slow down; ``retry_after`` seconds if it said how long."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class ProviderTimeout(ProviderError):
    """The attempt ran past its deadline after the provider accepted the job (which we then
    cancelled). Retryable: trying again is a new, recorded job, not an unknown duplicate."""

    retryable = True


class OutcomeUnknown(ProviderTimeout):
    """A job-creating call ended without telling whether the provider accepted it: no answer
    before the deadline, a 5xx after the request was sent, a connection cut mid-answer, or a
    crash between sending it and recording the job id. The provider may have accepted and billed
    the job. None of our providers takes an idempotency key, so retrying the same model could pay
    twice; it is not retried (the chain moves on), later runs do not create it again on that
    model unless asked to (``pixellab sweep resume NAME --resubmit``), and its estimated cost is
    charged so budgets never under-count. ``reason`` is recorded as ``outcome_unknown``."""

    retryable = False
    reason = "outcome_unknown"


class QuotaExhausted(ProviderError):
    """The account has no credit left at this provider (OpenAI ``insufficient_quota``): no call
    to it can succeed until someone adds credit or raises the limit, so the runner stops calling
    that provider for the rest of the run and the chain moves on. Not a rate limit: waiting does
    not help. ``reason`` is recorded as ``insufficient_quota``."""

    reason = "insufficient_quota"


class DataRemoved(ProviderError):
    """The provider ran (and billed) the job but has deleted its output (Replicate removes
    prediction inputs, outputs and logs an hour after completion), so a resumed run cannot
    fetch it. Paying again is the user's call: the request ends here, and
    ``pixellab sweep resume NAME --resubmit`` creates the job again. ``reason`` is recorded as
    ``data_removed``."""

    ends_request = True
    reason = "data_removed"


class ProviderUnavailable(ProviderError):
    """5xx, connection refused, a failed job without a clearer cause: transient by assumption."""

    retryable = True


class InvalidRequest(ProviderError):
    """The provider refused the inputs (400/404/422): the same call will fail again."""


class ContentRejected(ProviderError):
    """A safety filter refused the prompt or the image: the same call will fail again.

    ``stage`` is where it was refused when the provider says (OpenAI: ``input`` before any
    work, ``output`` after the image was made); billing follows the provider's rule."""

    def __init__(self, message: str, *, stage: str | None = None, **kwargs: object) -> None:
        self.stage = stage
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class MissingCredentials(ProviderError):
    """The provider's key is not set; the model is skipped with this reason, not called."""


class MissingDependency(ProviderError):
    """A local model's optional extra is not installed (``pip install 'pixellab[upscale]'``):
    not the model's fault, so its requests get no composite; the message says what to
    install."""


class InvalidOutput(ProviderError):
    """The provider answered but the output failed validation (corrupt, blank, no-op, wrong size).

    Not retried on the same model by default (most models are deterministic for a given seed); the
    chain moves on. ``reason`` is the validation code recorded in the ledger.
    """

    def __init__(self, reason: str, message: str, **kwargs: object) -> None:
        self.reason = reason
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


# --- the workbench's own machinery --------------------------------------------------------


class LedgerError(PixellabError):
    """The ledger file cannot be opened or written (locked too long, corrupt, newer schema)."""


class NotebookError(PixellabError):
    """Executing or exporting a notebook failed; the message says which cell and why.

    ``ename`` is the exception class the cell raised (e.g. ``BudgetExceeded``), so callers can
    tell an over-budget stop from a bug; ``executed`` is the partly executed copy, which shows
    every output up to the failing cell."""

    def __init__(self, message: str, *, ename: str | None = None,
                 executed: Path | None = None) -> None:
        super().__init__(message)
        self.ename = ename
        self.executed = executed


_FETCH_RETRYABLE = frozenset({"dns", "too_slow", "connection"})


class FetchRefused(PixellabError):
    """A fetch was refused or failed; nothing from it should be used.

    ``reason`` is a stable code: ``scheme``, ``private_address``, ``dns``, ``too_large``,
    ``too_slow``, ``too_many_redirects``, ``content_type``, ``http_status`` or ``connection``.
    ``url`` is the URL of the hop that was refused (a redirect target, when it was one), with
    credentials removed and token-like query values redacted. ``status`` is the HTTP status for
    ``http_status``. :attr:`retryable` says whether trying the same URL later can help.
    """

    def __init__(self, reason: str, url: str, detail: str, *, status: int | None = None) -> None:
        self.reason = reason
        self.url = display_url(url)
        self.detail = " ".join(detail.split())  # one line, whatever a library put in it
        self.status = status
        super().__init__(f"{self.url}: refused: {self.detail}")

    @property
    def retryable(self) -> bool:
        """True for transient causes (DNS, time, connection, 429 and 5xx); False for refusals
        that the same request will meet again (scheme, private address, size, type, 4xx)."""
        if self.reason == "http_status":
            return self.status is not None and (self.status == 429 or self.status >= 500)
        return self.reason in _FETCH_RETRYABLE


REJECTION_STATUS: dict[str, int] = {
    "missing_header": 400,
    "bad_body": 400,
    "bad_signature": 401,
    "stale_timestamp": 401,
    "too_large": 413,
    "bad_secret": 500,
    "unknown_key": 503,
    "keys_unavailable": 503,
}
"""HTTP status the receiver answers for each :attr:`WebhookRejected.reason`."""


class WebhookRejected(PixellabError):
    """A webhook delivery that must not be acted on.

    ``reason`` is a stable machine code (see the module docstring and :data:`REJECTION_STATUS`);
    the message is for people and never contains a secret or the body.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)

    @property
    def http_status(self) -> int:
        """The status the receiver answers with for this reason."""
        return REJECTION_STATUS.get(self.reason, 400)


class ClipUnavailable(PixellabError):
    """CLIP cannot run here; ``str(exc)`` is the reason recorded with the missing metric."""
