"""Specification of pixellab.providers.local.video: the free image-to-video baselines.

Every clip here is really encoded and decoded again (PyAV), kept short and small (1-1.5 s at
360p and 12 fps) so the file runs in seconds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from pixellab.catalog import load_catalog
from pixellab.errors import InvalidRequest
from pixellab.providers.base import JobState, ProviderRequest
from pixellab.providers.local import LocalProvider
from pixellab.providers.local.video import (
    ASPECT_RATIOS,
    RESOLUTIONS,
    angles,
    clip_spec,
    frame_size,
    kenburns,
    parallax,
)

SMALL: dict[str, Any] = {"duration_s": 1.5, "fps": 12, "resolution": "360p"}
RED = (210, 40, 40)

# --- pictures made on the fly ----------------------------------------------------------------


def scene(colour: tuple[int, int, int] = RED, shape: str = "ellipse",
          size: tuple[int, int] = (480, 480), seed: int = 0) -> Image.Image:
    """A product of one saturated colour on a textured, shaded grey-blue backdrop: texture
    everywhere, so any camera motion changes the pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    backdrop = (np.array([150.0, 160.0, 175.0]) + 30 * (yy / h)[..., None]
                + 18 * (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None])
    cx, cy, rx, ry = w / 2, h * 0.52, w * 0.2, h * 0.26
    if shape == "ellipse":
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    elif shape == "box":
        inside = (abs(xx - cx) <= rx) & (abs(yy - cy) <= ry * 0.8)
    else:  # triangle
        inside = (yy >= cy - ry) & (yy <= cy + ry) & (abs(xx - cx) <= (yy - cy + ry) / 2 / ry * rx)
    shade = (1.0 - 0.35 * ((xx - cx + rx) / (2 * rx)).clip(0, 1))[..., None]
    pixels = np.where(inside[..., None], np.array(colour, float) * shade, backdrop)
    pixels += rng.normal(0, 2, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


ANGLE_PHOTOS = [scene(RED, "ellipse"), scene((40, 170, 60), "box", (600, 450), seed=1),
                scene((40, 70, 210), "triangle", (450, 600), seed=2)]


@dataclass(frozen=True)
class Clip:
    container: str
    codec: str
    pix_fmt: str
    fps: Fraction
    duration_s: float
    frames: list[np.ndarray]

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].shape[1], self.frames[0].shape[0]


def decode(data: bytes) -> Clip:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate is not None and container.duration is not None
        return Clip(container.format.name, ctx.name, str(ctx.pix_fmt),
                    Fraction(stream.average_rate), container.duration / av.time_base, frames)


def thumb(array: np.ndarray | Image.Image, size: int = 24) -> np.ndarray:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BOX), float)


def distance(a: np.ndarray | Image.Image, b: np.ndarray | Image.Image) -> float:
    return float(np.abs(thumb(a) - thumb(b)).mean())


OPS: dict[str, Callable[..., bytes]] = {
    "kenburns": lambda **kw: kenburns(scene(), **kw),
    "parallax": lambda **kw: parallax(scene(), **kw),
    "angles": lambda **kw: angles(ANGLE_PHOTOS, **kw),
    "turntable": lambda **kw: angles(ANGLE_PHOTOS, transition="turntable", **kw),
}


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """Each operation once, 9:16 at 360p, seed 0 (shared by the tests that only look)."""
    return {name: op(**SMALL, aspect_ratio="9:16") for name, op in OPS.items()}


# --- sizes and parameters --------------------------------------------------------------------


@pytest.mark.parametrize("aspect_ratio", list(ASPECT_RATIOS))
@pytest.mark.parametrize("resolution", list(RESOLUTIONS))
def test_frame_size_has_the_short_side_and_the_aspect_in_even_pixels(aspect_ratio: str,
                                                                     resolution: str) -> None:
    w, h = frame_size(aspect_ratio, resolution)
    a, b = ASPECT_RATIOS[aspect_ratio]
    assert min(w, h) == RESOLUTIONS[resolution]
    assert w % 2 == 0 and h % 2 == 0
    assert abs(w / h - a / b) < 2 / min(w, h)


def test_frame_sizes_of_the_common_formats() -> None:
    assert frame_size("9:16", "480p") == (480, 854)
    assert frame_size("16:9", "1080p") == (1920, 1080)
    assert frame_size("4:5", "720p") == (720, 900)
    assert clip_spec(4, 24, "1:1", "360p").frames == 96


@pytest.mark.parametrize(("param", "value"), [
    ("duration_s", 0.2), ("duration_s", 30), ("duration_s", "long"), ("fps", 5), ("fps", 120),
    ("fps", True), ("aspect_ratio", "3:2"), ("resolution", "2k"), ("seed", 1.5),
    ("zoom", 3.0),
])
def test_a_bad_parameter_is_a_value_error_naming_it(param: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{param} "):
        kenburns(scene(), **{**SMALL, "aspect_ratio": "1:1", param: value})


def test_parallax_checks_the_cutout_method_and_takes_any_integer_seed() -> None:
    with pytest.raises(ValueError, match="^cutout_method "):
        parallax(scene(), **SMALL, cutout_method="magic")
    assert decode(parallax(scene(), duration_s=0.5, fps=8, resolution="360p",
                           seed=-(2**70))).size == (360, 640)


# --- every operation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPS))
def test_each_operation_makes_an_h264_mp4_of_the_requested_shape(name: str,
                                                                 clips: dict[str, bytes]) -> None:
    clip = decode(clips[name])
    assert "mp4" in clip.container and clip.codec == "h264" and clip.pix_fmt == "yuv420p"
    assert clip.fps == 12
    assert abs(len(clip.frames) - 18) <= 1
    assert abs(clip.duration_s - 1.5) <= 1 / 12 + 1e-6
    assert clip.size == frame_size("9:16", "360p") == (360, 640)


@pytest.mark.parametrize(("name", "aspect_ratio"), [
    ("kenburns", "16:9"), ("parallax", "1:1"), ("angles", "4:5")])
def test_other_aspect_ratios_set_the_frame(name: str, aspect_ratio: str) -> None:
    clip = decode(OPS[name](duration_s=0.5, fps=8, resolution="360p", aspect_ratio=aspect_ratio))
    assert clip.size == frame_size(aspect_ratio, "360p")
    assert len(clip.frames) == 4


@pytest.mark.parametrize("name", list(OPS))
def test_output_is_deterministic_and_the_seed_changes_it(name: str,
                                                         clips: dict[str, bytes]) -> None:
    again = OPS[name](**SMALL, aspect_ratio="9:16")
    assert again == clips[name]
    if name != "turntable":  # same seed logic as angles
        assert OPS[name](**SMALL, aspect_ratio="9:16", seed=7) != clips[name]


@pytest.mark.parametrize("name", list(OPS))
def test_frames_move_and_the_first_resembles_the_photo(name: str, clips: dict[str, bytes]) -> None:
    frames = [f.astype(np.int16) for f in decode(clips[name]).frames]
    steps = [float(np.abs(b - a).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    assert max(steps) > 0.5 and np.mean(steps) > 0.2
    assert float(np.abs(frames[-1] - frames[0]).mean()) > 2  # it went somewhere
    source = scene()
    first = decode(clips[name]).frames[0]
    # the 9:16 frame shows the square photo whole over a blurred backdrop: compare its middle
    w, h = first.shape[1], first.shape[0]
    middle = first[(h - w) // 2:(h + w) // 2]
    assert distance(middle, source) < 6
    assert distance(middle, source) < distance(middle, scene((40, 70, 210), "triangle"))


def test_kenburns_fills_a_close_aspect_by_cropping_and_a_far_one_over_a_backdrop() -> None:
    square = decode(kenburns(scene(), duration_s=0.5, fps=8, resolution="360p",
                             aspect_ratio="1:1")).frames[0]
    assert distance(square, scene()) < 8  # the whole photo, same aspect
    tall = decode(kenburns(scene(), duration_s=0.5, fps=8, resolution="360p",
                           aspect_ratio="9:16", seed=1)).frames[0].astype(float)
    band = tall[:40]
    assert band.std(axis=(0, 1)).max() < 25  # blurred, not the photo's texture
    assert band.mean() < 150  # darkened
    assert band.mean() > 20  # and not black bars


def test_parallax_keeps_the_product_visible_in_every_frame(clips: dict[str, bytes]) -> None:
    frames = decode(clips["parallax"]).frames
    red = [int(((f[..., 0] > 140) & (f[..., 1] < 90) & (f[..., 2] < 90)).sum()) for f in frames]
    expected = np.pi * (0.2 * 360) * (0.26 * 360) * 0.6  # the ellipse at frame scale, shaded part
    assert min(red) > 0.5 * expected
    assert max(red) > min(red)  # the product grows as it comes forward


@pytest.mark.parametrize("name", ["angles", "turntable"])
def test_angles_shows_every_photo_in_order(name: str, clips: dict[str, bytes]) -> None:
    frames = decode(clips[name]).frames
    best = []
    for frame in frames:
        w, h = frame.shape[1], frame.shape[0]
        scores = [distance(frame, _as_placed(photo, w, h)) for photo in ANGLE_PHOTOS]
        order = sorted(range(len(scores)), key=scores.__getitem__)
        if scores[order[1]] - scores[order[0]] > 10:  # clearly one photo (not mid-transition)
            best.append(order[0])
    assert set(best) == {0, 1, 2}
    shown = [b for i, b in enumerate(best) if i == 0 or best[i - 1] != b]
    assert shown[:3] == [0, 1, 2]
    if name == "angles":
        assert shown == [0, 1, 2]


def _as_placed(photo: Image.Image, w: int, h: int) -> np.ndarray:
    """The photo fitted whole in a w x h frame on mid grey (enough to tell photos apart)."""
    canvas = Image.new("RGB", (w, h), (90, 90, 90))
    fitted = photo.copy()
    fitted.thumbnail((w, h))
    canvas.paste(fitted, ((w - fitted.width) // 2, (h - fitted.height) // 2))
    return np.asarray(canvas)


SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"


def test_the_sample_dataset_has_multi_angle_products_with_masks() -> None:
    with (SAMPLE / "manifest.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["angles"]]
    assert len(rows) >= 4 and len({r["category"] for r in rows}) >= 4
    for row in rows:
        views = row["angles"].split(";")
        assert 2 <= len(views) <= 3
        for view in views:
            photo = Image.open(SAMPLE / view)
            mask = Image.open(SAMPLE / view.replace(".jpg", "-mask.png"))
            assert photo.mode == "RGB" and mask.mode == "L" and mask.size == photo.size
            assert 0.03 < (np.asarray(mask) > 127).mean() < 0.7


def test_angles_shows_each_view_of_a_sample_product() -> None:
    with (SAMPLE / "manifest.csv").open(encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["id"] == "furniture-04")
    photos = [Image.open(SAMPLE / p).convert("RGB")
              for p in [row["image"], *row["angles"].split(";")]]
    frames = decode(angles(photos, duration_s=2, fps=12, resolution="360p",
                           aspect_ratio="1:1")).frames
    best = {min(range(len(photos)), key=lambda i: distance(f, _as_placed(photos[i], 360, 360)))
            for f in frames}
    assert best == set(range(len(photos)))


def test_angles_needs_two_photos_and_a_known_transition() -> None:
    with pytest.raises(ValueError, match="^angles needs at least one more photo"):
        angles([scene()], **SMALL)
    with pytest.raises(ValueError, match="^transition "):
        angles(ANGLE_PHOTOS, **SMALL, transition="wipe")


def test_an_rgba_photo_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (80, 80), (200, 30, 30, 255)), (60, 60))
    first = decode(kenburns(rgba, duration_s=0.5, fps=8, resolution="360p",
                            aspect_ratio="1:1")).frames[0]
    assert first[:20, :20].mean() > 235


# --- through the provider --------------------------------------------------------------------


async def submit(model_id: str, params: dict[str, Any], image: bytes | None = None) -> Any:
    model = load_catalog().model(model_id)
    request = ProviderRequest("k", model, image if image is not None else png(scene()),
                              "image/png", params)
    return await LocalProvider().submit(request)


@pytest.mark.parametrize("model_id", ["local:kenburns", "local:parallax", "local:angles"])
async def test_the_provider_returns_video_mp4(model_id: str) -> None:
    params: dict[str, Any] = {"duration_s": 0.5, "fps": 8, "resolution": "360p",
                              "aspect_ratio": "16:9", "seed": 3, "prompt": "ignored"}
    if model_id == "local:angles":
        params["angles"] = [png(ANGLE_PHOTOS[1]), png(ANGLE_PHOTOS[2])]
    job = await submit(model_id, params)
    assert job.state is JobState.SUCCEEDED and job.output is not None
    assert job.output.media_type == "video/mp4"
    clip = decode(job.output.data)
    assert clip.size == (640, 360) and len(clip.frames) == 4


async def test_image_operations_still_return_png() -> None:
    job = await submit("local:cutout-threshold", {})
    assert job.output.media_type == "image/png"


def test_the_video_models_are_free_per_second_and_default_to_a_4s_vertical_clip() -> None:
    catalog = load_catalog()
    for model_id in ("local:kenburns", "local:parallax", "local:angles"):
        model = catalog.model(model_id)
        assert model.pricing.unit == "second" and model.pricing.usd_per_unit == 0
        assert model.max_concurrency == 2
        inputs = model.provider_inputs({})
        assert (inputs["duration_s"], inputs["fps"], inputs["aspect_ratio"],
                inputs["resolution"]) == (4, 24, "9:16", "480p")
        assert {"duration_s", "fps", "aspect_ratio", "resolution", "seed"} <= set(model.inputs)
    assert catalog.model("local:angles").inputs["angles"] == "angles"


ONE_MORE = {"angles": [png(ANGLE_PHOTOS[1])]}


@pytest.mark.parametrize(("params", "named"), [
    ({**ONE_MORE, "duration_s": 25}, "duration_s"), ({**ONE_MORE, "fps": 4}, "fps"),
    ({**ONE_MORE, "aspect_ratio": "21:9"}, "aspect_ratio"),
    ({**ONE_MORE, "resolution": "4k"}, "resolution"), ({**ONE_MORE, "seed": "x"}, "seed"),
    ({}, "angles"), ({"angles": []}, "angles"), ({"angles": b"not a list"}, "angles"),
    ({"angles": ["text"]}, r"angles\[0\]"),
    ({"angles": [b"not an image"]}, r"angles\[0\] rejected"),
])
async def test_bad_params_are_an_invalid_request_naming_the_param(params: dict[str, Any],
                                                                  named: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{named}"):
        await submit("local:angles", params)


async def test_a_bad_main_image_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="input image rejected"):
        await submit("local:kenburns", {}, image=b"\x89PNG broken")
