"""Specification of pixellab.scoring.identity: is the source's product still in the output?

Real images only: photos and exact masks of the bundled sample dataset, the local baselines'
outputs for them (``pixellab.providers.local.ops``), and variants built here from those photos —
the product relit, moved and rescaled into a new frame, hue-rotated inside its mask, mirrored,
squashed, pushed half out of the frame, painted out, its print replaced, and a cut-out that kept
a corner of the background instead of the product. Each threshold is exercised from both sides.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pixellab.providers.local import ops
from pixellab.scoring import LOWER_IS_BETTER, SCORERS, compute, scorer_version
from pixellab.scoring.base import ScoreContext
from pixellab.scoring.identity import (
    DELTA_E_MAX,
    KEPT_MIN,
    METRICS,
    SCORER_VERSION,
    SHAPE_IOU_MIN,
    SSIM_MIN,
    analyse,
    estimate_main_object,
    locate_product,
    product_crops,
)

SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"

# cosmetics-02: a perfume bottle on a plain backdrop; kitchen-01: a mug with its handle on one
# side, on a busy many-coloured backdrop (the one the local packshot loses)
BOTTLE, MUG = "cosmetics-02", "kitchen-01"


@cache
def photo(pid: str) -> tuple[Image.Image, Image.Image]:
    image = Image.open(SAMPLE / "images" / f"{pid}.jpg").convert("RGB")
    mask = Image.open(SAMPLE / "masks" / f"{pid}.png").convert("L")
    return image, mask


def run(pid: str, output: Image.Image, *, mask: bool = True) -> dict:
    image, truth = photo(pid)
    return analyse(image, truth if mask else None, output)


def reasons(result: dict) -> list[str]:
    return list(result["details"]["reasons"])


def passes(result: dict) -> bool:
    return result["measures"]["identity"] == 1.0


# --- variants of a photo ---------------------------------------------------------------------


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def paste(pid: str, *, size: tuple[int, int] = (900, 900), fill: float = 0.7,
          centre: tuple[float, float] = (0.5, 0.5), squash: tuple[float, float] = (1.0, 1.0),
          flip: bool = False, background: tuple[int, int, int] = (245, 245, 245)) -> Image.Image:
    """The product cut out along its mask and placed on a plain canvas of another size: scaled so
    its box fills ``fill`` of the canvas, centred at ``centre`` (fractions; it may run off the
    frame), optionally squashed (``squash`` per axis) or mirrored."""
    image, truth = photo(pid)
    rgb, mask = np.asarray(image).astype(np.float32), np.asarray(truth) > 127
    x0, y0, x1, y1 = _bbox(mask)
    crop, alpha = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.float32)
    if flip:
        crop, alpha = crop[:, ::-1], alpha[:, ::-1]
    w, h = size
    s = fill * min(w / (x1 - x0), h / (y1 - y0))
    tw, th = round((x1 - x0) * s * squash[0]), round((y1 - y0) * s * squash[1])
    crop = cv2.resize(np.ascontiguousarray(crop), (tw, th), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(np.ascontiguousarray(alpha), (tw, th), interpolation=cv2.INTER_AREA)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = background
    cx, cy = round(centre[0] * w - tw / 2), round(centre[1] * h - th / 2)
    sx, sy, dx, dy = max(0, -cx), max(0, -cy), max(0, cx), max(0, cy)
    ex, ey = min(w, cx + tw), min(h, cy + th)
    a = alpha[sy:sy + ey - dy, sx:sx + ex - dx, None]
    part = crop[sy:sy + ey - dy, sx:sx + ex - dx]
    canvas[dy:ey, dx:ex] = part * a + canvas[dy:ey, dx:ex] * (1 - a)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def hue_rotated(pid: str, degrees: int) -> Image.Image:
    """The photo with the product's hue rotated inside its mask (saturation and value kept)."""
    image, truth = photo(pid)
    hsv = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2HSV)
    inside = np.asarray(truth) > 127
    hsv[..., 0] = np.where(inside, (hsv[..., 0].astype(int) + degrees // 2) % 180, hsv[..., 0])
    return Image.fromarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def relit(pid: str, gain: float = 0.85, tint: tuple[float, float, float] = (1.03, 1.0, 0.96)
          ) -> Image.Image:
    rgb = np.asarray(photo(pid)[0]).astype(np.float32) * gain * np.array(tint)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def painted_out(pid: str) -> Image.Image:
    """The photo with the product painted out (OpenCV inpainting over its dilated mask)."""
    image, truth = photo(pid)
    hole = cv2.dilate((np.asarray(truth) > 127).astype(np.uint8) * 255, np.ones((15, 15), np.uint8))
    return Image.fromarray(cv2.inpaint(np.asarray(image), hole, 7, cv2.INPAINT_TELEA))


def mirrored_in_place(pid: str) -> Image.Image:
    """The product mirrored inside its own box, where it stood (the old one painted out)."""
    image, truth = photo(pid)
    mask = np.asarray(truth) > 127
    x0, y0, x1, y1 = _bbox(mask)
    out = np.asarray(painted_out(pid)).copy()
    flipped, fmask = np.asarray(image)[y0:y1, x0:x1][:, ::-1], mask[y0:y1, x0:x1][:, ::-1]
    out[y0:y1, x0:x1][fmask] = flipped[fmask]
    return Image.fromarray(out)


def restructured(pid: str) -> Image.Image:
    """The product's print and shading replaced: inside its mask, a heavy blur of it plus bold
    diagonal stripes (its silhouette and mean colour kept)."""
    image, truth = photo(pid)
    rgb = np.asarray(image).astype(np.float32)
    yy, xx = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]]
    stripes = 40 * np.sign(np.sin(2 * np.pi * (xx + yy) / 14))[..., None]
    out = np.where((np.asarray(truth) > 127)[..., None],
                   cv2.GaussianBlur(rgb, (0, 0), 12) + stripes, rgb)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def corner_cutout(pid: str) -> Image.Image:
    """A "cut-out" that kept the top-left corner of the background and dropped the product."""
    rgb = np.asarray(photo(pid)[0])
    h, w = rgb.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    alpha[: int(0.3 * h), : int(0.3 * w)] = 255
    return Image.fromarray(np.dstack([rgb, alpha]))


# --- the same product passes ---------------------------------------------------------------


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_an_unchanged_product_passes_every_check(pid: str) -> None:
    image, truth = photo(pid)
    ctx = ScoreContext(task="enhance", output=image.copy(), source=image, mask=truth)
    scores = {m: compute(m, ctx) for m in METRICS}
    assert scores["identity"].value == 1.0
    assert scores["identity"].details["reasons"] == []
    assert scores["identity_ssim"].value is not None and scores["identity_ssim"].value > 0.97
    assert scores["identity_delta_e"].value is not None and scores["identity_delta_e"].value < 1
    assert scores["identity_shape_iou"].value is not None
    assert scores["identity_shape_iou"].value > 0.97
    assert scores["identity_kept"].value is not None and scores["identity_kept"].value > 0.97
    share = float((np.asarray(truth) > 127).mean())
    assert scores["identity_occupancy"].value == pytest.approx(share, abs=0.05)
    assert scores["identity"].details["method"] == "same_frame"
    for metric, score in scores.items():
        assert score.version == SCORER_VERSION == scorer_version(metric)
        assert score.missing_reason is None


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_the_product_relit_or_enhanced_passes(pid: str) -> None:
    for output in (relit(pid), relit(pid, 0.7, (1.0, 1.0, 1.0)), ops.autoenhance(photo(pid)[0])):
        result = run(pid, output)
        assert passes(result), reasons(result)
        # the relight compensation is in the details, and the raw figure next to it
        colour = result["details"]["delta_e"]
        assert colour["used"] == "relit" and colour["raw"] >= 0


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_the_product_moved_and_rescaled_into_a_new_frame_passes(pid: str) -> None:
    image, truth = photo(pid)
    output = paste(pid, size=(900, 900), fill=0.6, centre=(0.45, 0.55))
    result = run(pid, output)
    assert passes(result), reasons(result)
    located = result["located"]
    assert located.found and not located.mirrored and located.reason is None
    # where it was put: box centre at (0.45, 0.55) of 900 px, its longer side ~0.6 of 900
    x0, y0, x1, y1 = located.box
    assert (x0 + x1) / 2 == pytest.approx(0.45 * 900, abs=15)
    assert (y0 + y1) / 2 == pytest.approx(0.55 * 900, abs=15)
    box = _bbox(np.asarray(truth) > 127)
    expected = 0.6 * min(900 / (box[2] - box[0]), 900 / (box[3] - box[1]))
    assert np.sqrt(abs(np.linalg.det(located.homography[:2, :2]))) == pytest.approx(expected,
                                                                                   rel=0.05)
    assert located.mask_in_output.shape == (900, 900)
    assert 0.5 < located.mask_in_output[y0:y1, x0:x1].mean()


@pytest.mark.parametrize("pid", [BOTTLE, "kitchen-02", "jewelry-04"])
def test_the_local_baselines_keep_the_product(pid: str) -> None:
    image, truth = photo(pid)
    for output in (ops.cutout(image), ops.packshot(image, size=800)):
        ctx = ScoreContext(task="packshot", output=output, source=image, mask=truth)
        gate = compute("identity", ctx)
        assert gate.value == 1.0, gate.details["reasons"]
        assert compute("identity_kept", ctx).value > KEPT_MIN


# --- a different product fails, and says why ---------------------------------------------------


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_a_recoloured_product_fails_recoloured(pid: str) -> None:
    result = run(pid, hue_rotated(pid, 120))
    assert not passes(result)
    assert "recoloured" in reasons(result)
    assert result["measures"]["identity_delta_e"] > DELTA_E_MAX
    # found where it is: the structure is the product's
    assert result["located"].found and result["details"]["method"] == "same_frame"


def test_a_mirrored_product_fails_mirrored() -> None:
    for output in (photo(MUG)[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                   mirrored_in_place(MUG), paste(MUG, flip=True)):
        result = run(MUG, output)
        assert "mirrored" in reasons(result), reasons(result)
        assert result["located"].mirrored
        assert np.linalg.det(result["located"].homography[:2, :2]) < 0
    # the same placements unmirrored are not
    assert passes(run(MUG, paste(MUG)))


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_a_squashed_product_fails_reshaped(pid: str) -> None:
    result = run(pid, paste(pid, squash=(1.0, 0.6)))
    assert "reshaped" in reasons(result), reasons(result)
    shape = result["details"]["shape"]
    assert shape["iou"] < SHAPE_IOU_MIN or abs(np.log(shape["aspect"])) > np.log(1.2)


def test_another_product_in_its_place_fails() -> None:
    other = paste("kitchen-02")
    for pid in (BOTTLE, MUG):
        result = run(pid, other)
        assert not passes(result)
        assert reasons(result)[0] in ("product_not_found", "reshaped", "recoloured")


def test_a_product_half_out_of_the_frame_fails_cropped() -> None:
    result = run(BOTTLE, paste(BOTTLE, centre=(0.98, 0.5)))
    assert reasons(result) == ["cropped"]
    assert result["measures"]["identity_kept"] < KEPT_MIN
    assert result["details"]["in_frame"] < 0.7
    x0, _, x1, _ = result["located"].box
    assert x1 > 900 > x0  # the located box runs off the frame's right edge


@pytest.mark.parametrize("pid", [BOTTLE, MUG])
def test_a_blank_or_background_only_output_fails_product_not_found(pid: str) -> None:
    for output in (Image.new("RGB", (800, 800), (255, 255, 255)), painted_out(pid)):
        image, truth = photo(pid)
        ctx = ScoreContext(task="packshot", output=output, source=image, mask=truth)
        gate = compute("identity", ctx)
        assert gate.value == 0.0  # a finding, not a missing metric
        assert gate.details["reason"] == "product_not_found"
        assert gate.details["found"] is False
        assert compute("identity_kept", ctx).value == 0.0
        assert compute("identity_ssim", ctx).value == 0.0
        assert compute("identity_delta_e", ctx).value == 100.0


def test_a_restructured_product_fails_restructured() -> None:
    result = run(BOTTLE, restructured(BOTTLE))
    assert "restructured" in reasons(result)
    assert result["measures"]["identity_ssim"] < SSIM_MIN
    assert result["measures"]["identity_shape_iou"] > SHAPE_IOU_MIN  # the silhouette is kept


def test_a_cutout_of_background_fragments_fails_without_a_mask() -> None:
    """The handbag case: a cut-out that kept background and dropped the product, on a dataset
    without masks — the product is estimated from the source, and the alpha compared with it."""
    image, _ = photo(BOTTLE)
    ctx = ScoreContext(task="remove_background", output=corner_cutout(BOTTLE), source=image)
    kept = compute("identity_kept", ctx)
    assert kept.value is not None and kept.value < 0.05
    assert kept.details["source_mask"]["kind"] == "estimated"
    assert kept.details["source_mask"]["confidence"] > 0.5
    gate = compute("identity", ctx)
    assert gate.value == 0.0 and gate.details["reason"] == "product_not_found"
    # the real cut-out of the same photo, judged against the same estimate, passes
    real = ScoreContext(task="remove_background", output=ops.cutout(image), source=image)
    assert compute("identity", real).value == 1.0
    assert compute("identity_kept", real).value > 0.95


def test_an_empty_cutout_fails_product_not_found() -> None:
    image, truth = photo(BOTTLE)
    empty = Image.fromarray(np.dstack([np.asarray(image), np.zeros(image.size[::-1], np.uint8)]))
    result = analyse(image, truth, empty)
    assert result["details"]["reason"] == "product_not_found"
    assert result["measures"]["identity_kept"] == 0.0


def test_kitchen01_threshold_packshot_loses_the_mug_and_fails() -> None:
    image, truth = photo(MUG)
    for output in (ops.packshot(image, size=800, cutout_method="threshold"),
                   ops.cutout(image, method="threshold")):
        ctx = ScoreContext(task="packshot", output=output, source=image, mask=truth)
        gate = compute("identity", ctx)
        assert gate.value == 0.0
        assert gate.details["reason"] == "product_not_found"
        assert compute("identity_kept", ctx).value < 0.1


REAL = SAMPLE.parent / "real"


@cache
def real_photo(pid: str) -> tuple[Image.Image, Image.Image]:
    """A real photo of datasets/real and its hand-drawn mask (for checking only)."""
    image = Image.open(REAL / "images" / f"{pid}.jpg").convert("RGB")
    return image, Image.open(REAL / "masks" / f"{pid}.png").convert("L")


@pytest.mark.parametrize("pid", ["real-kitchen-01", "real-toys-01", "real-electronics-01"])
def test_a_real_photos_cutout_that_kept_fragments_fails_without_ground_truth(pid: str) -> None:
    """The handbag case on real photos: the local cut-out keeps a fragment (the cup's rim and
    crema; the orbiter's tank; a few chips of a board that fills the frame) and drops the rest
    (IoU with the hand-drawn mask 0.17, 0.25, 0.05).
    Without the mask, the two readings of the main object disagree and the cut-out must keep
    the product under each: it does not. A cut-out along the hand-drawn mask passes."""
    image, truth = real_photo(pid)
    estimate = estimate_main_object(image)
    assert estimate.details["ambiguous"] and estimate.alternative is not None
    fragment = ops.cutout(image)
    alpha = np.asarray(fragment)[..., 3] > 127
    gt = np.asarray(truth) > 127
    assert (alpha & gt).sum() / (alpha | gt).sum() < 0.3  # it did drop the product
    result = analyse(image, None, fragment)
    assert not passes(result) and "cropped" in reasons(result)
    assert result["details"]["source_mask"]["kind"] == "estimated"
    assert result["details"]["source_mask"]["judged_by"] == "centre_prior+grabcut"
    perfect = image.copy()
    perfect.putalpha(truth)
    assert passes(analyse(image, None, perfect))


def test_a_real_photo_whose_main_object_cannot_be_singled_out_is_missing() -> None:
    """A camcorder on a tripod, held by its operator, in grey: nothing stands out from the
    frame's centre, so the border reading (a 5 % component) cannot be checked: identity is
    missing, not a pass."""
    image, _ = real_photo("real-electronics-02")
    estimate = estimate_main_object(image)
    assert estimate.confidence == 0.0 and estimate.alternative is None
    score = compute("identity", ScoreContext(task="remove_background",
                                             output=ops.cutout(image), source=image))
    assert score.value is None and "guess" in (score.missing_reason or "")


@pytest.mark.parametrize("pid", [BOTTLE, "kitchen-02", "furniture-01", "jewelry-01"])
def test_on_plain_backdrops_the_two_readings_agree(pid: str) -> None:
    """The centre-prior reading agrees with the border-distance one where the backdrop is
    plain (a ring's hole is the backdrop's own colour, so not part of either)."""
    estimate = estimate_main_object(photo(pid)[0])
    assert not estimate.details["ambiguous"] and estimate.alternative is None
    assert estimate.details["centre_prior_agreement"] >= 0.8


# --- the main object of a photo without a mask -----------------------------------------------


@pytest.mark.parametrize("pid", [BOTTLE, "kitchen-02", "furniture-01"])
def test_the_main_object_is_estimated_on_plain_backdrops(pid: str) -> None:
    image, truth = photo(pid)
    estimate = estimate_main_object(image)
    gt = np.asarray(truth) > 127
    iou = (estimate.mask & gt).sum() / (estimate.mask | gt).sum()
    assert iou > 0.85
    assert estimate.confidence > 0.5
    assert estimate.method == "border_distance+grabcut"
    assert estimate.mask.shape == gt.shape


def test_without_a_mask_a_busy_scene_whose_main_object_is_a_guess_is_missing() -> None:
    image, _ = photo("apparel-04")  # a cap on a backdrop of many bright shapes
    estimate = estimate_main_object(image)
    assert estimate.confidence < 0.2
    score = compute("identity", ScoreContext(task="enhance", output=image, source=image))
    assert score.value is None and "guess" in (score.missing_reason or "")


def test_a_featureless_image_has_no_main_object() -> None:
    flat = Image.new("RGB", (300, 200), (200, 180, 160))
    estimate = estimate_main_object(flat)
    assert estimate.confidence == 0.0 and not estimate.mask.any()
    ctx = ScoreContext(task="enhance", output=flat, source=flat)
    score = compute("identity", ctx)
    assert score.value is None and "no main object" in (score.missing_reason or "")


def test_the_product_crops_for_masked_clip_hold_the_product_alone() -> None:
    """``clip_identity``'s inputs: the product cut from the source by its mask and from a
    packshot where identity found it, the rest grey; none when the product was lost."""
    image, truth = photo(BOTTLE)
    ctx = ScoreContext(task="packshot", output=ops.packshot(image, size=800), source=image,
                       mask=truth)
    source_crop, output_crop = product_crops(ctx)
    box = np.argwhere(np.asarray(truth) > 127)
    (y0, x0), (y1, x1) = box.min(axis=0), box.max(axis=0) + 1
    margin = round(0.05 * max(x1 - x0, y1 - y0))
    assert source_crop.size == (x1 - x0 + 2 * margin, y1 - y0 + 2 * margin)
    corner = np.asarray(source_crop)[0, 0]
    assert (corner == 128).all()  # outside the product: grey, not the backdrop
    ratio = output_crop.width / output_crop.height
    assert abs(ratio - source_crop.width / source_crop.height) < 0.1
    mug, mug_truth = photo(MUG)
    lost = ScoreContext(task="packshot", output=ops.packshot(mug, size=800,
                                                             cutout_method="threshold"),
                        source=mug, mask=mug_truth)
    with pytest.raises(ValueError, match="not found"):
        product_crops(lost)


# --- missing only when nothing can be measured -------------------------------------------------


def test_missing_without_a_source_or_with_a_mask_of_another_size() -> None:
    image, truth = photo(BOTTLE)
    for metric in METRICS:
        score = compute(metric, ScoreContext(task="packshot", output=image))
        assert score.value is None and score.missing_reason == "no source image"
        bad = compute(metric, ScoreContext(task="packshot", output=image, source=image,
                                           mask=truth.resize((50, 50))))
        assert bad.value is None and "differ in size" in (bad.missing_reason or "")
    with pytest.raises(ValueError, match="differ in size"):
        locate_product(image, truth.resize((50, 50)), image)


def test_registration() -> None:
    for metric in METRICS:
        assert SCORERS[metric][1] == SCORER_VERSION == "identity-1"
    assert "identity_delta_e" in LOWER_IS_BETTER
    assert not {"identity", "identity_ssim", "identity_kept"} & LOWER_IS_BETTER
    image, truth = photo(BOTTLE)
    score = compute("identity", ScoreContext(task="enhance", output=image, source=image,
                                             mask=truth))
    thresholds = score.details["thresholds"]
    assert thresholds["delta_e_max"] == DELTA_E_MAX and thresholds["ssim_min"] == SSIM_MIN
    assert set(score.details["measures"]) == set(METRICS)
