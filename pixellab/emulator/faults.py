"""Fault injection: what the next job-creating calls of a provider should go through.

Why a plan rather than magic prompts: the real SDKs cannot attach per-call headers everywhere
(Replicate cannot), and pixellab's own code must not change to be tested, so faults are armed
out of band - in-process with :meth:`FaultPlan.add`, or over HTTP with ``POST /__emu/faults``
(same fields) for people driving ``python -m pixellab.emulator`` by hand.

A fault applies to *job-creating* calls only (Replicate ``POST .../predictions``, fal queue submit
and sync run, OpenAI ``images/*`` and ``chat/completions``); polls, downloads and uploads are never
faulted. A video job (:mod:`pixellab.emulator.video`) takes the same faults; ``corrupt``,
``blank``, ``frozen``, ``wrong_duration`` and ``wrong_aspect`` change its clip. ``identity_drift``
(image jobs) succeeds with a valid picture of a different product (:mod:`pixellab.emulator.drift`):
only a product-identity check can tell. How each action
looks on each provider's wire is tabulated in
``/work/shared/research/providers.md`` §4.2 and in the emulator's README-style docstring in
:mod:`pixellab.emulator`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTIONS", "PROVIDERS", "Fault", "FaultPlan"]

PROVIDERS: tuple[str, ...] = ("replicate", "fal", "openai")
"""Provider names accepted by :meth:`FaultPlan.add` (and used in request and job records)."""

ACTIONS: tuple[str, ...] = (
    "rate_limit",
    "server_error",
    "hang",
    "insufficient_quota",
    "accept_then_hang",
    "accept_then_reset",
    "accept_then_error",
    "runner_failure",
    "job_failure",
    "content_rejected",
    "corrupt",
    "blank",
    "frozen",
    "wrong_duration",
    "wrong_aspect",
    "identity_drift",
    "reply",
    "drop_webhook",
    "duplicate_webhook",
    "delay_webhook",
)
"""Every fault action the emulator knows (see :class:`FaultPlan`)."""

# Actions that refuse the create call: no job exists afterwards, nothing is billed.
REFUSING_ACTIONS: frozenset[str] = frozenset({"rate_limit", "server_error", "hang",
                                              "insufficient_quota"})

# Actions that accept the job and then break the create's answer (the job runs and is billed).
BROKEN_ANSWER_ACTIONS: frozenset[str] = frozenset({"accept_then_reset", "accept_then_error"})


@dataclass(frozen=True)
class Fault:
    """One armed fault, as handed to the request that consumed it.

    ``options`` holds the action's keyword options (``retry_after``, ``status``, ``seconds``,
    ``error``, ``stage`` for ``content_rejected``, ``attempts`` for ``runner_failure``,
    ``ingress`` for ``accept_then_error``, ``content`` for ``reply``: the exact text a chat
    completion answers, e.g. a model that obeyed a prompt injection, and ``hue`` (degrees, 150),
    ``mirror`` (True) and ``label`` (True) for ``identity_drift``); :meth:`option` reads one
    with a default.
    """

    provider: str
    action: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        """The option ``name``, or ``default`` when it was not given."""
        return self.options.get(name, default)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view, for ``GET /__emu/faults``."""
        return {"provider": self.provider, "action": self.action, "model": self.model,
                **self.options}


@dataclass
class _Armed:
    fault: Fault
    remaining: int


class FaultPlan:
    """Faults armed for the next job-creating calls, consumed first-in first-out.

    Thread-safe: tests arm faults from their own thread while the emulator's event loop
    consumes them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def add(self, provider: str, action: str, *, model: str | None = None, times: int = 1,
            **options: Any) -> None:
        """Arm ``action`` for the next ``times`` job-creating calls of ``provider``.

        With ``model`` the fault only matches calls for that model: the exact name, or a
        sub-path of it (``model="fal-ai/flux"`` also matches ``fal-ai/flux/dev``).

        Raises:
            ValueError: unknown provider or action, or ``times`` < 1.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; expected one of {ACTIONS}")
        if int(times) < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        fault = Fault(provider=provider, action=action, model=model, options=dict(options))
        with self._lock:
            self._armed.append(_Armed(fault, int(times)))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def pending(self) -> list[tuple[Fault, int]]:
        """The armed faults and how many calls each still applies to (oldest first)."""
        with self._lock:
            return [(a.fault, a.remaining) for a in self._armed]

    def take(self, provider: str, model: str) -> Fault | None:
        """Consume one use of the oldest fault matching this call, if any."""
        with self._lock:
            for armed in self._armed:
                wanted = armed.fault
                if wanted.provider != provider:
                    continue
                if wanted.model is not None and not (
                    model == wanted.model or model.startswith(wanted.model + "/")
                ):
                    continue
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._armed.remove(armed)
                return wanted
        return None
