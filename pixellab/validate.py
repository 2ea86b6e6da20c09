"""Corrupt, blank and wrong-kind checks for untrusted image bytes.

Every provider output and every dataset input image passes through here before anything else looks
at it. Decoding follows Pillow's security guidance (``docs/handbook/security.rst``):

* only an allow-list of formats is ever opened (:data:`ALLOWED_IMAGE_FORMATS`), so plugins such as
  EPS (Ghostscript), TIFF, GIF or FITS never see untrusted bytes;
* the byte size is capped before Pillow sees anything, and the declared pixel count is checked
  from the header before any pixel data is decoded;
* ``Image.MAX_IMAGE_PIXELS`` is never raised or disabled, and ``DecompressionBombWarning`` is
  escalated to an error locally (``warnings.catch_warnings``), never globally;
* ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set, and images are fully ``load()``-ed so a
  truncated file is detected here rather than later.

:func:`decode_image` raises :class:`~pixellab.errors.InvalidImage`; :func:`check_image_output`
never raises on bad bytes and reports an :class:`ImageCheck` instead. The blank measurements
(:func:`measure_blank`, :class:`BlankStats`) are shared with :mod:`pixellab.scoring.quality`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pixellab.errors import InvalidImage, InvalidInputImage
from pixellab.intel.taxonomy import parse_analysis
from pixellab.verdicts import parse_verdict

__all__ = [
    "ALLOWED_IMAGE_FORMATS",
    "BLANK_ALPHA_COVERAGE",
    "BLANK_BLACK_MAX",
    "BLANK_STD_THRESHOLD",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MEDIA_TYPES",
    "BlankStats",
    "ImageCheck",
    "check_image_output",
    "check_input_blank",
    "check_json_output",
    "decode_image",
    "has_alpha",
    "load_input_image",
    "measure_blank",
    "normalized_array",
    "probe_input_image",
    "read_input_image",
    "read_usable_input",
]

ALLOWED_IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
"""The only Pillow formats ever opened on untrusted bytes."""

MEDIA_TYPES: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
}
"""PIL format name -> IANA media type, for every allowed format."""

MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""Default byte cap, checked before Pillow sees the data."""

MAX_IMAGE_PIXELS = 40_000_000
"""Default pixel cap (our own, below Pillow's default decompression-bomb threshold of ~89 MP)."""

BLANK_STD_THRESHOLD = 2.0
"""Visible pixels whose every channel's std is below this are near-uniform (blank)."""

BLANK_BLACK_MAX = 8
"""Visible pixels whose every channel value is below this are black (safety-filter output)."""

BLANK_ALPHA_COVERAGE = 0.005
"""An image with alpha whose fraction of pixels with alpha > 0 is below this is blank."""

_MIB = 1024 * 1024

# Media types that claim no particular format: treated as "not declared" (S3 and many CDNs send
# these for any object).
_GENERIC_MEDIA_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/binary", "image/*"}
)
# Non-canonical spellings seen in the wild for the allowed formats.
_MEDIA_TYPE_ALIASES: dict[str, str] = {
    "image/png": "PNG",
    "image/x-png": "PNG",
    "image/apng": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/webp": "WEBP",
}

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


# --- decoding --------------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    """Name the kind of ``data`` from its magic bytes (for allow-listing and messages only)."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "EPS"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"SIMPLE  ="):
        return "FITS"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"qoif":
        return "QOI"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "HEIF"
        return "ISO media (video?)"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return "SVG"
    if text.startswith(b"<?xml"):
        return "XML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    return None


def _looks_truncated(kind: str, data: bytes) -> bool:
    """Whether an allowed-format file visibly ends early (used to classify decode failures)."""
    if kind == "PNG":
        return data.rfind(b"IEND") == -1
    if kind == "JPEG":
        return b"\xff\xd9" not in data[-4096:]
    if kind == "WEBP":
        if len(data) < 12:
            return True
        (riff_size,) = struct.unpack("<I", data[4:8])
        return len(data) < riff_size + 8
    return False


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR (fixed offsets; no parsing of anything else)."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def _mp(pixels: int | float) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _pixel_limit(max_pixels: int) -> int:
    pillow_cap = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pillow_cap) if pillow_cap else max_pixels


def _too_large(size: tuple[int, int] | None, pixels: int | None, max_pixels: int) -> InvalidImage:
    limit = _mp(_pixel_limit(max_pixels))
    if size is not None:
        w, h = size
        declared = f"{w}×{h} = {_mp(w * h)}"
    elif pixels is not None:
        declared = _mp(pixels)
    else:
        declared = "a size"
    return InvalidImage("too_large", f"image declares {declared}, over the {limit} limit")


def _bomb_error(
    exc: BaseException, kind: str, data: bytes, max_pixels: int, size: tuple[int, int] | None
) -> InvalidImage:
    """Turn Pillow's DecompressionBombError/Warning into ``too_large``."""
    if size is None and kind == "PNG":
        size = _png_declared_size(data)
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else None
    return _too_large(size, pixels, max_pixels)


_BYTES_LITERAL = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def _failure(kind: str, data: bytes, exc: BaseException, stage: str) -> InvalidImage:
    """Classify a Pillow failure on allowed-format bytes as ``truncated`` or ``undecodable``."""
    text = str(exc)
    truncated = (
        isinstance(exc, EOFError) or "truncated" in text.lower() or _looks_truncated(kind, data)
    )
    if isinstance(exc, UnidentifiedImageError):
        text = "header is invalid or corrupt"
    # Decoders quote bytes they choke on (``broken PNG file (chunk b'root')``): never echo a
    # file's contents into the ledger or a report.
    text = " ".join(_BYTES_LITERAL.sub("<bytes>", text).split())[:200]
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if truncated:
        return InvalidImage("truncated", f"{kind} data is truncated ({len(data)} bytes): {detail}")
    return InvalidImage("undecodable", f"{kind} data could not be decoded ({stage}): {detail}")


def decode_image(
    data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode untrusted image bytes, or raise :class:`~pixellab.errors.InvalidImage`.

    What the caller can rely on when this returns:

    * the bytes were at most ``max_bytes`` long and are PNG, JPEG or WEBP (``image.format``);
    * the image declared at most ``max_pixels`` pixels (and passed Pillow's own bomb check);
    * all pixel data was decoded (``load()``), so the file is not truncated or corrupt;
    * the EXIF orientation has been applied (``ImageOps.exif_transpose``): ``image.size`` is the
      size as displayed. A malformed EXIF block is ignored (the image is returned unrotated).

    The image keeps its native mode (``RGB``, ``RGBA``, ``L``, ``P``, ``CMYK``, ``I;16``…); use
    :func:`normalized_array` for an 8-bit RGB/RGBA array. Only the first frame of an animated
    PNG/WEBP is decoded.

    Raises ``InvalidImage(reason, message)`` with ``reason`` one of ``zero_bytes``,
    ``too_many_bytes``, ``unsupported_format`` (not PNG/JPEG/WEBP, or not an image at all),
    ``too_large`` (declared pixel count over the cap, or a Pillow decompression bomb),
    ``truncated`` or ``undecodable``. Raises ``RuntimeError`` if some code has set
    ``ImageFile.LOAD_TRUNCATED_IMAGES``, because truncation could then go unnoticed.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: refusing to decode untrusted images, "
            "truncated files would be accepted silently"
        )
    n = len(data)
    if n == 0:
        raise InvalidImage("zero_bytes", "image is empty (0 bytes)")
    if n > max_bytes:
        raise InvalidImage(
            "too_many_bytes",
            f"image is {n / _MIB:.1f} MiB ({n} bytes), over the {max_bytes / _MIB:.1f} MiB limit",
        )
    allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
    kind = _sniff(data)
    if kind is None:
        raise InvalidImage(
            "unsupported_format",
            f"bytes are not a recognised image format (allowed: {allowed})",
        )
    if kind not in ALLOWED_IMAGE_FORMATS:
        raise InvalidImage(
            "unsupported_format", f"{kind} data is not an allowed image format (allowed: {allowed})"
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_IMAGE_FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, kind, data, max_pixels, None) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a verdict on the bytes
            raise _failure(kind, data, exc, "header") from None

        if image.format not in ALLOWED_IMAGE_FORMATS:  # defensive: the allow-list is the authority
            raise InvalidImage(
                "unsupported_format", f"{image.format} is not an allowed image format ({allowed})"
            )
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidImage("undecodable", f"{kind} declares an empty size {width}×{height}")
        # The declared size, checked before any pixel data is decoded.
        if width * height > _pixel_limit(max_pixels):
            raise _too_large((width, height), None, max_pixels)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, kind, data, max_pixels, (width, height)) from None
        except Exception as exc:  # noqa: BLE001
            raise _failure(kind, data, exc, "pixel data") from None

    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - untrusted EXIF: no usable orientation, keep as decoded
        pass
    return image


def load_input_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Read a dataset image file and decode it with :func:`decode_image`.

    Raises :class:`~pixellab.errors.InvalidInputImage` with the same reason codes as
    :func:`decode_image`, plus ``missing`` (no such file) and ``unreadable`` (a directory, no
    permission, another OS error). The message starts with the path. A file over ``max_bytes``
    is rejected from its size on disk, without reading it.
    """
    return read_input_image(path, max_bytes=max_bytes, max_pixels=max_pixels)[1]


def read_input_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[bytes, Image.Image]:
    """:func:`load_input_image`, also returning the file's bytes (what a provider is sent)."""
    data = _read_input(path, max_bytes)
    try:
        return data, decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except InvalidImage as exc:
        raise InvalidInputImage(exc.reason, f"{os.fspath(path)}: {exc}") from None


def _read_input(path: str | os.PathLike[str], max_bytes: int, limit: int | None = None
                ) -> bytes:
    """The first ``limit`` bytes (all when None) of a dataset image file, refusing what is not
    a regular file or is over ``max_bytes`` on disk without reading it."""
    name = os.fspath(path)
    p = Path(name)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise InvalidInputImage("unreadable", f"{name}: not a regular file")
        if size > max_bytes:
            raise InvalidInputImage(
                "too_many_bytes",
                f"{name}: image is {size / _MIB:.1f} MiB ({size} bytes), "
                f"over the {max_bytes / _MIB:.1f} MiB limit",
            )
        with p.open("rb") as fh:
            return fh.read(max_bytes + 1 if limit is None else limit)
    except FileNotFoundError:
        raise InvalidInputImage("missing", f"{name}: file not found") from None
    except OSError as exc:
        raise InvalidInputImage(
            "unreadable", f"{name}: cannot read ({exc.strerror or type(exc).__name__})"
        ) from None


def probe_input_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[int, int]:
    """The declared (width, height) of a dataset image file, from its header only: cheap
    enough for a cost estimate over thousands of products.

    Refuses, as :class:`~pixellab.errors.InvalidInputImage`, everything :func:`load_input_image`
    refuses before decoding pixels (``missing``, ``unreadable``, ``zero_bytes``,
    ``too_many_bytes``, ``unsupported_format``, ``too_large``, a header that does not parse).
    A file that passes may still fail to decode (truncated pixel data, blank): those are found
    when a request reads it, before any provider is called. The size is as stored (EXIF
    orientation is not applied; a rotation does not change the pixel count).
    """
    name = os.fspath(path)
    head = _read_input(path, max_bytes, limit=64 * 1024)
    if not head:
        raise InvalidInputImage("zero_bytes", f"{name}: image is empty (0 bytes)")
    kind = _sniff(head)
    allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
    if kind not in ALLOWED_IMAGE_FORMATS:
        what = f"{kind} data is" if kind else "bytes are"
        raise InvalidInputImage(
            "unsupported_format", f"{name}: {what} not an allowed image format ({allowed})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(name, formats=list(ALLOWED_IMAGE_FORMATS)) as image:
                size = image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            error = _bomb_error(exc, kind, head, max_pixels, None)
            raise InvalidInputImage(error.reason, f"{name}: {error}") from None
        except Exception as exc:  # noqa: BLE001 - any header failure is a verdict on the file
            error = _failure(kind, head, exc, "header")
            raise InvalidInputImage(error.reason, f"{name}: {error}") from None
    if size[0] <= 0 or size[1] <= 0:
        raise InvalidInputImage("undecodable", f"{name}: {kind} declares an empty size")
    if size[0] * size[1] > _pixel_limit(max_pixels):
        raise InvalidInputImage("too_large", f"{name}: {_too_large(size, None, max_pixels)}")
    return size


def read_usable_input(path: str | os.PathLike[str]) -> tuple[bytes, Image.Image]:
    """:func:`read_input_image`, and refused as ``blank_input`` when the photo is blank
    (:func:`check_input_blank`): what may be sent to a model."""
    data, image = read_input_image(path)
    check_input_blank(image, os.fspath(path))
    return data, image


def check_input_blank(image: Image.Image, name: str) -> None:
    """Refuse a blank product photo (fully transparent, black or uniform) as
    ``InvalidInputImage("blank_input")``: every model would be paid to turn nothing into
    something, and its output (a white canvas with a shadow) would pass the output checks."""
    stats = measure_blank(image)
    reason = stats.reason()
    if reason is not None:
        raise InvalidInputImage(
            "blank_input", f"{name}: the photo is blank ({stats.message(reason)}); nothing "
            "was sent to any model"
        )


# --- pixel measurements (shared with pixellab.scoring) ---------------------------------------


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` carries transparency: an alpha band or a ``transparency`` key (tRNS)."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def normalized_array(image: Image.Image) -> np.ndarray:
    """The image as a ``uint8`` array of shape (H, W, 4) if it has alpha, else (H, W, 3).

    Palette, grayscale, CMYK and premultiplied modes are converted with Pillow; 16/32-bit
    grayscale (``I;16``, ``I``) is scaled to 8 bits (``value // 257``) instead of clipped.
    """
    alpha = has_alpha(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        gray = np.asarray(image).astype(np.int64)
        gray8 = (np.clip(gray, 0, 65535) // 257).astype(np.uint8)
        planes = [gray8] * 3
        if alpha:
            planes.append(np.where(gray == image.info.get("transparency"), 0, 255).astype(np.uint8))
        return np.stack(planes, axis=-1)
    target = "RGBA" if alpha else "RGB"
    converted = image if image.mode == target else image.convert(target)
    return np.asarray(converted)


@dataclass(frozen=True)
class BlankStats:
    """Blank measurements over an image's *visible* pixels (alpha > 0, or all if no alpha).

    ``std`` is the largest per-channel standard deviation of R, G, B; ``max`` the largest channel
    value; ``alpha_coverage`` the fraction of pixels with alpha > 0 (1.0 without alpha).
    """

    std: float
    max: int
    alpha_coverage: float
    has_alpha: bool

    def reason(self, std_threshold: float = BLANK_STD_THRESHOLD) -> str | None:
        """``blank_transparent``, ``blank_black``, ``blank_uniform`` (checked in that order) or
        ``None`` when the image is not blank."""
        if self.has_alpha and self.alpha_coverage < BLANK_ALPHA_COVERAGE:
            return "blank_transparent"
        if self.max < BLANK_BLACK_MAX:
            return "blank_black"
        if self.std < std_threshold:
            return "blank_uniform"
        return None

    def message(self, reason: str | None, std_threshold: float = BLANK_STD_THRESHOLD) -> str:
        """One human line explaining ``reason`` with the measured value ('' for ``None``)."""
        if reason == "blank_transparent":
            return (
                f"image is (nearly) fully transparent: {self.alpha_coverage:.2%} of pixels "
                f"visible, under {BLANK_ALPHA_COVERAGE:.1%}"
            )
        if reason == "blank_black":
            return (
                f"visible pixels are all near black: max channel value {self.max} "
                f"< {BLANK_BLACK_MAX}"
            )
        if reason == "blank_uniform":
            return (
                f"visible pixels are near-uniform: largest per-channel std {self.std:.2f} "
                f"< {std_threshold:g}"
            )
        return ""

    def as_dict(self) -> dict[str, float | int]:
        return {"std": self.std, "max": self.max, "alpha_coverage": self.alpha_coverage}


def measure_blank(image: Image.Image | np.ndarray) -> BlankStats:
    """Measure an image (or a :func:`normalized_array` of one) for blankness.

    Computed from per-channel histograms of the visible pixels (one pass, no float copies of
    the image), so it stays fast at the 40 MP cap.
    """
    arr = image if isinstance(image, np.ndarray) else normalized_array(image)
    arr = np.ascontiguousarray(arr)
    alpha = arr.shape[-1] == 4
    mask: np.ndarray | None = None
    coverage = 1.0
    if alpha:
        visible = arr[..., 3] > 0
        coverage = float(np.count_nonzero(visible)) / max(1, visible.size)
        mask = visible.view(np.uint8)
    levels = np.arange(256, dtype=np.float64)
    std = 0.0
    top = 0
    for c in range(3):
        hist = cv2.calcHist([arr], [c], mask, [256], [0, 256]).ravel().astype(np.float64)
        n = float(hist.sum())
        if n == 0:
            continue
        mean = float(hist @ levels) / n
        var = float(hist @ (levels - mean) ** 2) / n
        std = max(std, var**0.5)
        top = max(top, int(np.flatnonzero(hist)[-1]))
    return BlankStats(std=std, max=top, alpha_coverage=coverage, has_alpha=alpha)


# --- output checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one output image.

    ``ok`` is True only when every check passed; then ``reason`` is None and ``message`` is ''.
    Otherwise ``reason`` is a stable code (see :func:`check_image_output`) and ``message`` one
    human line with the measured value. ``media_type`` (sniffed, e.g. ``image/png``), ``width``,
    ``height`` (after EXIF orientation) and ``mode`` (native PIL mode) are filled whenever the
    bytes decoded, including failed checks after decoding; they are None when decoding failed.
    """

    ok: bool
    reason: str | None
    message: str
    media_type: str | None
    width: int | None
    height: int | None
    mode: str | None
    duration_s: float | None = None
    """A video's measured duration (None for images, or when it could not be read): what a
    per-second price is charged on when the provider reports nothing."""
    fps: float | None = None


def _declared_format(declared: str) -> str | None:
    """'generic' types claim nothing -> None; else the PIL format it names, or the type itself."""
    base = declared.split(";", 1)[0].strip().lower()
    if base in _GENERIC_MEDIA_TYPES:
        return None
    return _MEDIA_TYPE_ALIASES.get(base, base)


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    """Whether ``a`` and ``b`` have the same size and equal mode-normalised pixels.

    If either carries alpha both are compared as RGBA (an opaque RGBA equals its RGB).
    """
    if a.size != b.size:
        return False
    if has_alpha(a) or has_alpha(b):
        return bool(np.array_equal(_as_rgba(normalized_array(a)),
                                   _as_rgba(normalized_array(b))))
    return bool(np.array_equal(normalized_array(a), normalized_array(b)))


def _as_rgba(pixels: np.ndarray) -> np.ndarray:
    """:func:`normalized_array` pixels with an alpha band: opaque where they had none."""
    if pixels.shape[-1] == 4:
        return pixels
    return np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])


_PRINT_STEP = 8
_SOURCE_PRINTS: OrderedDict[tuple[int, int], tuple[bytes, tuple[tuple[int, int], bytes] | None]]
_SOURCE_PRINTS = OrderedDict()
_SOURCE_PRINTS_MAX = 512
_source_prints_lock = threading.Lock()


def _pixel_print(pixels: np.ndarray) -> bytes:
    """A digest of every 8th row and column of :func:`normalized_array` pixels, taken as RGBA
    (opaque when there is no alpha), so that pixels :func:`_same_pixels` calls equal always
    print the same; different pixels almost always print differently."""
    sample = _as_rgba(pixels[::_PRINT_STEP, ::_PRINT_STEP])
    return hashlib.blake2b(np.ascontiguousarray(sample).tobytes(), digest_size=16).digest()


def _source_print(source: bytes) -> tuple[tuple[int, int], bytes] | None:
    """(size, :func:`_pixel_print`) of a source photo, or None where it does not decode;
    remembered for the last 512 photos.

    Why: a sweep checks arms × prompts × seeds outputs against each photo, and decoding it for
    each (an 800 px JPEG costs ~9 ms) was most of the no-op check. Keyed by the bytes' length
    and hash, confirmed by their first and last 64 bytes, without keeping the bytes."""
    key = (len(source), hash(source))
    tag = source[:64] + source[-64:]
    with _source_prints_lock:
        known = _SOURCE_PRINTS.get(key)
        if known is not None and known[0] == tag:
            _SOURCE_PRINTS.move_to_end(key)
            return known[1]
    try:
        image = decode_image(source)
        printed: tuple[tuple[int, int], bytes] | None = (
            image.size, _pixel_print(normalized_array(image)))
    except InvalidImage:
        printed = None
    with _source_prints_lock:
        _SOURCE_PRINTS[key] = (tag, printed)
        while len(_SOURCE_PRINTS) > _SOURCE_PRINTS_MAX:
            _SOURCE_PRINTS.popitem(last=False)
    return printed


def _same_as_source(image: Image.Image, pixels: np.ndarray,
                    source: bytes | Image.Image) -> bool:
    """:func:`_same_pixels` of an output and its source; a source given as bytes is decoded
    only when its size and pixel print match the output's (a no-op, or nearly one)."""
    if isinstance(source, Image.Image):
        return _same_pixels(image, source)
    printed = _source_print(source)
    if printed is None or printed[0] != image.size or printed[1] != _pixel_print(pixels):
        return False
    return _same_pixels(image, decode_image(source))


def check_image_output(
    data: bytes,
    *,
    declared_media_type: str | None = None,
    expected_size: tuple[int, int] | None = None,
    source: bytes | Image.Image | None = None,
    require_alpha: bool = False,
    blank_std_threshold: float = BLANK_STD_THRESHOLD,
) -> ImageCheck:
    """Check one provider output; never raises on bad bytes, reports an :class:`ImageCheck`.

    Checks, in this order, stopping at the first failure (``reason``):

    1. everything :func:`decode_image` checks (default caps): ``zero_bytes``, ``too_many_bytes``,
       ``unsupported_format``, ``too_large``, ``truncated``, ``undecodable``;
    2. ``wrong_media_type``: ``declared_media_type`` (e.g. a Content-Type, parameters ignored)
       names another format than the bytes are (``image/png`` on JPEG bytes, ``text/html`` on
       PNG bytes). ``None``, ``application/octet-stream`` and ``binary/octet-stream`` claim no
       format and are not checked; ``image/jpg`` / ``image/pjpeg`` / ``image/x-png`` are aliases;
    3. ``dimensions``: (width, height) differs from ``expected_size``;
    4. ``missing_alpha``: ``require_alpha`` and the image has no transparency;
    5. ``blank_transparent`` / ``blank_black`` / ``blank_uniform``: see :class:`BlankStats`;
    6. ``no_op``: same size and equal mode-normalised pixels as ``source`` (exact equality; a
       re-encoded copy of the source is not detected). Skipped if ``source`` bytes do not decode.

    Only a programming/environment error escapes: ``RuntimeError`` when
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` has been set (see :func:`decode_image`).
    """
    try:
        image = decode_image(data)
    except InvalidImage as exc:
        return ImageCheck(False, exc.reason, str(exc), None, None, None, None)

    fmt = image.format or ""
    media_type = MEDIA_TYPES.get(fmt)
    width, height = image.size

    def fail(reason: str, message: str) -> ImageCheck:
        return ImageCheck(False, reason, message, media_type, width, height, image.mode)

    if declared_media_type is not None:
        declared = _declared_format(declared_media_type)
        if declared is not None and declared != fmt:
            return fail(
                "wrong_media_type",
                f"declared {declared_media_type!r} but the bytes are {fmt} ({media_type})",
            )
    if expected_size is not None and (width, height) != tuple(expected_size):
        ew, eh = expected_size
        return fail("dimensions", f"image is {width}×{height}, expected {ew}×{eh}")
    if require_alpha and not has_alpha(image):
        return fail("missing_alpha", f"image has no alpha channel (mode {image.mode})")
    try:
        pixels = normalized_array(image)
        stats = measure_blank(pixels)
    except Exception as exc:  # noqa: BLE001 - an odd mode/layout is a verdict on the bytes
        return fail("undecodable", f"pixels could not be read ({type(exc).__name__}: {exc})")
    blank = stats.reason(blank_std_threshold)
    if blank is not None:
        return fail(blank, stats.message(blank, blank_std_threshold))
    if source is not None:
        try:
            same = _same_as_source(image, pixels, source)
        except Exception:  # noqa: BLE001 - an incomparable source: no verdict on no-op
            same = False
        if same:
            return fail("no_op", f"output pixels are identical to the source ({width}×{height})")
    return ImageCheck(True, None, "", media_type, width, height, image.mode)


MAX_JSON_BYTES = 1024 * 1024
"""An analysis answer is a few hundred bytes; anything near this is not one."""


def check_json_output(data: bytes, task: str) -> ImageCheck:
    """Check a JSON output (``analyze``, ``judge``): UTF-8 JSON, bounded, and valid for the
    task's schema (for ``analyze``: every field inside the taxonomy's enums, see
    :func:`pixellab.intel.taxonomy.parse_analysis`; for ``judge``: a verdict, see
    :func:`pixellab.verdicts.parse_verdict`). Never raises on bad bytes."""
    media_type = "application/json"

    def fail(reason: str, message: str) -> ImageCheck:
        return ImageCheck(False, reason, message, media_type, None, None, None)

    if not data:
        return fail("zero_bytes", "the answer is empty")
    if len(data) > MAX_JSON_BYTES:
        return fail("too_many_bytes", f"the answer is {len(data)} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return fail("undecodable", "the answer is not UTF-8")
    schemas: dict[str, tuple[str, Callable[[str], object]]] = {
        "analyze": ("analysis", parse_analysis), "judge": ("verdict", parse_verdict)}
    if task in schemas:
        what, parse = schemas[task]
        try:
            parse(text)
        except ValueError as exc:
            reason = "undecodable" if "json" in str(exc).lower() else "schema"
            return fail(reason, f"not a valid {what}: {exc}")
    else:
        import json

        try:
            json.loads(text)
        except ValueError as exc:
            return fail("undecodable", f"not JSON: {exc}")
    return ImageCheck(True, None, "", media_type, None, None, None)
