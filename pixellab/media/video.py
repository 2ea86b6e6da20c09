"""Video outputs (``image_to_video``, ``angles_to_video``): validated, sampled, previewed.

A provider's clip is untrusted bytes, handled with the same care as an untrusted image
(:mod:`pixellab.validate`):

* **refused before FFmpeg sees it** when it is empty, over :data:`MAX_VIDEO_BYTES`, or not a
  container of the allow-list (MP4, MOV, WebM, told from the magic bytes: a GIF or PNG renamed
  ``.mp4`` never reaches a demuxer). The container's own header is then read by a small parser
  here (ISO boxes ``mvhd``/``mdhd``/``stsd``/``stsz``; WebM ``Info``/``Tracks``), no FFmpeg
  involved, so a header that *declares* 16384×16384 frames, ten hours or a million frames is
  refused on what it says;
* **probed by PyAV** (``av.open`` on a ``BytesIO``, probing bounded by ``probesize``,
  ``analyzeduration`` and the decoder's ``max_pixels``), whose format name must agree with the
  magic bytes, and whose stream facts are checked against the same caps: one video stream, a
  codec of :data:`ALLOWED_CODECS`, the pixel, duration, frame-count and fps caps — all before
  a single frame is decoded here;
* **decoded sequentially, bounded in time and memory** (:func:`sample_frames`): a wall-clock
  deadline (:data:`DECODE_DEADLINE_S`), at most :data:`DECODE_THREADS` decoder threads, and only
  the sampled frames are kept (downscaled), so peak memory does not grow with the clip's length.
  A file that ends early decodes up to the break and is reported ``truncated``.

:func:`check_video_output` turns all of that, plus the request's expectations
(:class:`VideoExpectation`: duration, fps, aspect ratio, resolution) and content checks (black,
blank, frozen, a still photo wrapped as a clip), into an :class:`~pixellab.validate.ImageCheck`
and never raises on bad bytes. :func:`previews` makes the report's poster and animated preview
once (cached on disk by the clip's sha256), and :data:`VIDEO` is the media kind.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from pixellab.errors import ConfigError, InvalidImage, InvalidVideo
from pixellab.tasks import Task
from pixellab.validate import ImageCheck, decode_image, measure_blank, normalized_array

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

__all__ = [
    "ALLOWED_CODECS",
    "CONTAINERS",
    "DECODE_DEADLINE_S",
    "DECODE_THREADS",
    "EMBED_MAX_BYTES",
    "MAX_DURATION_S",
    "MAX_FPS",
    "MAX_FRAMES",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_PIXELS",
    "CHECK_MAX_SIDE",
    "SAMPLE_FRAMES",
    "VIDEO",
    "Previews",
    "SampledClip",
    "VideoExpectation",
    "VideoInfo",
    "VideoKind",
    "check_video_output",
    "previews",
    "probe_video",
    "sample_frames",
    "video_cell_html",
]

_MIB = 1024 * 1024

# --- caps ------------------------------------------------------------------------------------

MAX_VIDEO_BYTES = 500 * _MIB
"""Byte cap, checked before anything parses the clip. A 60-s 1080p clip from a generator is
10–40 MB and a 5-min 4K master a few hundred; 500 MiB leaves room for those and stops a
provider (or a hostile CDN) from filling memory and disk with one answer."""

MAX_VIDEO_PIXELS = 4096 * 4096
"""Declared pixels per frame (16.8 MP). Allows 1080p (2.1 MP), 4K UHD 3840×2160 (8.3 MP) and
DCI 4K 4096×2160; refuses frame sizes whose decoded frames alone (≥ 25 MB each in YUV 4:2:0,
several held by the decoder) would make a tiny file cost gigabytes. Also handed to FFmpeg's
decoder as ``max_pixels``, so a size that only the bitstream declares is refused there too."""

MAX_DURATION_S = 300.0
"""Declared duration cap (5 minutes). Generators make 4–60 s clips; a product video is rarely
over two minutes. Ten declared hours is a hostile or broken header, and it would size a
per-second bill and a decode of hours."""

MAX_FPS = 120.0
"""Declared frame-rate cap: 120 fps covers every real delivery format (24–60, high-frame-rate
120); a header declaring 10,000 fps is broken or built to multiply decoding work."""

MAX_FRAMES = 18_000
"""Declared (or estimated) frame-count cap: 5 minutes at 60 fps. Decoding work is frames ×
pixels; with the pixel cap this bounds one check's decode. Also enforced while decoding, for a
stream that carries more frames than its header admits."""

DECODE_DEADLINE_S = 90.0
"""Wall-clock budget for one sequential decode. A 60-s 1080p clip decodes in 5–20 s on one
busy core; past 90 s the clip is refused (``decode_timeout``) rather than stall a sweep worker."""

DECODE_THREADS = 2
"""Decoder threads: few, because a sweep checks many outputs at once (each in its own worker)
and frame threading holds one extra decoded frame per thread."""

SAMPLE_FRAMES = 12
"""Frames sampled, evenly spaced, for checks and scores: enough to see a clip change, black
frames or a freeze at 8–16 points; few enough that holding them (≤ 512 px) costs ~5 MB."""

SAMPLE_MAX_SIDE = 512
CHECK_MAX_SIDE = 160
"""The size of the frames validation looks at (black, blank, a still photo): coarse verdicts
that 160 px decides as well as 512, at a tenth of the conversion cost, so that checking a clip
costs little more than decoding it (``benchmarks/bench_video.py``)."""
"""Longer side of a sampled frame: what blank/frozen checks and image metrics need."""

EMBED_MAX_BYTES = 3 * _MIB
"""A clip up to this size is embedded in the report as a ``data:`` URI (base64: ×4/3). A typical
5-s 720p generator clip is 1–3 MB; beyond, the page would grow by megabytes per cell, so the
clip is named by its store file instead."""

POSTER_MAX_SIDE = 320
"""Longer side of the poster still (a JPEG, ~15 KB)."""

PREVIEW_MAX_SIDE = 240
"""Longer side of the animated preview's frames (WebP, ~12 frames, ~30–80 KB)."""

PREVIEW_FRAMES = 12
"""Frames in the animated preview."""

ALLOWED_CODECS: tuple[str, ...] = ("h264", "hevc", "vp8", "vp9", "av1")
"""The only video codecs decoded (FFmpeg's canonical names): what generators and browsers use.
Older or exotic decoders (MPEG-4 Part 2, Motion JPEG, ProRes…) are a larger attack surface and
no provider of ours answers with them."""

CONTAINERS: dict[str, str] = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}
"""Allowed containers and their media types."""

# --- tolerances ------------------------------------------------------------------------------

DURATION_TOLERANCE_S = 0.5
DURATION_TOLERANCE = 0.10
"""A clip's duration may differ from the one asked for by max(0.5 s, 10 %): providers end a
clip on a frame or GOP boundary (a "5 s" Kling clip lasts 5.04 s, some 5.1 s), and the 10 %
scales that to long clips. A 5-s request answered with 4 s fails."""

FPS_TOLERANCE = 0.5
FPS_TOLERANCE_FRACTION = 0.02
"""Frame rate may differ by max(0.5 fps, 2 %): NTSC rates (23.976 for 24, 29.97 for 30,
59.94 for 60) pass, 24 for 25 or 25 for 30 does not."""

ASPECT_TOLERANCE = 0.02
"""Display aspect ratio may differ by 2 % (relative): encoders round sizes to even numbers or
multiples of 8/16 (480×848 for 9:16 is off by 0.6 %); 3:4 for 9:16 (+33 %) fails."""

RESOLUTION_TOLERANCE = 0.05
"""A requested resolution (short side, or width×height) may differ by 5 %: codecs pad to
multiples of 8 or 16 (1080 → 1088, 480 → 464), while the next tier down (720 for 1080) is 33 %
off."""

BLACK_MAX = 8
"""A frame whose every channel value is below this is black (the image rule, see
:data:`pixellab.validate.BLANK_BLACK_MAX`)."""

FROZEN_MAX_DIFF = 3.0
"""A clip is frozen when no decoded frame differs from the first by this much, measured as the
largest mean absolute difference over an 8×8 grid of regions of 64-px grayscale thumbnails
(area averaged), on 0–255. Per region, not over the whole frame: a 16-px object crossing a
still 720p background scores 7 while the whole frame's mean moves by under 0.1. Against the
*first* frame, not only the previous one, so a slow zoom (tiny steps that add up) is motion.
A repeated frame through H.264 or VP9 scores 0–0.5 from 480p up (about 2 at 160×120, where
codec ringing at sharp edges is not averaged away)."""

STILL_SOURCE_MAX_DIFF = 6.0
"""A frozen clip whose frame differs from the source photo (resized to the frame) by less than
this mean absolute difference (0–255, RGB) is the photo wrapped as a video (``still_image``).
Re-encoding a photo at CRF 23 costs 1–4; a different picture is far above."""

TRUNCATED_SHORTFALL = 0.10
"""A decode that yields fewer frames than the header declares, by more than 10 % (and two
frames), means the file ended early: ``truncated``. Smaller differences are the rounding of an
estimated frame count (duration × fps)."""

_THUMB_SIDE = 64
_MOTION_GRID = 8
_OPEN_OPTIONS = {"probesize": str(8 * _MIB), "analyzeduration": str(10_000_000),
                 "max_pixels": str(MAX_VIDEO_PIXELS)}
"""Options for ``av.open``: probing reads at most 8 MiB and 10 s of stream, and the probing
decoder refuses frames over the pixel cap."""
_MAX_HEADER_ELEMENTS = 4096
"""The header parsers stop after this many boxes/elements at one level (a hostile file of
millions of 8-byte boxes must not cost seconds of Python)."""


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What a clip declares, read before decoding any pixels (:func:`probe_video`).

    ``width``/``height`` are the coded frame size (before any display rotation);
    ``frame_count`` is the count the container declares, or duration × fps when it declares
    none (``frame_count_estimated``); ``truncated`` says the container's top-level structure
    runs past the end of the bytes (a box or element longer than what is there)."""

    container: str
    media_type: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frame_count: int
    has_audio: bool
    bytes: int
    frame_count_estimated: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class SampledClip:
    """Evenly spaced frames of a clip (:func:`sample_frames`).

    ``frames`` are RGB ``uint8`` arrays (H×W×3, upright: a display rotation is applied), the
    longer side at most the ``max_side`` asked for; ``indices`` are their positions in decode
    order and ``timestamps`` their presentation times in seconds. ``decoded`` is how many frames
    the decoder actually produced. ``truncated`` is True when the file ended early
    (``truncation`` says how). ``motion_from_first`` is how far any decoded frame moved from
    the first, ``motion_step`` the largest move between consecutive frames (0–255, measured as
    :data:`FROZEN_MAX_DIFF` says): a frozen clip has both near zero."""

    frames: tuple[np.ndarray, ...]
    indices: tuple[int, ...]
    timestamps: tuple[float, ...]
    info: VideoInfo
    decoded: int
    truncated: bool = False
    truncation: str = ""
    rotation: int = 0
    motion_from_first: float = 0.0
    motion_step: float = 0.0
    decoded_duration_s: float | None = None
    """The last decoded frame's time plus one frame interval: the length actually played (for a
    stream that declares none, or one that ended early)."""

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: swapped when the clip is displayed rotated by 90°."""
        w, h = self.info.width, self.info.height
        return (h, w) if self.rotation % 180 else (w, h)


# --- container sniffing and header parsing (no FFmpeg) ---------------------------------------

_IMAGE_BRANDS = {b"avif": "AVIF image", b"avis": "AVIF image sequence", b"heic": "HEIF image",
                 b"heix": "HEIF image", b"heim": "HEIF image", b"heis": "HEIF image",
                 b"hevc": "HEIF image sequence", b"hevx": "HEIF image sequence",
                 b"mif1": "HEIF image", b"msf1": "HEIF image sequence"}


def _what_else(head: bytes) -> tuple[str, str] | None:
    """(reason, name) for bytes that are known not to be an allowed video container."""
    images = [(b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"),
              (b"GIF87a", "GIF image"), (b"GIF89a", "GIF image"), (b"BM", "BMP image"),
              (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"), (b"%PDF", "PDF document"),
              (b"ID3", "MP3 audio"), (b"fLaC", "FLAC audio"), (b"\x00\x00\x01\x00", "ICO image")]
    for magic, name in images:
        if head.startswith(magic):
            return "not_a_video", name
    if head[:4] == b"RIFF":
        kind = head[8:12]
        if kind == b"WEBP":
            return "not_a_video", "WebP image"
        if kind == b"WAVE":
            return "not_a_video", "WAV audio"
        if kind == b"AVI ":
            return "wrong_container", "AVI"
    containers = [(b"FLV", "FLV"), (b"OggS", "Ogg"), (b"\x00\x00\x01\xba", "MPEG program stream"),
                  (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"), (b".RMF", "RealMedia")]
    for magic, name in containers:
        if head.startswith(magic):
            return "wrong_container", name
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "wrong_container", "MPEG transport stream"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not_a_video", "HTML document"
    if text.startswith((b"<?xml", b"<svg")):
        return "not_a_video", "XML/SVG document"
    if text.startswith((b"{", b"[")):
        return "not_a_video", "JSON text"
    return None


_LABELS = {"mp4": "MP4", "mov": "MOV", "webm": "WebM"}


def _allowed_names() -> str:
    return ", ".join(_LABELS.values())


def _sniff_container(data: bytes) -> str:
    """``mp4``, ``mov`` or ``webm`` from the magic bytes, or :class:`InvalidVideo`
    (``not_a_video``, ``wrong_container``)."""
    head = data[:256]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            raise InvalidVideo("not_a_video", f"{_IMAGE_BRANDS[brand]} data (ISO brand "
                               f"{brand.decode('latin-1')!r}) is not a video (allowed: "
                               f"{_allowed_names()})")
        return "mov" if brand == b"qt  " else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        doc_type = _ebml_doc_type(data)
        if doc_type == "webm":
            return "webm"
        raise InvalidVideo("wrong_container", f"Matroska data (DocType {doc_type!r}) is not an "
                           f"allowed container: of Matroska only WebM is (allowed: "
                           f"{_allowed_names()})")
    other = _what_else(head)
    if other is not None:
        reason, name = other
        what = "is not a video" if reason == "not_a_video" else "is not an allowed container"
        raise InvalidVideo(reason, f"{name} data {what} (allowed: {_allowed_names()})")
    raise InvalidVideo("not_a_video",
                       f"bytes are not a recognised video container (allowed: {_allowed_names()})")


@dataclass
class _Declared:
    """What a container's header declares, read without FFmpeg (None: not found)."""

    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    frames: int | None = None
    truncated: str = ""


class _Broken(Exception):
    """The header parser met bytes it cannot walk (FFmpeg then has its say)."""


def _iso_boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, declared end) of the boxes in ``data[start:end]``; the declared
    end may pass ``end`` (the box is cut short)."""
    boxes: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(boxes) < _MAX_HEADER_ELEMENTS:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise _Broken
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise _Broken
        boxes.append((kind, pos + header, pos + size))
        pos += size
    return boxes


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    found: dict[bytes, list[tuple[int, int]]] = {}
    for kind, s, e in _iso_boxes(data, start, end):
        found.setdefault(kind, []).append((s, min(e, end)))
    return found


def _iso_time(data: bytes, start: int, end: int) -> float | None:
    """Duration in seconds from an ``mvhd`` or ``mdhd`` payload (None if unset or unreadable)."""
    if start + 32 > end:
        return None
    if data[start] == 1:
        scale, duration = struct.unpack_from(">IQ", data, start + 20)
        unknown = 2**64 - 1
    else:
        scale, duration = struct.unpack_from(">II", data, start + 12)
        unknown = 2**32 - 1
    if scale == 0 or duration == unknown:
        return None
    return duration / scale


def _iso_declared(data: bytes) -> _Declared:
    n = len(data)
    declared = _Declared()
    top = _iso_boxes(data, 0, n)
    moov: tuple[int, int] | None = None
    for kind, s, e in top:
        if e > n:
            declared.truncated = (f"its {kind.decode('latin-1')!r} box declares {e - s} bytes, "
                                  f"{n - s} are there")
        if kind == b"moov" and moov is None:
            moov = (s, min(e, n))
    if moov is None:
        return declared
    inside = _children(data, *moov)
    durations = [t for s, e in inside.get(b"mvhd", []) if (t := _iso_time(data, s, e))]
    for s, e in inside.get(b"trak", []):
        mdia = _children(data, s, e).get(b"mdia", [])
        if not mdia:
            continue
        parts = _children(data, *mdia[0])
        hdlr = parts.get(b"hdlr", [])
        if not hdlr or data[hdlr[0][0] + 8:hdlr[0][0] + 12] != b"vide":
            continue
        durations += [t for s2, e2 in parts.get(b"mdhd", []) if (t := _iso_time(data, s2, e2))]
        minf = parts.get(b"minf", [])
        stbl = _children(data, *minf[0]).get(b"stbl", []) if minf else []
        if not stbl:
            continue
        table = _children(data, *stbl[0])
        for s2, e2 in table.get(b"stsd", [])[:1]:
            entry = s2 + 8
            if entry + 36 <= e2:
                w, h = struct.unpack_from(">HH", data, entry + 32)
                declared.width = max(declared.width or 0, w)
                declared.height = max(declared.height or 0, h)
        for s2, e2 in table.get(b"stsz", [])[:1]:
            if s2 + 12 <= e2:
                (count,) = struct.unpack_from(">I", data, s2 + 8)
                declared.frames = max(declared.frames or 0, count)
    declared.duration_s = max(durations) if durations else None
    return declared


def _vint(data: bytes, pos: int, end: int, *, marker: bool) -> tuple[int, int, bool]:
    """An EBML variable-length integer: (value, next position, all-ones 'unknown' size)."""
    if pos >= end or data[pos] == 0:
        raise _Broken
    length = 9 - data[pos].bit_length()
    if pos + length > end:
        raise _Broken
    value = int.from_bytes(data[pos:pos + length], "big")
    if marker:
        return value, pos + length, False
    value &= (1 << (7 * length)) - 1
    return value, pos + length, value == (1 << (7 * length)) - 1


def _ebml_elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, bool]]:
    """(id, payload start, declared end, unknown size) of the elements in ``data[start:end]``;
    stops at the first element of unknown size (it runs to the end of its parent)."""
    elements: list[tuple[int, int, int, bool]] = []
    pos = start
    while pos < end and len(elements) < _MAX_HEADER_ELEMENTS:
        ident, pos, _ = _vint(data, pos, end, marker=True)
        size, pos, unknown = _vint(data, pos, end, marker=False)
        elements.append((ident, pos, end if unknown else pos + size, unknown))
        if unknown:
            break
        pos += size
    return elements


def _ebml_uint(data: bytes, start: int, end: int) -> int:
    return int.from_bytes(data[start:min(end, start + 8)], "big")


def _ebml_doc_type(data: bytes) -> str:
    try:
        elements = _ebml_elements(data, 0, min(len(data), 4096))
        if not elements or elements[0][0] != 0x1A45DFA3:
            return "matroska"
        _, s, e, _ = elements[0]
        for ident, s2, e2, _ in _ebml_elements(data, s, min(e, len(data))):
            if ident == 0x4282:
                return data[s2:e2].rstrip(b"\x00").decode("ascii", "replace")
    except _Broken:
        pass
    return "matroska"


def _ebml_declared(data: bytes) -> _Declared:
    n = len(data)
    declared = _Declared()
    segment = next(((s, e, unknown) for ident, s, e, unknown in _ebml_elements(data, 0, n)
                    if ident == 0x18538067), None)
    if segment is None:
        return declared
    s, e, unknown = segment
    if not unknown and e > n:
        declared.truncated = f"its Segment declares {e - s} bytes, {n - s} are there"
    scale = 1_000_000
    duration: float | None = None
    for ident, s2, e2, _ in _ebml_elements(data, s, min(e, n)):
        e2 = min(e2, n)
        if ident == 0x1F43B675:  # the first Cluster: the header is over
            break
        if ident == 0x1549A966:  # Info
            for sub, s3, e3, _ in _ebml_elements(data, s2, e2):
                if sub == 0x2AD7B1:
                    scale = _ebml_uint(data, s3, e3) or scale
                elif sub == 0x4489 and e3 - s3 in (4, 8):
                    duration = struct.unpack(">f" if e3 - s3 == 4 else ">d", data[s3:e3])[0]
        elif ident == 0x1654AE6B:  # Tracks
            for sub, s3, e3, _ in _ebml_elements(data, s2, e2):
                if sub != 0xAE:
                    continue
                fields = {i: (a, b) for i, a, b, _ in _ebml_elements(data, s3, min(e3, e2))}
                if 0x83 not in fields or _ebml_uint(data, *fields[0x83]) != 1 or 0xE0 not in fields:
                    continue
                video = {i: (a, b) for i, a, b, _ in _ebml_elements(data, *fields[0xE0])}
                if 0xB0 in video and 0xBA in video:
                    declared.width = max(declared.width or 0, _ebml_uint(data, *video[0xB0]))
                    declared.height = max(declared.height or 0, _ebml_uint(data, *video[0xBA]))
    if duration is not None and math.isfinite(duration) and duration > 0:
        declared.duration_s = duration * scale / 1e9
    return declared


def _declared_facts(container: str, data: bytes) -> _Declared:
    """What the header declares; an unparseable header declares nothing (FFmpeg decides)."""
    try:
        return _ebml_declared(data) if container == "webm" else _iso_declared(data)
    except (_Broken, struct.error, ValueError, IndexError):
        return _Declared()


# --- probing ---------------------------------------------------------------------------------


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _check_caps(width: int | None, height: int | None, duration_s: float | None,
                frames: int | None, fps: float | None, who: str) -> None:
    """Raise the cap a declared fact breaks (``who`` names the declarer in the message)."""
    if width and height and width * height > MAX_VIDEO_PIXELS:
        raise InvalidVideo("too_many_pixels",
                           f"{who} declares {width}×{height} = {_mp(width * height)} per frame, "
                           f"over the {_mp(MAX_VIDEO_PIXELS)} limit")
    if duration_s is not None and duration_s > MAX_DURATION_S:
        raise InvalidVideo("too_long", f"{who} declares {_duration_text(duration_s)}, over the "
                           f"{MAX_DURATION_S:g} s limit")
    if frames is not None and frames > MAX_FRAMES:
        raise InvalidVideo("too_many_frames",
                           f"{who} declares {frames:,} frames, over the {MAX_FRAMES:,} limit")
    if fps is not None and fps > MAX_FPS:
        raise InvalidVideo("fps_too_high",
                           f"{who} declares {fps:g} fps, over the {MAX_FPS:g} fps limit")


def _duration_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"
    return f"{seconds:.2f} s"


def _av_detail(exc: BaseException) -> str:
    """One line naming a library failure, without echoing bytes of the file."""
    text = re.sub(r"b'(?:[^'\\]|\\.)*'", "<bytes>", str(exc))  # never echo the file's bytes
    text = re.sub(r"\[Errno -?\d+\]\s*|:\s*'\w+\(\)'", "", text)  # errno and C function
    text = " ".join(text.split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(data: bytes) -> tuple[InputContainer, VideoStream, VideoInfo]:
    """Refuse what must not be decoded, open what may be; the caller closes the container."""
    n = len(data)
    if n == 0:
        raise InvalidVideo("zero_bytes", "video is empty (0 bytes)")
    if n > MAX_VIDEO_BYTES:
        raise InvalidVideo("too_many_bytes", f"video is {n / _MIB:.1f} MiB ({n} bytes), over the "
                           f"{MAX_VIDEO_BYTES / _MIB:.0f} MiB limit")
    kind = _sniff_container(data)
    declared = _declared_facts(kind, data)
    _check_caps(declared.width, declared.height, declared.duration_s, declared.frames, None,
                f"the {_LABELS[kind]} header")

    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", options=_OPEN_OPTIONS,
                            metadata_errors="replace")
    except Exception as exc:  # noqa: BLE001 - any demuxer failure is a verdict on the bytes
        if declared.truncated:
            raise InvalidVideo("truncated", f"{_LABELS[kind]} data is truncated ({n} bytes: "
                               f"{declared.truncated}); it cannot be opened") from None
        raise InvalidVideo("undecodable", f"{_LABELS[kind]} data could not be opened: "
                           f"{_av_detail(exc)}") from None
    try:
        info, stream = _read_stream_facts(container, kind, declared, n)
    except InvalidVideo:
        container.close()
        raise
    except Exception as exc:  # noqa: BLE001
        container.close()
        raise InvalidVideo("undecodable", f"{_LABELS[kind]} streams could not be read: "
                           f"{_av_detail(exc)}") from None
    return container, stream, info


def _read_stream_facts(container: InputContainer, kind: str, declared: _Declared,
                       n: int) -> tuple[VideoInfo, VideoStream]:
    import av

    names = set(container.format.name.split(","))
    if kind not in names:
        raise InvalidVideo("wrong_container", f"the bytes look like {_LABELS[kind]} but FFmpeg "
                           f"reads them as {container.format.name!r}")
    attached = av.stream.Disposition.attached_pic
    stream = next((s for s in container.streams.video if not s.disposition & attached), None)
    has_audio = bool(container.streams.audio)
    if stream is None:
        raise InvalidVideo("no_video_stream", "the clip has no video stream" +
                           (" (audio only)" if has_audio else ""))
    ctx = stream.codec_context
    try:
        codec = ctx.codec.canonical_name
    except Exception:  # noqa: BLE001 - no decoder for this codec id in FFmpeg
        codec = ctx.name or "unknown"
    if codec not in ALLOWED_CODECS:
        raise InvalidVideo("codec_not_allowed", f"video codec {codec!r} is not allowed "
                           f"(allowed: {', '.join(ALLOWED_CODECS)})")
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise InvalidVideo("undecodable", f"the {codec} stream declares no usable frame size "
                           f"(a size over the {_mp(MAX_VIDEO_PIXELS)} limit reads as none)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    duration_s: float | None = None
    if stream.duration and stream.time_base:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration:
        duration_s = container.duration / av.time_base
    frames = int(stream.frames or 0)
    estimated = False
    if frames <= 0 and duration_s and fps:
        frames, estimated = round(duration_s * fps), True
    _check_caps(width, height, duration_s, frames, fps, f"the {codec} stream")
    info = VideoInfo(container=kind, media_type=CONTAINERS[kind], codec=codec, width=width,
                     height=height, fps=fps, duration_s=duration_s, frame_count=frames,
                     has_audio=has_audio, bytes=n, frame_count_estimated=estimated,
                     truncated=bool(declared.truncated))
    return info, stream


def probe_video(data: bytes) -> VideoInfo:
    """What ``data`` declares, or :class:`~pixellab.errors.InvalidVideo`; decodes no pixels
    of its own (FFmpeg's probing reads the first packets, its decoder bounded by
    :data:`MAX_VIDEO_PIXELS`).

    Reasons, in the order checked: ``zero_bytes``, ``too_many_bytes``, ``not_a_video`` (an
    image, audio, text or unknown bytes), ``wrong_container`` (a video container outside MP4,
    MOV, WebM: Matroska, AVI, MPEG-TS…), then from the container header and again from PyAV's
    probe: ``too_many_pixels``, ``too_long``, ``too_many_frames``, ``fps_too_high``; from the
    probe: ``truncated`` (cannot be opened and the header runs past the end), ``undecodable``,
    ``no_video_stream``, ``codec_not_allowed``."""
    container, _, info = _open(data)
    container.close()
    return info


# --- sampling --------------------------------------------------------------------------------


def _sample_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced over ``total`` frames, first and last included."""
    if total <= count:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _block_motion(a: np.ndarray, b: np.ndarray) -> float:
    """The largest mean absolute difference of ``a`` and ``b`` over an 8×8 grid of regions."""
    blocks = cv2.resize(np.abs(a - b), (_MOTION_GRID, _MOTION_GRID), interpolation=cv2.INTER_AREA)
    return float(blocks.max())


_PLANAR_YUV = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "nv12", "yuv420p10le", "yuv422p10le", "yuv444p10le"})
"""Pixel formats whose first plane is the luma itself (8- or 10-bit)."""


def _luma_thumb(frame: VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """The frame's brightness at thumbnail size, in full-range 8-bit levels (as a ``gray``
    conversion gives). Read straight from the luma plane where the format has one: swscale's
    gray conversion of every decoded frame cost 3× the decoding itself (P11 benchmark), and
    this is every frame of the clip, where the RGB conversion is only the sampled ones."""
    name = frame.format.name
    if name not in _PLANAR_YUV:
        return np.asarray(frame.to_ndarray(format="gray", width=size[0], height=size[1],
                                           interpolation="AREA"), dtype=np.float32)
    plane = frame.planes[0]
    deep = name.endswith("10le")
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype=np.uint16 if deep else np.uint8)
    luma = rows.reshape(frame.height, -1)[:, :frame.width]
    step = max(1, min(luma.shape[0] // (4 * size[1]), luma.shape[1] // (4 * size[0])))
    if step > 1:  # every step-th pixel still leaves 4×4 per thumbnail pixel to average
        luma = luma[::step, ::step]
    small = cv2.resize(luma, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if deep:
        small /= 4.0
    if not name.startswith("yuvj") and frame.color_range != 2:  # limited (TV) range: 16–235
        small = (small - 16.0) * (255.0 / 219.0)
    return small


def _rgb(frame: VideoFrame, max_side: int, rotation: int) -> np.ndarray:
    width, height = _fit(frame.width, frame.height, max_side)
    array = np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height,
                                        interpolation="AREA"))
    if rotation % 360:
        array = np.rot90(array, k=(rotation // 90) % 4)
    return np.array(array, dtype=np.uint8, order="C", copy=True)  # owned: frees the frame


def _frames(container: InputContainer, stream: VideoStream,
            failures: list[BaseException]) -> Iterator[VideoFrame]:
    """The stream's frames in order. A demuxer or decoder failure part way (a file that ends
    early) ends them: it is recorded in ``failures`` and the decoder is drained, so the frames
    it still holds (B-frame reordering keeps a few) come out too."""
    try:
        for packet in container.demux(stream):
            yield from stream.decode(packet)
        return
    except Exception as exc:  # noqa: BLE001 - any failure here is the break in the file
        failures.append(exc)
    try:
        yield from stream.decode(None)
    except Exception:  # noqa: BLE001 - nothing more to drain
        pass


def _decode(container: InputContainer, stream: VideoStream, info: VideoInfo, count: int,
            max_side: int) -> SampledClip:
    """Decode sequentially, keeping only the sampled frames (see :func:`sample_frames`)."""
    ctx = stream.codec_context
    ctx.thread_count = DECODE_THREADS
    ctx.thread_type = "AUTO"
    ctx.options = {"max_pixels": str(MAX_VIDEO_PIXELS)}
    known = info.frame_count > 0
    targets = _sample_indices(info.frame_count, count) if known else []
    stride = 1  # unknown length: keep every stride-th frame, doubling the stride when full
    kept: list[tuple[int, float, np.ndarray]] = []
    next_target = 0
    last: tuple[int, VideoFrame] | None = None
    thumb_size = _fit(info.width, info.height, _THUMB_SIDE)
    first_thumb: np.ndarray | None = None
    previous: np.ndarray | None = None
    motion_first = motion_step = 0.0
    rotation = 0
    decoded = 0
    deadline = time.monotonic() + DECODE_DEADLINE_S
    fps = info.fps or 0.0
    failures: list[BaseException] = []
    last_time = 0.0
    for frame in _frames(container, stream, failures):
        if time.monotonic() > deadline:
            raise InvalidVideo("decode_timeout", f"decoding took over "
                               f"{DECODE_DEADLINE_S:g} s (stopped at frame {decoded:,} of "
                               f"~{info.frame_count:,})")
        if decoded >= MAX_FRAMES:
            raise InvalidVideo("too_many_frames", f"the stream holds more than "
                               f"{MAX_FRAMES:,} frames (its header declares "
                               f"{info.frame_count:,})")
        if frame.width * frame.height > MAX_VIDEO_PIXELS:
            raise InvalidVideo("too_many_pixels", f"frame {decoded:,} is "
                               f"{frame.width}×{frame.height}, over the "
                               f"{_mp(MAX_VIDEO_PIXELS)} limit")
        index = decoded
        decoded += 1
        if index == 0:
            rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
        thumb = _luma_thumb(frame, thumb_size)
        if first_thumb is None:
            first_thumb = thumb
        else:
            motion_first = max(motion_first, _block_motion(thumb, first_thumb))
            assert previous is not None
            motion_step = max(motion_step, _block_motion(thumb, previous))
        previous = thumb
        when = float(frame.time) if frame.time is not None else (index / fps if fps else 0.0)
        if known:
            if next_target < len(targets) and targets[next_target] == index:
                kept.append((index, when, _rgb(frame, max_side, rotation)))
                next_target += 1
        elif index % stride == 0:
            kept.append((index, when, _rgb(frame, max_side, rotation)))
            if len(kept) >= 2 * count:
                kept = kept[::2]
                stride *= 2
        last = (index, frame)
        last_time = when
    failure = failures[0] if failures else None
    if decoded == 0:
        if info.truncated or failure is not None and "end of file" in str(failure).lower():
            raise InvalidVideo("truncated", f"{_LABELS[info.container]} data is truncated "
                               f"({info.bytes} bytes): no frame could be decoded")
        detail = f": {_av_detail(failure)}" if failure is not None else ""
        raise InvalidVideo("undecodable", f"no frame of the {info.codec} stream could be "
                           f"decoded{detail}")
    assert last is not None
    if known and next_target < len(targets) and kept[-1][0] != last[0]:
        # Fewer frames than declared: the last one stands for the samples never reached.
        frame = last[1]
        kept.append((last[0], float(frame.time) if frame.time is not None else 0.0,
                     _rgb(frame, max_side, rotation)))
    if not known:
        if kept[-1][0] != last[0]:
            frame = last[1]
            kept.append((last[0], float(frame.time) if frame.time is not None else 0.0,
                         _rgb(frame, max_side, rotation)))
        kept = [kept[i] for i in _sample_indices(len(kept), count)]
    truncation = ""
    if failure is not None:
        truncation = f"decoding stopped at frame {decoded:,}: {_av_detail(failure)}"
    elif info.frame_count and decoded < info.frame_count * (1 - TRUNCATED_SHORTFALL) - 2:
        truncation = (f"{decoded:,} frames decoded of {info.frame_count:,} "
                      f"{'expected' if info.frame_count_estimated else 'declared'}")
    elif info.truncated:
        truncation = "the container runs past the end of the bytes"
    return SampledClip(frames=tuple(a for _, _, a in kept), indices=tuple(i for i, _, _ in kept),
                       timestamps=tuple(t for _, t, _ in kept), info=info, decoded=decoded,
                       truncated=bool(truncation), truncation=truncation, rotation=rotation,
                       motion_from_first=motion_first, motion_step=motion_step,
                       decoded_duration_s=last_time + (1 / fps if fps else 0.0))


def sample_frames(data: bytes, count: int = SAMPLE_FRAMES,
                  max_side: int = SAMPLE_MAX_SIDE) -> SampledClip:
    """``count`` frames evenly spaced over the clip (first and last included), RGB ``uint8``,
    downscaled so the longer side is at most ``max_side``; or
    :class:`~pixellab.errors.InvalidVideo` (every :func:`probe_video` reason, plus
    ``undecodable``/``truncated`` when no frame decodes, ``decode_timeout`` past
    :data:`DECODE_DEADLINE_S`, ``too_many_frames``/``too_many_pixels`` when the stream breaks
    the caps its header kept to).

    Bounded in memory: frames are decoded one after the other and dropped unless sampled, so
    the peak is the decoder's few frames plus ``count`` small arrays, whatever the length. A
    clip that ends early decodes up to the break and comes back with ``truncated`` set. Fewer
    than ``count`` frames come back when the clip has fewer."""
    if count < 1 or max_side < 1:
        raise ValueError(f"count and max_side must be positive, not {count}, {max_side}")
    container, stream, info = _open(data)
    try:
        return _decode(container, stream, info, count, max_side)
    finally:
        container.close()


# --- expectations ----------------------------------------------------------------------------


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "" or value == "auto":
        return None
    if isinstance(value, bool):
        raise ConfigError(f"expected a number, not {value!r}", key=key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a number, not {value!r}", key=key) from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"expected a positive number, not {value!r}", key=key)
    return number


_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:/]\s*(\d+(?:\.\d+)?)\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(\d+)\s*$", re.IGNORECASE)
_TIER = re.compile(r"^\s*(\d+)\s*p\s*$", re.IGNORECASE)
_NAMED_TIERS = {"4k": 2160, "uhd": 2160, "2k": 1440, "qhd": 1440, "fhd": 1080, "hd": 720,
                "sd": 480}


def _ratio(text: str) -> float | None:
    match = _RATIO.match(text)
    if match:
        w, h = float(match.group(1)), float(match.group(2))
        return w / h if w > 0 and h > 0 else None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass(frozen=True)
class VideoExpectation:
    """What the request asked of a clip; ``None`` fields are not checked.

    ``aspect_ratio`` is as asked (``"9:16"``, ``"16:9"``, ``"1:1"``, or a number); the short
    side (``short_side``, from ``"720p"``) or the exact ``resolution`` (width, height) when the
    request named one. Tolerances default to the module's constants (see
    :data:`DURATION_TOLERANCE`, :data:`FPS_TOLERANCE_FRACTION`, :data:`ASPECT_TOLERANCE`,
    :data:`RESOLUTION_TOLERANCE`)."""

    duration_s: float | None = None
    fps: float | None = None
    aspect_ratio: str | None = None
    short_side: int | None = None
    resolution: tuple[int, int] | None = None
    duration_tolerance_s: float = DURATION_TOLERANCE_S
    duration_tolerance: float = DURATION_TOLERANCE
    fps_tolerance: float = FPS_TOLERANCE
    fps_tolerance_fraction: float = FPS_TOLERANCE_FRACTION
    aspect_tolerance: float = ASPECT_TOLERANCE
    resolution_tolerance: float = RESOLUTION_TOLERANCE

    def __post_init__(self) -> None:
        if self.aspect_ratio is not None and _ratio(self.aspect_ratio) is None:
            raise ConfigError(f"expected a ratio such as '9:16', not {self.aspect_ratio!r}",
                              key="aspect_ratio")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VideoExpectation | None:
        """The expectation a request's normalized params state (keys ``duration_s``, ``fps``,
        ``aspect_ratio``, ``resolution``; absent, empty or ``"auto"`` = not checked), or None
        when they state none. ``resolution`` is a tier (``"720p"``, ``"1080p"``, ``"4k"``:
        the short side) or a size (``"1280x720"``). A value that cannot mean anything raises
        :class:`~pixellab.errors.ConfigError` naming the key."""
        duration = _number(params, "duration_s")
        fps = _number(params, "fps")
        aspect_raw = params.get("aspect_ratio")
        aspect = None if aspect_raw in (None, "", "auto") else str(aspect_raw)
        short_side: int | None = None
        resolution: tuple[int, int] | None = None
        raw = params.get("resolution")
        if raw not in (None, "", "auto"):
            text = str(raw).strip().lower()
            size, tier = _SIZE.match(text), _TIER.match(text)
            if size:
                resolution = (int(size.group(1)), int(size.group(2)))
            elif tier:
                short_side = int(tier.group(1))
            elif text in _NAMED_TIERS:
                short_side = _NAMED_TIERS[text]
            else:
                raise ConfigError(f"expected a resolution such as '720p' or '1280x720', not "
                                  f"{raw!r}", key="resolution")
        if all(v is None for v in (duration, fps, aspect, short_side, resolution)):
            return None
        return cls(duration_s=duration, fps=fps, aspect_ratio=aspect, short_side=short_side,
                   resolution=resolution)

    def mismatch(self, width: int, height: int, duration_s: float | None,
                 fps: float | None) -> tuple[str, str] | None:
        """(reason, message) for the first expectation a clip of these facts misses: checked
        ``duration_mismatch``, ``fps_mismatch``, ``aspect_mismatch``, ``resolution_mismatch``."""
        if self.duration_s is not None:
            allowed = max(self.duration_tolerance_s, self.duration_tolerance * self.duration_s)
            if duration_s is None:
                return "duration_mismatch", (f"the clip declares no duration, "
                                             f"{self.duration_s:g} s was asked for")
            if abs(duration_s - self.duration_s) > allowed:
                return "duration_mismatch", (f"the clip lasts {duration_s:.2f} s, "
                                             f"{self.duration_s:g} s was asked for (tolerance "
                                             f"±{allowed:.2f} s)")
        if self.fps is not None:
            allowed = max(self.fps_tolerance, self.fps_tolerance_fraction * self.fps)
            if fps is None or abs(fps - self.fps) > allowed:
                shown = f"{fps:.3g} fps" if fps is not None else "no frame rate"
                return "fps_mismatch", (f"the clip plays at {shown}, {self.fps:g} fps was asked "
                                        f"for (tolerance ±{allowed:.2g})")
        if self.aspect_ratio is not None:
            want = _ratio(self.aspect_ratio)
            assert want is not None
            got = width / height
            if abs(got / want - 1) > self.aspect_tolerance:
                return "aspect_mismatch", (f"the clip is {width}×{height} (aspect {got:.4f}), "
                                           f"{self.aspect_ratio} ({want:.4f}) was asked for "
                                           f"(tolerance {self.aspect_tolerance:.0%})")
        tol = self.resolution_tolerance
        if self.short_side is not None:
            short = min(width, height)
            if abs(short / self.short_side - 1) > tol:
                return "resolution_mismatch", (f"the clip is {width}×{height} (short side "
                                               f"{short}), {self.short_side}p was asked for "
                                               f"(tolerance {tol:.0%})")
        if self.resolution is not None:
            ew, eh = self.resolution
            if abs(width / ew - 1) > tol or abs(height / eh - 1) > tol:
                return "resolution_mismatch", (f"the clip is {width}×{height}, {ew}×{eh} was "
                                               f"asked for (tolerance {tol:.0%})")
        return None


# --- the check -------------------------------------------------------------------------------

_GENERIC_MEDIA_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream",
                                  "application/binary", "video/*"})
_MEDIA_TYPE_FAMILY = {"video/mp4": "iso", "video/quicktime": "iso", "video/x-m4v": "iso",
                      "application/mp4": "iso", "video/webm": "webm"}
"""MP4 and MOV are one family (ISO base media): servers label either as the other."""


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def _source_difference(frame: np.ndarray, source: bytes) -> float | None:
    """Mean absolute difference between ``frame`` and the source photo resized to it (the
    better of stretched and centre-cropped to the frame's aspect); None when the source does
    not decode."""
    try:
        photo = normalized_array(decode_image(source))[..., :3]
    except (InvalidImage, ValueError):
        return None
    try:
        return _photo_difference(frame, photo)
    except Exception:  # noqa: BLE001 - an incomparable source: no verdict on it
        return None


def _photo_difference(frame: np.ndarray, photo: np.ndarray) -> float:
    h, w = frame.shape[:2]
    candidates = [photo]
    ph, pw = photo.shape[:2]
    want = w / h
    if pw / ph > want:  # wider than the frame: crop the sides
        cw = max(1, round(ph * want))
        candidates.append(photo[:, (pw - cw) // 2:(pw - cw) // 2 + cw])
    else:
        ch = max(1, round(pw / want))
        candidates.append(photo[(ph - ch) // 2:(ph - ch) // 2 + ch])
    return min(_mean_abs(cv2.resize(np.ascontiguousarray(c), (w, h),
                                    interpolation=cv2.INTER_AREA), frame) for c in candidates)


def check_video_output(data: bytes, *, declared_media_type: str | None = None,
                       expect: VideoExpectation | None = None,
                       source: bytes | None = None) -> ImageCheck:
    """Check one provider clip; never raises on bad bytes, reports an
    :class:`~pixellab.validate.ImageCheck` (``mode`` None; ``media_type``, ``width``,
    ``height`` (as displayed), ``duration_s`` and ``fps`` filled whenever probing succeeded).

    Reasons, stopping at the first failure:

    1. everything :func:`probe_video` and :func:`sample_frames` refuse: ``zero_bytes``,
       ``too_many_bytes``, ``not_a_video``, ``wrong_container``, ``too_many_pixels``,
       ``too_long``, ``too_many_frames``, ``fps_too_high``, ``no_video_stream``,
       ``codec_not_allowed``, ``undecodable``, ``decode_timeout``;
    2. ``truncated``: the file ends early (the container runs past the bytes, the demuxer
       failed part way, or over 10 % of the declared frames never came);
    3. ``wrong_media_type``: ``declared_media_type`` names another type than the bytes are
       (MP4 and QuickTime count as one family; generic types are not checked);
    4. ``still_image``: a single frame, or a zero duration;
    5. ``duration_mismatch``, ``fps_mismatch``, ``aspect_mismatch``, ``resolution_mismatch``:
       off what ``expect`` asks, beyond its tolerances;
    6. ``blank_black`` / ``blank_uniform``: every sampled frame near black / near uniform
       (the image rules, :func:`pixellab.validate.measure_blank`);
    7. ``still_image``: frozen, on the ``source`` photo (within
       :data:`STILL_SOURCE_MAX_DIFF`): a still wrapped as a video;
    8. ``frozen``: no decoded frame (sampled or not) differs from the first by
       :data:`FROZEN_MAX_DIFF`.
    """
    try:
        container, stream, info = _open(data)
    except InvalidVideo as exc:
        return ImageCheck(False, exc.reason, str(exc), None, None, None, None)
    except Exception as exc:  # noqa: BLE001 - never raise on bad bytes
        return ImageCheck(False, "undecodable", _av_detail(exc), None, None, None, None)

    def fail(reason: str, message: str, size: tuple[int, int] | None = None) -> ImageCheck:
        w, h = size or (info.width, info.height)
        return ImageCheck(False, reason, message, info.media_type, w, h, None,
                          duration_s=info.duration_s, fps=info.fps)

    try:
        clip = _decode(container, stream, info, SAMPLE_FRAMES, CHECK_MAX_SIDE)
    except InvalidVideo as exc:
        return fail(exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001
        return fail("undecodable", f"decoding failed: {_av_detail(exc)}")
    finally:
        container.close()
    size = clip.display_size
    width, height = size
    duration_s = info.duration_s if info.duration_s is not None else clip.decoded_duration_s
    if duration_s != info.duration_s:
        info = replace(info, duration_s=duration_s)  # measured: the stream declared none
    if clip.truncated:
        return fail("truncated", f"{_LABELS[info.container]} data is truncated ({info.bytes} "
                    f"bytes): {clip.truncation}", size)
    if declared_media_type is not None:
        base = declared_media_type.split(";", 1)[0].strip().lower()
        family = _MEDIA_TYPE_FAMILY.get(base, base)
        if base not in _GENERIC_MEDIA_TYPES and family != _MEDIA_TYPE_FAMILY[info.media_type]:
            return fail("wrong_media_type", f"declared {declared_media_type!r} but the bytes "
                        f"are {_LABELS[info.container]} ({info.media_type})", size)
    if clip.decoded == 1 or info.duration_s is not None and info.duration_s <= 0:
        what = ("a single frame" if clip.decoded == 1 else
                f"{clip.decoded} frames lasting {info.duration_s or 0:g} s")
        return fail("still_image", f"the clip is {what}: a still image, not a video", size)
    if expect is not None:
        missed = expect.mismatch(width, height, info.duration_s, info.fps)
        if missed is not None:
            return fail(*missed, size)
    stats = [measure_blank(frame) for frame in clip.frames]
    if all(s.max < BLACK_MAX for s in stats):
        return fail("blank_black", f"all {len(stats)} sampled frames are near black: max channel "
                    f"value {max(s.max for s in stats)} < {BLACK_MAX}", size)
    if all(s.reason() is not None for s in stats):
        return fail("blank_uniform", f"all {len(stats)} sampled frames are near-uniform: largest "
                    f"per-channel std {max(s.std for s in stats):.2f}", size)
    frozen = clip.motion_from_first < FROZEN_MAX_DIFF  # every decoded frame, sampled or not
    if frozen and source is not None:
        difference = _source_difference(clip.frames[0], source)
        if difference is not None and difference < STILL_SOURCE_MAX_DIFF:
            return fail("still_image", f"every one of the {clip.decoded} frames is the source "
                        f"photo (mean difference {difference:.2f} < {STILL_SOURCE_MAX_DIFF:g}): "
                        f"a still image wrapped as a video", size)
    if frozen:
        return fail("frozen", f"the picture never changes: no region of the {clip.decoded} "
                    f"frames differs from the first frame by {FROZEN_MAX_DIFF:g} (largest mean "
                    f"difference {clip.motion_from_first:.2f} of 255)", size)
    return ImageCheck(True, None, "", info.media_type, width, height, None,
                      duration_s=info.duration_s, fps=info.fps)


# --- poster and preview ----------------------------------------------------------------------


@dataclass(frozen=True)
class Previews:
    """A clip's report pictures: ``poster`` (a JPEG still, longer side ≤
    :data:`POSTER_MAX_SIDE`) and ``preview`` (an animated WebP of up to :data:`PREVIEW_FRAMES`
    frames, ≤ :data:`PREVIEW_MAX_SIDE`), with the clip's facts for a caption. ``cached`` is True
    when they were read from the cache (nothing was decoded)."""

    poster: bytes
    preview: bytes
    frames: int
    media_type: str
    width: int
    height: int
    duration_s: float | None
    fps: float | None
    cached: bool = False

    def poster_uri(self) -> str:
        return f"data:image/jpeg;base64,{base64.b64encode(self.poster).decode()}"

    def preview_uri(self) -> str:
        return f"data:image/webp;base64,{base64.b64encode(self.preview).decode()}"


def _representative(frames: tuple[np.ndarray, ...]) -> np.ndarray:
    """The first sampled frame that is not blank (a fade-in's first frame is black)."""
    return next((f for f in frames if measure_blank(f).reason() is None), frames[0])


def _make_previews(data: bytes) -> Previews:
    clip = sample_frames(data, count=PREVIEW_FRAMES, max_side=POSTER_MAX_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(_representative(clip.frames)).save(buffer, format="JPEG", quality=80)
    poster = buffer.getvalue()
    images = []
    for frame in clip.frames:
        image = Image.fromarray(frame)
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
        images.append(image)
    span = clip.info.duration_s or (len(images) / (clip.info.fps or 8))
    step_ms = int(min(500, max(80, 1000 * span / max(1, len(images)))))
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:],
                   duration=step_ms, loop=0, quality=60, method=2, minimize_size=False)
    width, height = clip.display_size
    return Previews(poster=poster, preview=buffer.getvalue(), frames=len(images),
                    media_type=clip.info.media_type, width=width, height=height,
                    duration_s=clip.info.duration_s, fps=clip.info.fps)


def _write_atomic(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def previews(data: bytes, *, cache_dir: Path | None = None) -> Previews:
    """The poster and animated preview of a clip, made once: with ``cache_dir``, kept there
    as ``<sha256>.poster.jpg``, ``<sha256>.preview.webp`` and ``<sha256>.json`` (written last,
    so a half-written entry is never read) and read back on later calls without decoding.
    Raises :class:`~pixellab.errors.InvalidVideo` for a clip :func:`sample_frames` refuses."""
    if cache_dir is None:
        return _make_previews(data)
    digest = hashlib.sha256(data).hexdigest()
    poster_path = cache_dir / f"{digest}.poster.jpg"
    preview_path = cache_dir / f"{digest}.preview.webp"
    facts_path = cache_dir / f"{digest}.json"
    try:
        facts = json.loads(facts_path.read_text())
        return Previews(poster=poster_path.read_bytes(), preview=preview_path.read_bytes(),
                        frames=int(facts["frames"]), media_type=str(facts["media_type"]),
                        width=int(facts["width"]), height=int(facts["height"]),
                        duration_s=facts["duration_s"], fps=facts["fps"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: make it again
    made = _make_previews(data)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(poster_path, made.poster)
    _write_atomic(preview_path, made.preview)
    _write_atomic(facts_path, json.dumps({
        "frames": made.frames, "media_type": made.media_type, "width": made.width,
        "height": made.height, "duration_s": made.duration_s, "fps": made.fps}).encode())
    return made


def _size_text(n: int) -> str:
    return f"{n / _MIB:.1f} MB" if n >= _MIB else f"{max(1, round(n / 1024))} KB"


def video_cell_html(data: bytes, *, alt: str, caption: str = "",
                    cache_dir: Path | None = None) -> str:
    """A report cell for a clip: its animated preview, which opens (no script: a
    ``<details>``) onto the clip in a ``<video>`` player whose poster is the still. The clip is
    embedded as a ``data:`` URI when at most :data:`EMBED_MAX_BYTES`; a larger one is named by
    its file in the store (``<sha256>.<ext>``). Every text is escaped."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        made = previews(data, cache_dir=cache_dir)
    except InvalidVideo as exc:
        return (f"<div class='plx-video plx-video-bad'>{html.escape(alt)}: the clip cannot be "
                f"shown ({html.escape(exc.reason)}: {html.escape(str(exc))})</div>")
    facts = [f"{made.width}×{made.height}"]
    if made.duration_s is not None:
        facts.append(f"{made.duration_s:.1f} s")
    if made.fps:
        facts.append(f"{made.fps:.3g} fps")
    facts.append(_size_text(len(data)))
    label = html.escape(" · ".join([alt, *facts, *([caption] if caption else [])]))
    extension = VIDEO.extensions.get(made.media_type, ".mp4")
    if len(data) <= EMBED_MAX_BYTES:
        clip_uri = f"data:{made.media_type};base64,{base64.b64encode(data).decode()}"
        player = (f"<video class='plx-video-player' controls muted loop playsinline "
                  f"preload='none' poster='{made.poster_uri()}' title='{html.escape(alt)}'>"
                  f"<source src='{clip_uri}' type='{html.escape(made.media_type)}'></video>")
    else:
        player = (f"<img class='plx-video-poster' src='{made.poster_uri()}' "
                  f"alt='{html.escape(alt)} (poster)'><span class='plx-video-note'>the clip "
                  f"({_size_text(len(data))}) is too large to embed (over "
                  f"{_size_text(EMBED_MAX_BYTES)}); it is in the store as "
                  f"{html.escape(digest + extension)}</span>")
    return (f"<details class='plx-video'><summary>"
            f"<img class='plx-video-preview' src='{made.preview_uri()}' alt='{html.escape(alt)}' "
            f"title='click to play ({html.escape(' · '.join(facts))})'></summary>"
            f"<span class='plx-video-full'>{player}<span>{label}</span></span></details>")


# --- the media kind --------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoKind:
    """Video outputs: checked by :func:`check_video_output` against the request's params,
    stored byte for byte, shown as an animated preview that opens onto the clip."""

    name: str = "video"
    extensions = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"}
    default_metrics: tuple[str, ...] = ()

    def check(self, data: bytes, *, task: Task, declared_media_type: str | None,
              expected_size: tuple[int, int] | None, source: bytes | None,
              params: Mapping[str, Any] | None = None) -> ImageCheck:
        """:func:`check_video_output` with the expectation the request's ``params`` state
        (:meth:`VideoExpectation.from_params`); an ``expected_size`` is an exact resolution."""
        expect = VideoExpectation.from_params(params or {})
        if expected_size is not None and (expect is None or expect.resolution is None):
            size = (int(expected_size[0]), int(expected_size[1]))
            expect = replace(expect, resolution=size) if expect else VideoExpectation(
                resolution=size)
        return check_video_output(data, declared_media_type=declared_media_type,
                                  expect=expect, source=source)

    def stored_form(self, request_key: str, data: bytes) -> bytes:
        return data

    def cell_html(self, data: bytes, *, alt: str, caption: str) -> str:
        return video_cell_html(data, alt=alt, caption=caption)


VIDEO = VideoKind()
assert set(VIDEO.extensions) == set(CONTAINERS.values())  # every container validation allows
