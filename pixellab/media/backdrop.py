"""The backdrop of a product photo: what the frame's border says the background looks like, and
how far each pixel stands from it.

Why one module: the local cut-out (``providers/local/ops.py``) segments the product this way,
and the identity scorer (``scoring/identity.py``) estimates the main object of a photo without a
mask this way too. Two copies drift apart (they had: different blur borders); one model of the
backdrop keeps the cut-out and the scorer's reading comparable, and makes plain that a scorer
using it alone would only confirm the cut-out (why identity takes a second, centre-prior
reading, see :func:`pixellab.scoring.identity.estimate_main_object`).

Pure numpy/OpenCV functions on RGB uint8 arrays already at working size.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["background_distance", "border_band", "foreground_threshold"]


def border_band(h: int, w: int, frac: float = 0.03) -> tuple[np.ndarray, int]:
    """Boolean mask of the outer band of an ``h``×``w`` frame (``frac`` of the shorter side,
    at least 2 px), and its width in pixels."""
    b = max(2, round(frac * min(h, w)))
    band = np.ones((h, w), dtype=bool)
    band[b:h - b, b:w - b] = False
    return band, b


def background_distance(rgb: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Per-pixel distance from the background, in units of the background's own variability.

    The background is modelled from the border band: a quadratic surface in CIELAB fitted to
    the band by iteratively reweighted least squares (so gradients, vignettes and a product
    that touches the border are handled), with a robust per-channel scale (MAD of the band's
    residuals, floored at 2 LAB units). The image is blurred first so fine texture and noise
    average out. Returns float32 HxW; background is ~1-2, clear foreground is >> 3.
    """
    h, w = rgb.shape[:2]
    sigma = max(1.0, min(h, w) / 300.0)
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    lab = cv2.cvtColor(blurred.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs = xs / max(w - 1, 1) * 2 - 1
    ys = ys / max(h - 1, 1) * 2 - 1
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1)
    a = design[band].astype(np.float64)
    y = lab[band].astype(np.float64)
    # start from the band's median colour (robust as long as most of the band is background),
    # so a product touching the border cannot drag the first fit towards itself
    resid = y - np.median(y, axis=0)
    scale = np.maximum(1.4826 * np.median(np.abs(resid), axis=0), 2.0)
    weights = 1.0 / (1.0 + (np.sqrt(np.sum((resid / scale) ** 2, axis=1)) / 3.0) ** 2)
    coef = np.zeros((6, 3))
    for _ in range(4):
        sw = np.sqrt(weights)[:, None]
        coef, *_ = np.linalg.lstsq(a * sw, y * sw, rcond=None)
        resid = y - a @ coef
        scale = np.maximum(1.4826 * np.median(np.abs(resid), axis=0), 2.0)
        d = np.sqrt(np.sum((resid / scale) ** 2, axis=1))
        weights = 1.0 / (1.0 + (d / 3.0) ** 2)  # Cauchy: product pixels on the band barely count
    model = (design.reshape(-1, 6) @ coef.astype(np.float32)).reshape(h, w, 3)
    diff = (lab - model) / scale.astype(np.float32)
    return np.sqrt(np.sum(diff * diff, axis=-1)).astype(np.float32)


def foreground_threshold(dist: np.ndarray, band: np.ndarray) -> float:
    """Distance above which a pixel is foreground.

    Otsu on log(1 + distance), never below 3 background units, and raised to the 99th
    percentile of the border band's distances, so the background's own texture (mortar lines,
    grain, clutter) stays below it. That raise is capped at half the typical foreground
    distance (90th percentile of what is above Otsu), so a product touching the border cannot
    push the threshold above itself.
    """
    top = math.log1p(60.0)
    vals = np.log1p(np.minimum(dist, 60.0))
    v8 = np.clip(np.rint(vals / top * 255.0), 0, 255).astype(np.uint8).reshape(1, -1)
    t8, _ = cv2.threshold(v8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    t = max(math.expm1(t8 / 255.0 * top), 3.0)
    above = dist[dist > t]
    if above.size:
        texture = float(np.percentile(dist[band], 99))
        t = max(t, min(texture, 0.5 * float(np.percentile(above, 90))))
    return t
