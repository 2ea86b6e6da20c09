"""The ``identity_drift`` fault: a model that answers a plausible picture of another product.

Why: every other output fault (``corrupt``, ``blank``, a wrong size) is caught by validation. A
generative model's worst quiet failure is different: the job succeeds and the picture is fine -
same framing, same size, a clean background - but the product in it is not the customer's. Only
a product-identity check (colour, shape, label against the input) can catch that, so the
emulator must be able to produce exactly that case.

:func:`drift` keeps the composition and changes the product's identity:

* the product region is found from the image's own alpha when it has a real one (a cutout),
  else with pixellab's classical background model (:func:`~pixellab.providers.local.ops.cutout`,
  ``threshold`` method); when nothing stands out, a centred ellipse covering about half the
  frame stands in for it;
* inside that region the product is **recoloured**: hue rotated by ``hue`` degrees and grey
  parts given a tint (saturation raised to at least 0.4), value (HSV ``V``) kept, so shading and
  texture survive and the picture still looks like a photo;
* its most label-like area (the densest edges inside the product) is **blurred and redrawn**
  with a few bars of "text" in place of what was printed there;
* the product is **mirrored** left-right inside its own bounding box, over a background that is
  inpainted where the original product stood, so it stays exactly where it was.

The result has the input's size and mode (an RGBA cutout stays RGBA, its alpha mirrored with the
product), decodes, is not blank and differs from the input: every validity check passes.
Deterministic for a given image, ``seed`` and options. CPU only: about 0.2 s for a 480 px
photo, under a second for a 1024 px packshot (most of it the cutout).
"""

from __future__ import annotations

import random

import cv2
import numpy as np
from PIL import Image

from pixellab.providers.local.ops import cutout

__all__ = ["DEFAULT_HUE_SHIFT", "drift", "product_weight"]

DEFAULT_HUE_SHIFT = 150.0
"""Degrees of hue rotation applied to the product (a red mug comes back teal)."""

_MIN_SATURATION = 0.4
_INPAINT_SIDE = 256


def product_weight(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The product's colours and coverage: (float32 HxWx3 RGB, float32 HxW weight in [0, 1]).

    The weight is the image's alpha when it has transparency, else the classical cutout's alpha
    (whose RGB has the background's colour spill removed from soft edges, so a recoloured edge
    does not tint the backdrop); a centred ellipse (about half the frame) when neither finds a
    product covering 0.5 % of the image.
    """
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    rgb, weight = rgba[..., :3], rgba[..., 3] / 255.0
    if float(weight.min()) >= 1.0 and min(image.size) >= 8:
        cut = np.asarray(cutout(image.convert("RGB"), method="threshold"), dtype=np.float32)
        rgb, weight = cut[..., :3], cut[..., 3] / 255.0
    if float(weight.mean()) < 0.005 or float(weight.min()) >= 1.0:
        h, w = weight.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        inside = ((xx - (w - 1) / 2) / (0.38 * w)) ** 2 + ((yy - (h - 1) / 2) / (0.42 * h)) ** 2
        rgb = rgba[..., :3]
        weight = np.clip((1.0 - inside) * 8.0, 0.0, 1.0)
    return rgb.astype(np.float32), weight.astype(np.float32)


def _recolour(rgb: np.ndarray, hue: float) -> np.ndarray:
    """Hue rotated by ``hue`` degrees, saturation raised to at least 0.4, value kept."""
    hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
    hsv[..., 1] = np.maximum(hsv[..., 1], _MIN_SATURATION)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _label_box(rgb: np.ndarray, core: np.ndarray,
               box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The window (x0, y0, x1, y1) inside the product with the densest edges: where a label,
    a logo or printed text would be. None for a product too small to carry one."""
    x0, y0, x1, y1 = box
    bw, bh = max(3, round(0.4 * (x1 - x0))), max(3, round(0.22 * (y1 - y0)))
    if bw < 6 or bh < 6:
        return None
    grey = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    edges *= core
    density = cv2.boxFilter(edges, -1, (bw, bh), normalize=True, borderType=cv2.BORDER_CONSTANT)
    inside = cv2.boxFilter(core, -1, (bw, bh), normalize=True, borderType=cv2.BORDER_CONSTANT)
    density[inside < 0.9] = 0.0  # the window must lie on the product, not straddle its outline
    if float(density.max()) <= 0.0:
        return None
    cy, cx = np.unravel_index(int(np.argmax(density)), density.shape)
    lx0, ly0 = int(cx) - bw // 2, int(cy) - bh // 2
    return lx0, ly0, lx0 + bw, ly0 + bh


def _redraw_label(layer: np.ndarray, box: tuple[int, int, int, int], seed: int) -> None:
    """Blur what is printed in ``box`` away and draw a few bars of made-up "text" (in place)."""
    x0, y0, x1, y1 = box
    h, w = layer.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    patch = layer[y0:y1, x0:x1]
    sigma = max(2.0, (y1 - y0) / 5.0)
    blurred = cv2.GaussianBlur(patch, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    ink = 30.0 if float(blurred.mean()) > 128 else 225.0
    rng = random.Random(seed)
    bar_h = max(2, (y1 - y0) // 7)
    y = y0 + bar_h
    while y + bar_h <= y1 - bar_h // 2:
        x = x0 + rng.randint(1, max(1, (x1 - x0) // 6))
        while x < x1 - 4:
            length = rng.randint(max(2, (x1 - x0) // 12), max(3, (x1 - x0) // 4))
            end = min(x1 - 2, x + length)
            blurred[y - y0:y - y0 + bar_h, x - x0:end - x0] = ink
            x = end + rng.randint(2, max(3, (x1 - x0) // 10))
        y += 2 * bar_h
    layer[y0:y1, x0:x1] = cv2.GaussianBlur(blurred, (0, 0), 0.6)


def _inpaint_background(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The background with the product region filled in (Telea inpainting at <= 256 px)."""
    h, w = hole.shape
    scale = min(1.0, _INPAINT_SIDE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(rgb.astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
    small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return np.where(hole[..., None], up, rgb.astype(np.float32))


def drift(image: Image.Image, *, seed: int = 0, hue: float = DEFAULT_HUE_SHIFT,
          mirror: bool = True, label: bool = True) -> Image.Image:
    """``image`` with its product replaced by a plausible different one (see the module doc).

    ``hue`` rotates the product's hue (degrees), ``mirror`` flips it left-right in place,
    ``label`` blurs and redraws its most label-like area; ``seed`` picks the made-up "text".
    Returns a new image of the same size, in RGBA when the input has an alpha channel, else RGB.
    """
    has_alpha_channel = image.mode in ("RGBA", "LA") or "transparency" in image.info
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    keep_alpha = has_alpha_channel and float(alpha.min()) < 255.0
    colours, weight = product_weight(image)
    core = (weight >= 0.5).astype(np.float32)
    # the box holds the soft edge too, so the whole product (feather included) is mirrored
    ys, xs = np.nonzero(weight > 0.004)
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    y0, y1 = int(ys.min()), int(ys.max()) + 1

    layer = _recolour(colours, hue)
    if label:
        eroded = cv2.erode(core, np.ones((5, 5), np.uint8))
        box = _label_box(colours, eroded, (x0, y0, x1, y1))
        if box is not None:
            _redraw_label(layer, box, seed)
    placed, placed_alpha = weight, alpha
    if mirror:
        layer[:, x0:x1] = layer[:, x0:x1][:, ::-1].copy()
        placed = weight.copy()
        placed[:, x0:x1] = weight[:, x0:x1][:, ::-1]
        placed_alpha = alpha.copy()
        placed_alpha[:, x0:x1] = alpha[:, x0:x1][:, ::-1]

    if keep_alpha:
        # A cutout: the product is its alpha, and the mirrored alpha travels with it.
        out = np.dstack([np.where(placed_alpha[..., None] > 0, layer, rgb), placed_alpha])
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGBA")
    background = rgb
    if mirror:  # where the product stood before the mirror, the backdrop is rebuilt
        hole = cv2.dilate((weight > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        background = _inpaint_background(rgb, hole)
    share = placed[..., None]
    out_rgb = layer * share + background * (1.0 - share)
    result = Image.fromarray(np.clip(np.rint(out_rgb), 0, 255).astype(np.uint8), "RGB")
    return result.convert("RGBA") if has_alpha_channel else result
