"""Specification of pixellab.scoring.quality: blank and marketplace-compliance scores."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixellab.errors import ConfigError
from pixellab.scoring.base import ScoreContext
from pixellab.scoring.quality import (
    SCORER_VERSION,
    MarketplaceProfile,
    WhiteBorderRule,
    load_marketplace_profiles,
    score_blank,
    score_compliance,
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


def test_google_merchant_passes_fill_between_75_and_90_percent() -> None:
    assert score_compliance(ctx(packshot(fill=0.8)), "google_merchant").value == 1.0


def test_google_merchant_does_not_check_the_background() -> None:
    rules = score_compliance(ctx(packshot(fill=0.8)), "google_merchant").details["rules"]
    assert "white_border" not in [r["rule"] for r in rules]


def test_shopify_fails_an_image_over_5000_px() -> None:
    wide = packshot((5001, 100), fill=0.5)
    assert score_compliance(ctx(wide), "shopify").details["failed"] == ["max_side"]


def test_square_required_fails_a_non_square_image() -> None:
    square = MarketplaceProfile(square_required=True)
    details = score_compliance(ctx(packshot((1600, 1200))), "sq", {"sq": square}).details
    assert details["failed"] == ["square"]
