"""Billing as data: what a provider bills for each outcome of a job, and what usage costs.

Why: the ledger must never record less than a provider bills, and must not invent charges it
does not make. Providers differ (Replicate bills the compute a failed prediction used; fal does
not bill server errors; OpenAI does not bill a refused request), so the rule is data in the
catalog (``[providers.<name>.billing]``, each rule citing the provider's page), not branches in
the runner. The runner classifies what happened to a job into an :data:`Outcome` and charges by
the rule; the emulator bills by its own table, written separately, so a test can catch the two
disagreeing.

Prices per token class: OpenAI's GPT image models price text input, image input and image output
tokens differently, so a response's ``usage`` is priced class by class (:class:`TokenPrices`),
never as ``total_tokens`` at one rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["succeeded", "failed", "canceled", "timeout", "rejected"]
"""What happened to a job the provider accepted: it produced an output (``succeeded``; an output
that then fails our validation, or that the provider deleted before we fetched it, was still
produced and billed), the model or server failed (``failed``), it was cancelled before it
finished (``canceled``: by us at the model's deadline, or by someone else), the provider's own
deadline ended it (``timeout``: fal's ``X-Fal-Request-Timeout`` start deadline, Replicate's
30-minute limit), or a safety filter refused it after accepting it (``rejected``). A create call
that was refused (a 4xx, a 429) made no job and is never billed."""

Charge = Literal["billed", "usage", "free"]
"""``billed``: the provider charges the job its price (what it reports the job used, else the
catalog's estimate, an upper bound). ``usage``: it charges only what the job consumed - the
compute seconds or tokens it reports (the estimate when it reports none), or, for a model priced
per output, the outputs delivered: none when the job ended without one (Replicate's official
models are "priced per image generated"). ``free``: it charges nothing."""

OUTCOMES: tuple[Outcome, ...] = ("succeeded", "failed", "canceled", "timeout", "rejected")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BillingRule(_Strict):
    """A provider's charge for each :data:`Outcome`; unknown rules default to ``billed`` so an
    unstudied provider is over-counted rather than under-counted."""

    succeeded: Charge = "billed"
    failed: Charge = "billed"
    canceled: Charge = "billed"
    timeout: Charge = "billed"
    rejected: Charge = "billed"
    sources: tuple[str, ...] = ()
    """The provider's own pages (or SDK source) each rule follows."""

    def charge(self, outcome: Outcome) -> Charge:
        value: Charge = getattr(self, outcome)
        return value

    @property
    def ever_billed(self) -> bool:
        """False for a provider that never bills: nothing to lose in a crash."""
        return any(self.charge(o) != "free" for o in OUTCOMES)

    def override(self, changes: dict[str, Charge]) -> BillingRule:
        return self.model_copy(update=changes)


class TokenPrices(_Strict):
    """USD per token, by class. Cached classes default to their uncached price."""

    text_input: float = Field(default=0.0, ge=0)
    cached_text_input: float | None = Field(default=None, ge=0)
    image_input: float = Field(default=0.0, ge=0)
    cached_image_input: float | None = Field(default=None, ge=0)
    text_output: float = Field(default=0.0, ge=0)
    image_output: float = Field(default=0.0, ge=0)

    @property
    def highest(self) -> float:
        return max(self.text_input, self.cached_text_input or 0.0, self.image_input,
                   self.cached_image_input or 0.0, self.text_output, self.image_output)

    def cost(self, usage: Usage) -> float:
        cached_text = self.text_input if self.cached_text_input is None else self.cached_text_input
        cached_image = (self.image_input if self.cached_image_input is None
                        else self.cached_image_input)
        return (usage.text_input_tokens * self.text_input
                + usage.cached_text_input_tokens * cached_text
                + usage.image_input_tokens * self.image_input
                + usage.cached_image_input_tokens * cached_image
                + usage.text_output_tokens * self.text_output
                + usage.image_output_tokens * self.image_output)


@dataclass(frozen=True)
class Usage:
    """What a provider reported a job used, in the units it bills (adapters fill it in from the
    response; the catalog's pricing turns it into money). Token classes are disjoint: cached
    input tokens are not also counted as input tokens."""

    text_input_tokens: int = 0
    cached_text_input_tokens: int = 0
    image_input_tokens: int = 0
    cached_image_input_tokens: int = 0
    text_output_tokens: int = 0
    image_output_tokens: int = 0
    seconds: float | None = None
    """Billed compute time (Replicate's ``metrics.predict_time``)."""
    video_seconds: float | None = None
    """Seconds of output video the provider reports billing, for models priced per second of
    video (OpenAI's ``Video.seconds``, Replicate's ``metrics.video_output_duration_seconds``)."""

    @property
    def tokens(self) -> int:
        return (self.text_input_tokens + self.cached_text_input_tokens + self.image_input_tokens
                + self.cached_image_input_tokens + self.text_output_tokens
                + self.image_output_tokens)

    def as_json(self) -> dict[str, float]:
        """The non-zero fields (for an output's metadata)."""
        return {name: value for name, value in self.__dict__.items() if value}


__all__ = ["OUTCOMES", "BillingRule", "Charge", "Outcome", "TokenPrices", "Usage"]
