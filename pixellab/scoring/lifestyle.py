"""Lifestyle scores: did the model put the product in a new setting, and is it well placed?

A lifestyle output is a new photo: the product, unchanged, somewhere else. Two things about it
can be measured without a reference photo of "the right scene", from the source photo and its
product mask (``ScoreContext.mask``; without one, a mask estimated from the photo's border):

- ``scene_change``: the background really differs from the source's. 0 = the source's
  background as it was (the photo returned unchanged, or re-framed), 1 = nothing of it left.
- ``product_placement``: the product is in the frame at a sensible size: its bounding box's
  longer side spans 40-75 % of the frame for full credit (falling to 0 at 15 % and 95 %), and
  it is not cut off by the frame's edge (a cut-off product earns at most half, one touching an
  edge 75 %).

Both need to know where the product is in the output (:func:`locate_product`): an output with
a real alpha channel says so itself; otherwise the product cut from the source (by its mask) is
searched for in the output by masked normalized cross-correlation over positions and scales,
with the frame's outside treated as unknown, so a product running off the frame is still found
and its hidden share measured; products whose longer side is under about a tenth of the
frame's are not searched for. A metric that cannot be computed (no source photo, no mask and
none can be estimated, the product not found) is missing with the reason, never 0.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.video import ssim_map

__all__ = [
    "COLOUR_TOLERANCE", "FULL_CREDIT_EXTENT", "MATCH_THRESHOLD", "MAX_COLOUR_GAP",
    "MIN_EVIDENCE", "RECOLOURED_DELTA_E", "SCORER_VERSION", "ZERO_CREDIT_EXTENT",
    "Located", "NotMeasurable", "estimate_mask", "locate_product", "score_product_placement",
    "score_scene_change",
]

SCORER_VERSION = "lifestyle-1"

FULL_CREDIT_EXTENT = (0.4, 0.75)
"""The product's extent (its box's longer side over the frame's side along it) that earns full
placement credit for size: a square product whose box covers 16-56 % of a square frame. Extent,
not the box's area, so a knife or a scarf laid across the frame is judged like a mug."""
ZERO_CREDIT_EXTENT = (0.15, 0.95)
"""At or beyond these extents size earns nothing (linear in between)."""
MATCH_THRESHOLD = 0.7
"""Below this normalized cross-correlation the product is "not found" (the metric is missing:
the search may have failed as well as the model)."""
COLOUR_TOLERANCE = 10.0
"""Mean colours of the product and of a match may differ by this much (CIELAB units: a relit
product) before the match is charged for it; beyond :data:`MAX_COLOUR_GAP` it is no match (NCC
alone cannot tell a pink chair from a brown one of the same shape)."""
MAX_COLOUR_GAP = 25.0
RECOLOURED_DELTA_E = 12.0
"""A background pixel whose colour moved by more than this (CIE76) counts as changed."""
MIN_EVIDENCE = 6.0
"""A match also needs ncc x sqrt(independent pixels) of at least this: a tiny template fits
some texture somewhere by chance."""
CUT_OFF_VISIBLE = 0.97
"""A product with less than this share of itself inside the frame is cut off."""

_MIN_VISIBLE = 0.4  # a candidate position shows at least this much of the product
_REFINED = 3  # coarse candidates (best scales) refined at the fine level
_F32 = np.float32


class NotMeasurable(Exception):
    """A lifestyle measure cannot be taken; the message is the reason (the metric's
    ``missing_reason``)."""


# --- inputs ----------------------------------------------------------------------------------


def _rgb(image: Image.Image) -> np.ndarray:
    """uint8 HxWx3 as displayed: transparency composited over white."""
    if "A" in image.getbands():
        rgba = np.asarray(image.convert("RGBA")).astype(_F32)
        a = rgba[..., 3:4] / 255.0
        return np.clip(rgba[..., :3] * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _resize(arr: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    interp = (cv2.INTER_NEAREST if nearest
              else cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)
    return np.asarray(cv2.resize(arr, (max(1, width), max(1, height)), interpolation=interp))


def _lab(rgb: np.ndarray) -> np.ndarray:
    """float32 CIELAB (L 0-100, a/b about +-100)."""
    return np.asarray(cv2.cvtColor(rgb.astype(_F32) / 255.0, cv2.COLOR_RGB2Lab))


def estimate_mask(rgb: np.ndarray) -> np.ndarray | None:
    """A rough product mask (bool, the photo's size) for a photo without a ground-truth one:
    pixels far (in CIELAB) from the border band's colours, opened, closed, the main components
    kept and holes filled. None when nothing stands out."""
    h, w = rgb.shape[:2]
    scale = 256 / max(h, w)
    small = _resize(rgb, max(8, round(w * scale)), max(8, round(h * scale)))
    sh, sw = small.shape[:2]
    lab = _lab(cv2.GaussianBlur(small, (0, 0), 1.0))
    b = max(2, round(0.04 * min(sh, sw)))
    band = np.ones((sh, sw), bool)
    band[b:sh - b, b:sw - b] = False
    ref = np.median(lab[band], axis=0)
    dist = np.sqrt(((lab - ref) ** 2).sum(axis=-1))
    spread = float(np.percentile(dist[band], 90))
    fg = dist > max(12.0, 1.5 * spread)
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= max(0.1 * areas.max(), 0.002 * sh * sw))
    mask = np.isin(labels, keep).astype(np.uint8)
    if not mask.any() or mask.sum() > 0.9 * sh * sw:
        return None
    flood = mask.copy()
    cv2.floodFill(flood, np.zeros((sh + 2, sw + 2), np.uint8), (0, 0), 1)
    if mask[0, 0]:  # a corner inside the product: holes cannot be told
        flood[:] = 1
    mask |= (flood == 0).astype(np.uint8)  # holes: whatever the outside flood did not reach
    full = _resize(mask * 255, w, h, nearest=True) > 127
    return full if full.any() and not full.all() else None


def _source_and_mask(ctx: ScoreContext) -> tuple[np.ndarray, np.ndarray, str]:
    """The source photo (RGB), its product mask (bool, its size) and where the mask came from."""
    if ctx.source is None:
        raise NotMeasurable("no source photo")
    source = _rgb(ctx.source)
    if ctx.mask is not None:
        mask = np.asarray(ctx.mask.convert("L")) > 127
        if mask.shape != source.shape[:2]:
            mask = _resize(mask.astype(np.uint8) * 255, source.shape[1], source.shape[0],
                           nearest=True) > 127
        if not mask.any():
            raise NotMeasurable("the product mask is empty")
        if mask.all():
            raise NotMeasurable("the product mask covers the whole photo")
        return source, mask, "ground truth"
    estimated = estimate_mask(source)
    if estimated is None:
        raise NotMeasurable("no product mask, and none could be estimated from the photo")
    return source, estimated, "estimated"


# --- where the product is ----------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """Where the product is in an output."""

    mask: np.ndarray
    """bool, the output's size: the product's pixels inside the frame."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1), exclusive ends, of ``mask``: the visible product."""
    visible: float | None
    """The product's share inside the frame (None when the output's alpha said where it is)."""
    match: float | None
    """Normalized cross-correlation of the best match (None for alpha)."""
    method: str
    """``alpha`` or ``template``."""
    mask_source: str
    """Where the source's product mask came from: ``ground truth``, ``estimated``, or ``-``."""


def _alpha_mask(image: Image.Image) -> np.ndarray | None:
    """The output's own product mask when its alpha is real: some pixels transparent, some
    opaque (a cut-out). None otherwise."""
    if "A" not in image.getbands():
        return None
    alpha = np.asarray(image.getchannel("A"))
    opaque = alpha > 127
    share = float(opaque.mean())
    return opaque if 0.005 < share < 0.995 else None


def _corr(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.matchTemplate(image, template, cv2.TM_CCORR))


def _masked_ncc(image: np.ndarray, valid: np.ndarray, template: np.ndarray,
                weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked normalized cross-correlation (Padfield 2012) of a colour ``template`` whose
    pixels count by ``weight`` over every position on ``image`` whose pixels count where
    ``valid``: (ncc, overlap, mean colour distance) maps, overlap being the template weight that
    falls on valid pixels. Channels are pooled: one correlation of the whole colour vector.
    NCC ignores each channel's mean, so the distance between the mean colours of the template
    and of what it covers (Euclidean, in the images' units) comes with it."""
    weight3 = np.repeat(weight[..., None], 3, axis=2)
    valid3 = np.repeat(valid[..., None], 3, axis=2)
    tw = template * weight3
    overlap = _corr(valid, weight)
    f_sum = [_corr(np.ascontiguousarray(image[..., c]), weight) for c in range(3)]
    t_sum = [_corr(valid, np.ascontiguousarray(tw[..., c])) for c in range(3)]
    ff = _corr(image * image, weight3)
    tt = _corr(valid3, tw * template)
    ft = _corr(image, tw)
    n = np.maximum(overlap, 1e-6)
    num = ft - sum(f * t for f, t in zip(f_sum, t_sum, strict=True)) / n
    var_f = ff - sum(f * f for f in f_sum) / n
    var_t = tt - sum(t * t for t in t_sum) / n
    den = np.sqrt(np.maximum(var_f, 0) * np.maximum(var_t, 0))
    ncc = np.where(den > 1e-3 * np.maximum(n, 1.0), num / np.maximum(den, 1e-9), -1.0)
    mean_gap = np.sqrt(sum((f - t) ** 2 for f, t in zip(f_sum, t_sum, strict=True))) / n
    return ncc, overlap, mean_gap


@dataclass(frozen=True)
class _Match:
    score: float  # ncc less penalties for a hidden share and for few pixels: ranks candidates
    ncc: float
    visible: float
    x: float  # the template's top-left, in the searched image's pixels (may be < 0)
    y: float
    width: int
    height: int
    n_eff: float  # independent samples the ncc rests on, about
    colour_gap: float  # CIELAB distance between the mean colours of the product and the match


def _match(image: np.ndarray, crop: np.ndarray, crop_mask: np.ndarray, side: float,
           sigma: float, around: tuple[float, float] | None = None,
           radius: float = 0.0) -> _Match | None:
    """The best position of the product ``crop`` (RGB, its ``crop_mask``) scaled so its longer
    side is ``side`` pixels in ``image`` (CIELAB, already blurred by ``sigma``), anywhere or
    within ``radius`` of the top-left ``around``; the product may hang off the frame."""
    wh, ww = image.shape[:2]
    ch, cw = crop.shape[:2]
    f = side / max(ch, cw)
    th, tw = max(4, round(ch * f)), max(4, round(cw * f))
    if th > 2 * wh or tw > 2 * ww:
        return None
    t_mask = _resize(crop_mask, tw, th) > 127
    if t_mask.sum() > 64:
        t_mask = cv2.erode(t_mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    weight = t_mask.astype(_F32)
    area = float(weight.sum())
    if area < 12:
        return None
    t_lab = _lab(_resize(crop, tw, th))
    if sigma > 0.3:
        t_lab = cv2.GaussianBlur(t_lab, (0, 0), sigma)
    py, px = th - 1, tw - 1  # the template may hang off the frame by all but one pixel
    padded = np.zeros((wh + 2 * py, ww + 2 * px, 3), _F32)
    padded[py:py + wh, px:px + ww] = image
    valid = np.zeros(padded.shape[:2], _F32)
    valid[py:py + wh, px:px + ww] = 1.0
    oy = ox = 0
    if around is not None:  # only positions near ``around``
        cx, cy = around[0] + px, around[1] + py
        r = max(2, round(radius))
        ox, oy = max(0, round(cx) - r), max(0, round(cy) - r)
        x_hi = min(padded.shape[1] - tw, round(cx) + r)
        y_hi = min(padded.shape[0] - th, round(cy) + r)
        if x_hi < ox or y_hi < oy:
            return None
        padded = padded[oy:y_hi + th, ox:x_hi + tw]
        valid = valid[oy:y_hi + th, ox:x_hi + tw]
    ncc, overlap, gap = _masked_ncc(padded, valid, t_lab, weight)
    visible = np.minimum(overlap / area, 1.0)
    n_eff = overlap / (2.0 * max(sigma, 1.0)) ** 2
    score = (ncc - 0.3 * (1.0 - visible) - 3.0 / np.sqrt(np.maximum(n_eff, 1.0))
             - np.maximum(gap - COLOUR_TOLERANCE, 0.0) / 40.0)
    score = np.where(visible >= _MIN_VISIBLE, score, -np.inf)
    row, col = divmod(int(np.argmax(score)), score.shape[1])
    if not np.isfinite(score[row, col]):
        return None
    return _Match(float(score[row, col]), float(ncc[row, col]), float(visible[row, col]),
                  float(col + ox - px), float(row + oy - py), tw, th, float(n_eff[row, col]),
                  float(gap[row, col]))


def _work_image(output: np.ndarray, longer: int, sigma: float) -> tuple[np.ndarray, float]:
    oh, ow = output.shape[:2]
    k = longer / max(oh, ow)
    lab = _lab(_resize(output, max(8, round(ow * k)), max(8, round(oh * k))))
    return (cv2.GaussianBlur(lab, (0, 0), sigma) if sigma > 0.3 else lab), k


def _template_search(output: np.ndarray, source: np.ndarray, mask: np.ndarray
                     ) -> tuple[_Match, tuple[float, float, float, float]]:
    """The best match of the source's masked product in ``output``, and its box in output
    pixels (x0, y0, x1, y1; it may run off the frame).

    Coarse to fine: every scale of a geometric grid (the product's longer side 12-100 % of the
    output's, plus the share it has in the source) on a blurred 128-px copy, which tolerates
    scale steps and thin parts; then, around each of the three best coarse matches, scales
    within +-10 % in 2.5 % steps on a sharp 256-px copy. Candidates are ranked by ncc less
    penalties: for few pixels (3 / sqrt of the independent samples, so a small template that
    happens to fit some texture does not beat the product), for a share off the frame and for a
    mean colour off the product's."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = source[y0:y1, x0:x1]
    crop_mask = mask[y0:y1, x0:x1].astype(np.uint8) * 255
    own = max(y1 - y0, x1 - x0) / max(source.shape[:2])
    shares = sorted({*np.geomspace(0.12, 1.0, 14).round(4).tolist(), round(own, 4)})

    coarse_img, kc = _work_image(output, 128, 1.2)
    side_c = max(coarse_img.shape[:2])
    candidates: list[tuple[_Match, float]] = []
    for share in shares:
        found = _match(coarse_img, crop, crop_mask, share * side_c, 1.2)
        if found is not None:
            candidates.append((found, share))
    if not candidates:
        raise NotMeasurable("the product is too small to search for")
    candidates.sort(key=lambda c: -c[0].score)

    fine_img, kf = _work_image(output, 256, 0.0)
    side_f = max(fine_img.shape[:2])
    best: _Match | None = None
    for first, first_share in candidates[:_REFINED]:
        # keep the product's centre where the coarse match put it
        centre = ((first.x + first.width / 2) / kc * kf, (first.y + first.height / 2) / kc * kf)
        ratio = first.width / max(first.height, 1)
        for factor in np.linspace(0.9, 1.1, 9):
            side = first_share * float(factor) * side_f
            tw_est = side if ratio >= 1 else side * ratio
            th_est = side / ratio if ratio >= 1 else side
            around = (centre[0] - tw_est / 2, centre[1] - th_est / 2)
            found = _match(fine_img, crop, crop_mask, side, 0.0, around,
                           radius=0.03 * side_f + 3)
            if found is not None and (best is None or found.score > best.score):
                best = found
    if best is None:
        best, kf = candidates[0][0], kc
    box = (best.x / kf, best.y / kf, (best.x + best.width) / kf, (best.y + best.height) / kf)
    return best, box


_CACHE: dict[tuple[int, int, int], tuple[tuple[Any, ...], Located | str]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def locate_product(ctx: ScoreContext) -> Located:
    """Where the product is in ``ctx.output``: by its alpha, or by searching for the source's
    product (:data:`MATCH_THRESHOLD`, :data:`MIN_EVIDENCE`). Raises :class:`NotMeasurable` (a
    reason) when it cannot tell.

    Both lifestyle metrics need the answer for the same output: the last few answers are kept,
    keyed by the very image objects they were computed from (held weakly, so a recycled id
    never returns another output's answer)."""
    images = (ctx.output, ctx.source, ctx.mask)
    key = (id(ctx.output), id(ctx.source), id(ctx.mask))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None and all(ref() is image for ref, image in zip(hit[0], images,
                                                                    strict=True)):
        if isinstance(hit[1], str):
            raise NotMeasurable(hit[1])
        return hit[1]
    try:
        answer: Located | str = _locate(ctx)
    except NotMeasurable as missing:
        answer = str(missing)
    refs = tuple(weakref.ref(image) if image is not None else _none for image in images)
    with _CACHE_LOCK:
        _CACHE[key] = (refs, answer)
        while len(_CACHE) > _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    if isinstance(answer, str):
        raise NotMeasurable(answer)
    return answer


def _none() -> None:
    return None


def _locate(ctx: ScoreContext) -> Located:
    own = _alpha_mask(ctx.output)
    if own is not None:
        ys, xs = np.nonzero(own)
        return Located(own, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                             int(ys.max()) + 1), None, None, "alpha", "-")
    source, mask, mask_source = _source_and_mask(ctx)
    output = _rgb(ctx.output)
    found, box = _template_search(output, source, mask)
    ncc, visible = found.ncc, found.visible
    if ncc < MATCH_THRESHOLD or ncc * math.sqrt(found.n_eff) < MIN_EVIDENCE:
        raise NotMeasurable(f"the product was not found in the output (best match {ncc:.2f} on "
                       f"about {found.n_eff:.0f} independent pixels; {MATCH_THRESHOLD} on "
                       f"{(MIN_EVIDENCE / max(ncc, MATCH_THRESHOLD)) ** 2:.0f} needed)")
    if found.colour_gap > MAX_COLOUR_GAP:
        raise NotMeasurable(f"the product was not found in the output (the best match, {ncc:.2f}, "
                       f"differs in mean colour by {found.colour_gap:.0f} CIELAB units > "
                       f"{MAX_COLOUR_GAP:.0f})")
    oh, ow = output.shape[:2]
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8) * 255
    bx0, by0, bx1, by1 = box
    pw, ph = max(1, round(bx1 - bx0)), max(1, round(by1 - by0))
    placed = _resize(crop, pw, ph) > 127
    canvas = np.zeros((oh, ow), bool)
    x0, y0 = round(bx0), round(by0)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(ow, x0 + pw), min(oh, y0 + ph)
    if cx0 >= cx1 or cy0 >= cy1:
        raise NotMeasurable("the product was matched outside the frame")
    canvas[cy0:cy1, cx0:cx1] = placed[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    ys, xs = np.nonzero(canvas)
    if ys.size == 0:
        raise NotMeasurable("the product was matched outside the frame")
    return Located(canvas, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                   visible, ncc, "template", mask_source)




# --- scene_change ------------------------------------------------------------------------------

_L_BINS, _AB_BINS, _AB_RANGE = 10, 12, 60.0


def _bins(lab: np.ndarray) -> np.ndarray:
    L = np.clip((lab[..., 0] / 100.0 * _L_BINS).astype(int), 0, _L_BINS - 1)
    a = np.clip(((lab[..., 1] + _AB_RANGE) / (2 * _AB_RANGE) * _AB_BINS).astype(int), 0,
                _AB_BINS - 1)
    b = np.clip(((lab[..., 2] + _AB_RANGE) / (2 * _AB_RANGE) * _AB_BINS).astype(int), 0,
                _AB_BINS - 1)
    return np.asarray((L * _AB_BINS + a) * _AB_BINS + b)


def _occupied(bins: np.ndarray) -> np.ndarray:
    """The colour bins holding at least 0.2 % of ``bins``' pixels, grown by one bin each way
    (a tolerance of about 10 L and 10 a/b units)."""
    counts = np.bincount(bins, minlength=_L_BINS * _AB_BINS * _AB_BINS)
    occ = (counts >= max(1.0, 0.002 * bins.size)).reshape(_L_BINS, _AB_BINS, _AB_BINS)
    grown = occ.copy()
    for axis in range(3):
        for shift in (-1, 1):
            moved = np.roll(occ, shift, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            moved[tuple(edge)] = False
            grown |= moved
    return grown.reshape(-1)


def _cover_crop(arr: np.ndarray, aspect: float) -> np.ndarray:
    """The centred crop of ``arr`` with width/height ``aspect``."""
    h, w = arr.shape[:2]
    if w / h > aspect:
        cw = max(1, round(h * aspect))
        x0 = (w - cw) // 2
        return arr[:, x0:x0 + cw]
    ch = max(1, round(w / aspect))
    y0 = (h - ch) // 2
    return arr[y0:y0 + ch]


def _dilate(mask: np.ndarray, fraction: float) -> np.ndarray:
    r = max(1, round(fraction * max(mask.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return np.asarray(cv2.dilate(mask.astype(np.uint8), kernel)).astype(bool)


def _scene_change(ctx: ScoreContext) -> Score:
    source, mask, mask_source = _source_and_mask(ctx)
    output = _rgb(ctx.output)
    details: dict[str, Any] = {"mask": mask_source}
    try:
        where = locate_product(ctx)
        out_product = where.mask
        details["product_located"] = where.method
    except NotMeasurable as not_found:
        out_product = np.zeros(output.shape[:2], bool)
        details["product_located"] = f"no ({not_found}): the whole output was compared"

    side = 256
    sh, sw = source.shape[:2]
    oh, ow = output.shape[:2]
    ks, ko = side / max(sh, sw), side / max(oh, ow)
    src_small = _resize(source, max(8, round(sw * ks)), max(8, round(sh * ks)))
    src_mask = _dilate(_resize(mask.astype(np.uint8) * 255, src_small.shape[1],
                               src_small.shape[0]) > 0, 0.02)
    out_small = _resize(output, max(8, round(ow * ko)), max(8, round(oh * ko)))
    out_mask = _dilate(_resize(out_product.astype(np.uint8) * 255, out_small.shape[1],
                               out_small.shape[0]) > 0, 0.02)
    src_bg, out_bg = ~src_mask, ~out_mask
    if src_bg.mean() < 0.05:
        raise NotMeasurable("the source photo shows too little background to compare")
    if out_bg.mean() < 0.05:
        raise NotMeasurable("the output shows too little background to compare")

    # colour: the share of either background's pixels in colours the other has not got
    src_bins = _bins(_lab(src_small)[src_bg])
    out_bins = _bins(_lab(out_small)[out_bg])
    novel = float((~_occupied(src_bins)[out_bins]).mean())
    lost = float((~_occupied(out_bins)[src_bins]).mean())
    colour = max(novel, lost)

    # structure: SSIM of the backgrounds, the output framed like the source (centre crop)
    aspect = sw / sh
    grid_w, grid_h = (128, max(8, round(128 / aspect))) if aspect >= 1 else \
        (max(8, round(128 * aspect)), 128)
    out_framed = _resize(_cover_crop(out_small, aspect), grid_w, grid_h)
    out_framed_mask = _resize(_cover_crop(out_mask.astype(np.uint8) * 255, aspect), grid_w,
                              grid_h, nearest=True) > 0
    src_grid = _resize(src_small, grid_w, grid_h)
    src_grid_mask = _resize(src_mask.astype(np.uint8) * 255, grid_w, grid_h, nearest=True) > 0
    both = ~(out_framed_mask | src_grid_mask)
    structure: float | None = None
    recoloured: float | None = None
    if both.mean() >= 0.05:
        grey_s = cv2.cvtColor(src_grid, cv2.COLOR_RGB2GRAY)
        grey_o = cv2.cvtColor(out_framed, cv2.COLOR_RGB2GRAY)
        similarity = float(ssim_map(grey_s, grey_o)[both].mean())
        structure = float(min(1.0, max(0.0, 1.0 - similarity)))
        # smooth backdrops in new colours keep SSIM high: count the pixels whose colour moved
        gap = np.sqrt(((cv2.GaussianBlur(_lab(src_grid), (0, 0), 1.0)
                        - cv2.GaussianBlur(_lab(out_framed), (0, 0), 1.0)) ** 2).sum(axis=-1))
        recoloured = float((gap[both] > RECOLOURED_DELTA_E).mean())
    else:
        details["structure_note"] = "the backgrounds hardly overlap once framed alike"
    value = max(colour, structure or 0.0, recoloured or 0.0)
    details.update({"colour_novel": round(novel, 4), "colour_lost": round(lost, 4),
                    "structure": None if structure is None else round(structure, 4),
                    "recoloured": None if recoloured is None else round(recoloured, 4),
                    "background_share_source": round(float(src_bg.mean()), 4),
                    "background_share_output": round(float(out_bg.mean()), 4)})
    return Score("scene_change", value, SCORER_VERSION, details)


def score_scene_change(ctx: ScoreContext) -> Score:
    """Metric ``scene_change``: how much the output's background differs from the source's.

    Outside the product (the source's mask, dilated 2 %; in the output where
    :func:`locate_product` finds it, dilated alike - the whole output when it cannot), three
    differences are measured and the largest is the value, 0-1:

    - colour: the share of the output background's pixels whose colour (CIELAB, bins of 10 L
      and 10 a/b units, one bin of tolerance) the source background has not got, or the share
      of the source background's in colours the output lost, whichever is larger;
    - structure: 1 - SSIM (grey, 7x7) of the two backgrounds with the output framed like the
      source (centre crop to its aspect, 128 px), over the pixels outside both products;
    - recoloured: on that same grid, the share of those pixels whose colour moved by more than
      :data:`RECOLOURED_DELTA_E` (CIE76, after a 1-px blur): a smooth backdrop repainted in a
      near colour escapes the other two.

    The source itself scores 0; a new setting in new colours close to 1. Missing without a
    source photo or a mask (given or estimated), or with under 5 % background on either side.
    """
    try:
        return _scene_change(ctx)
    except NotMeasurable as missing:
        return Score.missing("scene_change", SCORER_VERSION, str(missing))


# --- product_placement -------------------------------------------------------------------------


def _ramp(value: float) -> float:
    lo0, hi0 = ZERO_CREDIT_EXTENT
    lo1, hi1 = FULL_CREDIT_EXTENT
    if value <= lo0 or value >= hi0:
        return 0.0
    if value < lo1:
        return (value - lo0) / (lo1 - lo0)
    if value > hi1:
        return (hi0 - value) / (hi0 - hi1)
    return 1.0


def score_product_placement(ctx: ScoreContext) -> Score:
    """Metric ``product_placement``: the product in the frame at a sensible size, 0-1.

    The value is ``size x frame``. ``size`` judges the visible product's extent (its bounding
    box's longer side over the frame's side along it): 1 for 0.4-0.75
    (:data:`FULL_CREDIT_EXTENT`), falling linearly to 0 at 0.15 and 0.95. ``frame`` is 1 for a
    product wholly inside the frame, 0.75 when it touches an edge, and half its visible share
    when it is cut off (less than 97 % of it inside; an output whose alpha gives the product
    counts as cut off when the product touches an edge). Details: occupancy (the box's share of
    the frame), extent, coverage (product pixels / frame), box, visible share, the edges
    touched, where the product's foot and centre are, the match score. Missing when the product
    cannot be found.
    """
    try:
        where = locate_product(ctx)
    except NotMeasurable as missing:
        return Score.missing("product_placement", SCORER_VERSION, str(missing))
    oh, ow = where.mask.shape
    x0, y0, x1, y1 = where.box
    occupancy = (x1 - x0) * (y1 - y0) / (ow * oh)
    extent = max((x1 - x0) / ow, (y1 - y0) / oh)
    tol_x, tol_y = max(1, round(0.005 * ow)), max(1, round(0.005 * oh))
    touches = [edge for edge, hit in (("left", x0 < tol_x), ("top", y0 < tol_y),
                                      ("right", x1 > ow - tol_x), ("bottom", y1 > oh - tol_y))
               if hit]
    if where.visible is not None:
        cut_off = where.visible < CUT_OFF_VISIBLE
    else:
        cut_off = bool(touches)
    if cut_off:
        frame = 0.5 * (where.visible if where.visible is not None else 1.0)
    elif touches:
        frame = 0.75
    else:
        frame = 1.0
    size = _ramp(extent)
    details: dict[str, Any] = {
        "occupancy": round(occupancy, 4),
        "extent": round(extent, 4),
        "coverage": round(float(where.mask.mean()), 4),
        "box": [x0, y0, x1, y1],
        "visible": None if where.visible is None else round(where.visible, 4),
        "cut_off": cut_off,
        "touches_edge": touches,
        "foot_y": round(y1 / oh, 4),
        "centre_x": round((x0 + x1) / 2 / ow, 4),
        "size_credit": round(size, 4),
        "frame_credit": round(frame, 4),
        "method": where.method,
        "mask": where.mask_source,
    }
    if where.match is not None:
        details["match"] = round(where.match, 4)
    if not math.isfinite(size * frame):
        return Score.missing("product_placement", SCORER_VERSION, "placement not measurable")
    return Score("product_placement", size * frame, SCORER_VERSION, details)
