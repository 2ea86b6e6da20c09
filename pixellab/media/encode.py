"""Frames in, a playable clip out: the one place pixellab encodes video (PyAV).

The local video baselines, the emulator's clips and the tests' hostile videos all encode here,
so every clip pixellab makes has the same container rules: H.264 in MP4 (``yuv420p``, what every
browser and phone plays) or VP9 in WebM, even dimensions (4:2:0 chroma needs them), a constant
frame rate. (No ``faststart``: FFmpeg moves the index by reopening the file by name, which an
in-memory buffer does not have; a browser plays the clip once loaded either way.)

Why PyAV: its wheel bundles FFmpeg with libx264 and libvpx, so encoding needs nothing installed
beside it, and it hands frames over as numpy arrays without a subprocess or a temporary file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from typing import Literal

import av
import numpy as np

Container = Literal["mp4", "webm"]

CODECS: dict[str, str] = {"mp4": "libx264", "webm": "libvpx-vp9"}
"""The encoder each container gets."""

MEDIA_TYPES: dict[str, str] = {"mp4": "video/mp4", "webm": "video/webm"}


def even_size(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` rounded down to even numbers (at least 2): what 4:2:0 video takes."""
    return max(2, width - width % 2), max(2, height - height % 2)


def encode_video(frames: Iterable[np.ndarray], *, fps: float, container: Container = "mp4",
                 crf: int = 23, preset: str = "superfast") -> bytes:
    """Encode RGB ``uint8`` frames of one size (H×W×3) into a clip; odd sizes are cropped to
    even. ``crf`` is the quality (lower is better, 18–28 usual); ``preset`` trades encoding speed
    for size (x264's names; the default ``superfast`` is the fastest with macroblock-tree rate
    control off, without which x264's output varied from run to run for the same frames, and a
    baseline's clip must be the same bytes every time). Raises ``ValueError`` for no frames or
    frames of mixed sizes."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps!r}")
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buffer, mode="w", format=container) as output:
        stream: av.VideoStream | None = None
        size: tuple[int, int] | None = None
        for frame in frames:
            array = np.asarray(frame)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"frames must be H×W×3 uint8, not {array.shape} {array.dtype}")
            if stream is None:
                width, height = even_size(array.shape[1], array.shape[0])
                size = (width, height)
                added = output.add_stream(CODECS[container], rate=rate)
                assert isinstance(added, av.VideoStream)
                stream = added
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                if container == "mp4":
                    stream.options = {"crf": str(crf), "preset": preset}
                else:  # VP9: constant quality, the fastest real-time speed
                    stream.options = {"crf": str(crf + 8), "b": "0", "deadline": "realtime",
                                      "cpu-used": "8"}
            elif (array.shape[1] - array.shape[1] % 2, array.shape[0] - array.shape[0] % 2) \
                    != size:
                raise ValueError("all frames of a clip must have the same size")
            assert size is not None
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(array[:size[1], :size[0]]), format="rgb24")
            for packet in stream.encode(video_frame):
                output.mux(packet)
        if stream is None:
            raise ValueError("a clip needs at least one frame")
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()
