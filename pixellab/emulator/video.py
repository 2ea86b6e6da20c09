"""Emulated image-to-video models: what each accepts, and the real H.264 clip it answers with.

Why: video outputs must go through the same wire, download and validation paths as the real
ones, so the emulator makes a real, playable MP4 from the input photo (a slow zoom, "Ken Burns")
of the duration, aspect ratio and resolution the request asked for, and bills the seconds the
provider would bill (:mod:`pixellab.emulator.billing`).

What each model accepts (:data:`VIDEO_MODELS`), as the providers publish it:

* Replicate ``kwaivgi/kling-v1.6-standard``: ``start_image``, ``duration`` 5 or 10 (integer),
  ``aspect_ratio`` 16:9, 9:16 or 1:1; 720p, 24 fps (replicate.com/kwaivgi/kling-v1.6-standard,
  as used by public clients, e.g. the ``replicate.run`` calls found by code search).
* Replicate ``google/veo-3.1``: ``image``, ``duration`` 4, 6 or 8 (integer), ``aspect_ratio``
  16:9 or 9:16, ``resolution`` 720p or 1080p, ``generate_audio``, ``seed``; "720p or 1080p
  resolution at 24 FPS"; output a single URI (the model page as copied in
  Volpestyle/game-asset-pipeline ``docs/models/replicate/veo-3.1.md`` @ 0864d61d).
* fal ``fal-ai/kling-video/v1.6/standard/image-to-video``: ``image_url``, ``duration`` "5" or
  "10" (strings); the clip follows the image's shape (fal's Kling model pages).
* fal ``fal-ai/veo3.1/image-to-video``: ``image_url``, ``duration`` "4s", "6s" or "8s",
  ``aspect_ratio`` auto, 16:9 or 9:16, ``resolution`` 720p, 1080p or 4k, ``generate_audio``,
  ``seed`` (fal.ai/docs/model-api-reference/video-generation-api/veo3.1-image-to-video).
* OpenAI ``sora-2``: ``seconds`` "4", "8" or "12", ``size`` 720x1280 or 1280x720 (``sora-2-pro``
  also 1024x1792 and 1792x1024); an ``input_reference`` image must have the video's size
  (openai/openai-openapi ``openapi.yaml`` @ f85dbe22 ``CreateVideoMultipartBody``; the video
  generation guide). Handled in :mod:`pixellab.emulator.openai_api` with :func:`sora_plan`.

Veo makes a soundtrack unless ``generate_audio`` is false (the default is true on both
providers); fal bills seconds with audio at another price. The clips carry no audio track.

Other models whose name says video (test models such as ``emu/video``) accept any
``duration``/``seconds``, ``aspect_ratio`` and ``resolution``.

Faults change the clip (the job still succeeds and bills): ``corrupt`` cuts the file in half
(the MP4 index, written last, is lost: a truncated file), ``blank`` makes every frame black,
``frozen`` repeats the first frame, ``wrong_duration`` makes half the asked duration,
``wrong_aspect`` swaps width and height (a square clip becomes 16:9).

Clips whose size the local provider's Ken Burns baseline makes (16:9, 9:16, 1:1 or 4:5 at
360p-1080p, 8 fps or more) are made by it (:func:`pixellab.providers.local.video.kenburns`);
others (Sora's 1024x1792, a capped test size, a lower test frame rate, the ``blank`` and
``frozen`` faults) by a plain centred zoom here. Rendering is CPU work: callers run
:func:`render_clip` in a worker thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pixellab.emulator.imaging import EmulatedModelError, procedural
from pixellab.media.encode import encode_video, even_size
from pixellab.validate import decode_image

__all__ = [
    "SORA_SIZES",
    "VIDEO_MODELS",
    "VideoInputError",
    "VideoPlan",
    "VideoSpec",
    "clip_size",
    "plan_for",
    "render_clip",
    "sora_plan",
]

VIDEO_FAULTS = ("corrupt", "blank", "frozen", "wrong_duration", "wrong_aspect")
"""Fault actions that change a video job's clip."""


class VideoInputError(ValueError):
    """A video request the model refuses: ``field`` is the input named, ``allowed`` what it
    takes (for the provider's error shape)."""

    def __init__(self, field: str, value: Any, allowed: tuple[Any, ...]) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        listing = ", ".join(repr(a) for a in allowed)
        super().__init__(f"{field}: {value!r} is not one of {listing}")


@dataclass(frozen=True)
class VideoSpec:
    """What one video model accepts: the input names, their allowed wire values (None: any)
    and defaults, and its native frame rate."""

    duration_key: str
    durations: tuple[Any, ...] | None
    default_duration: Any
    aspect_key: str | None = "aspect_ratio"
    aspects: tuple[str, ...] | None = None
    default_aspect: str | None = None
    """None or ``auto``: the clip takes the input image's shape."""
    resolution_key: str | None = "resolution"
    resolutions: tuple[str, ...] | None = None
    default_resolution: str = "720p"
    fps: float = 24.0
    source: str = ""
    audio_key: str | None = None
    audio_default: bool = False
    """Veo makes a soundtrack unless ``generate_audio`` is false (fal bills it dearer)."""


VIDEO_MODELS: dict[str, dict[str, VideoSpec]] = {
    "replicate": {
        "kwaivgi/kling-v1.6": VideoSpec(
            "duration", (5, 10), 5, "aspect_ratio", ("16:9", "9:16", "1:1"), "16:9", None,
            source="replicate.com/kwaivgi/kling-v1.6-standard (as used by public clients)"),
        "google/veo-3.1": VideoSpec(
            "duration", (4, 6, 8), 8, "aspect_ratio", ("16:9", "9:16"), "16:9", "resolution",
            ("720p", "1080p"), "1080p",
            source="Volpestyle/game-asset-pipeline docs/models/replicate/veo-3.1.md @ 0864d61d",
            audio_key="generate_audio", audio_default=True),
    },
    "fal": {
        "fal-ai/kling-video/v1.6": VideoSpec(
            "duration", ("5", "10"), "5", None, None, None, None,
            source="fal.ai/models/fal-ai/kling-video (v1.6 standard image-to-video)"),
        "fal-ai/veo3.1": VideoSpec(
            "duration", ("4s", "6s", "8s"), "8s", "aspect_ratio", ("auto", "16:9", "9:16"),
            "auto", "resolution", ("720p", "1080p", "4k"), "720p",
            source="fal.ai/docs/model-api-reference/video-generation-api/"
                   "veo3.1-image-to-video",
            audio_key="generate_audio", audio_default=True),
    },
}
"""Known video models by provider and model-name prefix."""

GENERIC = VideoSpec("duration", None, 5, "aspect_ratio", None, None, "resolution", None)
"""Any other video model (test models): any duration, aspect ratio and resolution."""

SORA_SIZES: dict[str, tuple[str, ...]] = {
    "sora-2": ("720x1280", "1280x720"),
    "sora-2-pro": ("720x1280", "1280x720", "1024x1792", "1792x1024"),
}
"""Output sizes by Sora model (the SDK's ``VideoSize`` enumerates all four; the video
generation guide reserves the larger two for ``sora-2-pro``)."""
SORA_SECONDS = ("4", "8", "12")

_SHORT_SIDES = {"360p": 360, "480p": 480, "540p": 540, "720p": 720, "1080p": 1080,
                "1440p": 1440, "2k": 1440, "4k": 2160}
_ASPECTS = ("16:9", "9:16", "1:1")


@dataclass(frozen=True)
class VideoPlan:
    """The clip a job makes: ``seconds`` long (what is billed), ``aspect`` W:H (None: the input
    image's shape), ``short_side`` pixels on its shorter side, or exactly ``size`` (Sora)."""

    seconds: float
    aspect: str | None
    short_side: int
    fps: float
    size: tuple[int, int] | None = None
    audio: bool = False


def _spec(provider: str, model: str) -> VideoSpec:
    for prefix, spec in VIDEO_MODELS.get(provider, {}).items():
        if model == prefix or model.startswith(prefix + "/") or model.startswith(prefix + "-"):
            return spec
    return GENERIC


def _number(value: Any) -> float | None:
    """Seconds in a duration value: 5, 5.0, "5" and "5s" all say 5."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("s"))
        except ValueError:
            return None
    return None


def plan_for(provider: str, model: str, params: dict[str, Any]) -> VideoPlan:
    """The clip ``params`` ask ``model`` for; :class:`VideoInputError` for a value it refuses
    (an integer model sent "5", a Veo duration of 5, an aspect ratio it does not make)."""
    spec = _spec(provider, model)
    duration = params.get(spec.duration_key, params.get("seconds", spec.default_duration))
    if spec.durations is not None and duration not in spec.durations:
        raise VideoInputError(spec.duration_key, duration, spec.durations)
    seconds = _number(duration)
    if seconds is None or not 0 < seconds <= 60:
        raise VideoInputError(spec.duration_key, duration, ("a number of seconds, 0 to 60",))
    aspect: str | None = spec.default_aspect
    if spec.aspect_key is not None and spec.aspect_key in params:
        aspect = params[spec.aspect_key]
        allowed = spec.aspects or ("auto", *_ASPECTS, "4:3", "3:4", "21:9")
        if aspect not in allowed:
            raise VideoInputError(spec.aspect_key, aspect, allowed)
    resolution = spec.default_resolution
    if spec.resolution_key is not None and spec.resolution_key in params:
        resolution = params[spec.resolution_key]
        allowed = spec.resolutions or tuple(_SHORT_SIDES)
        if resolution not in allowed:
            raise VideoInputError(spec.resolution_key, resolution, allowed)
    audio = spec.audio_default
    if spec.audio_key is not None and spec.audio_key in params:
        audio = params[spec.audio_key]
        if not isinstance(audio, bool):
            raise VideoInputError(spec.audio_key, audio, (True, False))
    return VideoPlan(seconds=seconds, aspect=None if aspect in (None, "auto") else aspect,
                     short_side=_SHORT_SIDES.get(str(resolution).lower(), 720), fps=spec.fps,
                     audio=audio)


def sora_plan(model: str, seconds: Any, size: Any) -> VideoPlan:
    """A Sora job's clip from its ``seconds`` and ``size`` form fields (defaults "4" and
    "720x1280", as the spec says)."""
    seconds = "4" if seconds in (None, "") else seconds
    size = "720x1280" if size in (None, "") else size
    if seconds not in SORA_SECONDS:
        raise VideoInputError("seconds", seconds, SORA_SECONDS)
    sizes = SORA_SIZES.get(model, SORA_SIZES["sora-2-pro"])
    if size not in sizes:
        raise VideoInputError("size", size, sizes)
    width, height = (int(part) for part in str(size).split("x"))
    return VideoPlan(seconds=float(seconds), aspect=None, short_side=min(width, height),
                     fps=30.0, size=(width, height))


def _ratio(aspect: str) -> float:
    width, _, height = aspect.partition(":")
    return float(width) / float(height)


def clip_size(plan: VideoPlan, source_size: tuple[int, int]) -> tuple[int, int]:
    """The clip's (width, height) before any render cap: Sora's exact size; else the asked
    aspect (or the input's, snapped to 16:9, 9:16 or 1:1) at the asked short side."""
    if plan.size is not None:
        return plan.size
    if plan.aspect is not None:
        ratio = _ratio(plan.aspect)
    else:
        shape = source_size[0] / max(1, source_size[1])
        ratio = _ratio(min(_ASPECTS, key=lambda a: abs(math.log(_ratio(a) / shape))))
    short = plan.short_side
    if ratio >= 1:
        return even_size(round(short * ratio), short)
    return even_size(short, round(short / ratio))


def _capped(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return even_size(max(2, round(width * scale)), max(2, round(height * scale)))


def _frames(still: Image.Image, size: tuple[int, int], count: int) -> Iterator[np.ndarray]:
    """A slow zoom into ``still`` (cropped to the clip's shape), ``count`` frames."""
    base = ImageOps.fit(still.convert("RGB"), (size[0] * 2, size[1] * 2),
                        Image.Resampling.BILINEAR)
    bw, bh = base.size
    for index in range(count):
        zoom = 1.0 + 0.15 * (index / max(1, count - 1))
        cw, ch = bw / zoom, bh / zoom
        left, top = (bw - cw) / 2, (bh - ch) / 2
        frame = base.resize(size, Image.Resampling.BILINEAR,
                            box=(left, top, left + cw, top + ch))
        yield np.asarray(frame)


def _kenburns(still: Image.Image, size: tuple[int, int], seconds: float, fps: float,
              seed: Any) -> bytes | None:
    """The clip from the local provider's Ken Burns baseline
    (:func:`pixellab.providers.local.video.kenburns`) when it makes exactly this frame size at
    this rate; None otherwise (sizes it has no name for, rates below its range, or that module
    missing), and the emulator zooms by itself."""
    try:
        from pixellab.providers.local import video as local

        for aspect in local.ASPECT_RATIOS:
            for resolution in local.RESOLUTIONS:
                if local.frame_size(aspect, resolution) == size:
                    return local.kenburns(still, duration_s=seconds, fps=fps,
                                          aspect_ratio=aspect, resolution=resolution,
                                          seed=seed if isinstance(seed, int) and not isinstance(
                                              seed, bool) and seed >= 0 else 0)
    except Exception:  # an optional path: any failure falls back to the emulator's own zoom
        return None
    return None


def render_clip(plan: VideoPlan, source: bytes | None, params: dict[str, Any], *,
                action: str | None, fps: float | None = None,
                max_side: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """The MP4 a job answers with and its (width, height): ``plan``'s clip from the input
    photo (or a picture drawn from the prompt), changed by a video fault ``action``. ``fps``
    and ``max_side`` lower the frame rate and cap the size (fast tests); None keeps the
    model's own."""
    if source is not None:
        try:
            still = decode_image(source)
        except Exception as exc:  # InvalidImage and anything Pillow raises on hostile bytes
            raise EmulatedModelError(f"cannot read the input image: {exc}") from exc
    else:
        still = procedural(str(params.get("prompt") or ""), (1024, 576), params.get("seed"))
    size = clip_size(plan, still.size)
    if action == "wrong_aspect":
        size = (size[1], size[0]) if size[0] != size[1] else even_size(
            round(size[0] * 16 / 9), size[1])
    size = _capped(size, max_side)
    rate = fps or plan.fps
    seconds = plan.seconds / 2 if action == "wrong_duration" else plan.seconds
    count = max(2, round(seconds * rate))
    data = None
    if action not in ("blank", "frozen"):
        data = _kenburns(still, size, seconds, rate, params.get("seed"))
    if data is None:
        frames: Iterator[np.ndarray] = _frames(still, size, count)
        if action == "blank":
            frames = (np.zeros((size[1], size[0], 3), np.uint8) for _ in range(count))
        elif action == "frozen":
            first = next(_frames(still, size, 1))
            frames = (first for _ in range(count))
        data = encode_video(frames, fps=rate, container="mp4", preset="ultrafast")
    if action == "corrupt":
        data = data[: max(64, len(data) // 2)]
    return data, size


def thumbnail(source: bytes | None, params: dict[str, Any], size: tuple[int, int]) -> bytes:
    """A WebP still of the clip's first frame (Sora's ``thumbnail`` variant)."""
    try:
        still = decode_image(source) if source is not None else None
    except Exception:
        still = None
    if still is None:
        still = procedural(str(params.get("prompt") or ""), (1024, 576), params.get("seed"))
    buffer = io.BytesIO()
    ImageOps.fit(still.convert("RGB"), size).save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()
