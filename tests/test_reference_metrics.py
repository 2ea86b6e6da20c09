"""Specification of pixellab.scoring.reference: ground-truth metrics on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.reference import (
    SCORER_VERSION,
    boundary_map,
    boundary_tolerance,
    delta_e_2000,
    score_boundary_f,
    score_delta_e,
    score_mask_iou,
    score_psnr,
    score_ssim,
    to_lab,
)

RED = (255, 0, 0)
WHITE = (255, 255, 255)

# --- images made on the fly ------------------------------------------------------------------


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean H×W mask that is True on ``box`` = (left, top, right, bottom), exclusive ends."""
    w, h = size
    arr = np.zeros((h, w), bool)
    left, top, right, bottom = box
    arr[top:bottom, left:right] = True
    return arr


def mask_image(mask: np.ndarray) -> Image.Image:
    """A ground-truth mask image: L, 255 = product."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")


def cutout(mask: np.ndarray, colour: tuple[int, int, int] = RED) -> Image.Image:
    """An RGBA remove_background output whose alpha is ``mask``."""
    h, w = mask.shape
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., :3] = colour
    arr[..., 3] = np.where(mask, 255, 0)
    return Image.fromarray(arr, "RGBA")


def product_photo(
    mask: np.ndarray, product: tuple[int, int, int], background: tuple[int, int, int] = WHITE
) -> Image.Image:
    """RGB photo: ``product`` colour where ``mask`` is set, ``background`` elsewhere."""
    arr = np.where(mask[..., None], np.array(product, np.uint8), np.array(background, np.uint8))
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def textured(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A smooth gradient with some texture, so SSIM has structure to compare."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    arr = np.clip(base + rng.normal(0, 10, base.shape), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def add_noise(image: Image.Image, sigma: float, seed: int = 1) -> Image.Image:
    arr = np.asarray(image).astype(np.float64)
    noisy = arr + np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8), "RGB")


def lab_of(colour: tuple[int, int, int]) -> np.ndarray:
    """Independent conversion of one sRGB colour, straight from scikit-image."""
    return np.asarray(rgb2lab(np.array([[colour]], np.uint8)))[0, 0]


def assert_missing(score: Score, metric: str, *reason_words: str) -> None:
    assert score.metric == metric
    assert score.value is None, f"expected missing, got {score.value}"
    assert score.missing_reason is not None
    for word in reason_words:
        assert word in score.missing_reason, score.missing_reason
    assert score.version == SCORER_VERSION


def test_the_scorer_version_was_bumped_for_the_new_metrics() -> None:
    assert SCORER_VERSION == "reference-2"


# --- SSIM and PSNR: output against the clean reference ----------------------------------------


def test_identical_images_have_ssim_exactly_1_and_psnr_inf() -> None:
    ref = textured()
    ctx = ScoreContext(task="enhance", output=ref.copy(), reference=ref)
    ssim, psnr = score_ssim(ctx), score_psnr(ctx)
    assert ssim.metric == "ssim" and ssim.value == 1.0
    assert psnr.value == math.inf


def test_known_noise_gives_ssim_strictly_between_0_and_1_and_psnr_from_its_mse() -> None:
    ref = textured()
    out = add_noise(ref, sigma=12)
    mse = np.mean((np.asarray(out, np.float64) - np.asarray(ref, np.float64)) ** 2)
    ctx = ScoreContext(task="enhance", output=out, reference=ref)
    ssim = score_ssim(ctx).value
    assert ssim is not None and 0.0 < ssim < 1.0
    assert score_psnr(ctx).value == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-12)


def test_more_noise_means_lower_ssim() -> None:
    ref = textured()
    light = score_ssim(ScoreContext("enhance", output=add_noise(ref, 5), reference=ref)).value
    heavy = score_ssim(ScoreContext("enhance", output=add_noise(ref, 30), reference=ref)).value
    assert light is not None and heavy is not None and heavy < light < 1.0


def test_ssim_source_is_the_before_figure_of_an_enhance_case() -> None:
    clean = textured()
    degraded = add_noise(clean, sigma=20)
    ctx = ScoreContext(task="enhance", output=clean.copy(), source=degraded, reference=clean)
    score = score_ssim(ctx)
    assert score.value == 1.0
    assert 0.0 < score.details["ssim_source"] < 1.0
    assert score.details["ssim_source"] == pytest.approx(
        score_ssim(ScoreContext("enhance", output=degraded, reference=clean)).value)


def test_upscale_source_of_another_size_gives_no_before_figure() -> None:
    original = textured((64, 48))
    small = original.resize((32, 24))
    ctx = ScoreContext(task="upscale", output=small.resize((64, 48)), source=small,
                       reference=original)
    score = score_ssim(ctx)
    assert score.value is not None and 0.0 < score.value < 1.0
    assert "ssim_source" not in score.details


def test_ssim_compares_colour_and_ignores_an_alpha_channel() -> None:
    ref = textured()
    rgba = ref.convert("RGBA")
    rgba.putalpha(0)
    assert score_ssim(ScoreContext("enhance", output=rgba, reference=ref)).value == 1.0


def test_ssim_without_reference_is_missing() -> None:
    assert_missing(score_ssim(ScoreContext("enhance", output=textured())), "ssim", "reference")


def test_ssim_size_mismatch_is_missing_and_names_both_sizes() -> None:
    ctx = ScoreContext("upscale", output=textured((64, 48)), reference=textured((128, 96)))
    assert_missing(score_ssim(ctx), "ssim", "(64, 48)", "(128, 96)")


def test_ssim_of_an_image_smaller_than_the_window_is_missing() -> None:
    tiny = textured((6, 20))
    assert_missing(score_ssim(ScoreContext("enhance", output=tiny, reference=tiny)), "ssim",
                   "7×7")


def test_psnr_without_reference_is_missing() -> None:
    assert_missing(score_psnr(ScoreContext("enhance", output=textured())), "psnr", "reference")


# --- mask IoU ----------------------------------------------------------------------------------


def test_iou_of_two_known_rectangles_is_their_exact_overlap_fraction() -> None:
    size = (100, 80)
    truth = box_mask(size, (10, 10, 50, 60))  # 40 × 50 = 2000 px
    predicted = box_mask(size, (30, 10, 70, 60))  # same size, 20 px to the right: overlap 1000
    score = score_mask_iou(ScoreContext("remove_background", output=cutout(predicted),
                                        mask=mask_image(truth)))
    assert score.value == pytest.approx(1 / 3)
    assert score.details == {"intersection": 1000, "union": 3000}


def test_iou_of_identical_masks_is_1() -> None:
    truth = box_mask((50, 50), (5, 5, 30, 40))
    score = score_mask_iou(ScoreContext("remove_background", output=cutout(truth),
                                        mask=mask_image(truth)))
    assert score.value == 1.0


@pytest.mark.parametrize(
    ("output", "mask", "words"),
    [
        (cutout(box_mask((20, 20), (2, 2, 9, 9))), None, ("mask",)),
        (product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
         mask_image(box_mask((20, 20), (2, 2, 9, 9))), ("alpha",)),
        (cutout(box_mask((20, 20), (2, 2, 9, 9))), mask_image(box_mask((30, 20), (2, 2, 9, 9))),
         ("(20, 20)", "(30, 20)")),
        (cutout(box_mask((20, 20), (0, 0, 0, 0))), mask_image(box_mask((20, 20), (0, 0, 0, 0))),
         ("empty",)),
    ],
    ids=["no-mask", "no-alpha", "size-mismatch", "both-empty"],
)
def test_iou_that_cannot_be_computed_is_missing(
    output: Image.Image, mask: Image.Image | None, words: tuple[str, ...]
) -> None:
    assert_missing(score_mask_iou(ScoreContext("remove_background", output=output, mask=mask)),
                   "mask_iou", *words)


# --- boundary F-measure ------------------------------------------------------------------------


def test_boundary_of_a_square_is_its_one_pixel_inner_contour() -> None:
    square = box_mask((100, 100), (20, 20, 80, 80))  # 60 × 60
    contour = boundary_map(square)
    assert contour.sum() == 4 * 60 - 4
    assert contour[20, 20] and contour[20, 50] and contour[79, 79]
    assert not contour[21, 21] and not contour[19, 20]


def test_the_image_edge_is_not_a_boundary() -> None:
    touching = box_mask((100, 100), (0, 0, 60, 60))  # cropped by the frame on two sides
    assert boundary_map(touching).sum() == 60 + 60 - 1
    assert not boundary_map(np.ones((10, 10), bool)).any()


@pytest.mark.parametrize(("size", "expected"), [((200, 200), 2), ((1000, 1000), 11),
                                                ((10, 10), 1), ((1600, 900), 15)])
def test_the_default_tolerance_is_0_8_percent_of_the_diagonal(
    size: tuple[int, int], expected: int
) -> None:
    assert boundary_tolerance(size) == expected


def test_a_perfect_prediction_has_boundary_f_exactly_1() -> None:
    truth = box_mask((200, 200), (50, 40, 150, 170))
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(truth),
                                          mask=mask_image(truth)))
    assert score.metric == "boundary_f"
    assert score.value == 1.0
    assert score.details == {"precision": 1.0, "recall": 1.0, "tolerance_px": 2}


def test_a_contour_off_by_less_than_the_tolerance_still_scores_1() -> None:
    truth = box_mask((200, 200), (50, 50, 150, 150))
    predicted = box_mask((200, 200), (51, 49, 151, 151))  # every edge 1 px off
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(predicted),
                                          mask=mask_image(truth)))
    assert score.value == 1.0


@pytest.mark.parametrize("shift", [(20, 0), (20, 20)], ids=["right", "diagonal"])
def test_a_mask_shifted_by_20_px_in_a_200_px_image_scores_low(shift: tuple[int, int]) -> None:
    dx, dy = shift
    truth = box_mask((200, 200), (50, 50, 150, 150))
    predicted = box_mask((200, 200), (50 + dx, 50 + dy, 150 + dx, 150 + dy))
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(predicted),
                                          mask=mask_image(truth)))
    assert score.value is not None and score.value < 0.5
    # IoU stays high for the same shift: the contour metric is the one that notices.
    iou = score_mask_iou(ScoreContext("remove_background", output=cutout(predicted),
                                      mask=mask_image(truth))).value
    assert iou is not None and iou > score.value


def test_an_extra_blob_costs_precision_but_not_recall() -> None:
    truth = box_mask((200, 200), (20, 20, 80, 80))  # contour 4·60 − 4 = 236 px
    blob = box_mask((200, 200), (140, 140, 160, 160))  # contour 4·20 − 4 = 76 px, far away
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(truth | blob),
                                          mask=mask_image(truth)))
    assert score.details["recall"] == 1.0
    assert score.details["precision"] == pytest.approx(236 / 312)
    p = 236 / 312
    assert score.value == pytest.approx(2 * p / (p + 1))


def test_a_missed_part_costs_recall_but_not_precision() -> None:
    product = box_mask((200, 200), (20, 20, 80, 80))
    handle = box_mask((200, 200), (140, 140, 160, 160))
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(product),
                                          mask=mask_image(product | handle)))
    assert score.details["precision"] == 1.0
    assert score.details["recall"] == pytest.approx(236 / 312)


def test_an_empty_cutout_of_a_real_product_scores_0_not_missing() -> None:
    truth = box_mask((100, 100), (20, 20, 80, 80))
    empty = np.zeros_like(truth)
    score = score_boundary_f(ScoreContext("remove_background", output=cutout(empty),
                                          mask=mask_image(truth)))
    assert score.value == 0.0
    assert score.details["recall"] == 0.0


def test_an_explicit_tolerance_overrides_the_default() -> None:
    truth = box_mask((200, 200), (50, 50, 150, 150))
    predicted = box_mask((200, 200), (70, 50, 170, 150))
    ctx = ScoreContext("remove_background", output=cutout(predicted), mask=mask_image(truth))
    score = score_boundary_f(ctx, tolerance_px=20)
    assert score.value == 1.0
    assert score.details["tolerance_px"] == 20


@pytest.mark.parametrize(
    ("output", "mask", "words"),
    [
        (cutout(box_mask((20, 20), (2, 2, 9, 9))), None, ("mask",)),
        (product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
         mask_image(box_mask((20, 20), (2, 2, 9, 9))), ("alpha",)),
        (cutout(box_mask((20, 20), (2, 2, 9, 9))), mask_image(box_mask((30, 20), (2, 2, 9, 9))),
         ("(20, 20)", "(30, 20)")),
        (cutout(box_mask((20, 20), (0, 0, 0, 0))), mask_image(box_mask((20, 20), (0, 0, 0, 0))),
         ("boundary",)),
        (cutout(box_mask((20, 20), (0, 0, 20, 20))), mask_image(box_mask((20, 20), (0, 0, 20, 20))),
         ("boundary",)),
    ],
    ids=["no-mask", "no-alpha", "size-mismatch", "both-empty", "both-full-frame"],
)
def test_boundary_f_that_cannot_be_computed_is_missing(
    output: Image.Image, mask: Image.Image | None, words: tuple[str, ...]
) -> None:
    assert_missing(score_boundary_f(ScoreContext("remove_background", output=output, mask=mask)),
                   "boundary_f", *words)


# --- ΔE2000 colour fidelity -------------------------------------------------------------------

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data and mathematical observations", Table 1 (pairs 1, 2, 3, 7, 17, 18, 25).
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 2.8361, -74.0200), (50.0, 0.0, -82.7485), 3.4412),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA_PAIRS)
def test_delta_e_2000_matches_the_published_test_data(
    lab1: tuple[float, float, float], lab2: tuple[float, float, float], expected: float
) -> None:
    assert float(delta_e_2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=5e-5)
    assert float(delta_e_2000(np.array(lab2), np.array(lab1))) == pytest.approx(expected, abs=5e-5)


def test_srgb_to_lab_gives_the_standard_values_for_red_and_white() -> None:
    lab = to_lab(np.array([RED, WHITE], np.uint8))
    assert lab[0] == pytest.approx([53.2408, 80.0925, 67.2032], abs=0.01)  # sRGB red, D65
    assert lab[1] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)


def test_pure_red_against_pure_red_is_0() -> None:
    mask = box_mask((40, 30), (5, 5, 25, 20))
    photo = product_photo(mask, RED)
    score = score_delta_e(ScoreContext("enhance", output=photo.copy(), source=photo,
                                       mask=mask_image(mask)))
    assert score.metric == "delta_e"
    assert score.value == 0.0
    assert score.details == {"method": "per_pixel", "p95": 0.0, "pixels": 20 * 15,
                             "better": "lower"}


def test_a_recoloured_product_scores_the_delta_e_of_the_two_colours() -> None:
    mask = box_mask((40, 30), (5, 5, 25, 20))
    orange = (255, 128, 0)
    expected = float(deltaE_ciede2000(lab_of(RED), lab_of(orange)))
    assert expected > 10  # a clearly visible shift, so the test can tell colours apart
    source = product_photo(mask, RED)
    output = product_photo(mask, orange, background=(0, 0, 255))  # the background may change
    score = score_delta_e(ScoreContext("relight", output=output, source=source,
                                       mask=mask_image(mask)))
    assert score.value == pytest.approx(expected, rel=1e-9)
    assert score.details["p95"] == pytest.approx(expected, rel=1e-9)
    assert score.details["pixels"] == 300


def test_delta_e_is_the_mean_over_product_pixels() -> None:
    mask = box_mask((40, 30), (0, 0, 20, 30))  # 600 product pixels
    source = product_photo(mask, RED)
    out = np.asarray(source).copy()
    out[:, :5] = (200, 0, 0)  # a quarter of the product darkened
    expected = float(deltaE_ciede2000(lab_of(RED), lab_of((200, 0, 0)))) / 4
    score = score_delta_e(ScoreContext("enhance", output=Image.fromarray(out), source=source,
                                       mask=mask_image(mask)))
    assert score.value == pytest.approx(expected, rel=1e-9)
    assert score.details["p95"] == pytest.approx(4 * expected, rel=1e-9)


def test_pixels_transparent_in_the_output_are_not_compared() -> None:
    mask = box_mask((40, 30), (0, 0, 20, 30))
    source = product_photo(mask, RED)
    out = np.zeros((30, 40, 4), np.uint8)
    out[..., :3] = RED
    out[:, :10, 3] = 255  # left half of the product kept
    out[:, 10:20, :3] = (0, 0, 255)  # right half cut away, its colour irrelevant
    score = score_delta_e(ScoreContext("remove_background", output=Image.fromarray(out, "RGBA"),
                                       source=source, mask=mask_image(mask)))
    assert score.value == 0.0
    assert score.details["pixels"] == 300


def test_a_recentred_packshot_compares_mean_product_colours() -> None:
    source_mask = box_mask((60, 40), (5, 5, 25, 25))
    source = product_photo(source_mask, RED, background=(90, 90, 90))
    shade = (230, 20, 30)
    output = product_photo(box_mask((100, 100), (30, 30, 70, 80)), shade)  # white background
    score = score_delta_e(ScoreContext("packshot", output=output, source=source,
                                       mask=mask_image(source_mask)))
    assert score.value == pytest.approx(float(deltaE_ciede2000(lab_of(RED), lab_of(shade))),
                                        rel=1e-9)
    assert score.details["method"] == "mean_colour"
    assert score.details["source_pixels"] == 400
    assert score.details["output_pixels"] == 40 * 50
    assert score.details["better"] == "lower"
    assert score.details["source_lab"] == pytest.approx(list(lab_of(RED)))


def test_a_recentred_cutout_uses_its_alpha_as_the_product() -> None:
    source_mask = box_mask((60, 40), (5, 5, 25, 25))
    source = product_photo(source_mask, RED)
    output = cutout(box_mask((80, 80), (10, 10, 30, 60)), colour=RED)  # colour under alpha=0 too
    score = score_delta_e(ScoreContext("packshot", output=output, source=source,
                                       mask=mask_image(source_mask)))
    assert score.value == pytest.approx(0.0, abs=1e-9)
    assert score.details["output_pixels"] == 20 * 50


@pytest.mark.parametrize(
    ("ctx", "words"),
    [
        (ScoreContext("enhance", output=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((20, 20), (2, 2, 9, 9)))), ("source",)),
        (ScoreContext("enhance", output=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED)), ("mask",)),
        (ScoreContext("enhance", output=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((30, 20), (2, 2, 9, 9)))),
         ("(30, 20)", "(20, 20)")),
        (ScoreContext("enhance", output=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((20, 20), (0, 0, 0, 0)))), ("no product",)),
        (ScoreContext("remove_background", output=cutout(box_mask((20, 20), (0, 0, 0, 0))),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((20, 20), (2, 2, 9, 9)))), ("opaque",)),
        (ScoreContext("packshot", output=Image.new("RGB", (50, 50), WHITE),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((20, 20), (2, 2, 9, 9)))), ("output",)),
        (ScoreContext("packshot", output=product_photo(box_mask((50, 50), (2, 2, 9, 9)), RED),
                      source=product_photo(box_mask((20, 20), (2, 2, 9, 9)), RED),
                      mask=mask_image(box_mask((20, 20), (0, 0, 0, 0)))), ("mask",)),
    ],
    ids=["no-source", "no-mask", "mask-vs-source-size", "empty-mask", "all-transparent",
         "all-white-packshot", "empty-mask-packshot"],
)
def test_delta_e_that_cannot_be_computed_is_missing(
    ctx: ScoreContext, words: tuple[str, ...]
) -> None:
    assert_missing(score_delta_e(ctx), "delta_e", *words)
