"""Free, deterministic, offline image-to-video baselines behind the ``local`` provider.

Why these exist
---------------
A paid image-to-video model is only worth its price per second if its clip beats what a few
lines of classical motion already give a shop: the same photo, gently animated. Each operation
here is such a baseline, and the offline demo's video engine:

* :func:`kenburns` - an eased zoom and pan across the photo;
* :func:`parallax` - the product cut out (:func:`~pixellab.providers.local.ops.cutout`) and moved
  over its own background (product region inpainted, slightly blurred) with differential motion
  and a soft drop shadow: a 2.5-D "dolly" shot;
* :func:`angles` - several photos of one product held in turn, joined by crossfades, or cycled
  with quick slides (``transition="turntable"``).

Contract shared by every operation: the result is H.264 in MP4 (``yuv420p``, encoded by
:func:`pixellab.media.encode.encode_video`), ``round(duration_s * fps)`` frames at ``fps``, of
:func:`frame_size` ``(aspect_ratio, resolution)``; the photo is placed to fill the frame, cropped
when its aspect is close to the frame's and otherwise shown whole over a blurred, darkened copy of
itself (never black bars). Pure and deterministic: the same inputs give byte-identical bytes
(x264 runs with the ``superfast`` preset, whose settings have no macroblock-tree rate control:
with it, as in ``veryfast``, this FFmpeg build's x264 output varied from run to run even on one
thread), and ``seed`` picks the direction of motion. Frames are made lazily and encoded as they
come, so memory stays at a few frames whatever the duration. Layers are composed once; a frame is
one or two ``cv2.warpAffine`` calls on uint8 arrays plus a blend on the product's box only. A 4-s
480p clip at 24 fps takes about 0.5-1 s on two cores, most of it in the encoder.

Invalid parameters raise ``ValueError`` whose message starts with the parameter's name (the
provider turns it into :class:`~pixellab.errors.InvalidRequest`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Real

import cv2
import numpy as np
from PIL import Image

from pixellab.media.encode import encode_video
from pixellab.providers.local.ops import cutout

__all__ = [
    "ASPECT_RATIOS", "CUTOUT_METHODS", "DURATION_RANGE_S", "FPS_RANGE", "MAX_ANGLES",
    "RESOLUTIONS", "TRANSITIONS", "ClipSpec", "angles", "clip_spec", "frame_size", "kenburns",
    "parallax",
]

ASPECT_RATIOS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "16:9": (16, 9),
                                             "4:5": (4, 5)}
"""Frame aspect ratios by name, as (width, height)."""
RESOLUTIONS: dict[str, int] = {"360p": 360, "480p": 480, "720p": 720, "1080p": 1080}
"""The frame's short side by resolution name."""
DURATION_RANGE_S = (0.5, 20.0)
FPS_RANGE = (8.0, 60.0)
TRANSITIONS = ("crossfade", "turntable")
CUTOUT_METHODS = ("grabcut", "threshold")
""":func:`~pixellab.providers.local.ops.cutout`'s methods, for :func:`parallax`."""
MAX_ANGLES = 12
"""Most photos one :func:`angles` clip takes (the main one included)."""

PRESET = "superfast"
"""x264 preset: deterministic output (see the module docstring) and fast."""
CRF = 23

_CROP_LIMIT = 1.2
"""Photos whose aspect differs from the frame's by at most this factor fill it by cropping;
beyond it they are shown whole over a blurred backdrop."""
_U8 = np.uint8
_F32 = np.float32
Affine = np.ndarray  # 2x3 float64 matrix: destination = A @ (x, y, 1)


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """A validated clip: frame size (even), frame rate and number of frames."""

    width: int
    height: int
    fps: float
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return number


def _choice(name: str, value: object, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, not {value!r}")
    return value


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"seed must be an integer, not {value!r}")
    return value


def frame_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """(width, height) of a frame: the short side is the resolution's (480p: 480), the long side
    follows the aspect ratio, both rounded to even numbers (4:2:0 video needs them)."""
    a, b = ASPECT_RATIOS[_choice("aspect_ratio", aspect_ratio, tuple(ASPECT_RATIOS))]
    short = RESOLUTIONS[_choice("resolution", resolution, tuple(RESOLUTIONS))]
    long = 2 * round(short * max(a, b) / min(a, b) / 2)
    return (long, short) if a > b else (short, long)


def clip_spec(duration_s: float, fps: float, aspect_ratio: str, resolution: str) -> ClipSpec:
    """Validate the shared parameters; ``ValueError`` names the first bad one."""
    duration = _number("duration_s", duration_s)
    lo, hi = DURATION_RANGE_S
    if not lo <= duration <= hi:
        raise ValueError(f"duration_s must be {lo:g} to {hi:g} seconds, not {duration_s!r}")
    rate = _number("fps", fps)
    lo, hi = FPS_RANGE
    if not lo <= rate <= hi:
        raise ValueError(f"fps must be {lo:g} to {hi:g}, not {fps!r}")
    width, height = frame_size(aspect_ratio, resolution)
    return ClipSpec(width, height, rate, max(2, round(duration * rate)))


def _encode(frames: Iterator[np.ndarray], spec: ClipSpec) -> bytes:
    return encode_video(frames, fps=spec.fps, container="mp4", crf=CRF, preset=PRESET)


# --------------------------------------------------------------------------------------------
# pixels: placing a photo in a frame, moving a camera over it
# --------------------------------------------------------------------------------------------


def _ease(t: float) -> float:
    """Cosine ease-in-out of t in [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * t)


def _rgb(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8; transparency is flattened onto white (a cut-out shown as a packshot)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=_U8)
    return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=_U8)


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    width, height = max(1, width), max(1, height)
    if (width, height) == (array.shape[1], array.shape[0]):
        return array.copy()
    shrink = width < array.shape[1] and height < array.shape[0]
    return cv2.resize(array, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


@dataclass(frozen=True)
class _Placement:
    """Where a photo goes on a canvas: scaled to ``size`` with its top-left at ``origin`` (canvas
    pixels, may be negative when cropped); ``backdrop`` when it does not cover the canvas."""

    size: tuple[int, int]
    origin: tuple[int, int]
    backdrop: bool


def _place(photo_wh: tuple[int, int], canvas_wh: tuple[int, int]) -> _Placement:
    pw, ph = photo_wh
    cw, ch = canvas_wh
    mismatch = max(pw / ph, cw / ch) / min(pw / ph, cw / ch)
    cover = mismatch <= _CROP_LIMIT
    scale = (max if cover else min)(cw / pw, ch / ph)
    w, h = max(1, round(pw * scale)), max(1, round(ph * scale))
    return _Placement((w, h), ((cw - w) // 2, (ch - h) // 2), backdrop=not cover)


def _backdrop(rgb: np.ndarray, canvas_wh: tuple[int, int]) -> np.ndarray:
    """The photo scaled to cover the canvas, heavily blurred and darkened (made at 1/8 scale)."""
    cw, ch = canvas_wh
    sw, sh = max(2, cw // 8), max(2, ch // 8)
    ph, pw = rgb.shape[:2]
    scale = max(sw / pw, sh / ph)
    small = _resize(rgb, max(sw, math.ceil(pw * scale)), max(sh, math.ceil(ph * scale)))
    y0, x0 = (small.shape[0] - sh) // 2, (small.shape[1] - sw) // 2
    small = np.ascontiguousarray(small[y0:y0 + sh, x0:x0 + sw])
    small = cv2.GaussianBlur(small, (0, 0), max(sw, sh) / 12, borderType=cv2.BORDER_REFLECT)
    big = cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR)
    return cv2.convertScaleAbs(big, alpha=0.55, beta=8.0)


def _paste(canvas: np.ndarray, layer: np.ndarray, origin: tuple[int, int]) -> None:
    """Copy ``layer`` (cropped to the canvas) onto ``canvas`` at ``origin``, in place."""
    x, y = origin
    ch, cw = canvas.shape[:2]
    lh, lw = layer.shape[:2]
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + lw, cw), min(y + lh, ch)
    if cx0 < cx1 and cy0 < cy1:
        canvas[cy0:cy1, cx0:cx1] = layer[cy0 - y:cy1 - y, cx0 - x:cx1 - x]


def _compose(rgb: np.ndarray, canvas_wh: tuple[int, int]) -> np.ndarray:
    """The photo placed on a canvas of ``canvas_wh``: cropped to fill it, or whole over its
    blurred backdrop when the aspects differ by more than :data:`_CROP_LIMIT`."""
    placement = _place((rgb.shape[1], rgb.shape[0]), canvas_wh)
    canvas = (_backdrop(rgb, canvas_wh) if placement.backdrop
              else np.zeros((canvas_wh[1], canvas_wh[0], 3), _U8))
    _paste(canvas, _resize(rgb, *placement.size), placement.origin)
    return canvas


def _canvas_size(spec: ClipSpec, margin: float) -> tuple[int, int]:
    return math.ceil(spec.width * margin), math.ceil(spec.height * margin)


def _camera(canvas_wh: tuple[int, int], spec: ClipSpec, zoom: float,
            pan: tuple[float, float]) -> Affine:
    """Canvas -> frame for a camera at ``zoom`` (1 = the whole canvas in the frame) whose centre
    is moved by ``pan`` (each -1..1) times the room the zoom leaves on each side."""
    cw, ch = canvas_wh
    scale = max(spec.width / cw, spec.height / ch) * zoom
    slack_x = max(0.0, (cw - spec.width / scale) / 2)
    slack_y = max(0.0, (ch - spec.height / scale) / 2)
    cx = (cw - 1) / 2 + pan[0] * slack_x
    cy = (ch - 1) / 2 + pan[1] * slack_y
    return np.array([[scale, 0.0, (spec.width - 1) / 2 - scale * cx],
                     [0.0, scale, (spec.height - 1) / 2 - scale * cy]])


def _then(first: Affine, second: Affine) -> Affine:
    """The affine map applying ``first``, then ``second``."""
    a = np.vstack([first, [0.0, 0.0, 1.0]])
    b = np.vstack([second, [0.0, 0.0, 1.0]])
    return (b @ a)[:2]


def _about(centre: tuple[float, float], scale: float, shift: tuple[float, float]) -> Affine:
    cx, cy = centre
    return np.array([[scale, 0.0, cx - scale * cx + shift[0]],
                     [0.0, scale, cy - scale * cy + shift[1]]])


def _warp(src: np.ndarray, matrix: Affine, size: tuple[int, int],
          border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    return cv2.warpAffine(src, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border)


def _direction(rng: np.random.Generator) -> tuple[float, float]:
    """One of eight compass directions, turned by up to 15 degrees."""
    angle = math.radians(45 * int(rng.integers(8)) + float(rng.uniform(-15, 15)))
    return math.cos(angle), math.sin(angle)


# --------------------------------------------------------------------------------------------
# Ken Burns
# --------------------------------------------------------------------------------------------


def kenburns(image: Image.Image, *, duration_s: float = 5.0, fps: float = 24,
             aspect_ratio: str = "9:16", resolution: str = "480p", zoom: float = 1.15,
             seed: int = 0) -> bytes:
    """An eased zoom and pan across the photo, as MP4 bytes.

    The camera zooms from the whole composed frame to ``zoom`` x while drifting towards one side
    (or the reverse: the seed picks in or out and one of eight directions). At zoom 1 the frame
    shows the photo as placed (see the module docstring). The canvas is composed once at ``zoom``
    x the frame's size, so the closest framing is never upsampled.
    """
    spec = clip_spec(duration_s, fps, aspect_ratio, resolution)
    zoom = _number("zoom", zoom)
    if not 1.0 <= zoom <= 2.0:
        raise ValueError(f"zoom must be 1 to 2, not {zoom!r}")
    rng = np.random.default_rng(_seed(seed) % 2**64)
    direction = _direction(rng)
    zoom_in = bool(rng.random() < 0.5)
    canvas_wh = _canvas_size(spec, zoom)
    canvas = _compose(_rgb(image), canvas_wh)

    def frames() -> Iterator[np.ndarray]:
        for f in range(spec.frames):
            e = _ease(f / (spec.frames - 1))
            e = e if zoom_in else 1.0 - e
            pan = (0.85 * direction[0] * e, 0.85 * direction[1] * e)
            matrix = _camera(canvas_wh, spec, 1.0 + (zoom - 1.0) * e, pan)
            yield _warp(canvas, matrix, (spec.width, spec.height))

    return _encode(frames(), spec)


# --------------------------------------------------------------------------------------------
# parallax
# --------------------------------------------------------------------------------------------

_PARALLAX_MARGIN = 1.12
_BG_ZOOM = 0.06  # the background's zoom over the clip
_FG_ZOOM = 0.06  # the product's extra zoom on top of the background's
_FG_COUNTER = 0.02  # the product's counter-shift, as a fraction of the frame's long side
_LIFT = 0.02  # how far the product rises off its shadow, as a fraction of its height


@dataclass(frozen=True)
class _Sprite:
    """A layer smaller than the canvas: ``rgb`` (optional) and ``alpha`` (float 0-1) whose
    top-left sits at ``origin`` in canvas pixels."""

    rgb: np.ndarray | None
    alpha: np.ndarray
    origin: tuple[int, int]


def _plate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The photo with the product removed: its region (grown a little) inpainted at low
    resolution, then everything softened a touch (the background is further away)."""
    h, w = rgb.shape[:2]
    grow = max(3, round(0.015 * max(h, w)))
    hole: np.ndarray = cv2.dilate((alpha > 0.04).astype(_U8),
                                  cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    if not hole.any():
        return cv2.GaussianBlur(rgb, (0, 0), 1.2)
    factor = min(1.0, 160 / max(h, w))
    sw, sh = max(8, round(w * factor)), max(8, round(h * factor))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    small_hole: np.ndarray = cv2.dilate(
        (cv2.resize(hole, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(_U8),
        np.ones((3, 3), _U8))
    filled = cv2.inpaint(small, small_hole, 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(filled, (0, 0), 2.0)
    filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(hole.astype(_F32), (0, 0), grow / 2)[..., None]
    plate = np.rint(rgb * (1 - soft) + filled * soft).astype(_U8)
    return cv2.GaussianBlur(plate, (0, 0), 1.2)


def _product_layers(rgb: np.ndarray, placement: _Placement, canvas_wh: tuple[int, int],
                    cutout_method: str) -> tuple[np.ndarray, _Sprite | None, _Sprite | None]:
    """(background canvas, product sprite, shadow sprite) of the placed photo."""
    placed = _resize(rgb, *placement.size)
    if min(placed.shape[:2]) < 16:  # a sliver of a photo: nothing to cut out
        canvas = _compose(rgb, canvas_wh)
        return canvas, None, None
    rgba = np.asarray(cutout(Image.fromarray(placed), method=cutout_method))
    cut: np.ndarray = rgba[..., 3].astype(_F32) / 255.0
    canvas = (_backdrop(rgb, canvas_wh) if placement.backdrop
              else np.zeros((canvas_wh[1], canvas_wh[0], 3), _U8))
    _paste(canvas, _plate(placed, cut), placement.origin)
    alpha: np.ndarray = cv2.erode(cut, np.ones((3, 3), _U8))  # a cut-out's rim is background
    ys, xs = np.nonzero(alpha > 0.02)
    if ys.size == 0:
        return canvas, None, None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    ox, oy = placement.origin
    product = _Sprite(np.ascontiguousarray(rgba[y0:y1, x0:x1, :3]),
                      np.ascontiguousarray(alpha[y0:y1, x0:x1]), (ox + x0, oy + y0))
    return canvas, product, _contact_shadow(product)


def _contact_shadow(product: _Sprite) -> _Sprite:
    """A soft pool of shadow under the product's base: two elliptical Gaussians (a tight core
    and a wide faint one) centred on the bottom of its footprint (the columns its bottom 4 %
    of rows cover), as an opacity sprite."""
    ph, pw = product.alpha.shape
    rows = max(2, round(0.04 * ph))
    foot = np.flatnonzero((product.alpha[ph - rows:] > 0.5).any(axis=0))
    if foot.size == 0:
        foot = np.flatnonzero((product.alpha > 0.5).any(axis=0))
    if foot.size == 0:
        foot = np.arange(pw)
    half_w = max((foot[-1] + 1 - foot[0]) / 2.0, 0.1 * pw)
    layers = ((0.55 * half_w, max(1.5, 0.02 * ph), 0.45),  # (sigma x, sigma y, opacity)
              (0.95 * half_w, max(3.0, 0.05 * ph), 0.18))
    rx = math.ceil(3 * max(sx for sx, _, _ in layers))
    ry = math.ceil(3 * max(sy for _, sy, _ in layers))
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1].astype(_F32)
    shadow = np.zeros(yy.shape, _F32)
    for sx, sy, opacity in layers:
        g = np.exp(-0.5 * ((xx / sx) ** 2 + (yy / sy) ** 2)) * opacity
        shadow = 1.0 - (1.0 - shadow) * (1.0 - g)
    cx = product.origin[0] + (foot[0] + foot[-1] + 1) / 2.0
    bottom = product.origin[1] + ph - 0.5
    return _Sprite(None, shadow, (round(cx) - rx, round(bottom) - ry))


def _box(matrix: Affine, w: int, h: int, frame_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """The frame-pixel box (x0, y0, x1, y1) a w x h layer covers under ``matrix``, clipped."""
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ matrix.T
    x0 = max(0, math.floor(corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(corners[:, 1].min()) - 1)
    x1 = min(frame_wh[0], math.ceil(corners[:, 0].max()) + 2)
    y1 = min(frame_wh[1], math.ceil(corners[:, 1].max()) + 2)
    return x0, y0, x1, y1


def _layer(frame: np.ndarray, sprite: _Sprite, canvas_to_frame: Affine, *,
           opacity: float | None = None) -> None:
    """Composite a sprite onto the frame in place, on the sprite's box only: its colour over the
    frame, or (``opacity`` given, for a sprite without colour) a darkening by alpha x opacity."""
    h, w = sprite.alpha.shape
    to_frame = _then(np.array([[1.0, 0, sprite.origin[0]], [0, 1.0, sprite.origin[1]]]),
                     canvas_to_frame)
    x0, y0, x1, y1 = _box(to_frame, w, h, (frame.shape[1], frame.shape[0]))
    if x0 >= x1 or y0 >= y1:
        return
    local = to_frame.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    alpha = _warp(sprite.alpha, local, size, cv2.BORDER_CONSTANT)[..., None]
    region = frame[y0:y1, x0:x1].astype(_F32)
    if opacity is not None:
        region *= 1.0 - alpha * opacity
    else:
        assert sprite.rgb is not None
        rgb = _warp(sprite.rgb, local, size, cv2.BORDER_REPLICATE).astype(_F32)
        region += (rgb - region) * alpha
    frame[y0:y1, x0:x1] = np.rint(region).astype(_U8)


def parallax(image: Image.Image, *, duration_s: float = 5.0, fps: float = 24,
             aspect_ratio: str = "9:16", resolution: str = "480p", seed: int = 0,
             cutout_method: str = "threshold") -> bytes:
    """The product moved over its own background with differential motion, as MP4 bytes.

    The product is cut out with :func:`~pixellab.providers.local.ops.cutout` (``cutout_method``)
    on the photo as placed in the frame; the background is the photo with that region inpainted
    and softened. Over the clip the background zooms in 6 % and drifts one way (the seed picks
    which); the product grows 6 % more about its base, drifts slightly the other way and lifts a
    little off a soft contact shadow that spreads and fades beneath it, so it seems to come
    forward. The first frame is the placed photo (plus the shadow). If the cut-out finds no
    product, the clip is the background's motion alone.
    """
    spec = clip_spec(duration_s, fps, aspect_ratio, resolution)
    cutout_method = _choice("cutout_method", cutout_method, CUTOUT_METHODS)
    rng = np.random.default_rng(_seed(seed) % 2**64)
    direction = _direction(rng)
    rgb = _rgb(image)
    canvas_wh = _canvas_size(spec, _PARALLAX_MARGIN)
    placement = _place((rgb.shape[1], rgb.shape[0]), canvas_wh)
    background, product, shadow = _product_layers(rgb, placement, canvas_wh, cutout_method)
    counter = _FG_COUNTER * max(canvas_wh)

    def frames() -> Iterator[np.ndarray]:
        for f in range(spec.frames):
            e = _ease(f / (spec.frames - 1))
            camera = _camera(canvas_wh, spec, 1.0 + _BG_ZOOM * e,
                             (0.9 * direction[0] * e, 0.9 * direction[1] * e))
            frame = _warp(background, camera, (spec.width, spec.height))
            if product is not None and shadow is not None:
                ph, pw = product.alpha.shape
                base = (product.origin[0] + pw / 2, product.origin[1] + ph)
                shift = (-counter * direction[0] * e, -counter * direction[1] * e)
                rise = _LIFT * ph * e
                forward = _about(base, 1.0 + _FG_ZOOM * e, (shift[0], shift[1] - rise))
                spread = _about(base, 1.0 + 2 * _FG_ZOOM * e, shift)
                _layer(frame, shadow, _then(spread, camera), opacity=1.0 - 0.4 * e)
                _layer(frame, product, _then(forward, camera))
            yield frame

    return _encode(frames(), spec)


# --------------------------------------------------------------------------------------------
# several angles
# --------------------------------------------------------------------------------------------

_ANGLES_MARGIN = 1.06


def _timeline(frames: int, count: int, fps: float,
              transition: str) -> Callable[[int], tuple[int, int, float]]:
    """frame -> (photo shown, next photo, progress 0-1 of the transition to it).

    ``crossfade``: every photo held in turn, first to last, joined by eased fades of up to 0.6 s
    (at most 35 % of a photo's share). ``turntable``: photos cycled in order, 0.75 s each at
    most (so every one shows even in a short clip), the last 30 % of each a quick slide.
    """
    if transition == "crossfade":
        fade = min(0.6 * fps, 0.35 * frames / count)
        hold = (frames - (count - 1) * fade) / count

        def crossfade(f: int) -> tuple[int, int, float]:
            t = f + 0.5
            i = min(int(t // (hold + fade)), count - 1)
            r = t - i * (hold + fade)
            if i == count - 1 or r <= hold:
                return i, i, 0.0
            return i, i + 1, _ease((r - hold) / fade)

        return crossfade

    period = min(0.75 * fps, frames / count)
    slide = 0.3 * period

    def turntable(f: int) -> tuple[int, int, float]:
        t = f + 0.5
        step = int(t // period)
        r = t - step * period
        i = step % count
        if r <= period - slide:
            return i, i, 0.0
        return i, (i + 1) % count, _ease((r - period + slide) / slide)

    return turntable


def angles(images: Sequence[Image.Image], *, duration_s: float = 5.0, fps: float = 24,
           aspect_ratio: str = "9:16", resolution: str = "480p", seed: int = 0,
           transition: str = "crossfade") -> bytes:
    """Several photos of one product in one clip, as MP4 bytes.

    ``images`` (2 to :data:`MAX_ANGLES`, the main photo first) are each placed in the frame
    like :func:`kenburns` does and shown in order (see :func:`_timeline` for ``crossfade`` and
    ``turntable``). The camera pushes in 5 % over the clip, each photo drifting its own way (the
    seed picks the ways), so no stretch of the clip is a frozen still.
    """
    spec = clip_spec(duration_s, fps, aspect_ratio, resolution)
    transition = _choice("transition", transition, TRANSITIONS)
    photos = list(images)
    if len(photos) < 2:
        raise ValueError("angles needs at least one more photo of the product besides the main "
                         f"image (got {len(photos)} photo{'s' if len(photos) != 1 else ''} in "
                         "all)")
    if len(photos) > MAX_ANGLES:
        raise ValueError(f"angles takes at most {MAX_ANGLES} photos in all, not {len(photos)}")
    rng = np.random.default_rng(_seed(seed) % 2**64)
    drifts = [_direction(rng) for _ in photos]
    canvas_wh = _canvas_size(spec, _ANGLES_MARGIN)
    canvases = [_compose(_rgb(photo), canvas_wh) for photo in photos]
    at = _timeline(spec.frames, len(photos), spec.fps, transition)
    size = (spec.width, spec.height)

    def view(i: int, e: float, shift: float = 0.0) -> np.ndarray:
        matrix = _camera(canvas_wh, spec, 1.0 + 0.05 * e,
                         (0.8 * drifts[i][0] * e, 0.8 * drifts[i][1] * e))
        matrix[0, 2] += shift
        return _warp(canvases[i], matrix, size)

    def frames() -> Iterator[np.ndarray]:
        for f in range(spec.frames):
            e = _ease(f / (spec.frames - 1))
            i, j, p = at(f)
            if p <= 0.0 or i == j:
                yield view(i, e)
            elif transition == "crossfade":
                yield cv2.addWeighted(view(i, e), 1.0 - p, view(j, e), p, 0.0)
            else:  # turntable: the next photo pushes the current one out to the left
                cut = round(p * spec.width)
                frame = view(i, e, -cut)
                if cut > 0:
                    frame[:, spec.width - cut:] = view(j, e, spec.width - cut)[:, spec.width - cut:]
                yield frame

    return _encode(frames(), spec)
