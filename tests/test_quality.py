"""Specification of pixellab.scoring.quality: blank, sharpness, exposure and compliance scores."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pixellab.errors import ConfigError
from pixellab.providers.local.ops import packshot as local_packshot
from pixellab.scoring.base import ScoreContext
from pixellab.scoring.quality import (
    SCORER_VERSION,
    MarketplaceProfile,
    WhiteBorderRule,
    load_marketplace_profiles,
    score_blank,
    score_compliance,
    score_exposure,
    score_sharpness,
)
from pixellab.validate import check_image_output

# --- images made on the fly ------------------------------------------------------------------


def packshot(
    size: tuple[int, int] = (1600, 1600), fill: float = 0.88, background: int = 255
) -> Image.Image:
    """A shaded rectangle product whose width is ``fill`` × the longest side, centred."""
    w, h = size
    arr = np.full((h, w, 3), background, np.uint8)
    pw = round(fill * max(w, h))
    ph = round(pw * 0.6)
    x0, y0 = (w - pw) // 2, (h - ph) // 2
    shade = np.linspace(40, 200, pw, dtype=np.float64).astype(np.uint8)
    arr[y0 : y0 + ph, x0 : x0 + pw] = shade[None, :, None]
    return Image.fromarray(arr)


def cutout(size: int = 1600, fill: float = 0.88) -> Image.Image:
    """RGBA: a shaded product on a fully transparent background whose hidden colour is black."""
    arr = np.zeros((size, size, 4), np.uint8)
    pw = round(fill * size)
    x0 = (size - pw) // 2
    rng = np.random.default_rng(4)
    arr[x0 : x0 + pw, x0 : x0 + pw, :3] = rng.integers(60, 200, (pw, pw, 3), dtype=np.uint8)
    arr[x0 : x0 + pw, x0 : x0 + pw, 3] = 255
    return Image.fromarray(arr, "RGBA")


def product_photo(size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A textured red ellipse 'product' on a blue-grey gradient backdrop, as a phone would shoot."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    backdrop = np.stack([150 + 40 * yy / h, 170 + 30 * yy / h, 200 - 20 * xx / w], axis=-1)
    inside = ((xx - w / 2) / (0.25 * w)) ** 2 + ((yy - h / 2) / (0.35 * h)) ** 2 <= 1
    texture = 25 * np.sin(xx / 3) * np.cos(yy / 4)
    product = np.array([180.0, 40.0, 40.0]) * (1.1 - 0.4 * xx / w)[..., None] + texture[..., None]
    pixels = np.where(inside[..., None], product, backdrop)
    pixels += np.random.default_rng(0).normal(0, 2, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def generated_packshot() -> Image.Image:
    """What the local provider's packshot op makes of a product photo: 1600 px, on white."""
    return local_packshot(product_photo(), size=1600)


def ctx(image: Image.Image) -> ScoreContext:
    return ScoreContext(task="packshot", output=image)


def rule(score_details: dict, name: str) -> dict:
    return next(r for r in score_details["rules"] if r["rule"] == name)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


NOISY = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
BLACK = Image.new("RGB", (64, 48), (0, 0, 0))
GREY = Image.new("RGB", (64, 48), (128, 128, 128))
TRANSPARENT = Image.new("RGBA", (64, 48), (255, 0, 0, 0))


# --- blank -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", [BLACK, GREY, TRANSPARENT], ids=["black", "grey", "transparent"])
def test_blank_output_scores_one(image: Image.Image) -> None:
    assert score_blank(ctx(image)).value == 1.0


def test_noisy_output_scores_zero_blank() -> None:
    assert score_blank(ctx(NOISY)).value == 0.0


def test_blank_details_report_std_max_and_alpha_coverage() -> None:
    details = score_blank(ctx(GREY)).details
    assert {k: details[k] for k in ("std", "max", "alpha_coverage")} == {
        "std": 0.0,
        "max": 128,
        "alpha_coverage": 1.0,
    }


def test_blank_score_carries_metric_name_and_version() -> None:
    score = score_blank(ctx(NOISY))
    assert (score.metric, score.version) == ("blank", SCORER_VERSION)


@pytest.mark.parametrize("image", [NOISY, BLACK, GREY, TRANSPARENT, packshot((200, 200))])
def test_blank_score_agrees_with_the_output_validator(image: Image.Image) -> None:
    check = check_image_output(png(image))
    validator_blank = (check.reason or "").startswith("blank_")
    assert score_blank(ctx(image)).value == (1.0 if validator_blank else 0.0)


# --- profiles --------------------------------------------------------------------------------


def test_bundled_profiles_include_amazon_google_and_shopify() -> None:
    assert {"amazon_main", "google_merchant", "shopify"} <= set(load_marketplace_profiles())


def test_amazon_main_is_square_within_one_percent_and_at_most_10000_px() -> None:
    amazon = load_marketplace_profiles()["amazon_main"]
    assert (amazon.max_aspect_ratio, amazon.max_side) == (1.01, 10000)


def test_amazon_main_requires_pure_white_border_85_fill_and_1000_px_zoom() -> None:
    amazon = load_marketplace_profiles()["amazon_main"]
    border = amazon.white_border
    assert (
        border and border.white_tolerance,
        amazon.min_fill,
        amazon.zoom_side,
        amazon.min_side,
    ) == (0, 0.85, 1000, 500)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "marketplaces.toml"
    path.write_text(text)
    return path


def test_fill_given_as_a_string_is_a_config_error_naming_file_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[profiles.amazon_main]\nmin_fill = "0.85"\n')
    with pytest.raises(ConfigError) as info:
        load_marketplace_profiles(path)
    message = str(info.value)
    assert (str(path) in message, "profiles.amazon_main.min_fill" in message) == (True, True)


def test_unknown_key_in_a_profile_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[profiles.shop]\nmin_fil = 0.8\n")
    with pytest.raises(ConfigError, match=r"profiles\.shop\.min_fil"):
        load_marketplace_profiles(path)


def test_fill_range_inverted_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[profiles.shop]\nmin_fill = 0.9\nmax_fill = 0.8\n")
    with pytest.raises(ConfigError, match="min_fill 0.9 is above max_fill 0.8"):
        load_marketplace_profiles(path)


def test_aspect_ratio_below_one_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[profiles.shop]\nmax_aspect_ratio = 0.5\n")
    with pytest.raises(ConfigError, match=r"profiles\.shop\.max_aspect_ratio"):
        load_marketplace_profiles(path)


def test_whole_number_aspect_ratio_is_accepted_as_a_float(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[profiles.shop]\nmax_aspect_ratio = 1\n")
    assert load_marketplace_profiles(path)["shop"].max_aspect_ratio == 1.0


def test_invalid_toml_syntax_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[profiles.shop\n")
    with pytest.raises(ConfigError, match="marketplaces.toml"):
        load_marketplace_profiles(path)


def test_unknown_profile_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ebay"):
        score_compliance(ctx(packshot()), "ebay")


# --- compliance: amazon_main -----------------------------------------------------------------


def test_centred_packshot_on_pure_white_passes_amazon_main() -> None:
    score = score_compliance(ctx(packshot()))
    assert (score.metric, score.value, score.details["failed"]) == (
        "compliance_amazon_main",
        1.0,
        [],
    )


def test_packshot_generated_by_the_local_op_passes_amazon_main(
    generated_packshot: Image.Image,
) -> None:
    score = score_compliance(ctx(generated_packshot))
    assert (score.value, score.details["failed"]) == (1.0, [])


def test_amazon_main_checks_border_fill_sizes_and_aspect_ratio(
    generated_packshot: Image.Image,
) -> None:
    rules = score_compliance(ctx(generated_packshot)).details["rules"]
    assert [r["rule"] for r in rules] == [
        "not_blank",
        "white_border",
        "fill",
        "min_side",
        "zoom_side",
        "max_side",
        "aspect_ratio",
    ]


@pytest.mark.parametrize(
    ("image", "failed", "measured", "in_message"),
    [
        (packshot(background=250), ["white_border"], 5, "max deviation 5 from 255"),
        (packshot(fill=0.5), ["fill"], 0.5, "spans 50.0% of the longest side"),
        (packshot((400, 400)), ["min_side", "zoom_side"], 400, "longest side 400 px"),
        (packshot((1200, 1000)), ["aspect_ratio"], 1.2, "aspect ratio 1.2:1"),
    ],
    ids=["off_white", "small_fill", "small_size", "non_square"],
)
def test_amazon_main_failure_names_the_rule_and_the_measured_value(
    image: Image.Image, failed: list[str], measured: float, in_message: str
) -> None:
    details = score_compliance(ctx(image)).details
    reported = [rule(details, name) for name in failed]
    assert (
        details["failed"],
        [r["measured"] for r in reported],
        [in_message in r["message"] for r in reported],
    ) == (failed, [measured] * len(failed), [True] * len(failed))


def test_non_square_failure_reports_width_height_and_the_allowed_ratio() -> None:
    portrait = packshot((1000, 1200), fill=0.8)
    aspect = rule(score_compliance(ctx(portrait)).details, "aspect_ratio")
    assert {k: aspect[k] for k in ("width", "height", "threshold", "passed")} == {
        "width": 1000,
        "height": 1200,
        "threshold": 1.01,
        "passed": False,
    }


def test_one_pixel_off_square_is_within_the_amazon_aspect_tolerance() -> None:
    assert score_compliance(ctx(packshot((1601, 1600)))).value == 1.0


def test_image_over_10000_px_fails_amazon_max_side() -> None:
    strip = packshot((10001, 100), fill=0.5)  # a strip keeps the test light; it fails more rules
    max_side = rule(score_compliance(ctx(strip)).details, "max_side")
    assert (max_side["passed"], max_side["measured"], max_side["threshold"]) == (
        False,
        10001,
        10000,
    )


def test_every_rule_reports_measured_threshold_and_message() -> None:
    rules = score_compliance(ctx(packshot())).details["rules"]
    assert [
        sorted({"rule", "passed", "measured", "threshold", "message"} - r.keys()) for r in rules
    ] == [[]] * len(rules)


def test_off_white_background_fails_white_border_with_the_measured_deviation() -> None:
    details = score_compliance(ctx(packshot(background=250))).details
    border = rule(details, "white_border")
    assert (details["failed"], border["measured"], "max deviation 5" in border["message"]) == (
        ["white_border"],
        5,
        True,
    )


def test_white_border_reports_the_fraction_of_off_white_band_pixels() -> None:
    arr = np.asarray(packshot()).copy()
    arr[:10, :800] = 254  # part of the top band
    border = rule(score_compliance(ctx(Image.fromarray(arr))).details, "white_border")
    band_px = border["band_px"]
    band_pixels = 4 * band_px * 1600 - 4 * band_px * band_px
    assert border["nonwhite_fraction"] == pytest.approx(10 * 800 / band_pixels)


def test_white_tolerance_lets_near_white_pass() -> None:
    lenient = MarketplaceProfile(white_border=WhiteBorderRule(band=0.02, white_tolerance=5))
    score = score_compliance(ctx(packshot(background=250)), "lenient", {"lenient": lenient})
    assert score.value == 1.0


def test_small_product_fails_fill_with_the_measured_fill() -> None:
    details = score_compliance(ctx(packshot(fill=0.5))).details
    assert (details["failed"], rule(details, "fill")["measured"]) == (["fill"], 0.5)


def test_800_px_image_fails_zoom_side_but_passes_the_500_px_minimum() -> None:
    details = score_compliance(ctx(packshot((800, 800)))).details
    assert (details["failed"], rule(details, "min_side")["passed"]) == (["zoom_side"], True)


def test_fill_of_a_cutout_is_measured_from_its_alpha_channel() -> None:
    fill = rule(score_compliance(ctx(cutout(fill=0.88))).details, "fill")
    assert (fill["source"], fill["measured"]) == ("alpha", 0.88)


def test_transparent_border_counts_as_white_as_displayed() -> None:
    assert rule(score_compliance(ctx(cutout())).details, "white_border")["passed"] is True


def test_opaque_rgba_packshot_measures_fill_from_non_white_pixels() -> None:
    fill = rule(score_compliance(ctx(packshot().convert("RGBA"))).details, "fill")
    assert (fill["source"], fill["measured"]) == ("non_white", 0.88)


def test_stray_speck_does_not_stretch_the_product_box() -> None:
    arr = np.asarray(packshot(fill=0.5)).copy()
    arr[5, 5] = 0  # one dark pixel in the corner (it still fails white_border)
    fill = rule(score_compliance(ctx(Image.fromarray(arr))).details, "fill")
    assert fill["measured"] == 0.5


def test_blank_white_output_fails_compliance_with_not_blank() -> None:
    score = score_compliance(ctx(Image.new("RGB", (1600, 1600), (255, 255, 255))))
    assert (score.value, "not_blank" in score.details["failed"]) == (0.0, True)


# --- compliance: other profiles --------------------------------------------------------------


def test_google_merchant_fails_fill_above_ninety_percent() -> None:
    details = score_compliance(ctx(packshot(fill=0.95)), "google_merchant").details
    assert (details["failed"], "above the 90.0% maximum" in rule(details, "fill")["message"]) == (
        ["fill"],
        True,
    )


@pytest.mark.parametrize("fill", [0.6, 0.95])
def test_google_merchant_fails_fill_outside_75_to_90_percent(fill: float) -> None:
    details = score_compliance(ctx(packshot(fill=fill)), "google_merchant").details
    assert (details["failed"], rule(details, "fill")["measured"]) == (["fill"], fill)


def test_google_merchant_passes_fill_between_75_and_90_percent() -> None:
    assert score_compliance(ctx(packshot(fill=0.8)), "google_merchant").value == 1.0


def test_google_merchant_does_not_check_the_background() -> None:
    rules = score_compliance(ctx(packshot(fill=0.8)), "google_merchant").details["rules"]
    assert "white_border" not in [r["rule"] for r in rules]


def test_shopify_fails_an_image_over_5000_px() -> None:
    wide = packshot((5001, 100), fill=0.5)
    assert score_compliance(ctx(wide), "shopify").details["failed"] == ["max_side"]


def test_shopify_fails_6000_by_4000_on_max_side_with_the_measured_side() -> None:
    details = score_compliance(ctx(packshot((6000, 4000), fill=0.5)), "shopify").details
    assert (details["failed"], rule(details, "max_side")["measured"]) == (["max_side"], 6000)


def test_shopify_does_not_require_a_square_image() -> None:
    assert score_compliance(ctx(packshot((1600, 1200))), "shopify").value == 1.0


def test_square_required_fails_a_non_square_image() -> None:
    square = MarketplaceProfile(square_required=True)
    details = score_compliance(ctx(packshot((1600, 1200))), "sq", {"sq": square}).details
    assert details["failed"] == ["square"]


def test_max_aspect_ratio_of_one_fails_a_one_pixel_difference() -> None:
    strict = MarketplaceProfile(max_aspect_ratio=1.0)
    details = score_compliance(ctx(packshot((1601, 1600))), "sq", {"sq": strict}).details
    assert (details["failed"], rule(details, "aspect_ratio")["measured"]) == (
        ["aspect_ratio"],
        round(1601 / 1600, 4),
    )


# --- sharpness -------------------------------------------------------------------------------


def blurred(image: Image.Image, sigma: float = 2.0) -> Image.Image:
    return Image.fromarray(cv2.GaussianBlur(np.asarray(image), (0, 0), sigma))


def test_blurred_copy_of_a_packshot_is_less_sharp(generated_packshot: Image.Image) -> None:
    original = score_sharpness(ctx(generated_packshot)).value
    blurry = score_sharpness(ctx(blurred(generated_packshot))).value
    assert original is not None and blurry is not None and blurry < original


def test_blurred_copy_of_a_photo_without_white_background_is_less_sharp() -> None:
    photo = product_photo()
    original = score_sharpness(ctx(photo)).value
    blurry = score_sharpness(ctx(blurred(photo))).value
    assert original is not None and blurry is not None and blurry < original


def test_sharpness_is_the_variance_of_the_laplacian_of_the_grayscale_image() -> None:
    gray = cv2.cvtColor(np.asarray(NOISY), cv2.COLOR_RGB2GRAY)
    expected = cv2.Laplacian(gray, cv2.CV_64F).var()
    assert score_sharpness(ctx(NOISY)).value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("image", [GREY, BLACK, Image.new("RGB", (64, 48), (255, 255, 255))])
def test_uniform_image_has_zero_sharpness_not_missing(image: Image.Image) -> None:
    score = score_sharpness(ctx(image))
    assert (score.value, score.missing_reason) == (0.0, None)


def test_fully_transparent_output_has_missing_sharpness() -> None:
    score = score_sharpness(ctx(TRANSPARENT))
    assert (score.value, "transparent" in (score.missing_reason or "")) == (None, True)


def test_packshot_sharpness_is_measured_over_the_product_only(
    generated_packshot: Image.Image,
) -> None:
    details = score_sharpness(ctx(generated_packshot)).details
    assert (details["region"], details["source"], 0 < details["pixels"] < 1600 * 1600) == (
        "product",
        "white_background",
        True,
    )


def test_cutout_sharpness_is_measured_over_its_alpha_mask() -> None:
    details = score_sharpness(ctx(cutout(fill=0.5))).details
    assert (details["region"], details["source"], details["pixels"]) == ("product", "alpha", 800**2)


def test_photo_without_white_background_is_measured_whole() -> None:
    details = score_sharpness(ctx(NOISY)).details
    assert (details["region"], details["pixels"]) == ("whole", 64 * 48)


def test_sharpness_details_say_higher_is_better_and_what_it_compares() -> None:
    score = score_sharpness(ctx(NOISY))
    assert (score.metric, score.version, score.details["better"], score.details["comparable"]) == (
        "sharpness",
        SCORER_VERSION,
        "higher",
        "same product and size",
    )


# --- exposure clipping -----------------------------------------------------------------------


def product_on_white(
    clipped_white: int = 0, clipped_black: int = 0, size: int = 400
) -> tuple[Image.Image, int]:
    """A mid-grey 200×100 product on pure white with ``clipped_white`` pixels of 255 and
    ``clipped_black`` pixels of 0 inside it (not touching its edge); and its pixel count."""
    arr = np.full((size, size, 3), 255, np.uint8)
    x0, y0, pw, ph = 100, 150, 200, 100
    product = np.full((ph, pw, 3), 128, np.uint8)
    interior = np.zeros((ph, pw), bool)
    interior[10:-10, 10:-10] = True
    where = np.flatnonzero(interior)
    flat = product.reshape(-1, 3)  # a view of the product's pixels
    flat[where[:clipped_white]] = 255
    flat[where[clipped_white : clipped_white + clipped_black]] = 0
    arr[y0 : y0 + ph, x0 : x0 + pw] = product
    return Image.fromarray(arr), pw * ph


def test_exposure_gives_the_fraction_of_blown_pixels_in_the_product() -> None:
    image, product_pixels = product_on_white(clipped_white=500)
    score = score_exposure(ctx(image))
    assert score.value == pytest.approx(500 / product_pixels, abs=1e-9)


def test_exposure_reports_shadows_and_highlights_separately() -> None:
    image, product_pixels = product_on_white(clipped_white=300, clipped_black=700)
    details = score_exposure(ctx(image)).details
    assert (
        details["shadows_clipped"],
        details["highlights_clipped"],
        details["region"],
        details["better"],
    ) == (
        pytest.approx(700 / product_pixels),
        pytest.approx(300 / product_pixels),
        "product",
        "lower",
    )


def test_exposure_of_a_cutout_counts_blown_pixels_inside_its_alpha() -> None:
    arr = np.asarray(cutout(fill=0.5)).copy()  # 800×800 opaque product, rest transparent black
    arr[400:410, 400:500, :3] = 255  # 1000 blown pixels inside the product
    score = score_exposure(ctx(Image.fromarray(arr, "RGBA")))
    assert (score.value, score.details["source"]) == (
        pytest.approx(1000 / 800**2, abs=1e-9),
        "alpha",
    )


def test_packshot_white_background_is_not_counted_as_blown_highlights(
    generated_packshot: Image.Image,
) -> None:
    details = score_exposure(ctx(generated_packshot)).details
    assert (details["highlights_clipped"], details["region"]) == (0.0, "product")


def test_photo_without_white_background_is_judged_whole() -> None:
    arr = np.full((40, 50, 3), 90, np.uint8)
    arr[:8] = 0  # a fifth of the frame crushed to black
    score = score_exposure(ctx(Image.fromarray(arr)))
    assert (score.value, score.details["region"]) == (pytest.approx(0.2, abs=1e-9), "whole")


def test_all_white_output_has_missing_exposure() -> None:
    score = score_exposure(ctx(Image.new("RGB", (64, 48), (255, 255, 255))))
    assert (score.metric, score.value, score.missing_reason is not None) == (
        "exposure_clipping",
        None,
        True,
    )
