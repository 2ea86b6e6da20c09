"""Product identity: find the product in any output and measure whether it is still the product.

Why this exists
---------------
A generative model's typical silent failure is a *different product*: recoloured, reshaped,
mirrored, its label redrawn, cut off by a new scene, or — for cut-outs and packshots — a
background fragment kept while the product is dropped (a real photo of a cream handbag on a
marble shelf came back as a cut-out of two detached flowers, reported as a success). Whole-image
similarity (CLIP-I, DINO) barely sees any of that and correlates poorly with people; the stronger
published approach (HFPC, arXiv 2412.17504; MaSC) compares the *masked product* in the source
and in the output. That is what this module does, with classical tools only (numpy, OpenCV,
scikit-image, no model weights), for every task: enhance, upscale, remove_background, packshot,
lifestyle, a video's first frame.

How
---
1. **The product in the source**: the ground-truth mask when the dataset has one, else
   :func:`estimate_main_object` (border-distance segmentation refined by GrabCut, with a
   spectral-residual saliency fallback), which says how it was found and how confident it is,
   checked against a second, independent reading (a centre prior refined by GrabCut). Where
   the two disagree the main object is ambiguous and an output is judged against both: it
   must keep the product under each (silhouette agreement is then not judged, only what is
   kept). The local cut-out uses the border distance too, so judging it against that reading
   alone would only ever confirm it: on real photos it keeps a fragment (a cup's rim and
   crema) that the border reading also calls the object.
2. **The product in the output** (:func:`locate_product`). Candidate similarity transforms
   (rotation, uniform scale, shift; possibly mirrored) from the source to the output:

   * the same frame, the same frame mirrored, the product mirrored in place (outputs of the
     source's aspect; an output whose same frame verifies at :data:`SAME_FRAME_ACCEPT` is not
     searched further, and a *cut-out* of the source's aspect is only ever compared in the
     source's frame: cut-out models do not move the product, and background kept elsewhere in
     its alpha must not pass for it);
   * SIFT matches of the product (Lowe's ratio test, RANSAC similarity), also against the
     mirrored product, since SIFT descriptors are not mirror-invariant; a free RANSAC
     homography of the same matches is recorded for diagnosis;
   * masked multi-scale template matching of the product, direct and mirrored;
   * the box of the output's own product region (a cut-out's alpha, or the main object of an
     output on a plain backdrop), anchored on its uncut side when it runs off the frame.

   Each is verified by the masked gray NCC of the product after warping the output back onto
   the source (:class:`_Verifier`; on a plain backdrop averaged with the silhouette IoU), the
   best few are refined by a pattern search, and their stretch is measured (a fifth, aspect
   parameter). The transform is deliberately a similarity, not a free homography: a squashed
   product must show up as a shape change, not be warped away. Mirrored wins only when it fits
   clearly better (:data:`MIRROR_RATIO`), so a symmetric product is never called mirrored.
   The best alignments are then measured in turn until one shows the product: gray NCC at
   least :data:`FOUND_NCC`, the output's silhouette covering at least :data:`FOUND_KEPT` of
   the product, and — if its colour is off by more than :data:`DELTA_E_MAX` — gray structure
   matching at :data:`RECOLOUR_NCC` (a weak structural match in the wrong colour is clutter or
   another product, not this one recoloured).
3. **Measures**, with the output warped into a crop of the source around the product at the
   lower of the two images' resolutions (at most :data:`COMPARE_SIDE` px): ``identity_ssim``,
   ``identity_delta_e``, ``identity_shape_iou``, ``identity_kept``, ``identity_occupancy`` and
   the gate ``identity`` (1 = the same product, 0 = not), whose details say why it failed
   (``product_not_found``, ``cropped``, ``mirrored``, ``reshaped``, ``recoloured``,
   ``restructured``) and hold every measured value and threshold. Label text is not judged here
   (``label_text`` is its own metric).

"Product not found" is a finding, not a missing metric: ``identity`` is then 0, ``identity_ssim``,
``identity_shape_iou`` and ``identity_occupancy`` are 0, ``identity_delta_e`` is
:data:`NOT_FOUND_DELTA_E` (the top of the CIEDE2000 scale) and ``identity_kept`` is what a
cut-out's alpha keeps of the product in the source's frame (0 otherwise). Metrics are missing
only when nothing can be measured: no source photo, a mask of another size, a source in which no
main object can be made out.

Calibration
-----------
Thresholds (each constant says its evidence) were set on the bundled sample dataset's local
baselines (``ops.autoenhance``, ``ops.cutout`` and ``ops.packshot`` with both cut-out methods:
175 outputs of 35 products, the cut-outs' own IoU with the exact masks telling which kept the
product) and on variants of 8 sample photos built the way ``tests/test_identity.py`` builds
them. Every output that kept its product passed except one, the local enhance's on cosmetics-04,
which turns the green-teal nail polish blue (ΔE00 14 against the input, 15 against the clean
reference, where the input is 8 off): a true colour change, flagged ``recoloured``. Every output
that lost it failed (kitchen-01's, apparel-04's and electronics-04's cut-outs and packshots,
which kept background and dropped the product; kitchen-03's, which kept only the kettle's
handle, window and base).

Limits: a white product on a white packshot has no silhouette edge (its shape is taken from
colour agreement, so squashing it goes unseen); a product of low saturation barely changes
under a hue rotation (nor does ΔE); a nearly symmetric product mirrored may not be called
mirrored; a smooth product on a busy backdrop of its own colours can be located on clutter (the
colour and silhouette checks then reject it, as ``product_not_found`` or another reason).

Cost: one analysis per output (shared by the six metrics of one ScoreContext): about 0.05-0.15 s
of CPU for a cut-out or an output in the source's frame, 0.2-0.6 s for one that must be
searched (a packshot, a scene), plus 0.1-0.3 s to estimate the main object of a photo without a
mask (remembered for the last 8 photos).
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pixellab.media.backdrop import background_distance, border_band, foreground_threshold
from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.reference import delta_e_2000, to_lab
from pixellab.scoring.video import ssim_map

__all__ = [
    "COMPARE_SIDE",
    "DELTA_E_MAX",
    "FOUND_KEPT",
    "FOUND_NCC",
    "IN_FRAME_MIN",
    "KEPT_MIN",
    "METRICS",
    "MIRROR_MARGIN",
    "SCORER_VERSION",
    "SHAPE_IOU_MIN",
    "SSIM_MIN",
    "Located",
    "ObjectEstimate",
    "analyse",
    "estimate_main_object",
    "locate_product",
    "located",
    "main_object",
    "product_crops",
    "score_identity",
    "score_identity_delta_e",
    "score_identity_kept",
    "score_identity_occupancy",
    "score_identity_shape_iou",
    "score_identity_ssim",
]

SCORER_VERSION = "identity-1"

METRICS = ("identity", "identity_ssim", "identity_delta_e", "identity_shape_iou",
           "identity_occupancy", "identity_kept")

# --- working sizes ---------------------------------------------------------------------------

WORK_SIDE = 512
"""Locating works on both images with the longer side at most this (px)."""

ESTIMATE_SIDE = 384
"""The main object of a photo without a mask is estimated at this longer side (px)."""

CENTRE_SIDE = 240
"""The centre-prior reading of the main object (:func:`_centre_prior`) works at this longer
side (px): 0.05-0.6 s per photo here, against 0.1-3 s at :data:`ESTIMATE_SIDE`, for the same
agreement with the exact masks on the sample photos."""

CENTRE_MARGIN = 0.05
"""The centre prior's frame: everything within 5 % of the frame's edge is background."""

AGREE_MIN = 0.8
"""The two readings of a photo's main object (border distance; centre prior) agree when their
masks overlap at least this much (IoU). On the 40 photos with exact or hand-made masks (36
sample, 4 real) they agreed on 31, where the border-distance reading matched the mask at
IoU ≥ 0.73 (≥ 0.85 for 30); of the 9 where they disagreed, the border-distance reading was
wrong for 8 (IoU ≤ 0.26: all four real photos, kitchen-01, -03, apparel-04, electronics-04)
and right for one (cosmetics-03, a pale jar on a pale backdrop, confidence 0.24)."""

TEMPLATE_SIDE = 160
"""The coarse template search runs on the output with its shorter side at most this (px)."""

VERIFY_SIDE = 128
"""Candidate alignments are verified on the product crop at most this long (px)."""

COMPARE_SIDE = 256
"""SSIM, shape and coverage compare the product crop at most this long (px) — and never finer
than the product's resolution in either image."""

DELTA_E_SIDE = 96
"""ΔE compares colours at most this long (px, area-averaged): colour drift is not a fine detail,
and a slightly misregistered edge must not read as a colour change."""

# --- thresholds (calibrated, see module docstring and tests/test_identity.py) -----------------

FOUND_NCC = 0.45
"""Masked gray NCC (inside the frame) of the aligned product below which it is not there. Only
a floor: the sample outputs that kept their product verified at ≥ 0.85 (one doubtful threshold
packshot at 0.55), variants squashed or cropped at ≥ 0.46; blank and background-only outputs
mostly below it. Clutter can correlate higher (up to 0.92 in calibration): :data:`FOUND_KEPT`
and :data:`RECOLOUR_NCC` reject it."""

FOUND_KEPT = 0.3
"""…and the output's silhouette there must cover at least this share of the source's product.
A smooth product correlates with many things, its silhouette with few: the sample outputs
that lost their product kept ≤ 0.26 at their best alignment (kitchen-03's cut-outs, the kettle's
handle, window and base) and ≤ 0.001 for the rest; variants that show the product ≥ 0.36."""

SSIM_MIN = 0.5
"""``restructured`` below this masked gray SSIM of the aligned product. Outputs that kept their
product: ≥ 0.61 on the sample baselines (packshots of the smallest, thinnest products), ≥ 0.78
for the variants (relit darker ≥ 0.88); the product's print replaced by a blur and stripes
(silhouette and mean colour kept): ≤ 0.26."""

DELTA_E_MAX = 12.0
"""``recoloured`` above this mean CIEDE2000 (relight-compensated, see :data:`RELIGHT_MAX_L`).
Outputs that kept their product's colour: ≤ 9.9 on the sample baselines (the local enhance
corrects colour casts: up to 9.8 of it), ≤ 5.8 for the variants relit by −15 % to −30 % with a
warm tint, ≤ 9.4 for enhance judged against an estimated mask. A hue rotation of 60° inside the
mask of a saturated product: 13.5-38 (120°: 17.7-53); cosmetics-04's enhance: 14.1 (a real
teal-to-blue drift). Grey, steel or beige products barely change under a hue rotation and are
rightly not flagged."""

RELIGHT_MAX_L = 15.0
"""Relight compensation: the output's L* inside the product is shifted to the source's mean by
at most this much before ΔE is taken — a product relit by a new scene is the same product, but a
white one that turned black is not."""

SHAPE_IOU_MIN = 0.75
"""``reshaped`` below this IoU of the aligned silhouettes. Outputs that kept their product:
≥ 0.78 on the sample baselines (jewelry-02's packshot, whose ring the cut-out notched; the next
is 0.80), ≥ 0.89 for the variants. A product squashed to 60 % along one axis: ≤ 0.72 (mostly
≤ 0.69; the stretch measure catches some more); cut-outs that kept background inside the product
(furniture-03's stool between its legs, jewelry-01's hoops): 0.58-0.70. The margin is thin
(±0.03): the IoU is the weakest of the measures on thin products."""

KEPT_MIN = 0.8
"""``cropped`` when the output keeps less than this share of the source's product (outputs that
kept it: ≥ 0.89, one doubtful threshold cut-out at 0.84; products pushed half out of the frame:
0.51-0.87, caught by :data:`IN_FRAME_MIN` where this misses)."""

IN_FRAME_MIN = 0.95
"""``cropped`` when less than this share of the aligned product lies inside the output frame."""

ASPECT_MAX = 1.2
ASPECT_RATIO = 2.0
"""``reshaped`` also when the product fits the output best stretched by more than 1.2× along one
of its axes relative to the other (squashed to less than 83 %), provided the stretch explains
the output clearly better: it leaves at most half the misfit (1 − score) of the unstretched
alignment, less :data:`MIRROR_MARGIN`."""

ASPECT_SCAN = tuple(math.log(f) for f in (0.55, 0.65, 0.75, 0.87, 1.15, 1.33, 1.54, 1.8))
"""The stretches (width / height) tried before the local search that measures the aspect."""

RECOLOUR_NCC = 0.85
"""A product whose colour is off by more than :data:`DELTA_E_MAX` counts as found (and
``recoloured``) only if its gray structure alone matches this well: a weak structural match in
the wrong colour is something else. Hue-rotated products verified at ≥ 0.89; clutter found in
place of a lost or painted-out product, in the wrong colour, at ≤ 0.81."""

MIRROR_RATIO = 3.0
MIRROR_MARGIN = 0.01
"""A mirrored alignment is taken only when its misfit (1 − NCC) is at most a third of the best
direct one's, less 0.01 (see ``_order``): a symmetric product matches both ways and is not
mirrored in any sense that matters. Mirrored variants fit at 0.98-1.0 mirrored against 0.95-0.98
direct; unmirrored ones never came close to the ratio."""

ESTIMATE_MIN_CONFIDENCE = 0.2
"""Without a ground-truth mask, identity is missing when the source's main object is estimated
with less confidence than this (see :func:`estimate_main_object`): a product compared with a
guess is worse than no figure. A busy scene can still fool the estimate with confidence."""

NOT_FOUND_DELTA_E = 100.0
"""``identity_delta_e`` of an output in which the product is not found: the top of the CIEDE2000
scale (black against white), so a lost product is never the best colour match."""

MIN_INLIERS = 6
"""Feature alignments need at least this many RANSAC inliers to be tried."""

SIFT_RATIO = 0.8
"""Lowe's ratio test for SIFT matches."""

TEMPLATE_STEP = 1.12
TEMPLATE_MIN_FRACTION = 0.2
"""Coarse template scales: steps of 1.12 from 0.2 × the largest scale at which the product fits
the output up to that scale."""

ALPHA_MIN_TRANSPARENT = 0.005
"""An alpha channel is a cut-out's mask when at least this share of the frame is transparent."""

GREY = 128.0
"""Cut-outs are composited over this neutral grey before comparison: a dropped product then
reads as flat grey, never as the photo that is still stored under a transparent alpha."""

_SEED = 0x1D


# --- small helpers ---------------------------------------------------------------------------

Box = tuple[int, int, int, int]


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _fit(size: tuple[int, int], side: int, shorter: bool = False) -> tuple[int, int]:
    """(w, h) with the longer (or shorter) side at most ``side``; never enlarged."""
    w, h = size
    scale = side / (min(w, h) if shorter else max(w, h))
    if scale >= 1:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = arr.shape[:2]
    if (w, h) == size:
        return arr
    shrink = size[0] < w or size[1] < h
    return np.asarray(cv2.resize(arr, size, interpolation=cv2.INTER_AREA if shrink
                                 else cv2.INTER_LINEAR))


def _bbox(mask: np.ndarray) -> Box | None:
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return np.asarray(cv2.dilate(mask.astype(np.uint8), _disk(radius))) > 0


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return np.asarray(cv2.erode(mask.astype(np.uint8), _disk(radius))) > 0


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _to_cv(t: np.ndarray) -> np.ndarray:
    """A transform between continuous coordinates (pixel i covers [i, i+1)) as OpenCV wants it
    (pixel centres at integers)."""
    return _shift(-0.5, -0.5) @ t @ _shift(0.5, 0.5)


def _det(t: np.ndarray) -> float:
    return float(t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0])


def _ncc(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of ``a`` and ``b`` over ``where``; 0 when either
    is flat there."""
    x = a[where].astype(np.float64)
    y = b[where].astype(np.float64)
    if x.size < 16:
        return 0.0
    x -= x.mean()
    y -= y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 1e-6 else 0.0


# --- 1. the main object of a photo without a mask --------------------------------------------


@dataclass(frozen=True)
class ObjectEstimate:
    """The main object of a photo: ``mask`` (bool, the image's size), ``confidence`` (0..1: how
    separable it is from its surroundings) and ``method`` (how it was found)."""

    mask: np.ndarray
    confidence: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    alternative: np.ndarray | None = None
    """The centre-prior reading (bool, the image's size) when it disagrees with ``mask``
    (IoU below :data:`AGREE_MIN`): the main object is then ambiguous, and an output is judged
    against both readings (it must keep the product under each)."""


def _main_components(fg: np.ndarray) -> np.ndarray:
    """The main object's components: those not running off the frame are preferred (products
    are shot whole, clutter runs off the edges), the largest after weighting by closeness to the
    centre, and any other at least 10 % of its size; enclosed holes smaller than 3 % of it are
    filled."""
    h, w = fg.shape
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(fg.astype(np.uint8),
                                                                  connectivity=8)
    if n <= 1:
        return np.zeros(fg.shape, dtype=bool)
    x, y, bw, bh, areas = (stats[1:, i] for i in range(5))
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    candidates = areas >= max(4, 0.002 * h * w)
    if (candidates & inside & (areas >= 0.005 * h * w)).any():
        candidates &= inside
    if not candidates.any():
        return np.zeros(fg.shape, dtype=bool)
    cx, cy = centroids[1:, 0] / w - 0.5, centroids[1:, 1] / h - 0.5
    weight = areas * (1.0 - np.minimum(np.hypot(cx, cy) / 0.75, 0.9))
    best = int(np.argmax(np.where(candidates, weight, -1.0)))
    keep_ids = np.flatnonzero(candidates & (areas >= 0.10 * areas[best])) + 1
    keep = np.isin(labels, keep_ids)
    holes = (~keep).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area < 0.03 * keep.sum())
    if enclosed.any():
        keep |= np.isin(labels, np.flatnonzero(enclosed) + 1)
    return keep


def _grabcut(rgb: np.ndarray, init: np.ndarray, iterations: int = 3) -> np.ndarray | None:
    """GrabCut from an initial label map; None when it has no foreground or no background."""
    fg_labels = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
    bg_labels = (init == cv2.GC_BGD) | (init == cv2.GC_PR_BGD)
    if fg_labels.sum() < 16 or bg_labels.sum() < 16:
        return None
    mask = init.copy()
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(_SEED)  # GrabCut's k-means++ initialisation: fixed for determinism
    try:
        cv2.grabCut(np.ascontiguousarray(rgb), mask, (0, 0, 0, 0), bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return np.asarray((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))


def _spectral_residual(gray: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) at the gray image's size, 0..1: the
    log amplitude spectrum minus its local average, back-transformed with the original phase."""
    h, w = gray.shape
    small = _resize(gray, _fit((w, h), 64)).astype(np.float64)
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-9)
    residual = log_amp - cv2.blur(log_amp, (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = cv2.GaussianBlur(sal, (0, 0), 2.5)
    sal = _resize(sal.astype(np.float32), (w, h))
    top = float(sal.max())
    return np.asarray(sal / top if top > 0 else sal)


def _separability(rgb: np.ndarray, mask: np.ndarray) -> float:
    """1 − Bhattacharyya coefficient of the 8×8×8 RGB histograms of the object and of the ring
    around it (as wide as 10 % of its box): 1 = nothing alike, 0 = the same colours."""
    box = _bbox(mask)
    if box is None:
        return 0.0
    radius = max(2, round(0.1 * max(box[2] - box[0], box[3] - box[1])))
    ring = _dilate(mask, radius) & ~mask
    if ring.sum() < 16 or mask.sum() < 16:
        return 0.0
    q = (rgb // 32).astype(np.int64)
    codes = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
    p = np.bincount(codes[mask], minlength=512).astype(np.float64)
    r = np.bincount(codes[ring], minlength=512).astype(np.float64)
    bc = float(np.sqrt(p / p.sum() * r / r.sum()).sum())
    return float(np.clip(1.0 - bc, 0.0, 1.0))


def _centre_prior(rgb: np.ndarray) -> np.ndarray:
    """The main object read with a centre prior, independently of the border-distance seed:
    GrabCut at :data:`CENTRE_SIDE` from a frame :data:`CENTRE_MARGIN` inside the edges (outside
    it background, and so is any pixel within one band unit of the border's colour model:
    the backdrop seen through a ring or between a stool's legs; inside it probably the
    object), its main components kept. Products are shot centred and
    whole; a reading that does not lean on the backdrop's colour catches a product in the
    backdrop's colours (a red cup on a red-brown bar) that the border distance misses."""
    h, w = rgb.shape[:2]
    sw, sh = _fit((w, h), CENTRE_SIDE)
    small = _resize(rgb, (sw, sh)) if (sw, sh) != (w, h) else rgb
    band = border_band(sh, sw)[0]
    dist = background_distance(small, band)
    init = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    mx, my = max(1, round(CENTRE_MARGIN * sw)), max(1, round(CENTRE_MARGIN * sh))
    init[my:sh - my, mx:sw - mx] = cv2.GC_PR_FGD
    init[dist < 1.0] = cv2.GC_BGD  # the backdrop's own colour, e.g. seen through a ring
    init[band] = cv2.GC_BGD
    cut = _grabcut(small, init, iterations=5)
    mask = _main_components(cut) if cut is not None else np.zeros((sh, sw), bool)
    return _resize(mask.astype(np.uint8) * 255, (w, h)) > 127 if (sw, sh) != (w, h) else mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _estimate_small(rgb: np.ndarray) -> ObjectEstimate:
    """:func:`estimate_main_object` on an RGB array already at working size."""
    h, w = rgb.shape[:2]
    band = border_band(h, w)[0]
    dist = background_distance(rgb, band)
    standout = dist > foreground_threshold(dist, band)
    seed = _main_components(standout)
    method = "border_distance+grabcut"
    mask: np.ndarray | None = None
    if seed.any():
        init = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        init[band] = cv2.GC_BGD
        init[seed] = cv2.GC_PR_FGD
        cut = _grabcut(rgb, init)
        mask = _main_components(cut) if cut is not None else seed
        if not mask.any():
            mask = seed
    if mask is None or not mask.any() or mask.mean() > 0.9:
        method = "spectral_residual"
        sal = _spectral_residual(_gray(rgb))
        s8 = np.clip(sal * 255, 0, 255).astype(np.uint8)
        _, binary = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        standout = binary > 0
        mask = _main_components(standout)
    area = float(mask.mean())
    if not mask.any() or area > 0.95:
        return ObjectEstimate(np.zeros((h, w), bool), 0.0, method, {"area": area})
    separability = _separability(rgb, mask)
    # how much of everything that stands out is this object: ~1 on a plain backdrop, small on a
    # busy one, where the object chosen is one of many and may well be clutter
    uniqueness = float((mask & standout).sum() / max(1, standout.sum()))
    edge = np.zeros((h, w), bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    contour = mask & ~_erode(mask, 1)
    on_edge = float((contour & edge).sum() / max(1, contour.sum()))
    plausible = 1.0 if 0.003 <= area <= 0.85 else 0.3
    confidence = separability * min(1.0, uniqueness / 0.8) * (1.0 - on_edge) * plausible
    centre = _centre_prior(rgb)
    agreement = _iou(mask, centre)
    ambiguous = agreement < AGREE_MIN
    if ambiguous and not centre.any():
        # nothing stands out from the centre of the frame (a board filling the photo): the
        # border reading cannot be checked and is not trusted
        confidence = 0.0
    return ObjectEstimate(mask, float(confidence), method, {
        "area": area, "separability": separability, "uniqueness": uniqueness,
        "contour_on_frame_edge": on_edge, "centre_prior_agreement": agreement,
        "ambiguous": ambiguous}, centre if ambiguous and centre.any() else None)


def estimate_main_object(image: Image.Image) -> ObjectEstimate:
    """The main object of a photo that has no ground-truth mask.

    Method ``border_distance+grabcut``: the background is modelled from the frame's border band
    (a robust quadratic colour surface in CIELAB), pixels far from it in units of the band's own
    variability are the object's seed (Otsu on the log distance, raised above the band's
    texture), its main components are kept (not running off the frame, large, central), and
    GrabCut refines them (border band definite background). When nothing stands out from the
    border (or almost everything does), ``spectral_residual`` saliency thresholded by Otsu is
    used instead. Works at :data:`ESTIMATE_SIDE`; the mask is returned at the image's size.

    ``confidence`` (0..1) is the colour separability of the object from the ring around it
    (1 − Bhattacharyya coefficient of their RGB histograms), times its uniqueness (the share of
    all that stands out from the backdrop that is this object, counted in full from 80 %), times
    the share of its outline not on the frame edge, times 0.3 when its area is implausible
    (< 0.3 % or > 85 % of the frame); 0 when nothing was found. It says how clearly the chosen
    object stands apart, not that it is the product: on the 36 photos of the sample dataset the
    estimate matched the exact mask (IoU ≥ 0.85) for 30, with confidence 0.24-0.99; of the
    other 6, the busy many-coloured scenes that defeat border-distance methods (as they defeat
    the local cut-out) picked clutter with confidence 0.11-0.81, and two caught part of the
    product (IoU 0.73-0.77). On the 4 real photos it was wrong on all (IoU 0.00-0.26).

    So a second reading, :func:`_centre_prior`, is taken independently of the backdrop's
    colour seed; where the two agree (IoU ≥ :data:`AGREE_MIN`) the estimate stands, where they
    disagree ``details["ambiguous"]`` is true and ``alternative`` holds the centre reading (an
    output is then judged against both, see :func:`analyse`), and where the centre of the frame
    holds nothing that stands out the confidence is 0 (a board filling the photo). Judged this
    way without masks, the local baselines' 152 outputs on the sample (enhance, both cut-outs,
    packshot) got the verdicts made with the masks for 147: 4 missing (apparel-04's, a guess),
    no false pass, 1 false fail (kitchen-07's threshold cut-out). Details: the method and each
    factor, and the readings' agreement."""
    rgb = _rgb_array(image)
    h, w = rgb.shape[:2]
    if min(h, w) < 8:
        return ObjectEstimate(np.zeros((h, w), bool), 0.0, "none", {"reason": "image too small"})
    small = _resize(rgb, _fit((w, h), ESTIMATE_SIDE))
    estimate = _estimate_small(small)

    def full(mask: np.ndarray) -> np.ndarray:
        return _resize(mask.astype(np.uint8) * 255, (w, h)) > 127

    alternative = None if estimate.alternative is None else full(estimate.alternative)
    return ObjectEstimate(full(estimate.mask), estimate.confidence, estimate.method,
                          estimate.details, alternative)


_ESTIMATES: OrderedDict[bytes, ObjectEstimate] = OrderedDict()
_ESTIMATES_LOCK = threading.Lock()


def _estimate_cached(image: Image.Image, rgb: np.ndarray) -> ObjectEstimate:
    """:func:`estimate_main_object`, remembered for the last 8 source photos (by content): a
    sweep scores many outputs of one photo, each with its own freshly decoded copy."""
    key = hashlib.blake2b(rgb.tobytes(), digest_size=16,
                          person=b"%dx%d" % (rgb.shape[1], rgb.shape[0])).digest()
    with _ESTIMATES_LOCK:
        if key in _ESTIMATES:
            _ESTIMATES.move_to_end(key)
            return _ESTIMATES[key]
    estimate = estimate_main_object(image)
    with _ESTIMATES_LOCK:
        _ESTIMATES[key] = estimate
        while len(_ESTIMATES) > 8:
            _ESTIMATES.popitem(last=False)
    return estimate


# --- 2. the product in the output -----------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """Where the source's product is in an output.

    ``found``: whether it is there; ``method``: which alignment won (``same_frame``,
    ``same_place``, ``features``, ``template``, ``alpha_box``, ``object_box``, each ``+mirror``
    when mirrored); ``box``: the
    product's box in the output (x0, y0, x1, y1, px; may run past the frame when cropped);
    ``mask_in_output``: the product's silhouette in the output frame (bool, output-sized);
    ``inlier_share``: RANSAC inliers / ratio-test matches of the feature alignment, when features
    were matched; ``homography``: the 3×3 transform from source pixels to output pixels (a
    similarity, possibly mirrored: see the module docstring); ``mirrored``: its 2×2 part has a
    negative determinant; ``reason``: ``product_not_found`` when not found; ``score``: the
    winning alignment's masked gray NCC; ``details``: every candidate tried."""

    found: bool
    method: str
    box: Box | None
    mask_in_output: np.ndarray | None
    inlier_share: float | None
    homography: np.ndarray | None
    mirrored: bool
    reason: str | None
    score: float
    details: dict[str, Any] = field(default_factory=dict)
    in_frame: float | None = None
    """The share of the product inside the output frame (when found)."""


@dataclass(eq=False)
class _Candidate:
    method: str
    t: np.ndarray  # 3×3, source-work → output-work, continuous coordinates
    ncc: float = -1.0
    score: float = -1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mirrored(self) -> bool:
        return _det(self.t) < 0


@dataclass
class _Output:
    """The output decoded once: composited RGB (full size), alpha (None without a usable one)."""

    rgb: np.ndarray
    alpha: np.ndarray | None  # uint8, full size
    alpha_state: str  # "none", "opaque", "usable", "empty"

    @classmethod
    def of(cls, image: Image.Image) -> _Output:
        if "A" not in image.getbands():
            return cls(_rgb_array(image), None, "none")
        rgba = np.asarray(image.convert("RGBA"))
        a = rgba[..., 3]
        if int(a.min()) == 255 or float((a <= 127).mean()) < ALPHA_MIN_TRANSPARENT:
            return cls(np.ascontiguousarray(rgba[..., :3]), None, "opaque")
        if int(a.max()) <= 127:
            return cls(np.full(rgba.shape[:2] + (3,), GREY, np.uint8), a, "empty")
        # over grey in 16-bit integers (rgb·a + 128·(255 − a) ≤ 255², no float copy of a
        # large image)
        a16 = a.astype(np.uint16)[..., None]
        comp = (rgba[..., :3].astype(np.uint16) * a16 + int(GREY) * (255 - a16) + 127) // 255
        return cls(comp.astype(np.uint8), np.ascontiguousarray(a), "usable")


class _Pyramid:
    """An image at integer shrink factors (area-averaged), made on demand."""

    def __init__(self, arr: np.ndarray) -> None:
        self.levels: dict[int, np.ndarray] = {1: arr}

    def at(self, k: int) -> np.ndarray:
        if k not in self.levels:
            base = self.levels[1]
            h, w = base.shape[:2]
            self.levels[k] = np.asarray(cv2.resize(base[:h - h % k, :w - w % k],
                                                   (w // k, h // k),
                                                   interpolation=cv2.INTER_AREA))
        return self.levels[k]


def _warp(pyr: _Pyramid, t: np.ndarray, size: tuple[int, int], border: float,
          nearest: bool = False) -> np.ndarray:
    """Sample ``pyr``'s image at ``t`` (3×3, destination → image, continuous coordinates) into a
    destination of ``size`` (w, h); the image is first shrunk by the integer part of the map's
    scale so a large image is averaged, not aliased."""
    k = max(1, int(math.sqrt(abs(_det(t)))))
    src = pyr.at(k) if k > 1 else pyr.levels[1]
    t = _scale(1 / k, 1 / k) @ t if k > 1 else t
    m = _to_cv(t)[:2]
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return np.asarray(cv2.warpAffine(src, m, size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=(border, border, border, border)))


class _Source:
    """The source at working size with its product mask and crops for verification."""

    def __init__(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        self.full = rgb
        self.mask_full = mask
        h, w = rgb.shape[:2]
        self.work_size = _fit((w, h), WORK_SIDE)
        self.work = _resize(rgb, self.work_size)
        small = _resize(mask.astype(np.uint8) * 255, self.work_size)
        self.mask = small > 127 if (small > 127).any() else small > 0
        self.to_work = _scale(self.work_size[0] / w, self.work_size[1] / h)
        box = _bbox(self.mask)
        if box is None:
            raise _Missing(f"the product ({int(mask.sum())} px) vanishes at {WORK_SIDE} px")
        self.box = box
        self.gray = _gray(self.work)


def _features(src: _Source, out_gray: np.ndarray, out_region: np.ndarray | None
              ) -> tuple[list[_Candidate], dict[str, Any]]:
    """Similarity alignments from SIFT matches of the product (direct and mirrored)."""
    sift = cv2.SIFT.create(nfeatures=1500)
    x0, y0, x1, y1 = src.box
    pad = round(0.1 * max(x1 - x0, y1 - y0))
    h, w = src.gray.shape
    cx0, cy0, cx1, cy1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    crop = np.ascontiguousarray(src.gray[cy0:cy1, cx0:cx1])
    cmask = (_dilate(src.mask, 2)[cy0:cy1, cx0:cx1]).astype(np.uint8) * 255
    omask = None if out_region is None else _dilate(out_region, 3).astype(np.uint8) * 255
    kp_o, d_o = sift.detectAndCompute(out_gray, omask)
    info: dict[str, Any] = {"output_keypoints": len(kp_o)}
    candidates: list[_Candidate] = []
    if d_o is None or len(kp_o) < MIN_INLIERS:
        return candidates, info
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    cw = cx1 - cx0
    for flip in (False, True):
        image = np.ascontiguousarray(crop[:, ::-1]) if flip else crop
        m = np.ascontiguousarray(cmask[:, ::-1]) if flip else cmask
        kp_s, d_s = sift.detectAndCompute(image, m)
        key = "mirror" if flip else "direct"
        info[f"{key}_source_keypoints"] = len(kp_s)
        if d_s is None or len(kp_s) < MIN_INLIERS:
            continue
        pairs = matcher.knnMatch(d_s, d_o, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < SIFT_RATIO * p[1].distance]
        info[f"{key}_matches"] = len(good)
        if len(good) < MIN_INLIERS:
            continue
        # keypoints in continuous coordinates (pixel i covers [i, i+1))
        ps = np.array([kp_s[g.queryIdx].pt for g in good], np.float32) + 0.5
        po = np.array([kp_o[g.trainIdx].pt for g in good], np.float32) + 0.5
        if flip:  # back into the unflipped crop's coordinates: u → cw − u
            ps[:, 0] = cw - ps[:, 0]
        ps += np.array([cx0, cy0], np.float32)
        thr = max(3.0, 0.01 * math.hypot(*out_gray.shape))
        if flip:  # a reflection: fit the similarity to the mirrored points, then compose
            mir = ps.copy()
            mir[:, 0] = -mir[:, 0]
            affine, inl = cv2.estimateAffinePartial2D(mir, po, method=cv2.RANSAC,
                                                      ransacReprojThreshold=thr)
            if affine is None:
                continue
            t = np.vstack([affine, [0, 0, 1]]) @ _scale(-1.0, 1.0)
        else:
            affine, inl = cv2.estimateAffinePartial2D(ps, po, method=cv2.RANSAC,
                                                      ransacReprojThreshold=thr)
            if affine is None:
                continue
            t = np.vstack([affine, [0, 0, 1]])
        inliers = int(inl.sum()) if inl is not None else 0
        info[f"{key}_inliers"] = inliers
        scale = math.sqrt(abs(_det(t)))
        if inliers < MIN_INLIERS or not 0.02 <= scale <= 50:  # degenerate fits say nothing
            continue
        extra: dict[str, Any] = {"inliers": inliers, "matches": len(good),
                                 "inlier_share": inliers / len(good)}
        if len(good) >= 8:  # a free homography of the same matches, for diagnosis only
            hom, hin = cv2.findHomography(ps, po, cv2.RANSAC, thr)
            if hom is not None:
                extra["homography_det"] = _det(hom / hom[2, 2])
                extra["homography_inliers"] = int(hin.sum()) if hin is not None else 0
        candidates.append(_Candidate("features", t, extra=extra))
    return candidates, info


def _masked_match(image: np.ndarray, templ: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The masked ``TM_CCOEFF_NORMED`` map, or None when the template does not fit or is flat."""
    if templ.shape[0] > image.shape[0] or templ.shape[1] > image.shape[1]:
        return None
    if float(templ[mask > 0].std()) < 1.0:  # a flat template correlates with nothing
        return None
    res = cv2.matchTemplate(image, templ, cv2.TM_CCOEFF_NORMED, mask=mask)
    return np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)


def _template(src: _Source, out_gray: np.ndarray) -> tuple[list[_Candidate], dict[str, Any]]:
    """Masked multi-scale template matching of the product crop, direct and mirrored, on both
    images at :data:`TEMPLATE_SIDE` blurred by one pixel (so a scale between two steps still
    lines up thin parts); the two best distinct hits of each become candidates."""
    x0, y0, x1, y1 = src.box
    bw, bh = x1 - x0, y1 - y0
    crop = cv2.GaussianBlur(np.ascontiguousarray(src.gray[y0:y1, x0:x1]), (0, 0), 1.0)
    cmask8 = src.mask[y0:y1, x0:x1].astype(np.uint8) * 255
    oh, ow = out_gray.shape
    cw, ch = _fit((ow, oh), TEMPLATE_SIDE, shorter=True)
    rc = cw / ow
    coarse = cv2.GaussianBlur(_resize(out_gray, (cw, ch)), (0, 0), 1.0)
    s_max = min(cw / bw, ch / bh)
    s_min = max(s_max * TEMPLATE_MIN_FRACTION, 10.0 / min(bw, bh))
    info: dict[str, Any] = {}
    if s_min > s_max:
        info["template"] = "product too small to search"
        return [], info
    count = max(1, math.ceil(math.log(s_max / s_min) / math.log(TEMPLATE_STEP)) + 1)
    scales = [s_min * (s_max / s_min) ** (i / max(1, count - 1)) for i in range(count)]
    candidates: list[_Candidate] = []
    for flip in (False, True):
        templ0 = np.ascontiguousarray(crop[:, ::-1]) if flip else crop
        mask0 = np.ascontiguousarray(cmask8[:, ::-1]) if flip else cmask8
        hits: list[tuple[float, float, tuple[int, int], tuple[int, int]]] = []
        for s in scales:
            size = (max(1, round(bw * s)), max(1, round(bh * s)))
            res = _masked_match(coarse, _resize(templ0, size), _resize(mask0, size) > 127)
            if res is None:
                continue
            for _ in range(2):  # the two best peaks at this scale, a template apart
                _, peak, _, loc = cv2.minMaxLoc(res)
                hits.append((float(peak), s, (int(loc[0]), int(loc[1])), size))
                lx, ly = loc
                res[max(0, ly - size[1] // 2):ly + size[1] // 2 + 1,
                    max(0, lx - size[0] // 2):lx + size[0] // 2 + 1] = -1.0
        hits.sort(key=lambda h: -h[0])
        kept: list[tuple[float, float, tuple[int, int], tuple[int, int]]] = []
        for hit in hits:  # distinct places: centres at least half a template apart
            cx, cy = hit[2][0] + hit[3][0] / 2, hit[2][1] + hit[3][1] / 2
            if all(abs(cx - k[2][0] - k[3][0] / 2) > k[3][0] / 2
                   or abs(cy - k[2][1] - k[3][1] / 2) > k[3][1] / 2 for k in kept):
                kept.append(hit)
            if len(kept) == 2:
                break
        key = "mirror" if flip else "direct"
        info[f"template_{key}_peaks"] = [round(k[0], 4) for k in kept]
        for peak, s, (lx, ly), _size in kept:
            sw, lxw, lyw = s / rc, lx / rc, ly / rc
            if flip:  # source x → crop u = x − x0 → mirrored u' = bw − u → output
                t = (_shift(lxw, lyw) @ _scale(sw, sw) @ _shift(bw, 0) @ _scale(-1, 1)
                     @ _shift(-x0, -y0))
            else:
                t = _shift(lxw, lyw) @ _scale(sw, sw) @ _shift(-x0, -y0)
            candidates.append(_Candidate("template", t, extra={"template_peak": peak}))
    return candidates, info


PLAIN_BAND_SPREAD = 6.0
"""An output's background is plain (a packshot's) when 75 % of its border band lies within this
CIELAB distance of the band's median colour (a quarter may be product running off the frame);
on a plain backdrop, pixels this close to its colour are not counted as product silhouette
(white on white: GrabCut cannot tell them apart)."""


def _object_seed(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """The main object of an output, without GrabCut — what stands out from the border band's
    colour model, main components kept — and whether the background is plain enough for it to
    be trusted as the product's silhouette (:func:`_plain_background`)."""
    h, w = rgb.shape[:2]
    band = border_band(h, w)[0]
    dist = background_distance(rgb, band)
    seed = _main_components(dist > foreground_threshold(dist, band))
    return seed, _plain_background(rgb) is not None


def _box_candidates(src: _Source, region: np.ndarray, method: str) -> list[_Candidate]:
    """The source's product box mapped onto an output region's box, direct and mirrored:
    uniform scale (geometric mean of the width and height ratios), centre on centre. Where the
    region's box runs into the output's edge (a product cut by the frame) and the source's does
    not, the scale comes from the other dimension and the box is anchored on the uncut side."""
    box = _bbox(region)
    if box is None or region.sum() < 16:
        return []
    h, w = region.shape
    sh, sw = src.mask.shape
    x0, y0, x1, y1 = src.box
    bw, bh = x1 - x0, y1 - y0
    ow, oh = box[2] - box[0], box[3] - box[1]
    cut_l, cut_t = box[0] <= 1 and x0 > 1, box[1] <= 1 and y0 > 1
    cut_r, cut_b = box[2] >= w - 1 and x1 < sw - 1, box[3] >= h - 1 and y1 < sh - 1
    horizontal, vertical = cut_l or cut_r, cut_t or cut_b
    if vertical and not horizontal:
        s = ow / bw
    elif horizontal and not vertical:
        s = oh / bh
    else:
        s = math.sqrt(ow * oh / (bw * bh))
    # where the source box's centre lands: centred, or anchored on an uncut side
    ocx, ocy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if cut_l != cut_r and not vertical:
        ocx = box[2] - s * bw / 2 if cut_l else box[0] + s * bw / 2
    if cut_t != cut_b and not horizontal:
        ocy = box[3] - s * bh / 2 if cut_t else box[1] + s * bh / 2
    scx, scy = (x0 + x1) / 2, (y0 + y1) / 2
    direct = _shift(ocx, ocy) @ _scale(s, s) @ _shift(-scx, -scy)
    mirror = _shift(ocx, ocy) @ _scale(-s, s) @ _shift(-scx, -scy)
    return [_Candidate(method, direct), _Candidate(method, mirror)]


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(math.log((a[0] / a[1]) / (b[0] / b[1]))) <= 0.02


def _same_frame(src: _Source, out_size: tuple[int, int]) -> list[_Candidate]:
    """The output is the source's frame resized (enhance, upscale, cut-outs); the same frame
    mirrored as a whole (a flipped photo); the product mirrored where it stood."""
    sw, sh = src.work_size
    ow, oh = out_size
    if not _same_aspect((sw, sh), (ow, oh)):
        return []
    t = _scale(ow / sw, oh / sh)
    x0, _, x1, _ = src.box
    return [_Candidate("same_frame", t),
            _Candidate("same_frame", t @ _shift(sw, 0) @ _scale(-1, 1)),
            _Candidate("same_place", t @ _shift(x0 + x1, 0) @ _scale(-1, 1))]


class _Verifier:
    """How well a candidate alignment explains the output, on the product's box (+10 %) at
    :data:`VERIFY_SIDE`.

    ``ncc``: masked gray NCC of the source's product and the output warped back onto it, over
    the mask eroded by up to 3 px (as far as 40 % of it remains: a product's rim mixes with the
    background, which a new background changes — a thin ring's NCC is otherwise mostly rim).
    ``score`` (what candidates are ranked and refined by): the NCC, averaged with the IoU of
    the mask and the output's own silhouette warped back when the output has one (a cut-out's
    alpha, or the main object of a packshot on a plain background)."""

    def __init__(self, src: _Source, out_gray: np.ndarray,
                 region: np.ndarray | None = None) -> None:
        bx0, by0, bx1, by1 = src.box
        pad = round(0.1 * max(bx1 - bx0, by1 - by0))
        h, w = src.gray.shape
        x0, y0, x1, y1 = max(0, bx0 - pad), max(0, by0 - pad), min(w, bx1 + pad), min(h, by1 + pad)
        self.size = _fit((x1 - x0, y1 - y0), VERIFY_SIDE)
        self.to_crop = _scale(self.size[0] / (x1 - x0), self.size[1] / (y1 - y0)) @ _shift(-x0,
                                                                                          -y0)
        self.from_crop = np.linalg.inv(self.to_crop)
        self.gray = _resize(src.gray[y0:y1, x0:x1], self.size)
        mask = _resize(src.mask[y0:y1, x0:x1].astype(np.uint8) * 255, self.size) > 127
        if not mask.any():
            mask = _resize(src.mask[y0:y1, x0:x1].astype(np.uint8) * 255, self.size) > 0
        self.mask = mask
        self.inner = mask
        for radius in (3, 2, 1):
            inner = _erode(mask, radius)
            if inner.sum() >= max(16, 0.4 * mask.sum()):
                self.inner = inner
                break
        self.pyr = _Pyramid(out_gray)
        self.ones = _Pyramid(np.full(out_gray.shape, 255, np.uint8))
        self.region = None if region is None else _Pyramid(region.astype(np.float32))
        self.centre = ((bx0 + bx1) / 2, (by0 + by1) / 2)
        self.pixel = (x1 - x0) / self.size[0]  # source-work px per verify px
        self.evaluations = 0

    def __call__(self, t_work: np.ndarray) -> tuple[float, float]:
        """(score, ncc) of an alignment (source-work → output-work): the score ranks (NCC over
        the whole product, what falls outside the output counting as grey, averaged with the
        silhouette IoU when there is a silhouette); the NCC is over the part of the product
        inside the output only, so a product cut by the frame is still recognised by what
        is left of it."""
        self.evaluations += 1
        back = t_work @ self.from_crop
        if not np.isfinite(back).all() or abs(_det(back)) < 1e-9:
            return -1.0, -1.0
        warped = _warp(self.pyr, back, self.size, GREY)
        ncc_all = _ncc(self.gray, warped, self.inner)
        inside = _warp(self.ones, back, self.size, 0.0, nearest=True) > 0
        visible = self.inner & inside
        ncc = ncc_all if visible.sum() == self.inner.sum() else _ncc(self.gray, warped, visible)
        if self.region is None:
            return ncc_all, ncc
        sil = _warp(self.region, back, self.size, 0.0) > 0.5
        union = int((sil | self.mask).sum())
        iou = int((sil & self.mask).sum()) / union if union else 0.0
        return 0.5 * (ncc_all + iou), ncc

    def check(self, cand: _Candidate) -> _Candidate:
        cand.score, cand.ncc = self(cand.t)
        return cand

    def refine(self, cand: _Candidate, budget: int = 60, aspect: bool = False) -> _Candidate:
        """Pattern search on (shift, log scale, rotation) about the product's centre, from a
        step of 2 verify px / 4 % / 2° down to an eighth of it, maximising the score: turns a
        coarse hit into a registration good to about a pixel at the compared size.

        With ``aspect``, a fifth parameter stretches the product along its own axes (log
        width/height ratio, steps from 4 %): how much the output squashed or stretched it
        (``extra["aspect"]``), a change a similarity alignment cannot absorb."""
        cx, cy = self.centre
        steps = [2 * self.pixel, 2 * self.pixel, 0.04, math.radians(2.0), 0.04]
        params = [0.0, 0.0, 0.0, 0.0, 0.0]
        n = 5 if aspect else 4

        def make(p: list[float]) -> np.ndarray:
            c, s = math.cos(p[3]) * math.exp(p[2]), math.sin(p[3]) * math.exp(p[2])
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            stretch = _scale(math.exp(p[4] / 2), math.exp(-p[4] / 2))
            return cand.t @ _shift(cx + p[0], cy + p[1]) @ rot @ stretch @ _shift(-cx, -cy)

        best, best_ncc = self(cand.t) if cand.score <= -1 else (cand.score, cand.ncc)
        if aspect:  # a coarse scan first: a strong squash is too far for the local search
            for a in ASPECT_SCAN:
                for keep in (0.0, 0.5, 1.0):  # keep the width, the area or the height
                    trial = [0.0, 0.0, (keep - 0.5) * a, 0.0, a]
                    value, ncc = self(make(trial))
                    if value > best + 1e-4:
                        best, best_ncc, params = value, ncc, trial
        used = 0
        for _ in range(4):
            improved = True
            while improved and used < budget:
                improved = False
                for i in range(n):
                    for sign in (1.0, -1.0):
                        trial = list(params)
                        trial[i] += sign * steps[i]
                        used += 1
                        value, ncc = self(make(trial))
                        if value > best + 1e-4:
                            best, best_ncc, params, improved = value, ncc, trial, True
                            break
            steps = [s / 2 for s in steps]
        refined = _Candidate(cand.method, make(params), best_ncc, best, dict(cand.extra))
        refined.extra["refined"] = {"shift_px": [round(params[0], 2), round(params[1], 2)],
                                    "scale": round(math.exp(params[2]), 4),
                                    "rotation_deg": round(math.degrees(params[3]), 2),
                                    "score_before": round(cand.score, 4)}
        if aspect:
            refined.extra["aspect"] = math.exp(params[4])
        return refined


SAME_FRAME_ACCEPT = 0.9
"""An output of the source's aspect whose same-frame alignment verifies at this NCC is not
searched further (enhance, upscale: the common case, and the cheap one)."""

SEED_SIDE = 192
"""The output's main object (for the object-box candidate) is looked for at this size (px)."""

SEGMENT_SIDE = 224
"""Silhouettes (GrabCut) are cut at most this long (px)."""

AGREE_DELTA_E = 8.0
"""A product pixel whose colour the aligned output still shows within this CIEDE2000 counts as
kept even where GrabCut sees no edge (white on white)."""

FOUND_TRIES = 3
"""The best this many refined alignments are measured, in order, until one shows the product
(:data:`FOUND_NCC`, :data:`FOUND_KEPT`): a clutter patch that correlates better than the
product itself (a smooth product in a busy scene) does not hide it."""

REFINE_TOP = 3
"""The best this many candidates of each direction (direct, mirrored) are refined before the
winner is chosen: a coarse hit on the right place can verify lower than a wrong one until both
are registered."""


def _goodness(c: _Candidate) -> float:
    """How well an alignment explains the output: its score, or its score with stretch once
    that is measured."""
    return max(c.score, float(c.extra.get("aspect_score", -1.0)))


def _order(candidates: list[_Candidate]) -> list[_Candidate]:
    """Candidates best first, by :func:`_goodness` within the winning direction.

    Mirrored wins only when the best mirrored NCC leaves well under half the misfit of the best
    direct one (``1 − NCC`` at most 1/:data:`MIRROR_RATIO` of the direct one's, less
    :data:`MIRROR_MARGIN`): a symmetric product fits both ways about equally and is not
    mirrored in any sense that matters; a mirrored asymmetric one fits one way nearly perfectly
    and the other way visibly worse, even when its gray structure is nearly symmetric (a
    sneaker seen from the side: 0.9995 against 0.98). The NCC, not the score, decides: the
    score's silhouette term is blind to a mirror."""
    direct = [c for c in candidates if not c.mirrored]
    mirror = [c for c in candidates if c.mirrored]

    def best_ncc(group: list[_Candidate]) -> float:
        return max(max(c.ncc, float(c.extra.get("aspect_ncc", -1.0))) for c in group)

    mirrored = bool(mirror) and (not direct or (1 - best_ncc(direct))
                                 >= MIRROR_RATIO * (1 - best_ncc(mirror)) + MIRROR_MARGIN)
    first, other = (mirror, direct) if mirrored else (direct, mirror)
    return (sorted(first, key=_goodness, reverse=True)
            + sorted(other, key=_goodness, reverse=True))


def _refined(candidates: list[_Candidate], verify: _Verifier, mirrored: bool
             ) -> list[_Candidate]:
    """The top :data:`REFINE_TOP` of ``candidates`` of one direction, refined (a same-frame
    candidate is exact by construction and is not refined)."""
    ranked = sorted((c for c in candidates if c.mirrored == mirrored),
                    key=lambda c: -c.score)[:REFINE_TOP]
    return [c if c.method in ("same_frame", "same_place") else verify.refine(c) for c in ranked]


@dataclass
class _Analysis:
    located: Located
    measures: dict[str, float]
    details: dict[str, Any]


def _locate(src: _Source, out: _Output) -> tuple[list[_Candidate], dict[str, Any], np.ndarray]:
    """Every candidate alignment, verified; the best direct and mirrored ones refined: the
    refined ones best first, what was tried, and the output's work scale.

    A cut-out of the source's aspect is only compared in the source's frame: cut-out models do
    not move the product, and elsewhere in its alpha there may be background kept instead of
    the product (which must not pass for it)."""
    oh, ow = out.rgb.shape[:2]
    work_size = _fit((ow, oh), WORK_SIDE)
    o_work = _resize(out.rgb, work_size)
    o_gray = _gray(o_work)
    o_to_work = _scale(work_size[0] / ow, work_size[1] / oh)
    region = None if out.alpha is None else _resize(out.alpha, work_size) > 127
    candidates = _same_frame(src, work_size)
    info: dict[str, Any] = {}
    verify = _Verifier(src, o_gray)
    candidates = [verify.check(c) for c in candidates]
    evaluations = 0
    if region is not None and candidates:
        info["note"] = "cut-out of the source's aspect: compared in the source's frame"
        candidates = candidates[:1]
    elif candidates and candidates[0].ncc >= SAME_FRAME_ACCEPT:
        info["note"] = f"same frame verified at NCC >= {SAME_FRAME_ACCEPT}: no search"
    else:
        feats, finfo = _features(src, o_gray, region)
        temps, tinfo = _template(src, o_gray)
        info.update(finfo)
        info.update(tinfo)
        candidates += feats + temps
        silhouette = region
        if region is not None:
            candidates += _box_candidates(src, region, "alpha_box")
        else:
            seed, plain = _object_seed(_resize(o_work, _fit(work_size, SEED_SIDE)))
            seed = _resize(seed.astype(np.uint8) * 255, work_size) > 127
            candidates += _box_candidates(src, seed, "object_box")
            info["plain_background"] = plain
            silhouette = seed if plain and seed.any() else None
        evaluations = verify.evaluations
        verify = _Verifier(src, o_gray, silhouette)
        candidates = [verify.check(c) for c in candidates]
    tried: list[dict[str, Any]] = [
        {"method": c.method + ("+mirror" if c.mirrored else ""), "score": round(c.score, 4),
         "ncc": round(c.ncc, 4),
         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.extra.items()}}
        for c in candidates]
    info["candidates"] = tried
    ranked = _order(_refined(candidates, verify, mirrored=False)
                    + _refined(candidates, verify, mirrored=True))
    tries = ranked[:FOUND_TRIES]
    same = [c for c in ranked if c.method == "same_frame" and not c.mirrored]
    if same and same[0] not in tries:  # an output of the source's frame is always tried there
        tries.append(same[0])
    for c in tries:  # how far the output stretched the product
        fit = verify.refine(c, aspect=True)
        c.extra.update(aspect=fit.extra["aspect"], aspect_ncc=fit.ncc, aspect_score=fit.score,
                       tried=True)
    # the tried ones in the order of how well they explain the output, stretch allowed: a
    # squashed product is where it fits best squashed, not where a part of it fits unsquashed
    ranked = _order(tries) + [c for c in ranked if c not in tries]
    info["refined"] = [{"method": c.method + ("+mirror" if c.mirrored else ""),
                        "score": round(c.score, 4), "ncc": round(c.ncc, 4),
                        **({"aspect": round(c.extra["aspect"], 4),
                            "aspect_ncc": round(c.extra["aspect_ncc"], 4)}
                           if "aspect" in c.extra else {})} for c in ranked]
    info["ranked_by"] = "ncc" if verify.region is None else "mean of ncc and silhouette iou"
    info["verifications"] = evaluations + verify.evaluations
    return ranked, info, o_to_work


def _product_segment(rgb: np.ndarray, prior: np.ndarray, valid: np.ndarray, ring: int
                     ) -> np.ndarray:
    """The product's silhouette in a shape crop, by GrabCut seeded with the prior silhouette:
    probable foreground on the prior, probable background on a ring ``ring`` px wide around it,
    definite background beyond and wherever the image has no pixels; of the result, the
    components that meet the prior. Run alike on the source and on the aligned output, so the
    method's own bias cancels and an unchanged product gives IoU 1."""
    h, w = prior.shape
    init = np.full((h, w), cv2.GC_BGD, np.uint8)
    init[_dilate(prior, ring)] = cv2.GC_PR_BGD
    init[prior] = cv2.GC_PR_FGD
    init[~valid] = cv2.GC_BGD
    cut = _grabcut(rgb, init, iterations=3)
    if cut is None:
        return prior & valid
    cut &= valid
    n, labels = cv2.connectedComponents(cut.astype(np.uint8), connectivity=8)
    if n <= 2:
        return cut
    touching = np.unique(labels[prior & cut])
    return np.isin(labels, touching[touching > 0])


SHAPE_RING = 0.35
"""GrabCut may move the product's silhouette this far (share of the product box's longer side)
beyond the source's: far enough for a product stretched by 1.7×, near enough that clutter of
the product's colour further out is not taken for it."""

SHAPE_PAD = 0.4
"""The shape crop is the source's product box grown by this share of its longer side on every
side (beyond the source's frame where need be): a product stretched or squashed by the output
spills past its old box, and that spill must be seen."""


def _shapes(src: _Source, out: _Output, t_full: np.ndarray, l_shift: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The product's silhouettes in the source and in the aligned output, in a shape crop
    (:data:`SHAPE_PAD`) at :data:`SEGMENT_SIDE`: (source's, output's, where the output has
    pixels, map shape-crop px → output px, details).

    A cut-out's silhouette is its alpha, compared with the source's mask. Otherwise both are
    :func:`_product_segment`, and the output's also takes in the source silhouette's pixels
    whose colour it still shows (CIEDE2000 below :data:`AGREE_DELTA_E` after the relight shift,
    both blurred by a pixel): a white product on a white packshot has no edge for GrabCut to
    find, yet it is there. A product squashed, cut or dropped shows background where it was,
    which does not agree (unless the background has the product's colour: then no silhouette
    can show the change)."""
    box = _bbox(src.mask_full)
    assert box is not None
    x0, y0, x1, y1 = box
    pad = SHAPE_PAD * max(x1 - x0, y1 - y0)
    cx0, cy0, cw, ch = x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    size = _fit((max(1, round(cw)), max(1, round(ch))), SEGMENT_SIDE)
    to_src = _shift(cx0, cy0) @ _scale(cw / size[0], ch / size[1])
    back = t_full @ to_src
    sh, sw = src.full.shape[:2]
    oh, ow = out.rgb.shape[:2]
    ones_s = _Pyramid(np.full((sh, sw), 255, np.uint8))
    valid_s = _warp(ones_s, to_src, size, 0.0) > 127
    valid_o = _warp(_Pyramid(np.full((oh, ow), 255, np.uint8)), back, size, 0.0) > 127
    prior = _warp(_Pyramid(src.mask_full.astype(np.uint8) * 255), to_src, size, 0.0) > 127
    if not prior.any():
        prior = _warp(_Pyramid(src.mask_full.astype(np.uint8) * 255), to_src, size, 0.0) > 0
    info: dict[str, Any] = {"segmented_at": list(size), "pad": SHAPE_PAD}
    if out.alpha is not None:
        seg_o = (_warp(_Pyramid(out.alpha), back, size, 0.0) > 127) & valid_o
        info["method"] = "alpha_vs_source_mask"
        return prior, seg_o, valid_o, back, info
    s_small = _warp(_Pyramid(src.full), to_src, size, GREY)
    o_small = _warp(_Pyramid(out.rgb), back, size, GREY)
    ring = max(2, round(SHAPE_RING * max(x1 - x0, y1 - y0) * size[0] / cw))
    seg_s = _product_segment(s_small, prior, valid_s, ring)
    cut_o = _product_segment(o_small, prior, valid_o, ring)
    lab_s = to_lab(cv2.GaussianBlur(s_small, (0, 0), 1.0))
    lab_o = to_lab(cv2.GaussianBlur(o_small, (0, 0), 1.0))
    lab_o[..., 0] = np.clip(lab_o[..., 0] + l_shift, 0, 100)
    agree = (delta_e_2000(lab_s, lab_o) < AGREE_DELTA_E) & seg_s & valid_o
    background = _plain_background(out.rgb)
    if background is not None:  # on a plain backdrop, its colour is not product (white on white)
        near = np.linalg.norm(lab_o - background, axis=-1) < PLAIN_BAND_SPREAD
        cut_o &= ~near
        info["plain_background_lab"] = [round(float(v), 2) for v in background]
    info.update(method="grabcut_alike_on_both+colour_agreement",
                grabcut_output_share=float(cut_o.sum() / max(1, seg_s.sum())),
                colour_agreement_share=float(agree.sum() / max(1, seg_s.sum())))
    return seg_s, cut_o | agree, valid_o, back, info


def _plain_background(rgb: np.ndarray) -> np.ndarray | None:
    """The CIELAB colour of an output's plain backdrop (its border band's median, at
    :data:`SEED_SIDE`), or None when the band is not plain (:data:`PLAIN_BAND_SPREAD`)."""
    small = _resize(rgb, _fit((rgb.shape[1], rgb.shape[0]), SEED_SIDE))
    band = border_band(*small.shape[:2])[0]
    lab = to_lab(small[band])
    median = np.median(lab, axis=0)
    spread = float(np.percentile(np.linalg.norm(lab - median, axis=1), 75))
    return median if spread <= PLAIN_BAND_SPREAD else None


def _compare_crop(src: _Source, t_full: np.ndarray) -> tuple[Box, tuple[int, int], np.ndarray]:
    """The source crop compared (product box + 20 %, clipped to the frame), its compared size
    and the map compare px → source px."""
    box = _bbox(src.mask_full)
    assert box is not None
    x0, y0, x1, y1 = box
    pad = round(0.2 * max(x1 - x0, y1 - y0))
    sh, sw = src.full.shape[:2]
    crop = (max(0, x0 - pad), max(0, y0 - pad), min(sw, x1 + pad), min(sh, y1 + pad))
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    # at most COMPARE_SIDE, never finer than the product's resolution in the output
    k = min(1.0, COMPARE_SIDE / max(cw, ch), math.sqrt(abs(_det(t_full))))
    k = max(k, 24.0 / max(cw, ch))
    size = (max(8, round(cw * k)), max(8, round(ch * k)))
    to_src = _shift(crop[0], crop[1]) @ _scale(cw / size[0], ch / size[1])
    return crop, size, to_src


def _measure(src: _Source, out: _Output, best: _Candidate, t_full: np.ndarray,
             details: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any],
                                               np.ndarray, Box]:
    """Every measure at the chosen alignment: (measures, details, silhouette in the output
    frame, product box in the output)."""
    crop, size, to_src = _compare_crop(src, t_full)
    cw, ch = size
    s_rgb = _resize(src.full[crop[1]:crop[3], crop[0]:crop[2]], size)
    m_src = src.mask_full[crop[1]:crop[3], crop[0]:crop[2]].astype(np.uint8) * 255
    m_c = _resize(m_src, size) > 127
    if not m_c.any():
        m_c = _resize(m_src, size) > 0
    back = t_full @ to_src  # compare px → output px
    oh, ow = out.rgb.shape[:2]
    o_rgb = _warp(_Pyramid(out.rgb), back, size, GREY)
    valid = _warp(_Pyramid(np.full((oh, ow), 255, np.uint8)), back, size, 0.0) > 127
    a_c = None
    if out.alpha is not None:
        a_c = _warp(_Pyramid(out.alpha), back, size, 0.0) > 127
    # structure: gray SSIM inside the mask, leaving out the 7×7 window's half-width at its rim
    s_map = ssim_map(_gray(s_rgb), _gray(o_rgb))
    inner = _erode(m_c, 3)
    use = inner if inner.sum() >= 16 else m_c
    ssim_value = float(s_map[use].mean())
    # colour: CIEDE2000 pixel by pixel at DELTA_E_SIDE, raw and relight-compensated
    de_size = _fit(size, DELTA_E_SIDE)
    s_small = _resize(s_rgb, de_size)
    o_small = _resize(o_rgb, de_size)
    region = _resize(m_c.astype(np.uint8) * 255, de_size) > 127
    region &= _resize(valid.astype(np.uint8) * 255, de_size) > 127
    if a_c is not None:
        region &= _resize(a_c.astype(np.uint8) * 255, de_size) > 127
    if _erode(region, 1).sum() >= 16:
        region = _erode(region, 1)
    colour: dict[str, Any] = {"pixels": int(region.sum()), "compared_at": list(de_size)}
    l_shift = 0.0
    if region.sum() >= 4:
        lab_s = to_lab(s_small[region])
        lab_o = to_lab(o_small[region])
        raw = delta_e_2000(lab_s, lab_o)
        l_shift = float(np.clip(lab_s[:, 0].mean() - lab_o[:, 0].mean(),
                                -RELIGHT_MAX_L, RELIGHT_MAX_L))
        lab_r = lab_o.copy()
        lab_r[:, 0] = np.clip(lab_r[:, 0] + l_shift, 0, 100)
        relit = delta_e_2000(lab_s, lab_r)
        delta_e = float(relit.mean())
        colour.update(raw=float(raw.mean()), relit=delta_e, l_shift=l_shift,
                      raw_p95=float(np.percentile(raw, 95)),
                      relit_p95=float(np.percentile(relit, 95)),
                      mean_colour=float(delta_e_2000(lab_s.mean(axis=0), lab_o.mean(axis=0))))
    else:  # the product's pixels are all transparent or outside the frame
        delta_e = NOT_FOUND_DELTA_E
        colour["note"] = "no product pixel visible in the output"
    # shape and coverage, in the wider shape crop; the IoU only where the output has pixels
    # (a product cut by the frame is ``cropped``, not also ``reshaped``)
    seg_s, seg_o, valid_o, shape_back, shape_info = _shapes(src, out, t_full, l_shift)
    union = int(((seg_s | seg_o) & valid_o).sum())
    inter = int((seg_s & seg_o).sum())
    shape_iou = inter / union if union else 0.0
    kept = inter / max(1, int(seg_s.sum()))
    in_frame = float((m_c & valid).sum() / max(1, m_c.sum()))
    occupancy = float(seg_o.sum()) * abs(_det(shape_back)) / (ow * oh)
    mirrored = best.mirrored
    reasons = []
    if in_frame < IN_FRAME_MIN or kept < KEPT_MIN:
        reasons.append("cropped")
    if mirrored:
        reasons.append("mirrored")
    # a stretch counts when it explains the output clearly better than none: it leaves at most
    # half the misfit (as a mirror must, see _order), else a smooth product's flat NCC lets any
    # stretch win by a hair
    aspect = float(best.extra.get("aspect", 1.0))
    misfit, stretched = 1 - best.score, 1 - float(best.extra.get("aspect_score", best.score))
    stretch_counts = misfit >= ASPECT_RATIO * stretched + MIRROR_MARGIN
    # against an ambiguous estimate (two readings of the main object that disagree) the
    # silhouette is only roughly known: a perfect cut-out of the product differs from both
    # readings, so only what is kept and a measured stretch are judged
    silhouette_judged = not details.get("source_mask", {}).get("ambiguous", False)
    if (silhouette_judged and shape_iou < SHAPE_IOU_MIN) or (
            stretch_counts and abs(math.log(aspect)) > math.log(ASPECT_MAX)):
        reasons.append("reshaped")
    if delta_e > DELTA_E_MAX:
        reasons.append("recoloured")
    if ssim_value < SSIM_MIN:
        reasons.append("restructured")
    measures = {"identity": 0.0 if reasons else 1.0, "identity_ssim": ssim_value,
                "identity_delta_e": delta_e, "identity_shape_iou": shape_iou,
                "identity_occupancy": occupancy, "identity_kept": kept}
    # where the product is in the output: its silhouette brought into the output frame
    mask_out = _warp(_Pyramid(seg_o.astype(np.uint8) * 255), np.linalg.inv(shape_back),
                     (ow, oh), 0.0, nearest=True) > 127
    bx0, by0, bx1, by1 = _bbox(m_c) or (0, 0, cw, ch)
    pts = back @ np.array([[bx0, bx1, bx0, bx1], [by0, by0, by1, by1], [1, 1, 1, 1]], float)
    box = (int(math.floor(pts[0].min())), int(math.floor(pts[1].min())),
           int(math.ceil(pts[0].max())), int(math.ceil(pts[1].max())))
    scale = math.sqrt(abs(_det(t_full)))
    rotation = math.degrees(math.atan2(t_full[1, 0], -t_full[0, 0] if mirrored
                                       else t_full[0, 0]))
    details = dict(details)
    details.update(
        reasons=reasons, reason=reasons[0] if reasons else None,
        method=best.method + ("+mirror" if mirrored else ""), ncc=round(best.ncc, 4),
        alignment={"scale": scale, "rotation_deg": rotation, "mirrored": mirrored,
                   "matrix": [[round(float(v), 5) for v in row] for row in t_full[:2]]},
        compared_at=[cw, ch], ssim={"value": ssim_value, "pixels": int(use.sum())},
        delta_e={"value": delta_e, "used": "relit", **colour},
        shape={"iou": shape_iou, "iou_judged": silhouette_judged, "aspect": aspect,
               "aspect_counts": stretch_counts,
               "aspect_ncc": best.extra.get("aspect_ncc"), **shape_info},
        in_frame=in_frame, kept=kept, occupancy=occupancy, box_in_output=list(box),
        measures=dict(measures))
    return measures, details, mask_out, box


def _kept_by_alpha(src: _Source, out: _Output) -> float | None:
    """What a cut-out of the source's aspect keeps of the product, in the source's frame."""
    if out.alpha is None:
        return None
    sh, sw = src.full.shape[:2]
    oh, ow = out.alpha.shape
    if not _same_aspect((sw, sh), (ow, oh)):
        return None
    alpha = _resize(out.alpha, (sw, sh)) > 127
    return float((alpha & src.mask_full).sum() / max(1, src.mask_full.sum()))


class _Missing(Exception):
    """Raised inside the analysis for metrics that cannot be computed."""


def _analyse(source: Image.Image, mask: np.ndarray | None, output: Image.Image) -> _Analysis:
    src_rgb = _rgb_array(source)
    details: dict[str, Any] = {"version": SCORER_VERSION}
    if mask is not None:
        details["source_mask"] = {"kind": "ground_truth"}
        if not mask.any():
            raise _Missing("the ground-truth mask has no product pixels")
        return _judge(src_rgb, mask, _Output.of(output), details)
    est = _estimate_cached(source, src_rgb)
    details["source_mask"] = {"kind": "estimated", "method": est.method,
                              "confidence": round(est.confidence, 4), **{
                                  k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in est.details.items()}}
    if not est.mask.any():
        raise _Missing("no ground-truth mask, and no main object could be made out in "
                       "the source")
    if est.confidence < ESTIMATE_MIN_CONFIDENCE:
        raise _Missing(f"no ground-truth mask, and the source's main object is a guess "
                       f"(confidence {est.confidence:.2f} < {ESTIMATE_MIN_CONFIDENCE})")
    out = _Output.of(output)  # decoded once, judged against one reading or two
    primary = _judge(src_rgb, est.mask, out, details)
    if est.alternative is None:
        return primary
    # two readings of the main object disagree: the product must be there under each, so a
    # cut-out that kept what one reading calls the object (a fragment) and dropped what the
    # other does (the product in the backdrop's colours) fails
    other = _judge(src_rgb, est.alternative,
                   out, {**details, "source_mask": {**details["source_mask"],
                                                    "method": "centre_prior+grabcut"}})
    worse, better = ((other, primary) if other.measures["identity"] < primary.measures["identity"]
                     else (primary, other))
    worse.details["source_mask"]["judged_by"] = worse.details["source_mask"]["method"]
    worse.details["source_mask"]["other_reading"] = {
        "method": better.details["source_mask"]["method"],
        "identity": better.measures["identity"], "reason": better.details.get("reason")}
    return worse


def _judge(src_rgb: np.ndarray, mask: np.ndarray, out: _Output,
           details: dict[str, Any]) -> _Analysis:
    """Every measure of the output ``out`` against the source's product ``mask``."""
    details = {**details, "source_mask": dict(details["source_mask"])}
    src = _Source(src_rgb, mask)
    oh, ow = out.rgb.shape[:2]
    details["output"] = {"size": [ow, oh], "alpha": out.alpha_state}
    details["thresholds"] = {
        "found_ncc": FOUND_NCC, "found_kept": FOUND_KEPT, "recolour_ncc": RECOLOUR_NCC,
        "aspect_max": ASPECT_MAX, "ssim_min": SSIM_MIN,
        "delta_e_max": DELTA_E_MAX, "shape_iou_min": SHAPE_IOU_MIN, "kept_min": KEPT_MIN,
        "in_frame_min": IN_FRAME_MIN, "mirror_ratio": MIRROR_RATIO,
        "mirror_margin": MIRROR_MARGIN,
        "relight_max_l": RELIGHT_MAX_L}
    ranked: list[_Candidate] = []
    if out.alpha_state == "empty" or min(ow, oh) < 8:
        details["locate"] = {"note": "empty cut-out" if out.alpha_state == "empty"
                             else "output too small"}
    else:
        ranked, details["locate"], o_to_work = _locate(src, out)
    attempts: list[dict[str, Any]] = []
    for cand in [c for c in ranked if c.extra.get("tried")]:
        ncc = max(cand.ncc, cand.extra.get("aspect_ncc", -1.0))
        if ncc < FOUND_NCC:
            continue
        t_full = np.linalg.inv(o_to_work) @ cand.t @ src.to_work  # source px → output px
        measures, measured, mask_out, box = _measure(src, out, cand, t_full, details)
        recognised = (measures["identity_delta_e"] <= DELTA_E_MAX or ncc >= RECOLOUR_NCC)
        if measures["identity_kept"] >= FOUND_KEPT and recognised:
            measured["found"] = True
            if attempts:
                measured["rejected_attempts"] = attempts
            located = Located(True, measured["method"], box, mask_out,
                              cand.extra.get("inlier_share"), t_full, cand.mirrored, None,
                              cand.ncc, details["locate"],
                              in_frame=float(measured["in_frame"]))
            return _Analysis(located, measures, measured)
        attempts.append({k: measured[k] for k in (
            "method", "ncc", "alignment", "kept", "in_frame", "shape", "ssim", "delta_e",
            "box_in_output")})
    if attempts:
        details["rejected_attempts"] = attempts
    top = ranked[0] if ranked else None
    # not found: a finding — identity fails; a cut-out still says what its alpha keeps
    kept = _kept_by_alpha(src, out)
    if kept is not None:
        details["kept_method"] = "alpha_same_frame"
    measures = {"identity": 0.0, "identity_ssim": 0.0, "identity_delta_e": NOT_FOUND_DELTA_E,
                "identity_shape_iou": 0.0, "identity_occupancy": 0.0,
                "identity_kept": kept or 0.0}
    details.update(found=False, reasons=["product_not_found"], reason="product_not_found",
                   kept=kept or 0.0, measures=dict(measures))
    located = Located(False, "none" if top is None else top.method, None, None, None,
                      None, False, "product_not_found", -1.0 if top is None else top.ncc,
                      details.get("locate", {}))
    return _Analysis(located, measures, details)


def _mask_array(mask: Image.Image | np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, Image.Image):
        if mask.size != size:
            raise _Missing(f"mask {mask.size} and source {size} differ in size")
        return np.asarray(mask.convert("L")) > 127
    arr = np.asarray(mask)
    if arr.shape[:2] != (size[1], size[0]):
        raise _Missing(f"mask {arr.shape[1]}x{arr.shape[0]} and source {size} differ in size")
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > 0 if arr.dtype == bool else arr > 127


def analyse(source: Image.Image, source_mask: Image.Image | np.ndarray | None,
            output: Image.Image) -> dict[str, Any]:
    """Every identity measure of one output: ``{"measures": {metric: value}, "details": {...},
    "located": Located}`` (see the module docstring). Raises ``ValueError`` with the reason when
    identity cannot be measured."""
    try:
        result = _analyse(source, _mask_array(source_mask, source.size), output)
    except _Missing as exc:
        raise ValueError(str(exc)) from None
    return {"measures": result.measures, "details": result.details, "located": result.located}


def locate_product(source: Image.Image, source_mask: Image.Image | np.ndarray | None,
                   output: Image.Image) -> Located:
    """Where the source's product is in ``output`` (see :class:`Located`).

    ``source_mask``: the product's mask in the source (L image or array, > 127 = product), or
    None to estimate it (:func:`estimate_main_object`). A cut-out's alpha (an RGBA output with
    at least 0.5 % transparent) is its product region: the output is composited over grey, so
    what the alpha dropped cannot match. Found when the best alignment verifies at
    :data:`FOUND_NCC` and the output's silhouette there covers at least :data:`FOUND_KEPT` of
    the product; otherwise ``found=False, reason="product_not_found"``. Raises ``ValueError``
    when nothing can be measured (a mask of another size, no main object in a maskless
    source)."""
    located = analyse(source, source_mask, output)["located"]
    assert isinstance(located, Located)
    return located


# --- 3. metrics ------------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()
_CACHE: dict[int, tuple[weakref.ref[ScoreContext], tuple[int, int, int], _Analysis | str]] = {}


def _cached(ctx: ScoreContext) -> _Analysis:
    """One analysis per ScoreContext (every identity metric of an output shares it); a reason
    string is cached too, and raised as :class:`_Missing`."""
    if ctx.source is None:
        raise _Missing("no source image")
    key = (id(ctx.output), id(ctx.source), id(ctx.mask))
    with _CACHE_LOCK:
        hit = _CACHE.get(id(ctx))
        if hit is not None and hit[0]() is ctx and hit[1] == key:
            value = hit[2]
            if isinstance(value, str):
                raise _Missing(value)
            return value
    try:
        value_: _Analysis | str = _analyse(ctx.source, _mask_array(ctx.mask, ctx.source.size),
                                           ctx.output)
    except _Missing as exc:
        value_ = str(exc)
    with _CACHE_LOCK:
        for k in [k for k, v in _CACHE.items() if v[0]() is None]:
            del _CACHE[k]
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[id(ctx)] = (weakref.ref(ctx), key, value_)
    if isinstance(value_, str):
        raise _Missing(value_)
    return value_


def located(ctx: ScoreContext) -> Located:
    """Where the source's product is in ``ctx.output``, from the one analysis the identity
    metrics of this context share (computed now if none has run yet): the other scorers that
    need the product's place (label-text OCR, lifestyle placement and scene change) reuse it
    instead of locating again. Raises ``ValueError`` with the reason when it cannot be measured
    (no source, no main object)."""
    try:
        return _cached(ctx).located
    except _Missing as exc:
        raise ValueError(str(exc)) from None


def main_object(image: Image.Image) -> ObjectEstimate:
    """:func:`estimate_main_object`, remembered for the last few photos (by content)."""
    return _estimate_cached(image, _rgb_array(image))


def product_crops(ctx: ScoreContext) -> tuple[Image.Image, Image.Image]:
    """The product alone in the source and in the output, for an embedding to compare (masked
    CLIP, ``clip_identity``): each cropped to the product's box with a 5 % margin, everything
    outside the product painted :data:`GREY` (a cut-out is composited over it first). The
    source's product is its ground-truth mask or the estimated main object; the output's is the
    silhouette the identity analysis of this context found. Raises ``ValueError`` with the
    reason when there is none (not measurable, or the product not found)."""
    found = located(ctx)
    assert ctx.source is not None  # located() has raised otherwise
    if not found.found or found.mask_in_output is None or not found.mask_in_output.any():
        raise ValueError("the product was not found in the output (the identity gate scores "
                         "that)")
    src_rgb = _rgb_array(ctx.source)
    mask = _mask_array(ctx.mask, ctx.source.size) if ctx.mask is not None else None
    if mask is None:
        mask = main_object(ctx.source).mask
    out = _Output.of(ctx.output)
    return _grey_crop(src_rgb, mask), _grey_crop(out.rgb, found.mask_in_output)


def _grey_crop(rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
    box = _bbox(mask)
    if box is None:
        raise ValueError("empty product mask")
    h, w = mask.shape
    x0, y0, x1, y1 = box
    m = round(0.05 * max(x1 - x0, y1 - y0))
    x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    crop = np.where(mask[y0:y1, x0:x1, None], rgb[y0:y1, x0:x1], np.uint8(GREY))
    return Image.fromarray(crop.astype(np.uint8), "RGB")


def _metric(name: str, keys: tuple[str, ...]) -> Callable[[ScoreContext], Score]:
    def score(ctx: ScoreContext) -> Score:
        try:
            analysis = _cached(ctx)
        except _Missing as exc:
            return Score.missing(name, SCORER_VERSION, str(exc))
        d = analysis.details
        details: dict[str, Any] = {k: d[k] for k in keys if k in d}
        details.update(found=d.get("found"), reason=d.get("reason"),
                       reasons=d.get("reasons", []), source_mask=d.get("source_mask"),
                       measures=d.get("measures"), thresholds=d.get("thresholds"),
                       better="lower" if name == "identity_delta_e" else "higher")
        if "method" in d:
            details["method"] = d["method"]
        return Score(name, float(analysis.measures[name]), SCORER_VERSION, details)
    score.__name__ = f"score_{name}"
    return score


score_identity = _metric("identity", ("ncc", "alignment", "in_frame", "kept", "box_in_output",
                                      "ssim", "delta_e", "shape", "output", "locate",
                                      "kept_method", "rejected_attempts", "compared_at"))
score_identity.__doc__ = """Metric ``identity``: the gate, 1.0 = the same product, 0.0 = not.

Fails (details ``reasons``, all that apply; ``reason``, the first) when the product is not found
(``product_not_found``: see :func:`locate_product`), runs off the frame or is mostly gone
(``cropped``: less than :data:`IN_FRAME_MIN` of it inside the frame, or less than
:data:`KEPT_MIN` of it kept), is mirrored (``mirrored``), reshaped (``reshaped``: silhouette IoU
below :data:`SHAPE_IOU_MIN`, or a clear stretch beyond :data:`ASPECT_MAX`), recoloured
(``recoloured``: ΔE above :data:`DELTA_E_MAX`) or restructured (``restructured``: SSIM below
:data:`SSIM_MIN`). Details: every measured value, the thresholds, the alignment and the
candidates tried. Label text is a separate metric (``label_text``)."""
score_identity_ssim = _metric("identity_ssim", ("ssim", "compared_at", "alignment"))
score_identity_ssim.__doc__ = """Metric ``identity_ssim``: gray SSIM (7×7 window) of the product
after alignment, averaged inside the source's mask (less the window's half-width at its rim),
at the compared size (≤ :data:`COMPARE_SIDE`). Range −1..1, higher is better; 0 when the
product is not found."""
score_identity_delta_e = _metric("identity_delta_e", ("delta_e", "alignment"))
score_identity_delta_e.__doc__ = """Metric ``identity_delta_e``: mean CIEDE2000 of the product
pixel by pixel after alignment (at ≤ :data:`DELTA_E_SIDE` px, inside the mask eroded by one pixel,
only where the output shows the product: in the frame, opaque), after relight compensation
(the output's mean L* moved to the source's by at most :data:`RELIGHT_MAX_L`). Details hold
the raw value too, and the ΔE of the mean colours. Lower is better; :data:`NOT_FOUND_DELTA_E`
when the product is not found."""
score_identity_shape_iou = _metric("identity_shape_iou", ("shape", "alignment"))
score_identity_shape_iou.__doc__ = """Metric ``identity_shape_iou``: IoU of the product's
silhouettes after alignment, in a crop 40 % wider than the product on every side (a stretched
product spills out of its old box) and only where the output has pixels (a product cut by the
frame is ``cropped``, not ``reshaped``): a cut-out's alpha against the source's mask;
otherwise GrabCut run alike on the source and the aligned output, seeded with the source's mask,
the output's also taking in the product pixels whose colour it still shows (white on white).
0..1, higher is better; 0 when not found. Details also hold the measured stretch (``aspect``)."""
score_identity_occupancy = _metric("identity_occupancy", ("box_in_output", "alignment"))
score_identity_occupancy.__doc__ = """Metric ``identity_occupancy``: the share of the output frame
the product's silhouette covers (0..1; neither end is good in general — a packshot wants about
0.5-0.85, a lifestyle scene less). 0 when not found."""
score_identity_kept = _metric("identity_kept", ("kept", "in_frame", "kept_method", "shape"))
score_identity_kept.__doc__ = """Metric ``identity_kept``: the share of the source's product
(ground-truth mask, or the estimated main object) present in the output: covered by a cut-out's
alpha, or by the output's silhouette within the frame. 0..1, higher is better. A cut-out that
kept background fragments and dropped the product reads ≈ 0 even when not found (its alpha is
compared with the source's product in the same frame)."""
