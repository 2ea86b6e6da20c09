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
a real alpha channel says so itself; otherwise the product is the one the identity analysis of
the same output found (:func:`pixellab.scoring.identity.located`: feature, template and box
alignments verified on the product, its silhouette in the output and the share of it inside
the frame), so a lifestyle output is located once for its identity, placement, scene-change
and label-text scores. A metric that cannot be computed (no source photo, no mask and none can
be estimated, the product not found) is missing with the reason, never 0: the identity gate
scores a lost product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pixellab.scoring import identity
from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.video import ssim_map

__all__ = [
    "FULL_CREDIT_EXTENT", "RECOLOURED_DELTA_E", "SCORER_VERSION", "ZERO_CREDIT_EXTENT",
    "Located", "NotMeasurable", "locate_product", "score_product_placement",
    "score_scene_change",
]

SCORER_VERSION = "lifestyle-2"

FULL_CREDIT_EXTENT = (0.4, 0.75)
"""The product's extent (its box's longer side over the frame's side along it) that earns full
placement credit for size: a square product whose box covers 16-56 % of a square frame. Extent,
not the box's area, so a knife or a scarf laid across the frame is judged like a mug."""
ZERO_CREDIT_EXTENT = (0.15, 0.95)
"""At or beyond these extents size earns nothing (linear in between)."""
RECOLOURED_DELTA_E = 12.0
"""A background pixel whose colour moved by more than this (CIE76) counts as changed."""
CUT_OFF_VISIBLE = 0.97
"""A product with less than this share of itself inside the frame is cut off."""

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
    estimate = identity.main_object(ctx.source)
    if not estimate.mask.any() or estimate.confidence < identity.ESTIMATE_MIN_CONFIDENCE:
        raise NotMeasurable(f"no product mask, and none could be estimated from the photo "
                            f"(confidence {estimate.confidence:.2f})")
    return source, estimate.mask, "estimated"


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
    """Masked gray NCC of the identity alignment that found it (None for alpha)."""
    method: str
    """``alpha``, or the identity alignment's method (``features``, ``template``, …)."""
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


def locate_product(ctx: ScoreContext) -> Located:
    """Where the product is in ``ctx.output``: by its alpha, or where the identity analysis of
    this context found it (shared with the identity metrics, computed once per context).
    Raises :class:`NotMeasurable` (a reason) when it cannot tell."""
    return _locate(ctx)


def _locate(ctx: ScoreContext) -> Located:
    own = _alpha_mask(ctx.output)
    if own is not None:
        ys, xs = np.nonzero(own)
        return Located(own, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                             int(ys.max()) + 1), None, None, "alpha", "-")
    if ctx.source is None:
        raise NotMeasurable("no source photo")
    try:
        found = identity.located(ctx)
    except ValueError as exc:
        raise NotMeasurable(str(exc)) from None
    mask = found.mask_in_output
    if not found.found or mask is None or found.box is None:
        why = found.reason or "no silhouette"
        raise NotMeasurable(f"the product was not found in the output ({why}; best "
                            f"alignment {found.score:.2f})")
    # the box is the source's product carried over by the alignment (the output's own
    # silhouette can take in a shadow or a reflection), clipped to the frame: what is visible
    oh, ow = mask.shape
    x0, y0, x1, y1 = found.box
    box = (max(0, x0), max(0, y0), min(ow, x1), min(oh, y1))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise NotMeasurable("the product was matched outside the frame")
    inside = np.zeros_like(mask)
    inside[box[1]:box[3], box[0]:box[2]] = True
    return Located(mask & inside, box, found.in_frame, found.score, found.method,
                   "ground truth" if ctx.mask is not None else "estimated")


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
