"""What the emulated providers charge, by their published rules: prices and billing rules.

The emulator keeps its own copy of every price (it must not read pixellab's catalog: the
catalog is what the client *believes*, this module is what the provider *bills*; a test compares
the two, ``tests/conformance/test_prices.py``). A job's final bill is settled once, when it
becomes terminal (:func:`settle`), from two tables:

* :data:`MODEL_PRICES` - the list price of each model pixellab's catalog names (and a few
  well-known ones), with the page it was read from. A model not in the table (test models such
  as ``emu/enhance``) falls back to :data:`OPERATION_PRICES`, per output image (per call for
  chat).
* :data:`BILLING_RULES` - per provider and outcome (succeeded, failed, canceled, timeout,
  content rejected), whether the price applies, only the compute time spent, or nothing. Each
  rule names its source.

Rules as published (read 2026-12-01):

* Replicate (https://replicate.com/docs/billing): public models bill "the time it's active
  processing your requests" (queue and setup time are free), so a per-second (community,
  version-addressed) model bills ``metrics.predict_time`` x its hardware rate whatever the
  outcome - failed and canceled predictions included (a prediction canceled while still
  ``starting`` has no processing time and costs nothing). Models "maintained by Replicate"
  (official, model-addressed) are "priced per image generated": a failed, canceled or rejected
  prediction generated no image and costs nothing.
* fal (https://docs.fal.ai/documentation/model-apis/pricing): "You pay only for successful
  outputs, and you are never charged for server errors or time spent waiting in the queue";
  the reliability page (https://docs.fal.ai/model-apis/model-endpoints/reliability) repeats
  "No charge for server errors", and the FAQ (https://docs.fal.ai/faq, as quoted by
  wavespeed.ai's 2026-11-22 summary) adds that a 422 - a content-policy refusal included - may
  be billed when a runner spent GPU time before the error was found. The emulator's content
  check runs after processing, so a content-policy refusal is billed the price of the outputs
  requested; a model failure (5xx), a request that timed out waiting
  (``X-Fal-Request-Timeout``) and a cancel are not. Per-megapixel models round each output up
  to whole megapixels of 1024x1024 pixels (fal's model pages, e.g.
  https://fal.ai/models/fal-ai/flux-2-flex/edit/llms.txt).
* Video models (unit ``second``: Kling 1.6, Veo 3.1, Sora 2) bill the seconds of video asked
  for when the clip is made - the job's ``usage["video_seconds"]``, whatever the clip turned out
  to be - at the model's price (fal's Veo at its dearer rate when ``generate_audio`` is on, the
  default). By the rules below: Replicate's official video models made nothing to bill when a
  prediction failed, was canceled or refused (``compute_time`` is nothing for a per-output
  price); fal bills a content-policy 422 the seconds asked for and nothing else that failed;
  OpenAI bills a completed video and no failed one. Replicate reports the billed seconds as
  ``metrics.video_output_duration_seconds``, Sora as the video's ``seconds``; fal reports none.
* OpenAI (https://developers.openai.com/api/docs/pricing and the model pages): a response is
  billed by the ``usage`` it reports (per token class for GPT image models: text input, image
  input, image output; per image for per-image models). Refusals and errors carry no usage
  and OpenAI publishes no charge for them, so the emulator bills none: neither an input-stage
  nor an output-stage ``moderation_blocked`` (the ``content_rejected`` fault's ``billed=True``
  option bills an output-stage refusal as if its images had been delivered, for clients that
  must survive either reading), nor a 5xx. ``insufficient_quota``, rate limits and
  other refusals never create a job at all. Cached input tokens have their own price, but the
  images ``usage`` object has no cached-token field (openai/openai-openapi ``openapi.yaml``,
  ``ImageGenInputUsageDetails``), so the emulator never reports or bills any.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BILLING_RULES",
    "HARDWARE_USD_PER_SECOND",
    "MODEL_PRICES",
    "OPERATION_PRICES",
    "Bill",
    "BillingRule",
    "Price",
    "TokenPrices",
    "image_output_tokens",
    "price_for",
    "settle",
]

Unit = Literal["image", "megapixel", "gpu_second", "second", "token", "call"]
Outcome = Literal["succeeded", "failed", "canceled", "timeout", "content_rejected"]
Charge = Literal["price", "price_requested", "compute_time", "nothing"]

REPLICATE_BILLING = "https://replicate.com/docs/billing"
REPLICATE_PRICING = "https://replicate.com/pricing"
FAL_PRICING = "https://docs.fal.ai/documentation/model-apis/pricing"
FAL_RELIABILITY = "https://docs.fal.ai/model-apis/model-endpoints/reliability"
FAL_FAQ = "https://docs.fal.ai/faq"
OPENAI_PRICING = "https://developers.openai.com/api/docs/pricing"


@dataclass(frozen=True)
class TokenPrices:
    """USD per token, by token class (OpenAI prices each class separately)."""

    text_input: float
    image_input: float = 0.0
    image_output: float = 0.0
    text_output: float = 0.0
    cached_text_input: float | None = None
    cached_image_input: float | None = None


@dataclass(frozen=True)
class Price:
    """One model's list price. ``usd_per_unit`` is per ``unit``; for ``megapixel`` models with a
    different rate after the first megapixel, ``extra_usd_per_unit`` is that rate; for
    ``token`` models ``tokens`` holds the per-class prices. ``source`` is where it was read
    (``"catalog (unverified)"`` where no published figure was found)."""

    unit: Unit
    usd_per_unit: float = 0.0
    source: str = ""
    extra_usd_per_unit: float | None = None
    tokens: TokenPrices | None = None
    audio_usd_per_unit: float | None = None
    """Per second of a video made with a soundtrack, where that costs more (fal's Veo)."""


def _image(usd: float, source: str) -> Price:
    return Price("image", usd, source)


_UNVERIFIED = "catalog (unverified: no published figure found offline)"
_FAL_SUMMARY = ("fal model pages as quoted by third-party summaries (skillspool.org fal-flux "
                "skill, lumenfall.ai), read 2026-12-01")

HARDWARE_USD_PER_SECOND: dict[str, float] = {
    "cpu": 0.000100,
    "gpu-t4": 0.000225,
    "gpu-l40s": 0.000975,
    "gpu-a40-small": 0.000575,
    "gpu-a40-large": 0.000725,
    "gpu-a100-large": 0.001400,
}
"""Replicate's per-second hardware rates (https://replicate.com/docs/billing,
https://replicate.com/pricing)."""

MODEL_PRICES: dict[str, dict[str, Price]] = {
    "replicate": {
        "black-forest-labs/flux-kontext-pro": _image(
            0.04, "https://replicate.com/black-forest-labs/flux-kontext-pro"),
        "black-forest-labs/flux-2-pro": _image(0.05, _UNVERIFIED),
        "black-forest-labs/flux-schnell": _image(
            0.003, "https://replicate.com/black-forest-labs/flux-schnell"),
        "black-forest-labs/flux-dev": _image(
            0.025, "https://replicate.com/black-forest-labs/flux-dev"),
        "black-forest-labs/flux-pro": _image(
            0.055, "https://replicate.com/black-forest-labs/flux-pro"),
        "bria/remove-background": _image(0.018, _UNVERIFIED),
        "stability-ai/sdxl": Price("gpu_second", HARDWARE_USD_PER_SECOND["gpu-l40s"],
                                   f"{REPLICATE_PRICING} (Nvidia L40S)"),
        "nightmareai/real-esrgan": Price("gpu_second", HARDWARE_USD_PER_SECOND["gpu-t4"],
                                         f"{REPLICATE_BILLING} (Nvidia T4)"),
        "kwaivgi/kling-v1.6-standard": Price("second", 0.026, _UNVERIFIED),
        "google/veo-3.1": Price("second", 0.13, _UNVERIFIED),
    },
    "fal": {
        "fal-ai/flux-pro/kontext": _image(0.04, _FAL_SUMMARY),
        "fal-ai/flux-2-pro/edit": Price(
            "megapixel", 0.03, f"{_FAL_SUMMARY}: FLUX.2 [pro] first megapixel $0.03, each "
            "further one $0.015 (the edit page itself not read; input megapixels not "
            "modelled)", extra_usd_per_unit=0.015),
        "fal-ai/birefnet/v2": _image(0.005, _UNVERIFIED),
        "fal-ai/clarity-upscaler": Price("megapixel", 0.03, _UNVERIFIED),
        "fal-ai/kling-video/v1.6/standard/image-to-video": Price("second", 0.045, _UNVERIFIED),
        "fal-ai/veo3.1/image-to-video": Price(
            "second", 0.20, "https://fal.ai/models/fal-ai/veo3.1/llms.txt (Veo 3.1: $0.20 per "
            "second without audio, $0.40 with audio, 720p or 1080p; the image-to-video page "
            "itself not read)", audio_usd_per_unit=0.40),
        "fal-ai/flux/dev": Price("megapixel", 0.025, _FAL_SUMMARY),
        "fal-ai/flux/schnell": Price("megapixel", 0.003, _FAL_SUMMARY),
    },
    "openai": {
        # Per-class prices per token (the model pages list them per 1M tokens).
        "gpt-image-2.6-sunburst": Price(
            "token", source="https://developers.openai.com/api/docs/models/"
            "gpt-image-2.6-sunburst (text in $5, cached $1.25; image in $8, cached $2; image "
            "out $30 per 1M)",
            tokens=TokenPrices(text_input=5e-6, cached_text_input=1.25e-6, image_input=8e-6,
                               cached_image_input=2e-6, image_output=30e-6)),
        "gpt-image-1.5": Price("token", source="https://developers.openai.com/api/docs/models/"
                               "gpt-image-1.5 as quoted by imagine.art (text in $5, cached "
                               "$1.25, out $10; image in $8, cached $2, out $32 per 1M); "
                               "deprecated, shutdown 2026-12-01 "
                               "(https://developers.openai.com/api/docs/deprecations)",
                               tokens=TokenPrices(text_input=5e-6, cached_text_input=1.25e-6,
                                                  image_input=8e-6, cached_image_input=2e-6,
                                                  image_output=32e-6, text_output=10e-6)),
        "gpt-image-1": Price("token", source="https://developers.openai.com/api/docs/models/"
                             "gpt-image-1 (retired 2026-10-23)",
                             tokens=TokenPrices(text_input=5e-6, cached_text_input=1.25e-6,
                                                image_input=10e-6, cached_image_input=2.5e-6,
                                                image_output=40e-6)),
        "gpt-image-1-mini": Price("token", source="https://developers.openai.com/api/docs/"
                                  "models/gpt-image-1-mini",
                                  tokens=TokenPrices(text_input=2e-6, cached_text_input=0.2e-6,
                                                     image_input=2.5e-6,
                                                     cached_image_input=0.25e-6,
                                                     image_output=8e-6)),
        "gpt-4o": Price("token", source=f"{OPENAI_PRICING} (gpt-4o: $2.50 in, $1.25 cached, "
                        "$10 out per 1M)",
                        tokens=TokenPrices(text_input=2.5e-6, cached_text_input=1.25e-6,
                                           text_output=10e-6)),
        "sora-2": Price("second", 0.10, _UNVERIFIED),
    },
}
"""List prices by provider and exact model name (fal: the app id as submitted)."""

OPERATION_PRICES: dict[str, float] = {
    "cutout": 0.01,
    "upscale": 0.02,
    "packshot": 0.04,
    "enhance": 0.02,
    "generate": 0.04,
    "video": 0.50,
    "chat": 0.001,
}
"""Fallback price in USD per output image (per call for ``chat``), by operation, for models
:data:`MODEL_PRICES` does not name (test models)."""


def price_for(provider: str, model: str, operation: str) -> Price:
    """The price a job of ``model`` doing ``operation`` is billed at."""
    known = MODEL_PRICES.get(provider, {}).get(model)
    if known is not None:
        return known
    unit: Unit = "call" if operation == "chat" else "image"
    return Price(unit, OPERATION_PRICES.get(operation, 0.02), "emulator fallback by operation")


@dataclass(frozen=True)
class BillingRule:
    """What an outcome costs: ``price`` (the model's price for what was produced; compute time
    for per-second models), ``price_requested`` (the price of the outputs asked for, though
    none was delivered), ``compute_time`` (per-second models bill their processing time,
    others nothing: no output was made), or ``nothing``. ``source`` is the page saying so."""

    charge: Charge
    source: str
    note: str = ""


BILLING_RULES: dict[str, dict[Outcome, BillingRule]] = {
    "replicate": {
        "succeeded": BillingRule("price", REPLICATE_BILLING,
                                 "per image generated (official) or processing seconds"),
        "failed": BillingRule("compute_time", REPLICATE_BILLING,
                              "processing time is billed; per-image models made no image"),
        "canceled": BillingRule("compute_time", REPLICATE_BILLING,
                                "processing time until the cancel; none while starting"),
        "timeout": BillingRule("compute_time", REPLICATE_BILLING),
        "content_rejected": BillingRule("compute_time", REPLICATE_BILLING,
                                        "the NSFW check runs after processing"),
    },
    "fal": {
        "succeeded": BillingRule("price", FAL_PRICING, "per output image or megapixel"),
        "failed": BillingRule("nothing", FAL_RELIABILITY, "No charge for server errors"),
        "canceled": BillingRule("nothing", FAL_PRICING, "you pay only for successful outputs"),
        "timeout": BillingRule("nothing", FAL_PRICING,
                               "never charged for time spent waiting in the queue"),
        "content_rejected": BillingRule("price_requested", FAL_FAQ,
                                        "a 422 may be billed when a runner spent GPU time"),
    },
    "openai": {
        "succeeded": BillingRule("price", OPENAI_PRICING, "by the usage the response reports"),
        "failed": BillingRule("nothing", OPENAI_PRICING, "an error response reports no usage"),
        "canceled": BillingRule("nothing", OPENAI_PRICING),
        "timeout": BillingRule("nothing", OPENAI_PRICING, "an error response reports no usage"),
        "content_rejected": BillingRule("nothing", OPENAI_PRICING,
                                        "moderation_blocked (input or output stage) reports "
                                        "no usage; no published charge"),
    },
}
"""Per provider and outcome, what is billed (see the module docstring for the quotes)."""


@dataclass(frozen=True)
class Bill:
    """A settled bill: ``usd`` and the rule that produced it (``provider.outcome.charge``)."""

    usd: float
    rule: str


def _megapixels(width: int, height: int) -> int:
    return max(1, math.ceil(width * height / (1024 * 1024)))


def _price_of_outputs(price: Price, sizes: list[tuple[int, int]], n_outputs: int,
                      usage: Mapping[str, float], seconds: float) -> float:
    if price.unit == "image":
        return price.usd_per_unit * n_outputs
    if price.unit == "megapixel":
        total = 0.0
        for width, height in sizes:
            mp = _megapixels(width, height)
            extra = price.usd_per_unit if price.extra_usd_per_unit is None else (
                price.extra_usd_per_unit)
            total += price.usd_per_unit + (mp - 1) * extra
        return total
    if price.unit == "token":
        tokens = price.tokens or TokenPrices(text_input=0.0)
        total = 0.0
        for token_class, count in usage.items():
            rate = getattr(tokens, token_class, None)
            if isinstance(rate, int | float):
                total += rate * count
        return total
    if price.unit == "call":
        return price.usd_per_unit
    if price.unit == "second":  # seconds of output video: what the job was asked to make
        audio = bool(usage.get("audio_seconds")) and price.audio_usd_per_unit is not None
        rate = price.audio_usd_per_unit if audio else price.usd_per_unit
        return float(rate or 0.0) * float(usage.get("video_seconds", seconds))
    return price.usd_per_unit * seconds  # gpu_second


def settle(provider: str, outcome: Outcome, price: Price, *, n_outputs: int,
           sizes: list[tuple[int, int]], usage: Mapping[str, float] | None = None,
           predict_time: float | None = None, charge: Charge | None = None) -> Bill:
    """The final bill of a terminal job by :data:`BILLING_RULES` (or by ``charge``).

    ``n_outputs``/``sizes``/``usage`` describe what is priced: what it produced when it
    succeeded, what was requested for ``price_requested``; ``usage`` holds token counts by
    :class:`TokenPrices` class (``video_seconds`` for a video: the duration asked for),
    ``predict_time`` its processing seconds.
    """
    rule = BILLING_RULES[provider][outcome]
    charge = charge or rule.charge
    name = f"{provider}.{outcome}.{charge}"
    seconds = predict_time or 0.0
    if charge == "nothing":
        return Bill(0.0, name)
    if price.unit == "gpu_second":
        return Bill(round(price.usd_per_unit * seconds, 9), name)
    if charge == "compute_time":
        return Bill(0.0, name)  # a per-output model that produced nothing
    usd = _price_of_outputs(price, sizes, n_outputs, usage or {}, seconds)
    return Bill(round(usd, 9), name)


_OUTPUT_TOKENS: dict[str, tuple[int, int, int]] = {
    "low": (272, 408, 400),
    "medium": (1056, 1584, 1568),
    "high": (4160, 6240, 6208),
}


def image_output_tokens(quality: str, size: tuple[int, int]) -> int:
    """Image output tokens of one GPT image at ``quality`` and ``size``.

    OpenAI's image-generation guide tabulates them for the three sizes (square 1024x1024,
    portrait 1024x1536, landscape 1536x1024); other sizes scale with their area.
    ``auto``/unknown quality counts as ``medium``.
    """
    square, portrait, landscape = _OUTPUT_TOKENS.get(quality, _OUTPUT_TOKENS["medium"])
    width, height = size
    if (width, height) == (1024, 1024):
        return square
    if (width, height) == (1024, 1536):
        return portrait
    if (width, height) == (1536, 1024):
        return landscape
    return max(1, round(square * width * height / (1024 * 1024)))


def describe(price: Price) -> dict[str, Any]:
    """A JSON-able view of a price (for ``GET /__emu/jobs``)."""
    out: dict[str, Any] = {"unit": price.unit, "usd_per_unit": price.usd_per_unit,
                           "source": price.source}
    if price.tokens is not None:
        out["tokens"] = price.tokens.__dict__
    return out
