"""An emulated vision judge whose truth is known: what pixellab's judge tests calibrate against.

A real LLM judge is noisy, prefers the first image it is shown, and calls close pairs a tie; a
test of pixellab's judging (order swapping, agreement, bias estimates) can only say whether those
were handled right if it knows what the judge *should* have answered. So the emulator can be told
the truth (:meth:`pixellab.emulator.Emulator.judge`): a latent quality per image, keyed by the
sha256 of the image's bytes, and how noisy and biased the judge is. A chat completion whose
``response_format`` is the ``json_schema`` named :data:`JUDGE_SCHEMA_NAME` is then answered by
:func:`verdict`, the one rule below, instead of a schema filler.

The rule, for one call (``rng`` seeded from the truth's ``seed`` and the call's number):

1. with probability ``position_bias`` the winner is ``"A"``, whatever the images are (the
   first-position bias LLM judges are known for);
2. otherwise ``d = q(A) - q(B) + gauss(0, noise)``, and the winner is ``"A"`` if
   ``d > tie_margin``, ``"B"`` if ``d < -tie_margin``, else ``"tie"``.

Every criterion gets the winner's answer. Images are read from the user messages' ``image_url``
parts: the last two are A and B (pixellab sends the source photo, then A, then B); an image that
is not a ``data:`` URL, or whose hash the truth does not list, has quality 0.0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "JUDGE_SCHEMA_NAME",
    "JudgeDesk",
    "JudgeTruth",
    "data_url_bytes",
    "image_parts",
    "verdict",
]

JUDGE_SCHEMA_NAME = "pixellab_judge"
"""The ``json_schema.name`` of pixellab's judge calls: only these are answered by the judge."""


def data_url_bytes(url: str) -> bytes | None:
    """The bytes a ``data:`` URL carries (base64 or percent-encoded), or None for any other URL
    or a malformed one: the emulator fetches nothing, so only inline images can be looked at."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep:
        return None
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            return None
    return urllib.parse.unquote_to_bytes(payload)


def image_parts(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """The ``image_url`` content parts of the user messages, in the order they were sent, each as
    ``{"url", "detail"}`` (the chat API also accepts ``image_url`` as a bare string)."""
    found: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "user") != "user":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                if isinstance(image, str):
                    image = {"url": image}
                if isinstance(image, dict):
                    found.append({"url": str(image.get("url") or ""),
                                  "detail": image.get("detail")})
    return found


@dataclass(frozen=True)
class JudgeTruth:
    """What the emulated judge knows and how it errs.

    ``quality`` maps the lower-case sha256 hex of an image's bytes to its latent quality (an
    image not listed is 0.0); ``noise`` is the standard deviation of the Gaussian added to each
    quality difference; ``position_bias`` the probability that "A" wins regardless; a difference
    within ``tie_margin`` of zero is a tie; ``seed`` makes the draws reproducible.
    """

    quality: Mapping[str, float] = field(default_factory=dict)
    noise: float = 0.0
    position_bias: float = 0.0
    tie_margin: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError("noise must be a finite number >= 0")
        if not 0.0 <= self.position_bias <= 1.0:
            raise ValueError("position_bias must be in [0, 1]")
        if not (math.isfinite(self.tie_margin) and self.tie_margin >= 0):
            raise ValueError("tie_margin must be a finite number >= 0")
        quality: dict[str, float] = {}
        for digest, value in dict(self.quality).items():
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"quality of {digest!r} must be finite")
            quality[str(digest).lower()] = number
        object.__setattr__(self, "quality", quality)  # a private, normalised copy
        object.__setattr__(self, "seed", int(self.seed))

    def quality_of(self, image: bytes | None) -> float:
        """The latent quality of an image's bytes (0.0 when unknown or unreadable)."""
        if image is None:
            return 0.0
        return self.quality.get(hashlib.sha256(image).hexdigest(), 0.0)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view, for ``GET /__emu/judge``."""
        return {"quality": dict(self.quality), "noise": self.noise,
                "position_bias": self.position_bias, "tie_margin": self.tie_margin,
                "seed": self.seed}


def verdict(messages: Sequence[Any], truth: JudgeTruth, rng: random.Random,
            criteria: Sequence[str] = ()) -> dict[str, Any]:
    """The judge's answer to one call: ``{"criteria": {name: w}, "winner": w, "reason": str}``
    by the rule in the module docstring. Both draws are always taken (bias, then noise), so a
    call's noise does not depend on whether the bias fired."""
    images = image_parts(messages)
    q_a = q_b = 0.0
    if len(images) >= 2:
        q_a, q_b = (truth.quality_of(data_url_bytes(part["url"])) for part in images[-2:])
    biased = rng.random() < truth.position_bias
    jitter = rng.gauss(0.0, truth.noise) if truth.noise > 0 else 0.0
    d = q_a - q_b + jitter
    if biased:
        winner = "A"
    elif d > truth.tie_margin:
        winner = "A"
    elif d < -truth.tie_margin:
        winner = "B"
    else:
        winner = "tie"
    reason = f"emulated judge: A q={q_a:.3f} B q={q_b:.3f} d={d:+.3f}" + (
        " (first-position bias)" if biased else "")
    return {"criteria": {name: winner for name in criteria}, "winner": winner, "reason": reason}


class JudgeDesk:
    """The emulator's current :class:`JudgeTruth` and the number of calls judged under it.

    Set from the test's thread, read from the emulator's loop, hence the lock. Each judged call
    gets ``random.Random(f"{seed}:{n}")`` with ``n`` counting from 0 since the truth was set, so
    the n-th verdict after :meth:`set` is the same on every run (str seeds hash with SHA-512,
    not ``PYTHONHASHSEED``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._truth: JudgeTruth | None = None
        self._calls = 0

    @property
    def truth(self) -> JudgeTruth | None:
        """The truth in force, or None (judge calls then get the plain schema filler)."""
        return self._truth

    def set(self, truth: JudgeTruth | None) -> None:
        """Put ``truth`` in force (None: no judge) and restart the call count."""
        with self._lock:
            self._truth, self._calls = truth, 0

    def draw(self) -> tuple[JudgeTruth, random.Random] | None:
        """The truth and a fresh generator for the next judged call, or None without a truth."""
        with self._lock:
            if self._truth is None:
                return None
            n, self._calls = self._calls, self._calls + 1
            return self._truth, random.Random(f"{self._truth.seed}:{n}")
