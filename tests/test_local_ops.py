"""Specification of pixellab.providers.local.ops: the classical baselines behind ``local``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter

from pixellab.providers.local.ops import (
    autoenhance,
    cutout,
    identity,
    packshot,
    solid,
    upscale,
)

METHODS = ("grabcut", "threshold")

# --- images made on the fly ------------------------------------------------------------------


def _coverage(w: int, h: int, inside, ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage (0-1) of a shape given as ``inside(x, y)``, sampled ss x ss per px."""
    ys, xs = np.mgrid[0 : h * ss, 0 : w * ss].astype(np.float64)
    fine = inside((xs + 0.5) / ss, (ys + 0.5) / ss).astype(np.float64)
    return fine.reshape(h, ss, w, ss).mean(axis=(1, 3))


def _background(w: int, h: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "gradient":
        t = (yy / h)[..., None]
        return (
            (1 - t) * np.array([205, 222, 240])
            + t * np.array([120, 138, 170])
            + (xx / w)[..., None] * np.array([18, 0, -18])
        )
    if kind == "dark":
        return np.array([35.0, 40.0, 52.0]) + rng.normal(0, 2, (h, w, 3))
    if kind == "textured":
        # ceramic tiles with grout lines, blotchy shading and sensor noise
        tiles = np.array([196, 186, 168]) * (
            1 + 0.06 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]
        )
        grout = ((xx % 48) < 3) | ((yy % 48) < 3)
        tiles[grout] = (150, 145, 135)
        return tiles + rng.normal(0, 10, (h, w, 3))
    raise ValueError(kind)


def product_scene(
    kind: str = "gradient",
    size: tuple[int, int] = (480, 360),
    centre: tuple[float, float] = (0.5, 0.5),
    radii: tuple[float, float] = (0.24, 0.36),
    colour: tuple[int, int, int] = (180, 40, 40),
    seed: int = 0,
) -> tuple[Image.Image, np.ndarray]:
    """A shaded, anti-aliased ellipse 'product' on a background; and its exact mask."""
    rng = np.random.default_rng(seed)
    w, h = size
    cx, cy = centre[0] * w, centre[1] * h
    rx, ry = radii[0] * w, radii[1] * h
    cover = _coverage(w, h, lambda x, y: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    light = np.clip(((xx - cx + 0.4 * rx) / rx) ** 2 + ((yy - cy + 0.4 * ry) / ry) ** 2, 0, 1)
    product = np.array(colour, np.float64) * (1.2 - 0.5 * light)[..., None]
    pixels = cover[..., None] * product + (1 - cover[..., None]) * _background(w, h, kind, rng)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image, cover >= 0.5


def iou(alpha: np.ndarray, mask: np.ndarray) -> float:
    found = alpha >= 128
    return float((found & mask).sum() / max((found | mask).sum(), 1))


def alpha_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[..., 3]


def channel_spread(image: Image.Image) -> float:
    """Mean over pixels of (max channel - min channel): 0 for a perfectly neutral image."""
    a = np.asarray(image).astype(np.float64)
    return float((a.max(axis=-1) - a.min(axis=-1)).mean())


def lightness_std(image: Image.Image) -> float:
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)
    return float(lab[..., 0].std())


def nonwhite_bbox(image: Image.Image, tolerance: int = 16) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends, of pixels darker than 255 - tolerance in any channel."""
    a = np.asarray(image).astype(np.int32)
    ys, xs = np.nonzero((255 - a.min(axis=-1)) > tolerance)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.fixture(scope="module")
def gradient_scene() -> tuple[Image.Image, np.ndarray]:
    return product_scene("gradient")


@pytest.fixture(scope="module")
def textured_scene() -> tuple[Image.Image, np.ndarray]:
    return product_scene("textured", colour=(40, 70, 170), seed=1)


@pytest.fixture(scope="module")
def small_offcentre_scene() -> tuple[Image.Image, np.ndarray]:
    return product_scene("textured", centre=(0.24, 0.72), radii=(0.08, 0.1), colour=(30, 110, 60))


# --- autoenhance -----------------------------------------------------------------------------


def test_autoenhance_returns_rgb_of_the_input_size(gradient_scene):
    image, _ = gradient_scene
    out = autoenhance(image.convert("RGBA"))
    assert (out.mode, out.size) == ("RGB", image.size)


def test_autoenhance_removes_a_strong_colour_cast_from_a_neutral_scene():
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float64)
    grey = 50 + 150 * xx / 400 + 25 * np.sin(yy / 17)
    cast = np.clip(grey[..., None] * np.array([1.0, 0.86, 0.66]), 0, 255).astype(np.uint8)
    before = Image.fromarray(cast)

    after = autoenhance(before)

    assert channel_spread(after) < 0.2 * channel_spread(before)


def test_autoenhance_leaves_a_coloured_backdrop_coloured_when_something_is_neutral():
    # an orange backdrop with a grey product is a coloured scene, not an orange colour cast
    image = np.full((300, 400, 3), (225, 140, 80), np.uint8)
    image[100:200, 150:250] = (128, 128, 128)

    out = np.asarray(autoenhance(Image.fromarray(image))).astype(int)

    assert out[20:60, 20:60].mean(axis=(0, 1))[0] - out[20:60, 20:60].mean(axis=(0, 1))[2] > 100


def test_autoenhance_raises_the_contrast_of_a_flat_image(gradient_scene):
    image, _ = gradient_scene
    flat = Image.fromarray(
        (128 + (np.asarray(image).astype(np.float64) - 128) * 0.35).astype(np.uint8)
    )

    assert lightness_std(autoenhance(flat)) > 1.3 * lightness_std(flat)


def test_autoenhance_reduces_sensor_noise_on_a_flat_area():
    rng = np.random.default_rng(3)
    noisy = np.clip(rng.normal(128, 8, (240, 320, 3)), 0, 255).astype(np.uint8)

    out = np.asarray(autoenhance(Image.fromarray(noisy))).astype(np.float64)

    assert out.std(axis=(0, 1)).mean() < 0.6 * noisy.std(axis=(0, 1)).mean()


def test_autoenhance_at_strength_zero_returns_the_input_pixels(gradient_scene):
    image, _ = gradient_scene
    assert autoenhance(image, strength=0.0).tobytes() == image.tobytes()


def test_autoenhance_at_half_strength_lies_between_input_and_full_result(gradient_scene):
    image, _ = gradient_scene
    src = np.asarray(image).astype(np.float64)
    full = np.asarray(autoenhance(image)).astype(np.float64)
    half = np.asarray(autoenhance(image, strength=0.5)).astype(np.float64)
    assert np.abs(half - (src + full) / 2).max() <= 1.0


def test_autoenhance_is_deterministic(textured_scene):
    image, _ = textured_scene
    assert autoenhance(image).tobytes() == autoenhance(image).tobytes()


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_autoenhance_rejects_strength_outside_zero_to_one(gradient_scene, strength):
    with pytest.raises(ValueError, match="strength"):
        autoenhance(gradient_scene[0], strength=strength)


# --- cutout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_cutout_returns_rgba_of_the_input_size(gradient_scene, method):
    image, _ = gradient_scene
    out = cutout(image, method=method)
    assert (out.mode, out.size) == ("RGBA", image.size)


@pytest.mark.parametrize("method", METHODS)
def test_cutout_finds_a_product_on_a_gradient(gradient_scene, method):
    image, mask = gradient_scene
    assert iou(alpha_of(cutout(image, method=method)), mask) >= 0.9


@pytest.mark.parametrize("method", METHODS)
def test_cutout_finds_a_product_on_a_noisy_textured_background(textured_scene, method):
    image, mask = textured_scene
    assert iou(alpha_of(cutout(image, method=method)), mask) >= 0.8


@pytest.mark.parametrize("method", METHODS)
def test_cutout_finds_a_small_off_centre_product(small_offcentre_scene, method):
    image, mask = small_offcentre_scene
    assert iou(alpha_of(cutout(image, method=method)), mask) >= 0.8


@pytest.mark.parametrize("method", METHODS)
def test_cutout_keeps_a_product_that_runs_off_the_bottom_edge(method):
    image, mask = product_scene("gradient", centre=(0.5, 0.85), radii=(0.25, 0.4), seed=5)
    assert iou(alpha_of(cutout(image, method=method)), mask) >= 0.9


@pytest.mark.parametrize("method", METHODS)
def test_cutout_downscales_for_work_and_still_fits_the_full_resolution_edge(method):
    image, mask = product_scene("gradient", size=(900, 700), seed=2)
    assert iou(alpha_of(cutout(image, method=method, work_size=256)), mask) >= 0.99


@pytest.mark.parametrize("method", METHODS)
def test_cutout_keeps_a_ring_hole_transparent(method):
    w, h = 400, 300
    outer = _coverage(w, h, lambda x, y: (x - 200) ** 2 + (y - 150) ** 2 <= 110**2)
    inner = _coverage(w, h, lambda x, y: (x - 200) ** 2 + (y - 150) ** 2 <= 55**2)
    ring = outer - inner
    pixels = ring[..., None] * np.array([200, 150, 40]) + (1 - ring[..., None]) * 235
    image = Image.fromarray(np.rint(pixels).astype(np.uint8))

    alpha = alpha_of(cutout(image, method=method))

    assert alpha[150, 200] == 0 and alpha[150, 200 + 80] == 255


@pytest.mark.parametrize("method", METHODS)
def test_cutout_of_an_empty_backdrop_is_fully_transparent(method):
    out = cutout(Image.new("RGB", (300, 200), (210, 215, 220)), method=method)
    assert alpha_of(out).max() == 0


@pytest.mark.parametrize("method", METHODS)
def test_cutout_soft_edge_carries_the_product_colour_not_the_background(method):
    image, _ = product_scene("gradient", colour=(200, 200, 40))
    rgba = np.asarray(cutout(image, method=method)).astype(np.float64)
    edge = (rgba[..., 3] > 10) & (rgba[..., 3] < 245)
    # the backdrop is blue-grey (B > R); a yellow product's soft edge must not turn bluish
    assert edge.any() and (rgba[edge, 2] < rgba[edge, 0]).all()


@pytest.mark.parametrize("method", METHODS)
def test_cutout_is_deterministic_whatever_ran_before(textured_scene, gradient_scene, method):
    image, _ = textured_scene
    first = cutout(image, method=method).tobytes()
    cutout(gradient_scene[0], method=method)
    assert cutout(image, method=method).tobytes() == first


def test_cutout_rejects_an_unknown_method(gradient_scene):
    with pytest.raises(ValueError, match="method"):
        cutout(gradient_scene[0], method="magic")


# --- packshot --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shot_with_shadow(gradient_scene) -> Image.Image:
    return packshot(gradient_scene[0], size=800)


@pytest.fixture(scope="module")
def shot_without_shadow(gradient_scene) -> Image.Image:
    return packshot(gradient_scene[0], size=800, shadow=False)


def test_packshot_is_a_square_rgb_image_of_the_requested_size(shot_with_shadow):
    assert (shot_with_shadow.mode, shot_with_shadow.size) == ("RGB", (800, 800))


@pytest.mark.parametrize("fill", [0.87, 0.96])
def test_packshot_border_band_of_two_percent_is_pure_white(gradient_scene, fill):
    shot = np.asarray(packshot(gradient_scene[0], size=800, fill=fill))
    band = 16  # 2 % of 800
    assert (shot[:band] == 255).all() and (shot[-band:] == 255).all()
    assert (shot[:, :band] == 255).all() and (shot[:, -band:] == 255).all()


def test_packshot_product_longer_side_is_fill_times_size(shot_without_shadow):
    x0, y0, x1, y1 = nonwhite_bbox(shot_without_shadow)
    assert max(x1 - x0, y1 - y0) == pytest.approx(0.87 * 800, rel=0.03)


def test_packshot_centres_the_product(shot_with_shadow):
    x0, _, x1, _ = nonwhite_bbox(shot_with_shadow)
    assert (x0 + x1) / 2 == pytest.approx(400, abs=0.03 * 800)


def test_packshot_draws_a_soft_grey_shadow_just_below_the_product(
    shot_with_shadow, shot_without_shadow
):
    _, _, _, bottom = nonwhite_bbox(shot_without_shadow)
    below = np.asarray(shot_with_shadow)[bottom + 1 : bottom + 8, 350:450].astype(int)
    grey = (below.max(axis=-1) - below.min(axis=-1) <= 2) & (below[..., 0] < 250)
    assert grey.any() and below.min() > 60


def test_packshot_without_shadow_keeps_the_area_below_the_product_white(shot_without_shadow):
    _, _, _, bottom = nonwhite_bbox(shot_without_shadow, tolerance=0)
    assert (np.asarray(shot_without_shadow)[bottom:] == 255).all()


def test_packshot_composites_edges_without_a_dark_halo():
    # a light product shot on a dark backdrop: no pixel of the packshot may come out darker than
    # the product's own darkest pixel (a dark fringe is backdrop colour leaking through the edge)
    image, mask = product_scene("dark", colour=(230, 220, 170))
    interior = np.asarray(Image.fromarray(mask).filter(ImageFilter.MinFilter(5))).astype(bool)
    darkest_product = int(np.asarray(image)[interior].min())

    shot = np.asarray(packshot(image, size=600, shadow=False))

    assert int(shot.min()) >= darkest_product - 6


def test_packshot_uses_the_alpha_of_an_rgba_input():
    rgba = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    rgba.paste((200, 30, 30, 255), (100, 50, 160, 150))  # 60 x 100 product
    shot = packshot(rgba, size=500, shadow=False)
    x0, y0, x1, y1 = nonwhite_bbox(shot)
    assert (y1 - y0, x1 - x0) == (round(0.87 * 500), round(0.87 * 500 * 60 / 100))


def test_packshot_of_a_photo_with_no_product_frames_the_whole_photo():
    blank = Image.new("RGB", (300, 200), (90, 120, 150))
    x0, y0, x1, y1 = nonwhite_bbox(packshot(blank, size=500, shadow=False))
    assert (x1 - x0, y1 - y0) == (round(0.87 * 500), round(0.87 * 500 * 200 / 300))


def test_packshot_is_deterministic(gradient_scene):
    image, _ = gradient_scene
    assert packshot(image, size=400).tobytes() == packshot(image, size=400).tobytes()


@pytest.mark.parametrize("fill", [0.0, 0.97])
def test_packshot_rejects_a_fill_that_would_reach_the_border(gradient_scene, fill):
    with pytest.raises(ValueError, match="fill"):
        packshot(gradient_scene[0], fill=fill)


# --- upscale ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_upscale_multiplies_both_sides_exactly(scale):
    out = upscale(Image.new("RGB", (123, 77), (10, 20, 30)), scale=scale)
    assert out.size == (123 * scale, 77 * scale)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_upscale_preserves_the_mode(gradient_scene, mode):
    assert upscale(gradient_scene[0].convert(mode)).mode == mode


def test_upscale_never_sharpens_alpha():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 60, 60, 255)
    out = np.asarray(upscale(Image.fromarray(rgba), scale=2, sharpen=1.0))
    plain = np.asarray(upscale(Image.fromarray(rgba), scale=2, sharpen=0.0))
    assert (out[..., 3] == plain[..., 3]).all()


def test_upscale_rejects_a_scale_of_three():
    with pytest.raises(ValueError, match="scale"):
        upscale(Image.new("RGB", (10, 10)), scale=3)


# --- test-catalog models ---------------------------------------------------------------------


def test_identity_returns_an_equal_copy(gradient_scene):
    image = gradient_scene[0].convert("RGBA")
    out = identity(image)
    assert out is not image
    assert (out.mode, out.size, out.tobytes()) == (image.mode, image.size, image.tobytes())


def test_solid_returns_a_uniform_image_of_the_input_size(gradient_scene):
    image = gradient_scene[0]
    out = solid(image, color=(12, 34, 56))
    assert out.size == image.size
    assert out.getcolors() == [(image.width * image.height, (12, 34, 56))]


def test_solid_is_black_by_default():
    assert solid(Image.new("RGB", (5, 4), "white")).getcolors() == [(20, (0, 0, 0))]
