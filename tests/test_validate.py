"""Specification of pixellab.validate: what untrusted image bytes are accepted, and why not."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pixellab import validate
from pixellab.errors import InvalidImage, InvalidInputImage
from pixellab.validate import (
    ALLOWED_IMAGE_FORMATS,
    MAX_IMAGE_PIXELS,
    MEDIA_TYPES,
    ImageCheck,
    check_image_output,
    decode_image,
    load_input_image,
)

# --- fixtures made on the fly ----------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noisy(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 255
        arr[: height // 2, :, 3] = 0  # half transparent, half opaque
    return Image.fromarray(arr, mode)


def solid(color: tuple[int, ...], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, size, color), "PNG")


def png_declaring(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose IHDR is patched to declare width×height (CRC fixed)."""
    png = encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG")
    assert png[12:16] == b"IHDR"
    ihdr = bytearray(png[8:33])  # length(4) type(4) data(13) crc(4)
    ihdr[8:16] = struct.pack(">II", width, height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return png[:8] + bytes(ihdr) + png[33:]


def reason_of(data: bytes, **kwargs: object) -> str:
    with pytest.raises(InvalidImage) as info:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


PNG = encode(noisy(), "PNG")
JPEG = encode(noisy(), "JPEG", quality=90)
WEBP = encode(noisy(), "WEBP", quality=90)
HTML = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body></body></html>"


# --- constants -------------------------------------------------------------------------------


def test_allow_list_is_png_jpeg_webp_with_media_types() -> None:
    assert ALLOWED_IMAGE_FORMATS == ("PNG", "JPEG", "WEBP")
    assert MEDIA_TYPES == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def test_our_pixel_cap_is_below_pillows_bomb_threshold() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    assert MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS


# --- decode_image: valid input ---------------------------------------------------------------


@pytest.mark.parametrize(("data", "fmt"), [(PNG, "PNG"), (JPEG, "JPEG"), (WEBP, "WEBP")])
def test_decode_returns_a_loaded_image_of_an_allowed_format(data: bytes, fmt: str) -> None:
    image = decode_image(data)
    assert (image.format, image.size) == (fmt, (64, 48))


def test_decode_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = encode(noisy(40, 20), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (20, 40)


def test_decode_leaves_global_pillow_settings_untouched() -> None:
    filters_before = list(warnings.filters)
    pixels_before = Image.MAX_IMAGE_PIXELS
    decode_image(PNG)
    with pytest.raises(InvalidImage):
        decode_image(png_declaring(50_000, 50_000))
    assert (list(warnings.filters), Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (
        filters_before,
        pixels_before,
        False,
    )


def test_decode_refuses_to_run_when_load_truncated_images_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(PNG)


# --- decode_image: every reason code ---------------------------------------------------------


def test_zero_bytes_are_rejected_as_zero_bytes() -> None:
    assert reason_of(b"") == "zero_bytes"


def test_bytes_over_the_byte_cap_are_rejected_before_decoding() -> None:
    assert reason_of(PNG, max_bytes=100) == "too_many_bytes"


def test_random_bytes_are_unsupported_format() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert reason_of(data) == "unsupported_format"


def test_html_error_page_is_unsupported_format_naming_html() -> None:
    with pytest.raises(InvalidImage, match="HTML") as info:
        decode_image(HTML)
    assert info.value.reason == "unsupported_format"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(noisy(), "GIF"), id="gif"),
        pytest.param(encode(noisy(), "BMP"), id="bmp"),
        pytest.param(encode(noisy(), "TIFF"), id="tiff"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", id="eps"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
    ],
)
def test_formats_outside_the_allow_list_are_unsupported_format(data: bytes) -> None:
    assert reason_of(data) == "unsupported_format"


def test_truncated_png_is_truncated() -> None:
    assert reason_of(PNG[: len(PNG) // 2]) == "truncated"


def test_truncated_jpeg_is_truncated() -> None:
    assert reason_of(JPEG[: len(JPEG) // 2]) == "truncated"


def test_truncated_webp_is_truncated() -> None:
    assert reason_of(WEBP[: len(WEBP) // 2]) == "truncated"


def test_png_with_a_corrupt_header_checksum_is_undecodable() -> None:
    corrupt = bytearray(PNG)
    corrupt[29] ^= 0xFF  # inside IHDR's CRC
    assert reason_of(bytes(corrupt)) == "undecodable"


def test_decompression_bomb_png_is_too_large_and_names_the_declared_size() -> None:
    bomb = png_declaring(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(InvalidImage) as info:
        decode_image(bomb)
    assert (info.value.reason, str(info.value)) == (
        "too_large",
        "image declares 50000×50000 = 2500.0 MP, over the 40.0 MP limit",
    )


def test_declared_size_over_our_cap_is_rejected_before_pixel_data_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 49 MP: under Pillow's bomb threshold, over ours; load() must never be reached.
    def forbidden_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden_load)
    assert reason_of(png_declaring(7_000, 7_000)) == "too_large"


def test_pillow_bomb_warning_is_an_error_even_with_a_higher_own_cap() -> None:
    # 100 MP is over Pillow's warning threshold (~89 MP); the warning is escalated, not ignored.
    assert reason_of(png_declaring(10_000, 10_000), max_pixels=500_000_000) == "too_large"


def test_pixel_cap_is_configurable() -> None:
    assert reason_of(PNG, max_pixels=1_000) == "too_large"


# --- load_input_image ------------------------------------------------------------------------


def test_load_input_image_decodes_a_dataset_file(tmp_path: Path) -> None:
    path = tmp_path / "product.png"
    path.write_bytes(PNG)
    assert load_input_image(path).size == (64, 48)


def test_missing_input_file_is_invalid_input_image_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputImage, match="nope.png") as info:
        load_input_image(tmp_path / "nope.png")
    assert info.value.reason == "missing"


def test_zero_byte_input_file_is_invalid_input_image_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputImage, match="empty.jpg") as info:
        load_input_image(path)
    assert info.value.reason == "zero_bytes"


def test_oversized_input_file_is_rejected_with_the_byte_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(PNG)
    with pytest.raises(InvalidInputImage) as info:
        load_input_image(path, max_bytes=100)
    assert info.value.reason == "too_many_bytes"


# --- check_image_output ----------------------------------------------------------------------


def test_valid_noisy_output_is_ok_with_its_properties() -> None:
    assert check_image_output(PNG, declared_media_type="image/png", expected_size=(64, 48)) == (
        ImageCheck(True, None, "", "image/png", 64, 48, "RGB")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "zero_bytes"),
        (b"\x00\x01garbage" * 10, "unsupported_format"),
        (PNG[: len(PNG) // 2], "truncated"),
        (png_declaring(50_000, 50_000), "too_large"),
    ],
)
def test_bad_bytes_are_reported_not_raised(data: bytes, reason: str) -> None:
    check = check_image_output(data)
    assert (check.ok, check.reason, check.media_type) == (False, reason, None)


def test_html_declared_as_png_is_unsupported_format() -> None:
    assert check_image_output(HTML, declared_media_type="image/png").reason == "unsupported_format"


def test_png_bytes_declared_as_jpeg_are_wrong_media_type() -> None:
    check = check_image_output(PNG, declared_media_type="image/jpeg")
    assert (check.reason, check.media_type) == ("wrong_media_type", "image/png")


def test_image_bytes_declared_as_html_are_wrong_media_type() -> None:
    assert (
        check_image_output(PNG, declared_media_type="text/html; charset=utf-8").reason
        == "wrong_media_type"
    )


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (JPEG, "image/jpg"),
        (JPEG, "IMAGE/JPEG; q=1"),
        (WEBP, "image/webp"),
        (PNG, "application/octet-stream"),
    ],
)
def test_aliases_and_generic_media_types_are_not_a_mismatch(data: bytes, declared: str) -> None:
    assert check_image_output(data, declared_media_type=declared).ok


def test_size_other_than_requested_is_dimensions() -> None:
    check = check_image_output(PNG, expected_size=(64, 64))
    assert (check.reason, check.width, check.height) == ("dimensions", 64, 48)


def test_opaque_output_when_alpha_is_required_is_missing_alpha() -> None:
    assert check_image_output(PNG, require_alpha=True).reason == "missing_alpha"


def test_cutout_with_alpha_passes_when_alpha_is_required() -> None:
    assert check_image_output(encode(noisy(mode="RGBA"), "PNG"), require_alpha=True).ok


def test_fully_transparent_output_is_blank_transparent() -> None:
    arr = np.asarray(noisy(mode="RGBA")).copy()
    arr[..., 3] = 0  # colour data behind zero alpha must not count
    data = encode(Image.fromarray(arr, "RGBA"), "PNG")
    assert check_image_output(data).reason == "blank_transparent"


def test_output_with_under_half_a_percent_visible_is_blank_transparent() -> None:
    arr = np.asarray(noisy(100, 100, mode="RGBA")).copy()
    arr[..., 3] = 0
    arr[0, :40, 3] = 255  # 0.4 % visible
    data = encode(Image.fromarray(arr, "RGBA"), "PNG")
    assert check_image_output(data).reason == "blank_transparent"


def test_all_black_output_is_blank_black() -> None:
    assert check_image_output(solid((0, 0, 0))).reason == "blank_black"


def test_near_black_noise_is_blank_black() -> None:
    arr = np.random.default_rng(2).integers(0, 8, (48, 64, 3), dtype=np.uint8)
    assert check_image_output(encode(Image.fromarray(arr), "PNG")).reason == "blank_black"


def test_single_colour_output_is_blank_uniform() -> None:
    assert check_image_output(solid((200, 30, 90))).reason == "blank_uniform"


def near_constant(std: float = 1.0) -> bytes:
    rng = np.random.default_rng(3)
    arr = np.clip(np.round(128 + rng.normal(0, std, (96, 96, 3))), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(arr), "PNG")


def test_near_constant_output_with_std_about_one_is_blank_uniform() -> None:
    check = check_image_output(near_constant(1.0))
    assert (check.reason, "std 1.0" in check.message) == ("blank_uniform", True)


def test_blank_std_threshold_is_configurable() -> None:
    assert check_image_output(near_constant(1.0), blank_std_threshold=0.5).ok


def test_output_identical_to_source_bytes_is_no_op() -> None:
    assert check_image_output(PNG, source=PNG).reason == "no_op"


def test_output_identical_to_source_image_in_another_mode_is_no_op() -> None:
    opaque_rgba = encode(noisy().convert("RGBA"), "PNG")
    assert check_image_output(opaque_rgba, source=noisy()).reason == "no_op"


@pytest.mark.parametrize("where", [(0, 0), (3, 5)], ids=["sampled", "between_samples"])
def test_output_differing_from_source_by_one_pixel_is_not_no_op(where: tuple[int, int]) -> None:
    arr = np.asarray(noisy()).copy()
    arr[where] = 255 - arr[where]
    assert check_image_output(encode(Image.fromarray(arr), "PNG"), source=PNG).ok


def test_a_source_photo_is_decoded_once_for_all_the_outputs_checked_against_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep checks arms x prompts x seeds outputs against each photo: the photo is decoded
    for the first of them only, and a no-op among the later ones is still caught."""
    source = encode(noisy(seed=11), "PNG")
    outputs = [encode(noisy(seed=20 + i), "PNG") for i in range(5)]
    decoded: list[bool] = []  # whether each decode was of the source
    real = validate.decode_image
    monkeypatch.setattr(validate, "decode_image",
                        lambda data, **kw: decoded.append(data == source) or real(data, **kw))
    assert all(check_image_output(o, source=source).ok for o in outputs)
    assert decoded.count(True) == 1 and len(decoded) == 6
    assert check_image_output(source, source=source).reason == "no_op"


def test_checks_run_in_order_so_a_black_wrong_size_image_reports_dimensions() -> None:
    assert check_image_output(solid((0, 0, 0)), expected_size=(10, 10)).reason == "dimensions"


def test_failure_message_names_the_measured_value() -> None:
    assert check_image_output(PNG, expected_size=(64, 64)).message == (
        "image is 64×48, expected 64×64"
    )
