"""What the emulated models draw: real images made from the input, so validation and scoring
downstream of the SDKs see meaningful pixels, not placeholders.

The operation is picked from the model name (:func:`choose_operation`) and run with pixellab's
own classical ops (:mod:`pixellab.providers.local.ops`); a prompt-only request gets a procedural
picture derived deterministically from the prompt (:func:`procedural`). An editing model asked
for a lifestyle scene (the prompt says "lifestyle" or "scene") composes one with the
local lifestyle baseline (:func:`pixellab.providers.local.scene.scene`), in the prompt's look.
Everything here is CPU work: callers run it in a worker thread (``asyncio.to_thread``), never on
the event loop.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from pixellab.providers.local.ops import autoenhance, cutout, packshot, solid, upscale
from pixellab.providers.local.scene import ASPECT_RATIOS, scene
from pixellab.validate import decode_image

__all__ = [
    "OPERATIONS",
    "EmulatedModelError",
    "blank_like",
    "choose_operation",
    "corrupt_png",
    "encode",
    "is_lifestyle_prompt",
    "procedural",
    "render",
]

OPERATIONS: tuple[str, ...] = ("cutout", "upscale", "packshot", "enhance", "generate", "video")
"""Every operation an emulated model can perform."""

_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("video", ("kling", "video", "sora", "veo")),
    ("cutout", ("background", "rembg", "bria", "birefnet")),
    ("upscale", ("upscale", "esrgan", "clarity")),
    ("packshot", ("kontext", "edit", "packshot", "gpt-image")),
)


class EmulatedModelError(Exception):
    """The emulated model cannot serve this input; the job ends failed with this message."""


def choose_operation(model: str, has_image: bool) -> str:
    """The operation an emulated ``model`` performs, from keywords in its name.

    ``kling``/``video``/``sora``/``veo`` -> ``video`` (a real clip, :mod:`pixellab.emulator.video`);
    ``background``/``rembg``/``bria``/``birefnet`` -> ``cutout``; ``upscale``/``esrgan``/``clarity``
    -> ``upscale``; ``kontext``/``edit``/``packshot``/``gpt-image`` -> ``packshot`` when there is an
    input image; any other model -> ``enhance`` with an input image, else ``generate``.
    """
    name = model.lower()
    for operation, words in _KEYWORDS:
        if any(word in name for word in words):
            if operation == "packshot" and not has_image:
                return "generate"
            return operation
    return "enhance" if has_image else "generate"


def _scale(params: dict[str, Any]) -> int:
    """Upscale factor from the usual input names, snapped to what ``upscale`` supports (2, 4)."""
    for key in ("scale", "upscale_factor", "scale_factor"):
        value = params.get(key)
        if value is not None:
            try:
                return 2 if float(value) <= 2 else 4
            except (TypeError, ValueError):
                break
    return 2


def _parse_size(value: Any) -> tuple[int, int] | None:
    """``"1536x1024"`` -> (1536, 1024); ``"auto"``, absent or malformed -> None."""
    if not isinstance(value, str) or "x" not in value:
        return None
    try:
        w, h = (int(part) for part in value.lower().split("x", 1))
    except ValueError:
        return None
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        return None
    return w, h


_LIFESTYLE = re.compile(r"\b(?:lifestyle|scene)s?\b", re.IGNORECASE)


def is_lifestyle_prompt(prompt: Any) -> bool:
    """Whether an edit prompt asks for the product in a scene (a lifestyle photo)."""
    return isinstance(prompt, str) and _LIFESTYLE.search(prompt) is not None


def _lifestyle(image: Image.Image, params: dict[str, Any],
               size: tuple[int, int] | None) -> Image.Image:
    """The product in a scene drawn in the prompt's look, of ``size`` (else the request's
    ``aspect_ratio`` when it names one, else square), 1024 px on the longer side."""
    seed = params.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        seed = int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:4], "big")
    aspect = params.get("aspect_ratio")
    if size is not None:
        longer, aspect = max(size), f"{size[0]}:{size[1]}"
    else:
        longer, aspect = 1024, aspect if aspect in ASPECT_RATIOS else "1:1"
    return scene(image, prompt=str(params.get("prompt") or ""), seed=seed, size=longer,
                 aspect_ratio=aspect)


def procedural(prompt: str, size: tuple[int, int] = (1024, 1024), seed: Any = None) -> Image.Image:
    """A deterministic picture for a prompt: a two-colour gradient and one shape.

    The colours, the shape (ellipse or rectangle) and its place all come from a hash of the
    prompt (and the request's ``seed``, when it sends one), so the same prompt always gives the
    same pixels and different prompts visibly differ.
    """
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    rng = random.Random(digest)
    w, h = size
    top = np.array([rng.randint(40, 215) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randint(40, 215) for _ in range(3)], dtype=np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.12, 0.25) * h
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    if digest[0] % 2:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image


def render(operation: str, source: bytes | None, params: dict[str, Any]) -> Image.Image:
    """Run ``operation`` on the input image bytes (None for prompt-only requests).

    ``params`` is the request's input (``prompt``, ``seed``, ``scale``, ``size``...). An edit
    (``packshot``/``enhance``) whose prompt asks for a lifestyle scene
    (:func:`is_lifestyle_prompt`) draws one instead. Raises :class:`EmulatedModelError` for
    what a real model would reject: a missing or undecodable input image, an image too small to
    process, a video request whose inputs the model refuses (clips are made by
    :func:`pixellab.emulator.video.render_clip`).
    """
    if operation == "video":
        raise EmulatedModelError(str(params.get("__video_error__") or
                                     "the video request's inputs were refused"))
    size = _parse_size(params.get("size"))
    if operation == "generate":
        prompt = str(params.get("prompt") or "")
        return procedural(prompt, size or (1024, 1024), params.get("seed"))
    if source is None:
        raise EmulatedModelError(f"{operation} needs an input image and none was given")
    try:
        image = decode_image(source)
    except Exception as exc:  # InvalidImage and anything Pillow raises on hostile bytes
        raise EmulatedModelError(f"cannot read the input image: {exc}") from exc
    try:
        if operation in ("packshot", "enhance") and is_lifestyle_prompt(params.get("prompt")):
            return _lifestyle(image, params, size)
        if operation == "cutout":
            return cutout(image)
        if operation == "upscale":
            return upscale(image, scale=_scale(params))
        if operation == "packshot":
            out = packshot(image, size=1024)
            return ImageOps.pad(out, size, color=(255, 255, 255)) if size else out
        return autoenhance(image)
    except ValueError as exc:  # e.g. "image too small for cutout"
        raise EmulatedModelError(str(exc)) from exc


def encode(image: Image.Image, fmt: str = "png") -> tuple[bytes, str, str]:
    """Encode as ``fmt`` (png, jpeg or webp); returns (bytes, media type, file extension)."""
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg", "jpg"
    if fmt == "webp":
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=90)
        return buffer.getvalue(), "image/webp", "webp"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "image/png", "png"


def blank_like(image: Image.Image) -> Image.Image:
    """What a safety filter returns: an all-black RGB image of the same size."""
    return solid(image)


def corrupt_png(good: bytes, seed: int) -> bytes:
    """Garbage that starts like a PNG: the real signature, then random bytes, cut short.

    Half the length of the real file and no ``IEND`` chunk, so a careful decoder reports it as
    truncated/undecodable while a magic-bytes sniff still says "PNG".
    """
    rng = random.Random(seed)
    length = max(64, len(good) // 2)
    body = bytes(rng.getrandbits(8) for _ in range(min(length, 4096) - 8))
    garbage = (body * (length // max(len(body), 1) + 1))[: length - 8]
    return b"\x89PNG\r\n\x1a\n" + garbage.replace(b"IEND", b"IENX")
