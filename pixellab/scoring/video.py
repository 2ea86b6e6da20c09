"""Video scores on the CPU: first-frame fidelity, subject consistency, flicker, motion, frozen
frames, product presence and short-video platform rules, for ``image_to_video`` outputs.

Every scorer reads the clip's **sampled** frames (``ScoreContext.frames``: RGB ``uint8``, in
order, typically 12 frames at most 512 px) and, where it needs them, the measured facts
(``ScoreContext.video``: ``duration_s``, ``fps``, ``width``, ``height``, ``frame_count``,
``sampled_indices``, and ``container`` / ``codec`` when known). Nothing here decodes a file or
loads a model: each metric is a pure function of numpy arrays, bounded in cost (all of them
together take well under half a second of CPU for 12 frames of 512 px), and records in its
details the method and the sampling it used (``frames``, ``indices``, ``gap_s``…). A metric
that cannot be computed is missing with the reason, never zero: an image output
(``frames is None``), no source photo, no product mask, too few frames.

The definitions follow VBench (Huang et al., CVPR 2024; github.com/Vchitect/VBench) where it
has one, with classical features in place of its neural networks (CLIP/DINO/RAFT weights are not
part of the package):

* ``video_first_frame_ssim`` / ``video_first_frame_delta_e``: the first frame against the
  source photo (SSIM, mean CIEDE2000) inside the product mask.
* ``video_subject_consistency``: VBench ``i2v_subject``'s shape (frames against the input
  image, and consecutive frames against each other) on a classical appearance descriptor.
* ``video_flicker``: VBench ``temporal_flickering``.
* ``video_motion``: VBench ``dynamic_degree``'s statistic with Farneback flow instead of RAFT.
* ``video_frozen_ratio``: the share of consecutive sampled pairs that are (nearly) identical.
* ``video_product_presence``: the share of frames where the product is found, not cut off.
* ``video_platform_<profile>``: the clip's facts against a short-video platform's published
  rules (``platforms.toml``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, wraps
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from pixellab.config_files import load_toml_model
from pixellab.errors import ConfigError
from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.quality import ProfileName
from pixellab.scoring.reference import SSIM_WINDOW, delta_e_2000, to_lab

__all__ = [
    "DEFAULT_PLATFORMS_PATH",
    "DELTA_E_SIDE",
    "FIDELITY_SIDE",
    "FLOW_SIDE",
    "FROZEN_BLOCK_DIFF",
    "METRICS",
    "MOTION_THRESHOLD",
    "PRESENCE_SIDE",
    "PRESENCE_THRESHOLD",
    "SCORER_VERSION",
    "SUBJECT_WEIGHTS",
    "VIDEO_PLATFORM_PREFIX",
    "PlatformProfile",
    "PlatformSource",
    "appearance_similarity",
    "ssim_map",
    "load_platform_profiles",
    "score_first_frame_delta_e",
    "score_first_frame_ssim",
    "score_video_flicker",
    "score_video_frozen_ratio",
    "score_video_motion",
    "score_video_platform",
    "score_video_product_presence",
    "score_video_subject_consistency",
]

SCORER_VERSION = "video-1"

VIDEO_PLATFORM_PREFIX = "video_platform_"

METRICS = (
    "video_first_frame_ssim",
    "video_first_frame_delta_e",
    "video_subject_consistency",
    "video_flicker",
    "video_motion",
    "video_frozen_ratio",
    "video_product_presence",
)
"""The per-output video metrics (platform profiles come on top, one metric per profile)."""

DEFAULT_PLATFORMS_PATH = Path(__file__).with_name("platforms.toml")

FIDELITY_SIDE = 256
"""First-frame SSIM compares frame and source with the shorter side at most this (px), so clips
of different resolutions are compared at one scale."""

DELTA_E_SIDE = 128
"""First-frame ΔE compares colours at this shorter side (px, area-averaged): colour drift is
not a fine detail, and CIEDE2000 costs per pixel."""

SUBJECT_SIDE = 128
"""The appearance descriptor's square working size (px)."""

SUBJECT_WEIGHTS = {"max_to_input": 0.4, "mean_consecutive": 0.3, "min_consecutive": 0.3}
"""``video_subject_consistency`` = 0.4 × max similarity of a frame to the input image + 0.3 ×
mean + 0.3 × min similarity of consecutive frames (the project's reading of VBench
``i2v_subject``; the VBench file at commit 409bd3e weighs them 0.5 / 0.5 / 0.0)."""

FLOW_SIDE = 128
"""Optical flow runs on frames downscaled to this shorter side (px)."""

FLOW_TOP_FRACTION = 0.05
"""``video_motion`` averages the largest 5 % of flow magnitudes (VBench ``dynamic_degree``)."""

MOTION_THRESHOLD = 6.0 / 256.0
"""VBench ``dynamic_degree``'s threshold, 6 px at a shorter side of 256 px, as a fraction of
the shorter side: a pair whose top-5 % flow is above it moves."""

FROZEN_SIDE = 160
FROZEN_BLOCK = 8
FROZEN_BLOCK_DIFF = 2.0
"""A consecutive pair is frozen when no 8×8 block of the gray frames at 160 px (shorter side,
area-averaged) differs by more than 2 gray levels on average: codec noise stays below it, any
moving object of a few pixels rises above it."""

PRESENCE_SIDE = 112
"""Product presence searches frames downscaled to this shorter side (px)."""

PRESENCE_THRESHOLD = 0.5
"""Normalized cross-correlation (``cv2.TM_CCOEFF_NORMED``) at which the product counts as found,
set in the middle of the gap seen on rendered clips (a textured product sprite on a studio
background, 512×384, through H.264 and back): the product moved, zoomed 1.4×, relit −30 %,
turned 10° in the image plane or put on another background matched at 0.68-0.99; clips without
it (an unrelated image, the same background without the product, a different product of the
same shape, smooth noise) peaked at 0.23-0.36. tests/test_video_scores.py keeps both sides."""

PRESENCE_SCALE_STEP = 1.25
PRESENCE_MIN_TEMPLATE = 8
EDGE_MARGIN = 1
"""A found product whose box comes within this many pixels (at :data:`PRESENCE_SIDE`) of a
frame edge counts as cut off."""

_SAME_ASPECT = 0.01
"""Aspect ratios within 1 % are the same shape: the source is only resized."""


class _Missing(Exception):
    """Raised inside a scorer for a metric that cannot be computed; becomes a missing Score."""


def _scorer(metric: str) -> Callable[[Callable[[ScoreContext], Score]],
                                     Callable[[ScoreContext], Score]]:
    def wrap(fn: Callable[[ScoreContext], Score]) -> Callable[[ScoreContext], Score]:
        @wraps(fn)
        def run(ctx: ScoreContext) -> Score:
            try:
                return fn(ctx)
            except _Missing as missing:
                return Score.missing(metric, SCORER_VERSION, str(missing))
        return run
    return wrap


# --- inputs ----------------------------------------------------------------------------------


def _frames(ctx: ScoreContext, minimum: int = 1) -> list[np.ndarray]:
    """The sampled frames as RGB ``uint8`` arrays of one size, or :class:`_Missing`."""
    if ctx.frames is None:
        raise _Missing("not a video output (no sampled frames)")
    if len(ctx.frames) < minimum:
        raise _Missing(f"needs at least {minimum} sampled frames, got {len(ctx.frames)}")
    frames: list[np.ndarray] = []
    for i, frame in enumerate(ctx.frames):
        arr = np.asarray(frame)
        if arr.dtype != np.uint8:
            raise _Missing(f"frame {i} is {arr.dtype}, not uint8")
        if arr.ndim == 2:
            arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
        elif arr.ndim == 3 and arr.shape[2] in (3, 4):
            arr = np.ascontiguousarray(arr[..., :3])
        else:
            raise _Missing(f"frame {i} has shape {arr.shape}, not H×W×3")
        if min(arr.shape[:2]) < 2:
            raise _Missing(f"frame {i} is {arr.shape[1]}×{arr.shape[0]} px")
        if frames and arr.shape != frames[0].shape:
            raise _Missing(f"sampled frames differ in size: {frames[0].shape[:2]} and "
                           f"{arr.shape[:2]} (frame {i})")
        frames.append(arr)
    return frames


def _sampling(ctx: ScoreContext, n: int, first_only: bool = False) -> dict[str, Any]:
    """Which frames a metric looked at: ``frames`` (count), ``indices`` (positions in the clip,
    when known), ``gap_frames`` / ``gap_s`` (median spacing of the samples) and ``sampled``."""
    video = ctx.video or {}
    details: dict[str, Any] = {"frames": 1 if first_only else n, "sampled": True}
    raw = video.get("sampled_indices")
    indices = [int(i) for i in raw] if raw is not None else None
    if indices is not None:
        details["indices"] = indices[:1] if first_only else indices
        if len(indices) != n:
            details["indices_note"] = f"{len(indices)} indices for {n} frames"
    if video.get("frame_count") is not None:
        details["frame_count"] = int(video["frame_count"])
    fps = video.get("fps")
    if fps:
        details["fps"] = float(fps)
    if not first_only and indices is not None and len(indices) == n and n > 1:
        gap = float(np.median(np.diff(indices)))
        details["gap_frames"] = gap
        if fps:
            details["gap_s"] = round(gap / float(fps), 4)
    return details


def _source(ctx: ScoreContext) -> np.ndarray:
    if ctx.source is None:
        raise _Missing("no source image")
    image = ctx.source if ctx.source.mode == "RGB" else ctx.source.convert("RGB")
    return np.asarray(image)


def _mask(ctx: ScoreContext, required: bool) -> np.ndarray | None:
    """The ground-truth product mask (``uint8``, product where > 127) at the source's size,
    or None."""
    if ctx.mask is None:
        if required:
            raise _Missing("no ground-truth mask")
        return None
    assert ctx.source is not None
    if ctx.mask.size != ctx.source.size:
        raise _Missing(f"mask {ctx.mask.size} and source {ctx.source.size} differ in size")
    return np.asarray(ctx.mask if ctx.mask.mode == "L" else ctx.mask.convert("L"))


def _shrink(arr: np.ndarray, short: int) -> np.ndarray:
    """``arr`` resized (area-averaged) so its shorter side is at most ``short``; never enlarged."""
    h, w = arr.shape[:2]
    scale = short / min(h, w)
    if scale >= 1:
        return arr
    return _resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


Box = tuple[int, int, int, int]


def _alignment(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: str) -> tuple[Box, Box]:
    """Where the source lands in a frame of another shape: (box in the source, box in the frame),
    each (x0, y0, x1, y1) with exclusive ends.

    ``center_crop``: the source cropped about its centre to the frame's aspect fills the frame
    (what most image-to-video models do to a photo of another shape). ``fit_pad``: the whole
    source, scaled to fit, centred in the frame (letterboxed or outpainted around it)."""
    target = dst_w / dst_h
    if mode == "center_crop":
        if src_w / src_h > target:
            cw = max(1, min(src_w, round(src_h * target)))
            x0 = (src_w - cw) // 2
            return (x0, 0, x0 + cw, src_h), (0, 0, dst_w, dst_h)
        ch = max(1, min(src_h, round(src_w / target)))
        y0 = (src_h - ch) // 2
        return (0, y0, src_w, y0 + ch), (0, 0, dst_w, dst_h)
    scale = min(dst_w / src_w, dst_h / src_h)
    w, h = max(1, min(dst_w, round(src_w * scale))), max(1, min(dst_h, round(src_h * scale)))
    x0, y0 = (dst_w - w) // 2, (dst_h - h) // 2
    return (0, 0, src_w, src_h), (x0, y0, x0 + w, y0 + h)


def _crop(arr: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return arr[y0:y1, x0:x1]


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``arr`` at ``size`` (w, h): area-averaged when shrinking, bilinear when enlarging.

    A shrink by more than 2× first averages k×k blocks (OpenCV's fast integer path, after
    dropping the fewer than k rows/columns that do not fill a block), then resamples the rest:
    OpenCV's general area resampling costs ten times more on a full-size photo."""
    h, w = arr.shape[:2]
    if (w, h) == size:
        return arr
    if nearest:
        return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_NEAREST))
    if size[0] >= w and size[1] >= h:
        return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_LINEAR))
    k = min(w // max(1, size[0]), h // max(1, size[1]))
    if k >= 2:
        arr = np.ascontiguousarray(arr[:h - h % k, :w - w % k])
        arr = np.asarray(cv2.resize(arr, (arr.shape[1] // k, arr.shape[0] // k),
                                    interpolation=cv2.INTER_AREA))
        if (arr.shape[1], arr.shape[0]) == size:
            return arr
    return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_AREA))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    x -= x.mean()
    y -= y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else 0.0


# --- 1. first-frame fidelity -----------------------------------------------------------------


def _first_frame_pair(ctx: ScoreContext, side: int) -> tuple[
        np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """The first frame's region that shows the source, the source there, the product mask there
    (or None) and the details saying how they were aligned.

    The frame is shrunk to a shorter side of ``side`` px. When the frame and the
    source have the same aspect (within 1 %) the source is resized to the frame. Otherwise two
    alignments are tried and the one whose gray images correlate better is kept:
    ``center_crop`` (the source cropped about its centre to the frame's aspect, filling the
    frame) and ``fit_pad`` (the whole source fitted inside the frame; only that inner rectangle
    is compared, whatever a model put around it)."""
    frames = _frames(ctx)
    source = _source(ctx)
    mask = _mask(ctx, required=False)
    frame = _shrink(frames[0], side)
    fh, fw = frame.shape[:2]
    source_size = [source.shape[1], source.shape[0]]
    same = abs(math.log((source.shape[1] / source.shape[0]) / (fw / fh))) < _SAME_ASPECT
    # resize the source once: to the frame when they have one shape, else to the scale at which
    # it covers the frame, so every alignment below works on a source about the frame's size
    cover = max(fw / source.shape[1], fh / source.shape[0])
    if same or cover < 1:
        size = (fw, fh) if same else (max(fw, math.ceil(source.shape[1] * cover)),
                                      max(fh, math.ceil(source.shape[0] * cover)))
        source = _resize(source, size)
        mask = _resize(mask, size) if mask is not None else None
    sh, sw = source.shape[:2]
    modes = ["same_aspect"] if same else ["center_crop", "fit_pad"]
    tried: dict[str, float] = {}
    best: tuple[float, str, Box, Box] | None = None
    for mode in modes:
        src_box, dst_box = _alignment(sw, sh, fw, fh,
                                      "center_crop" if mode == "same_aspect" else mode)
        size = (dst_box[2] - dst_box[0], dst_box[3] - dst_box[1])
        if min(size) < SSIM_WINDOW:
            continue
        src_part = _resize(_crop(source, src_box), size)
        score = _ncc(_gray(np.ascontiguousarray(src_part)),
                     _gray(np.ascontiguousarray(_crop(frame, dst_box))))
        tried[mode] = round(score, 4)
        if best is None or score > best[0]:
            best = (score, mode, src_box, dst_box)
    if best is None:
        raise _Missing(f"the region of the {fw}×{fh} frame that shows the source is smaller "
                       f"than {SSIM_WINDOW}×{SSIM_WINDOW} px (the SSIM window)")
    _, mode, src_box, dst_box = best
    size = (dst_box[2] - dst_box[0], dst_box[3] - dst_box[1])
    src_part = np.ascontiguousarray(_resize(_crop(source, src_box), size))
    frame_part = np.ascontiguousarray(_crop(frame, dst_box))
    region: np.ndarray | None = None
    if mask is not None:
        region = _resize(_crop(mask, src_box), size) > 127
        if not region.any():
            raise _Missing("the product (mask) lies outside the part of the source the frame "
                           f"shows ({mode})")
    details = {
        **_sampling(ctx, len(frames), first_only=True),
        "alignment": mode,
        "alignment_ncc": tried,
        "region": "product_mask" if region is not None else "whole_frame (no mask)",
        "compared_at": list(size),
        "frame_size": [frames[0].shape[1], frames[0].shape[0]],
        "source_size": source_size,
    }
    return frame_part, src_part, region, details


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two ``uint8`` images (H×W or H×W×C, averaged over channels), as
    scikit-image's ``structural_similarity`` computes it with its defaults (7×7 uniform window,
    K1 = 0.01, K2 = 0.03, sample covariance, data range 255), on OpenCV box filters in float32:
    ten times faster, equal to scikit-image's within 1e-4 away from the border (which both
    leave out of the mean)."""
    x = a.astype(np.float32)
    y = b.astype(np.float32)
    win = (SSIM_WINDOW, SSIM_WINDOW)
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1)

    def mean(img: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.boxFilter(img, -1, win, borderType=cv2.BORDER_REFLECT))

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    s = s.astype(np.float64)
    return s.mean(axis=-1) if s.ndim == 3 else s


@_scorer("video_first_frame_ssim")
def score_first_frame_ssim(ctx: ScoreContext) -> Score:
    """Metric ``video_first_frame_ssim``: SSIM of the first sampled frame against the source
    photo inside the product mask; 1 = the clip starts on the photo. Range -1..1 (0..1 in
    practice), higher is better.

    The SSIM map (:func:`ssim_map`: scikit-image's definition, 7×7 window, per RGB channel,
    averaged over channels) is averaged
    over the mask's pixels (without a mask, over the whole compared region, and the details say
    so), leaving out the window's half-width along the region's border as scikit-image's mean
    does. Frame and source are aligned as :func:`_first_frame_pair` describes (details:
    ``alignment``, ``compared_at``)."""
    frame, source, region, details = _first_frame_pair(ctx, FIDELITY_SIDE)
    per_pixel = ssim_map(frame, source)
    pad = (SSIM_WINDOW - 1) // 2
    inner = np.zeros(per_pixel.shape, dtype=bool)
    inner[pad:per_pixel.shape[0] - pad, pad:per_pixel.shape[1] - pad] = True
    use = inner if region is None else inner & region
    if not use.any():
        use = region if region is not None else np.ones(per_pixel.shape, dtype=bool)
    value = float(per_pixel[use].mean())
    return Score("video_first_frame_ssim", value, SCORER_VERSION,
                 {"method": "ssim", **details, "pixels": int(use.sum()), "better": "higher"})


@_scorer("video_first_frame_delta_e")
def score_first_frame_delta_e(ctx: ScoreContext) -> Score:
    """Metric ``video_first_frame_delta_e``: mean CIEDE2000 between the first sampled frame and
    the source photo, pixel by pixel inside the product mask, both area-averaged to a shorter
    side of :data:`DELTA_E_SIDE`; 0 = same colours, ≈1 just noticeable. Range 0..~100, lower is
    better.

    The mask is eroded by one pixel at the compared size so resampling at the product's outline
    does not count as colour drift (the whole mask when erosion leaves nothing); without a mask
    the whole compared region is used and the details say so. ``p95`` is the 95th percentile.
    """
    frame, source, region, details = _first_frame_pair(ctx, DELTA_E_SIDE)
    use = np.ones(frame.shape[:2], dtype=bool)
    if region is not None:
        eroded = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        use = eroded if eroded.any() else region
    diff = delta_e_2000(to_lab(source[use]), to_lab(frame[use]))
    return Score("video_first_frame_delta_e", float(diff.mean()), SCORER_VERSION,
                 {"method": "ciede2000_per_pixel", **details, "pixels": int(use.sum()),
                  "p95": float(np.percentile(diff, 95)),
                  "mask_eroded_px": 1 if region is not None else 0, "better": "lower"})


# --- 2. subject consistency ------------------------------------------------------------------

_HUE_BINS, _SAT_BINS, _VAL_BINS = 12, 4, 4
_GRID, _ORIENTATIONS = 4, 8


def _descriptor(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (colour, gradients) of an RGB image at :data:`SUBJECT_SIDE` square.

    Colour: the square root of the normalised 12×4×4 HSV histogram (so the dot product of two is
    their Bhattacharyya coefficient). Gradients: HOG-like, 8 unsigned orientations of the Sobel
    gradient, magnitude-weighted, in a 4×4 grid of cells, each cell L2-normalised."""
    small = _resize(np.ascontiguousarray(rgb), (SUBJECT_SIDE, SUBJECT_SIDE))
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [_HUE_BINS, _SAT_BINS, _VAL_BINS],
                        [0, 180, 0, 256, 0, 256]).ravel().astype(np.float64)
    colour = np.sqrt(hist / max(hist.sum(), 1.0))
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude, angle = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    orientation = ((angle % 180.0) / (180.0 / _ORIENTATIONS)).astype(np.int64) % _ORIENTATIONS
    cell = SUBJECT_SIDE // _GRID
    ys, xs = np.indices((SUBJECT_SIDE, SUBJECT_SIDE))
    cell_index = (ys // cell) * _GRID + (xs // cell)
    grad = np.bincount((cell_index * _ORIENTATIONS + orientation).ravel(),
                       weights=magnitude.ravel().astype(np.float64),
                       minlength=_GRID * _GRID * _ORIENTATIONS).reshape(_GRID * _GRID, -1)
    grad = grad / (np.linalg.norm(grad, axis=1, keepdims=True) + 1e-6)
    flat = grad.ravel()
    norm = float(np.linalg.norm(flat))
    return colour, (flat / norm if norm > 0 else flat)


def _similarity(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    colour = float(a[0] @ b[0])
    grad = float(a[1] @ b[1]) if a[1].any() or b[1].any() else 1.0  # two flat images agree
    return max(0.0, min(1.0, 0.5 * colour + 0.5 * grad))


def appearance_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The classical image similarity ``video_subject_consistency`` uses, 0..1: the mean of the
    Bhattacharyya coefficient of the HSV colour histograms and the cosine of the HOG-like
    gradient histograms (see :func:`_descriptor`). 1 for the same image."""
    return _similarity(_descriptor(a), _descriptor(b))


@_scorer("video_subject_consistency")
def score_video_subject_consistency(ctx: ScoreContext) -> Score:
    """Metric ``video_subject_consistency``: does the clip stay the product it was given?
    Range 0..1, higher is better.

    VBench ``i2v_subject``'s shape, ``0.4 × max_i sim(frame_i, input) + 0.3 × mean_i
    sim(frame_i, frame_i+1) + 0.3 × min_i sim(frame_i, frame_i+1)`` (:data:`SUBJECT_WEIGHTS`),
    over the sampled frames, with a classical similarity in place of DINO/CLIP embeddings
    (which are not available here): :func:`appearance_similarity`, named in the details as
    ``method: "classical:hsv_hist+grad_hist"``. The input image is the source cropped about its
    centre to the frame's aspect. Colour histograms tolerate motion; the coarse gradient grid
    tells a different scene apart. Values are only comparable with the same method: a clip of
    an unrelated image still scores well above 0 (≈0.8: its frames agree with each other).
    The descriptor is global, as VBench's is: a clip that keeps the background but loses or
    swaps a product filling a quarter of the frame still scores high;
    ``video_product_presence`` is the check for that."""
    frames = _frames(ctx, minimum=2)
    source = _source(ctx)
    fh, fw = frames[0].shape[:2]
    src_box, _ = _alignment(source.shape[1], source.shape[0], fw, fh, "center_crop")
    reference = _descriptor(np.ascontiguousarray(_crop(source, src_box)))
    descriptors = [_descriptor(f) for f in frames]
    to_input = [_similarity(reference, d) for d in descriptors]
    consecutive = [_similarity(a, b) for a, b in zip(descriptors, descriptors[1:], strict=False)]
    w = SUBJECT_WEIGHTS
    value = (w["max_to_input"] * max(to_input) + w["mean_consecutive"] * float(np.mean(consecutive))
             + w["min_consecutive"] * min(consecutive))
    return Score("video_subject_consistency", float(value), SCORER_VERSION, {
        "method": "classical:hsv_hist+grad_hist", **_sampling(ctx, len(frames)),
        "weights": dict(w), "max_to_input": max(to_input),
        "mean_consecutive": float(np.mean(consecutive)), "min_consecutive": min(consecutive),
        "to_input": [round(s, 4) for s in to_input],
        "consecutive": [round(s, 4) for s in consecutive],
        "input": "source center-cropped to the frame's aspect", "better": "higher"})


# --- 3. flicker ------------------------------------------------------------------------------


@_scorer("video_flicker")
def score_video_flicker(ctx: ScoreContext) -> Score:
    """Metric ``video_flicker``: VBench ``temporal_flickering``, ``(255 − mean |frame_i+1 −
    frame_i|) / 255`` over consecutive sampled frames (RGB, at the sampled size). Range 0..1,
    higher is better (less flicker).

    VBench takes every frame of a static-scene clip; here the frames are the sampled ones
    (details: ``indices``, ``gap_s``), so real motion between two samples counts as change too:
    compare clips sampled alike. ``per_pair`` lists each pair's mean absolute difference."""
    frames = _frames(ctx, minimum=2)
    diffs = [float(cv2.absdiff(a, b).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    mad = float(np.mean(diffs))
    return Score("video_flicker", (255.0 - mad) / 255.0, SCORER_VERSION, {
        "method": "vbench:temporal_flickering", **_sampling(ctx, len(frames)),
        "mean_abs_diff": mad, "per_pair": [round(d, 3) for d in diffs],
        "note": "sampled frames, not every frame: motion between samples counts as change",
        "better": "higher"})


# --- 4. motion -------------------------------------------------------------------------------


@_scorer("video_motion")
def score_video_motion(ctx: ScoreContext) -> Score:
    """Metric ``video_motion``: how much the clip moves, as a fraction of the shorter side per
    sampled step. Range 0..~1, neither end is good: 0 is a still image, ≥
    :data:`MOTION_THRESHOLD` (6/256) moves by VBench's standard.

    Dense Farneback optical flow (OpenCV; pyramid 0.5 × 3 levels, 15 px window, 3 iterations)
    between consecutive sampled frames in gray at a shorter side of :data:`FLOW_SIDE`; per pair
    the mean of the largest 5 % of flow magnitudes (VBench ``dynamic_degree``, which uses RAFT),
    divided by the shorter side; the value is the mean over pairs. Details: ``per_pair``,
    ``exceeds_threshold`` (value above 6/256), ``pairs_above`` and ``dynamic_vbench`` (VBench's
    verdict: at least round(4 × frames / 16) pairs above), and ``per_second`` when the sample
    spacing is known. Farneback under-reads displacements far above its window at the coarsest
    level (tens of pixels at 160 px): a violent clip reads as fast, not as exactly how fast."""
    frames = _frames(ctx, minimum=2)
    grays = [_gray(_shrink(f, FLOW_SIDE)) for f in frames]
    h, w = grays[0].shape
    short = min(h, w)
    per_pair = []
    for a, b in zip(grays, grays[1:], strict=False):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).ravel()
        k = max(1, int(magnitude.size * FLOW_TOP_FRACTION))
        top = np.partition(magnitude, magnitude.size - k)[magnitude.size - k:]
        per_pair.append(float(top.mean()) / short)
    value = float(np.mean(per_pair))
    above = sum(1 for m in per_pair if m > MOTION_THRESHOLD)
    sampling = _sampling(ctx, len(frames))
    details: dict[str, Any] = {
        "method": "farneback_top5pct", **sampling, "flow_size": [w, h],
        "per_pair": [round(m, 5) for m in per_pair], "threshold": MOTION_THRESHOLD,
        "exceeds_threshold": value > MOTION_THRESHOLD, "pairs_above": above,
        "dynamic_vbench": above >= max(1, round(4 * len(frames) / 16)),
        "unit": "fraction of the shorter side per sampled step"}
    if sampling.get("gap_s"):
        details["per_second"] = value / float(sampling["gap_s"])
    return Score("video_motion", value, SCORER_VERSION, details)


# --- 5. frozen frames ------------------------------------------------------------------------


@_scorer("video_frozen_ratio")
def score_video_frozen_ratio(ctx: ScoreContext) -> Score:
    """Metric ``video_frozen_ratio``: the share of consecutive sampled pairs that are (nearly)
    identical. Range 0..1, lower is better (1 = a still image passed off as a clip).

    A pair is frozen when the largest mean absolute difference of any 8×8 block of the gray
    frames, downscaled (area-averaged) to a shorter side of 160 px, is at most
    :data:`FROZEN_BLOCK_DIFF` gray levels: a whole-frame mean would call a small object moving
    on a still background frozen. Details: ``per_pair`` (each pair's largest block difference)."""
    frames = _frames(ctx, minimum=2)
    grays = [_gray(_shrink(f, FROZEN_SIDE)).astype(np.float32) for f in frames]
    h, w = grays[0].shape
    blocks = (max(1, w // FROZEN_BLOCK), max(1, h // FROZEN_BLOCK))
    per_pair = []
    for a, b in zip(grays, grays[1:], strict=False):
        diff = cv2.absdiff(a, b)
        per_pair.append(float(cv2.resize(diff, blocks, interpolation=cv2.INTER_AREA).max()))
    frozen = sum(1 for d in per_pair if d <= FROZEN_BLOCK_DIFF)
    return Score("video_frozen_ratio", frozen / len(per_pair), SCORER_VERSION, {
        "method": "max_block_mean_abs_diff", **_sampling(ctx, len(frames)),
        "frozen_pairs": frozen, "pairs": len(per_pair), "threshold": FROZEN_BLOCK_DIFF,
        "block_px": FROZEN_BLOCK, "compared_at": [w, h],
        "per_pair": [round(d, 3) for d in per_pair], "better": "lower"})


# --- 6. product presence ---------------------------------------------------------------------


def _match(frame: np.ndarray, template: np.ndarray) -> tuple[float, tuple[int, int]]:
    result = cv2.matchTemplate(frame, template, cv2.TM_CCOEFF_NORMED)
    result = np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0)
    _, peak, _, location = cv2.minMaxLoc(result)
    return float(peak), (int(location[0]), int(location[1]))


@_scorer("video_product_presence")
def score_video_product_presence(ctx: ScoreContext) -> Score:
    """Metric ``video_product_presence``: the share of sampled frames in which the product is
    found and not cut off by the frame. Range 0..1, higher is better.

    The product's appearance is its bounding-box crop of the source photo (box of the
    ground-truth mask, so a little background inside the box comes along). Each frame, shrunk
    to a shorter side of :data:`PRESENCE_SIDE`, is searched by multi-scale template matching
    (``cv2.matchTemplate``, ``TM_CCOEFF_NORMED`` on RGB): scales in steps of 1.25 from 0.64 ×
    the scale at which the whole source fits the frame to 1.25 × the scale at which it covers
    the frame; after the first frame the search tries the previous frame's scale and its two
    neighbours, and falls back to every scale when the product is not found there. The product
    is found when the best correlation is at least :data:`PRESENCE_THRESHOLD` (0.5), and inside
    when its box keeps :data:`EDGE_MARGIN` px from every edge — except along a side where the
    product already touches the source photo's edge. Missing without a mask.

    Limits: a 2-D appearance match; a product that turns to show another face, or is strongly
    relit, reads as absent; one that shrinks below a 0.64 × its fitted size is not searched."""
    frames = _frames(ctx)
    source = _source(ctx)
    mask = _mask(ctx, required=True)
    assert mask is not None
    cols = np.flatnonzero(mask.max(axis=0) > 127)
    rows = np.flatnonzero(mask.max(axis=1) > 127)
    if cols.size == 0:
        raise _Missing("the mask has no product pixels")
    sh, sw = source.shape[:2]
    bx0, by0, bx1, by1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    crop = np.ascontiguousarray(source[by0:by1, bx0:bx1])
    exempt = [side for side, touches in (("left", bx0 == 0), ("top", by0 == 0),
                                         ("right", bx1 == sw), ("bottom", by1 == sh)) if touches]
    small = [_shrink(f, PRESENCE_SIDE) for f in frames]
    fh, fw = small[0].shape[:2]
    contain, cover = min(fw / sw, fh / sh), max(fw / sw, fh / sh)
    lo, hi = contain * 0.64, cover * PRESENCE_SCALE_STEP
    if hi < 1:  # shrink the crop once to the largest scale searched, then resize from there
        crop = _resize(crop, (max(1, math.ceil((bx1 - bx0) * hi)),
                              max(1, math.ceil((by1 - by0) * hi))))
    count = max(1, math.ceil(math.log(hi / lo) / math.log(PRESENCE_SCALE_STEP) - 1e-9) + 1)
    scales: list[float] = []
    templates: list[np.ndarray] = []
    for i in range(count):
        s = lo * (hi / lo) ** (i / (count - 1)) if count > 1 else cover
        tw, th = round((bx1 - bx0) * s), round((by1 - by0) * s)
        if min(tw, th) < PRESENCE_MIN_TEMPLATE or tw > fw or th > fh:
            continue
        scales.append(round(s, 5))
        templates.append(_resize(crop, (tw, th)))
    if not templates:
        raise _Missing(f"the product ({bx1 - bx0}×{by1 - by0} px in the source) cannot be "
                       f"searched for in a {fw}×{fh} frame at any scale")

    def search(frame: np.ndarray, which: Sequence[int]) -> tuple[float, int, tuple[int, int]]:
        best = (-1.0, which[0], (0, 0))
        for j in which:
            peak, location = _match(frame, templates[j])
            if peak > best[0]:
                best = (peak, j, location)
        return best

    per_frame: list[dict[str, Any]] = []
    previous: int | None = None
    every = range(len(templates))
    for frame in small:
        if previous is None:
            peak, j, (x, y) = search(frame, every)
        else:
            near = [k for k in (previous - 1, previous, previous + 1) if 0 <= k < len(templates)]
            peak, j, (x, y) = search(frame, near)
            if peak < PRESENCE_THRESHOLD:
                peak, j, (x, y) = max((peak, j, (x, y)), search(frame, every))
        th, tw = templates[j].shape[:2]
        box = (x, y, x + tw, y + th)
        found = peak >= PRESENCE_THRESHOLD
        cut = [side for side, near_edge in (("left", x < EDGE_MARGIN), ("top", y < EDGE_MARGIN),
                                            ("right", x + tw > fw - EDGE_MARGIN),
                                            ("bottom", y + th > fh - EDGE_MARGIN))
               if near_edge and side not in exempt]
        previous = j if found else None
        per_frame.append({"confidence": round(peak, 4), "scale": scales[j], "box": list(box),
                          "found": found, "cut_off": cut, "present": found and not cut})
    present = sum(1 for f in per_frame if f["present"])
    return Score("video_product_presence", present / len(per_frame), SCORER_VERSION, {
        "method": "template:ccoeff_normed_multiscale", **_sampling(ctx, len(frames)),
        "threshold": PRESENCE_THRESHOLD, "edge_margin_px": EDGE_MARGIN,
        "searched_at": [fw, fh], "scales": scales, "template": "mask bounding box of the source",
        "exempt_sides": exempt, "present_frames": present, "per_frame": per_frame,
        "better": "higher"})


# --- 7. platform profiles --------------------------------------------------------------------

_RULE_FIELDS = ("aspect_ratios", "min_duration_s", "max_duration_s", "min_short_side",
                "min_fps", "max_fps", "containers", "codecs")
_AspectName = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*:[1-9][0-9]*$")]
_Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class PlatformSource(BaseModel):
    """A public page a profile's values come from, and whether they were checked against it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    url: Annotated[str, StringConstraints(pattern=r"^https://\S+$")]
    values: list[str] = Field(min_length=1, description="the profile's rule fields it backs")
    verified: bool
    """True only when someone read the page and found these values on it."""
    note: str = ""


class PlatformProfile(BaseModel):
    """One short-video platform's rules; every rule is optional (absent = not checked), and
    every rule set must be backed by a source."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    aspect_ratios: list[_AspectName] | None = Field(default=None, min_length=1)
    aspect_tolerance: float = Field(default=0.03, ge=0, le=0.5)
    min_duration_s: float | None = Field(default=None, ge=0)
    max_duration_s: float | None = Field(default=None, gt=0)
    min_short_side: int | None = Field(default=None, ge=1)
    min_fps: float | None = Field(default=None, gt=0)
    max_fps: float | None = Field(default=None, gt=0)
    containers: list[_Name] | None = Field(default=None, min_length=1)
    codecs: list[_Name] | None = Field(default=None, min_length=1)
    sources: list[PlatformSource] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PlatformProfile:
        for low, high in (("min_duration_s", "max_duration_s"), ("min_fps", "max_fps")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} {a} is above {high} {b}")
        cited = {value for source in self.sources for value in source.values}
        unknown = sorted(cited - set(_RULE_FIELDS))
        if unknown:
            raise ValueError(f"sources name unknown rule fields: {', '.join(unknown)}")
        uncited = [f for f in _RULE_FIELDS if getattr(self, f) is not None and f not in cited]
        if uncited:
            raise ValueError(f"rules without a source: {', '.join(uncited)}")
        return self


class _PlatformsFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    profiles: dict[ProfileName, PlatformProfile]


@lru_cache(maxsize=1)
def _default_platforms() -> tuple[tuple[str, PlatformProfile], ...]:
    parsed = load_toml_model(DEFAULT_PLATFORMS_PATH, _PlatformsFile,
                             what="video platform profiles file")
    return tuple(parsed.profiles.items())


def load_platform_profiles(path: str | Path | None = None) -> dict[str, PlatformProfile]:
    """Short-video platform profiles by name, from ``path`` (default: the bundled
    ``platforms.toml``, parsed once). Raises :class:`~pixellab.errors.ConfigError` naming the
    file and key for an invalid file."""
    if path is None:
        return dict(_default_platforms())
    parsed = load_toml_model(Path(path), _PlatformsFile, what="video platform profiles file")
    return dict(parsed.profiles)


_MEDIA_TYPES = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm",
                "video/x-matroska": "mkv", "video/mpeg": "mpeg", "video/3gpp": "3gp",
                "video/x-msvideo": "avi"}
_CODEC_ALIASES = {"libx264": "h264", "avc": "h264", "avc1": "h264", "h.264": "h264",
                  "h265": "hevc", "h.265": "hevc", "libx265": "hevc", "hvc1": "hevc",
                  "hev1": "hevc", "libvpx-vp9": "vp9", "vp09": "vp9", "libaom-av1": "av1",
                  "libdav1d": "av1", "libsvtav1": "av1", "av01": "av1"}


def _names(value: Any, aliases: Mapping[str, str]) -> list[str]:
    """A container or codec fact as lower-case names: FFmpeg's demuxer lists
    (``mov,mp4,m4a,3gp,3g2,mj2``) split, media types and encoder names mapped."""
    parts = [p.strip().lower() for p in str(value).split(",") if p.strip()]
    return [aliases.get(p, p) for p in parts]


def _fact(video: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if video.get(key) is not None:
            return video[key]
    return None


def _platform_rule(rule: str, passed: bool | None, measured: Any, threshold: Any,
                   message: str) -> dict[str, Any]:
    return {"rule": rule, "passed": passed, "measured": measured, "threshold": threshold,
            "message": message}


def _platform_rules(profile: PlatformProfile, video: Mapping[str, Any]) -> list[dict[str, Any]]:
    width, height = int(video["width"]), int(video["height"])
    duration = float(video["duration_s"])
    rules: list[dict[str, Any]] = []
    if profile.aspect_ratios is not None:
        ratio = width / height
        deviations = {a: abs(ratio / (int(a.split(":")[0]) / int(a.split(":")[1])) - 1)
                      for a in profile.aspect_ratios}
        closest = min(deviations, key=lambda a: deviations[a])
        ok = deviations[closest] <= profile.aspect_tolerance
        rules.append(_platform_rule(
            "aspect_ratio", ok, round(ratio, 4),
            {"allowed": list(profile.aspect_ratios), "tolerance": profile.aspect_tolerance},
            f"{width}×{height} is {deviations[closest]:.1%} off {closest}, "
            f"{'within' if ok else 'outside'} the {profile.aspect_tolerance:.0%} tolerance "
            f"(allowed: {', '.join(profile.aspect_ratios)})"))
    if profile.min_duration_s is not None:
        ok = duration >= profile.min_duration_s
        rules.append(_platform_rule(
            "min_duration", ok, duration, profile.min_duration_s,
            f"{duration:.2f} s, {'at least' if ok else 'below'} the "
            f"{profile.min_duration_s:g} s minimum"))
    if profile.max_duration_s is not None:
        ok = duration <= profile.max_duration_s
        rules.append(_platform_rule(
            "max_duration", ok, duration, profile.max_duration_s,
            f"{duration:.2f} s, {'within' if ok else 'above'} the "
            f"{profile.max_duration_s:g} s maximum"))
    if profile.min_short_side is not None:
        short = min(width, height)
        ok = short >= profile.min_short_side
        rules.append(_platform_rule(
            "min_short_side", ok, short, profile.min_short_side,
            f"shorter side {short} px, {'at least' if ok else 'below'} the "
            f"{profile.min_short_side} px minimum"))
    if profile.min_fps is not None or profile.max_fps is not None:
        fps = _fact(video, "fps")
        limits = {"min": profile.min_fps, "max": profile.max_fps}
        if fps is None:
            rules.append(_platform_rule("fps", None, None, limits, "not measured: no fps"))
        else:
            fps = float(fps)
            low = profile.min_fps is not None and fps < profile.min_fps - 0.01
            high = profile.max_fps is not None and fps > profile.max_fps + 0.01
            where = "below the minimum" if low else "above the maximum" if high else "within"
            rules.append(_platform_rule("fps", not (low or high), round(fps, 3), limits,
                                        f"{fps:.3g} fps, {where} {limits}"))
    for rule, allowed, keys, aliases in (
            ("container", profile.containers, ("container", "format", "media_type"),
             _MEDIA_TYPES),
            ("codec", profile.codecs, ("codec", "codec_name"), _CODEC_ALIASES)):
        if allowed is None:
            continue
        value = _fact(video, *keys)
        if value is None:
            rules.append(_platform_rule(rule, None, None, list(allowed),
                                        f"not measured: no {rule} in the video facts"))
            continue
        names = _names(value, aliases)
        ok = any(n in allowed for n in names)
        rules.append(_platform_rule(rule, ok, value, list(allowed),
                                    f"{rule} {value!s} is {'' if ok else 'not '}one of "
                                    f"{', '.join(allowed)}"))
    return rules


def score_video_platform(ctx: ScoreContext, profile: str,
                         profiles: Mapping[str, PlatformProfile] | None = None) -> Score:
    """Metric ``video_platform_<profile>``: 1.0 when the clip meets every rule of the platform
    profile (``platforms.toml``), else 0.0.

    Rules, those the profile sets, in order: ``aspect_ratio`` (width/height within
    ``aspect_tolerance``, relative, of one of ``aspect_ratios``), ``min_duration``,
    ``max_duration``, ``min_short_side``, ``fps``, ``container``, ``codec``; measured from
    ``ctx.video`` (the decoded file's facts, not the sampled frames, which may be shrunk).
    ``width``, ``height`` and ``duration_s`` are needed (missing without them); a rule on a fact
    the video facts lack (``fps``, ``container``, ``codec``) is listed as not measured
    (``passed: None``, in ``unmeasured``) and does not fail the profile. Details: ``profile``,
    ``rules`` (each with ``passed``, ``measured``, ``threshold``, ``message``), ``failed``,
    ``unmeasured``, ``sources`` and ``verified`` (whether every source was checked).

    Raises :class:`~pixellab.errors.ConfigError` for an unknown profile name."""
    table = load_platform_profiles() if profiles is None else profiles
    if profile not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(f"unknown video platform profile {profile!r} (known: {known})",
                          key=profile)
    metric = f"{VIDEO_PLATFORM_PREFIX}{profile}"
    if ctx.video is None:
        return Score.missing(metric, SCORER_VERSION, "not a video output (no video facts)")
    absent = [k for k in ("width", "height", "duration_s") if ctx.video.get(k) is None]
    if absent:
        return Score.missing(metric, SCORER_VERSION,
                             f"the video facts lack {', '.join(absent)}")
    if int(ctx.video["width"]) <= 0 or int(ctx.video["height"]) <= 0:
        return Score.missing(metric, SCORER_VERSION, "the video has no pixels")
    config = table[profile]
    rules = _platform_rules(config, ctx.video)
    failed = [r["rule"] for r in rules if r["passed"] is False]
    unmeasured = [r["rule"] for r in rules if r["passed"] is None]
    return Score(metric, 0.0 if failed else 1.0, SCORER_VERSION, {
        "profile": profile, "rules": rules, "failed": failed, "unmeasured": unmeasured,
        "sources": [s.url for s in config.sources],
        "verified": all(s.verified for s in config.sources)})
