"""Reference metrics: compare an output with the dataset's ground truth.

Only computed where ground truth exists; otherwise the metric is recorded missing with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from pixellab.scoring.base import Score, ScoreContext

SCORER_VERSION = "reference-1"


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
