"""Reference metrics: compare an output with the dataset's ground truth.

Only computed where ground truth exists; otherwise the metric is recorded missing with the reason.

- ``mask_iou`` and ``boundary_f`` (remove_background): the output's alpha against the
  ground-truth mask — IoU for the region, boundary F-measure for the contour, which IoU barely
  sees on a large product.
- ``psnr`` and ``ssim`` (enhance: degraded → restored vs clean; upscale: downscaled → upscaled vs
  original): the output against the clean reference, with the source's figure as the "before".
- ``delta_e`` (every task with a product mask): CIEDE2000 colour drift of the product between
  source and output — lower is better.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity
from skimage.morphology import disk

from pixellab.scoring.base import Score, ScoreContext

SCORER_VERSION = "reference-2"

SSIM_WINDOW = 7  # structural_similarity's default win_size; smaller images cannot be scored
BOUNDARY_TOLERANCE_FRACTION = 0.008  # of the image diagonal, as in the DAVIS benchmark
WHITE_BACKGROUND_LEVEL = 245  # a pixel with every channel at or above this is background


def _rgb(image: Image.Image) -> np.ndarray:
    """uint8 H×W×3; alpha is dropped, so colour metrics see the stored colour, not a composite."""
    return np.asarray(image.convert("RGB"))


def _foreground(mask: Image.Image) -> np.ndarray:
    """The ground-truth mask as booleans (> 50 %)."""
    return np.asarray(mask.convert("L")) > 127


def _opaque(image: Image.Image) -> np.ndarray | None:
    """The image's alpha as booleans (> 50 %), or ``None`` when it has no alpha channel."""
    if "A" not in image.getbands():
        return None
    return np.asarray(image.getchannel("A")) > 127


def _differ(what: str, a: Image.Image, b: Image.Image, other: str) -> str:
    return f"{what} {a.size} and {other} {b.size} differ in size"


# --- region and contour: remove_background -----------------------------------------------------


def score_mask_iou(ctx: ScoreContext) -> Score:
    """IoU between the output's alpha (> 50 %) and the ground-truth mask (> 50 %)."""
    if ctx.mask is None:
        return Score.missing("mask_iou", SCORER_VERSION, "no ground-truth mask")
    if "A" not in ctx.output.getbands():
        return Score.missing("mask_iou", SCORER_VERSION, "output has no alpha channel")
    if ctx.output.size != ctx.mask.size:
        return Score.missing("mask_iou", SCORER_VERSION,
                             f"output {ctx.output.size} and mask {ctx.mask.size} differ in size")
    predicted = np.asarray(ctx.output.getchannel("A")) > 127
    truth = np.asarray(ctx.mask.convert("L")) > 127
    union = int(np.logical_or(predicted, truth).sum())
    if union == 0:
        return Score.missing("mask_iou", SCORER_VERSION, "both masks are empty")
    intersection = int(np.logical_and(predicted, truth).sum())
    return Score("mask_iou", intersection / union, SCORER_VERSION,
                 {"intersection": intersection, "union": union})


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it: a one-pixel inner contour.

    The image edge is not a contour (the mask is padded by repeating it): a product cropped by the
    frame has no edge there, in the prediction or in the truth.
    """
    m = np.pad(mask.astype(bool), 1, mode="edge")
    interior = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~interior


def boundary_tolerance(size: tuple[int, int]) -> int:
    """DAVIS's matching distance: 0.8 % of the image diagonal, at least one pixel."""
    w, h = size
    return max(1, round(BOUNDARY_TOLERANCE_FRACTION * math.hypot(w, h)))


def _dilate(boundary: np.ndarray, radius: int) -> np.ndarray:
    kernel = disk(radius).astype(np.uint8)
    return cv2.dilate(boundary.astype(np.uint8), kernel) > 0


def boundary_precision_recall(
    predicted: np.ndarray, truth: np.ndarray, tolerance_px: int
) -> tuple[float, float]:
    """Fractions of predicted / true contour pixels within ``tolerance_px`` of the other contour.

    Follows DAVIS ``f_boundary``: each contour is dilated by a disk of the tolerance and the other
    contour's pixels inside it count as matched. An empty predicted contour has precision 1 (it
    claims nothing wrong) and an empty true contour recall 1.
    """
    pred_b, true_b = boundary_map(predicted), boundary_map(truth)
    n_pred, n_true = int(pred_b.sum()), int(true_b.sum())
    matched_pred = int((pred_b & _dilate(true_b, tolerance_px)).sum())
    matched_true = int((true_b & _dilate(pred_b, tolerance_px)).sum())
    precision = matched_pred / n_pred if n_pred else 1.0
    recall = matched_true / n_true if n_true else 1.0
    return precision, recall


def f_measure(precision: float, recall: float) -> float:
    """Harmonic mean; 0 when both are 0."""
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_boundary_f(ctx: ScoreContext, tolerance_px: int | None = None) -> Score:
    """Boundary F-measure of the output's alpha contour against the ground-truth mask's contour.

    IoU is dominated by a product's interior; a ragged or haloed cut-out edge shows up here.
    ``tolerance_px`` defaults to :func:`boundary_tolerance` of the image size.
    """
    if ctx.mask is None:
        return Score.missing("boundary_f", SCORER_VERSION, "no ground-truth mask")
    predicted = _opaque(ctx.output)
    if predicted is None:
        return Score.missing("boundary_f", SCORER_VERSION, "output has no alpha channel")
    if ctx.output.size != ctx.mask.size:
        return Score.missing("boundary_f", SCORER_VERSION,
                             _differ("output", ctx.output, ctx.mask, "mask"))
    truth = _foreground(ctx.mask)
    if not boundary_map(predicted).any() and not boundary_map(truth).any():
        return Score.missing("boundary_f", SCORER_VERSION, "both masks have no boundary")
    tolerance = tolerance_px if tolerance_px is not None else boundary_tolerance(ctx.output.size)
    precision, recall = boundary_precision_recall(predicted, truth, tolerance)
    return Score("boundary_f", f_measure(precision, recall), SCORER_VERSION,
                 {"precision": precision, "recall": recall, "tolerance_px": tolerance})


# --- fidelity to a clean reference: enhance, upscale -------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images; ``inf`` when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def score_psnr(ctx: ScoreContext) -> Score:
    """PSNR of the output against the clean reference photo (enhance: degraded → restored)."""
    if ctx.reference is None:
        return Score.missing("psnr", SCORER_VERSION, "no clean reference")
    if ctx.output.size != ctx.reference.size:
        return Score.missing("psnr", SCORER_VERSION,
                             f"output {ctx.output.size} and reference {ctx.reference.size} differ")
    output = np.asarray(ctx.output.convert("RGB"))
    reference = np.asarray(ctx.reference.convert("RGB"))
    details: dict[str, float] = {}
    if ctx.source is not None and ctx.source.size == ctx.reference.size:
        details["psnr_source"] = psnr(np.asarray(ctx.source.convert("RGB")), reference)
    return Score("psnr", psnr(output, reference), SCORER_VERSION, details)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images (scikit-image defaults: 7×7 window, per channel)."""
    return float(structural_similarity(a, b, data_range=255, channel_axis=-1))


def score_ssim(ctx: ScoreContext) -> Score:
    """SSIM of the output against the clean reference; 1 means structurally identical.

    PSNR punishes a global brightness shift as much as lost detail; SSIM weighs local structure,
    which is what restoration and upscaling are meant to recover. ``ssim_source`` is the degraded
    (or naively resized) source's own SSIM, so an output can be judged against doing nothing.
    """
    if ctx.reference is None:
        return Score.missing("ssim", SCORER_VERSION, "no clean reference")
    if ctx.output.size != ctx.reference.size:
        return Score.missing("ssim", SCORER_VERSION,
                             _differ("output", ctx.output, ctx.reference, "reference"))
    if min(ctx.output.size) < SSIM_WINDOW:
        return Score.missing("ssim", SCORER_VERSION,
                             f"image {ctx.output.size} is smaller than the "
                             f"{SSIM_WINDOW}×{SSIM_WINDOW} SSIM window")
    reference = _rgb(ctx.reference)
    details: dict[str, float] = {}
    if ctx.source is not None and ctx.source.size == ctx.reference.size:
        details["ssim_source"] = ssim(_rgb(ctx.source), reference)
    return Score("ssim", ssim(_rgb(ctx.output), reference), SCORER_VERSION, details)


# --- colour fidelity of the product: every task with a mask ------------------------------------


def delta_e_2000(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB arrays (…×3), with kL = kC = kH = 1."""
    return np.asarray(deltaE_ciede2000(lab_a, lab_b), dtype=np.float64)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2° observer) of uint8 sRGB pixels (…×3)."""
    return np.asarray(rgb2lab(rgb), dtype=np.float64)


def _product_pixels_of_output(output: Image.Image) -> np.ndarray:
    """Where a recentred output's product is: its alpha, else whatever is not white background."""
    opaque = _opaque(output)
    if opaque is not None:
        return opaque
    return np.asarray((_rgb(output) < WHITE_BACKGROUND_LEVEL).any(axis=-1))


def _delta_e_per_pixel(ctx: ScoreContext, source: Image.Image, truth: np.ndarray) -> Score:
    """Same geometry: ΔE pixel by pixel over the product pixels the output kept opaque."""
    region = truth
    opaque = _opaque(ctx.output)
    if opaque is not None:
        region = region & opaque
    n = int(region.sum())
    if n == 0:
        return Score.missing("delta_e", SCORER_VERSION,
                             "no product pixels (mask) that are opaque in the output")
    diff = delta_e_2000(to_lab(_rgb(source)[region]), to_lab(_rgb(ctx.output)[region]))
    return Score("delta_e", float(diff.mean()), SCORER_VERSION,
                 {"method": "per_pixel", "p95": float(np.percentile(diff, 95)), "pixels": n,
                  "better": "lower"})


def _delta_e_mean_colour(ctx: ScoreContext, source: Image.Image, truth: np.ndarray) -> Score:
    """Different geometry (e.g. a recentred packshot): ΔE of the product's mean Lab colours."""
    placed = _product_pixels_of_output(ctx.output)
    if not truth.any():
        return Score.missing("delta_e", SCORER_VERSION, "the mask has no product pixels")
    if not placed.any():
        return Score.missing("delta_e", SCORER_VERSION, "the output has no product pixels")
    source_lab = to_lab(_rgb(source)[truth]).mean(axis=0)
    output_lab = to_lab(_rgb(ctx.output)[placed]).mean(axis=0)
    value = float(delta_e_2000(source_lab, output_lab))
    return Score("delta_e", value, SCORER_VERSION,
                 {"method": "mean_colour", "source_lab": [float(x) for x in source_lab],
                  "output_lab": [float(x) for x in output_lab],
                  "source_pixels": int(truth.sum()), "output_pixels": int(placed.sum()),
                  "better": "lower"})


def score_delta_e(ctx: ScoreContext) -> Score:
    """Colour fidelity: mean CIEDE2000 between source and output on the product. Lower is better.

    A model may relight or restyle the scene, but the product's own colour must not drift: a
    shopper returns a red bag that arrives orange. ΔE00 ≈ 1 is about a just-noticeable
    difference. When the output keeps the source's geometry the comparison is per pixel
    (``per_pixel``); when it does not (a packshot recentres the product) only the product's mean
    colour can be compared (``mean_colour``).
    """
    if ctx.source is None:
        return Score.missing("delta_e", SCORER_VERSION, "no source image")
    if ctx.mask is None:
        return Score.missing("delta_e", SCORER_VERSION, "no ground-truth mask")
    if ctx.mask.size != ctx.source.size:
        return Score.missing("delta_e", SCORER_VERSION,
                             _differ("mask", ctx.mask, ctx.source, "source"))
    truth = _foreground(ctx.mask)
    if ctx.output.size == ctx.source.size:
        return _delta_e_per_pixel(ctx, ctx.source, truth)
    return _delta_e_mean_colour(ctx, ctx.source, truth)
