"""Specification of pixellab.media.video: untrusted clips are probed, refused, sampled and shown.

Every clip here is real, made on the fly with :func:`pixellab.media.encode.encode_video` or PyAV
(and, for hostile headers, a few patched bytes); nothing is mocked. Frames are tiny (64×48)
except where size is the point.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pixellab.errors import ConfigError, InvalidVideo
from pixellab.media import kind_for
from pixellab.media import video as video_module
from pixellab.media.encode import encode_video
from pixellab.media.video import (
    MAX_VIDEO_PIXELS,
    VIDEO,
    VideoExpectation,
    check_video_output,
    previews,
    probe_video,
    sample_frames,
    video_cell_html,
)
from pixellab.tasks import Task

W, H = 64, 48


# --- clips -----------------------------------------------------------------------------------


def _background(width: int = W, height: int = H) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    frame[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    frame[..., 1] = 80
    return frame


def _moving(n: int = 24, width: int = W, height: int = H, side: int = 10) -> list[np.ndarray]:
    """A white square crossing a still gradient."""
    frames = []
    for i in range(n):
        frame = _background(width, height)
        x = (i * 3) % (width - side)
        frame[height // 4:height // 4 + side, x:x + side] = 255
        frames.append(frame)
    return frames


def _photo(width: int = 160, height: int = 120) -> np.ndarray:
    """A product-photo stand-in: smooth colour fields and a soft blob (no sharp synthetic
    edges, which codecs ring around at tiny sizes)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(-(((x - width * 0.55) / (width * 0.2)) ** 2
                    + ((y - height * 0.5) / (height * 0.25)) ** 2))
    frame = np.stack([120 + 100 * blob, 90 + 60 * x / width, 200 - 120 * blob], axis=-1)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _clip(frames: list[np.ndarray], fps: float = 12, container: str = "mp4") -> bytes:
    return encode_video(frames, fps=fps, container=container)  # type: ignore[arg-type]


GOOD = _clip(_moving())


def _with(codec: str, fmt: str = "mp4", n: int = 6, rate: Fraction = Fraction(12),
          size: tuple[int, int] = (W, H), frames: list[np.ndarray] | None = None,
          rotation: int = 0, path: Path | None = None, options: dict[str, str] | None = None
          ) -> bytes:
    """A clip encoded straight with PyAV (any codec, container, rate or display rotation)."""
    buffer = io.BytesIO()
    with av.open(str(path) if path else buffer, "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames or _moving(n, *size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes() if path else buffer.getvalue()


def _audio_only(fmt: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=48000)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buffer.getvalue()


def _many_frames(count: int, fps: int) -> bytes:
    """``count`` 16×16 H.264 frames, made in milliseconds: one key frame and one encoded
    'nothing changed' frame, muxed again and again with rising timestamps."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 128, np.uint8), format="rgb24")
        packets = [*stream.encode(frame), *stream.encode(frame), *stream.encode()]
        key, same = bytes(packets[0]), bytes(packets[1])
        for i in range(count):
            packet = av.Packet(key if i == 0 else same)
            packet.stream = stream
            packet.time_base = packets[0].time_base
            packet.pts = packet.dts = i
            packet.duration = 1
            packet.is_keyframe = i == 0
            out.mux(packet)
    return buffer.getvalue()


def _set_bits(buffer: bytearray, bit: int, count: int, value: int) -> None:
    for k in range(count):
        byte, shift = divmod(bit + k, 8)
        mask = 1 << (7 - shift)
        if (value >> (count - 1 - k)) & 1:
            buffer[byte] |= mask
        else:
            buffer[byte] &= ~mask & 0xFF


# --- a good clip -----------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_a_good_clip_passes_with_its_duration_fps_and_size(container: str) -> None:
    check = check_video_output(_clip(_moving(), container=container))
    assert check.ok and check.reason is None and check.message == ""
    media_type = {"mp4": "video/mp4", "webm": "video/webm"}[container]
    assert (check.media_type, check.width, check.height) == (media_type, W, H)
    assert check.duration_s == pytest.approx(2.0, abs=0.05) and check.fps == pytest.approx(12)


def test_probe_reads_what_the_clip_declares() -> None:
    info = probe_video(GOOD)
    assert (info.container, info.media_type, info.codec) == ("mp4", "video/mp4", "h264")
    assert (info.width, info.height, info.fps, info.frame_count) == (W, H, 12.0, 24)
    assert info.duration_s == pytest.approx(2.0) and not info.has_audio
    assert info.bytes == len(GOOD) and not info.truncated and not info.frame_count_estimated
    mov = probe_video(_with("libx264", "mov"))
    assert (mov.container, mov.media_type) == ("mov", "video/quicktime")
    webm = probe_video(_clip(_moving(), container="webm"))
    assert (webm.codec, webm.frame_count_estimated, webm.frame_count) == ("vp9", True, 24)


# --- hostile clips: each refused with its own reason -----------------------------------------


def _refused(data: bytes, reason: str) -> str:
    """Assert ``data`` is refused as ``reason`` by the check and by the probe; the message."""
    check = check_video_output(data, declared_media_type="video/mp4")
    assert (check.ok, check.reason) == (False, reason), check.message
    with pytest.raises(InvalidVideo) as caught:
        sample_frames(data)
    assert caught.value.reason == reason
    return check.message


def test_zero_bytes_are_refused() -> None:
    assert "empty" in _refused(b"", "zero_bytes")


def test_a_gif_renamed_mp4_is_not_a_video() -> None:
    frames = [Image.fromarray(f) for f in _moving(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    message = _refused(buffer.getvalue(), "not_a_video")
    assert "GIF image" in message and "MP4, MOV, WebM" in message


def test_a_png_renamed_mp4_is_not_a_video() -> None:
    assert "PNG image" in _refused(_png(_photo()), "not_a_video")


@pytest.mark.parametrize("fmt, name", [("matroska", "Matroska"), ("avi", "AVI"),
                                       ("mpegts", "MPEG transport stream")])
def test_a_video_container_outside_the_allow_list_is_the_wrong_container(fmt: str,
                                                                         name: str) -> None:
    assert name in _refused(_with("libx264", fmt), "wrong_container")


def test_an_mp4_cut_in_half_is_truncated() -> None:
    """encode_video writes the index (moov) last: half a file has none, and its media box
    declares more bytes than are there."""
    message = _refused(GOOD[:len(GOOD) // 2], "truncated")
    assert "'mdat' box declares" in message


def test_a_truncated_faststart_mp4_decodes_up_to_the_break(tmp_path: Path) -> None:
    data = _with("libx264", "mp4", n=48, path=tmp_path / "fast.mp4",
                 options={"movflags": "faststart"})
    cut = data[:len(data) * 3 // 4]
    clip = sample_frames(cut)
    assert clip.truncated and 0 < clip.decoded < 48 and clip.frames
    check = check_video_output(cut)
    assert (check.reason, check.width, check.height) == ("truncated", W, H)
    assert "decoding stopped at frame" in check.message


def test_a_truncated_webm_is_truncated() -> None:
    data = _clip(_moving(48), container="webm")
    check = check_video_output(data[:len(data) // 2])
    assert check.reason == "truncated" and "frames decoded of 48 expected" in check.message


@pytest.mark.parametrize("fmt, codec", [("mp4", "aac"), ("webm", "libopus")])
def test_an_audio_only_file_has_no_video_stream(fmt: str, codec: str) -> None:
    assert "audio only" in _refused(_audio_only(fmt, codec), "no_video_stream")


def test_an_mp4_header_declaring_16384x16384_frames_is_refused_before_decoding() -> None:
    """The sample entry (stsd) is patched to 16384×16384. PyAV alone would report the size
    its probe reads from the H.264 parameter sets (64×48); the container's own declaration is
    read without FFmpeg and refused on what it says."""
    data = bytearray(GOOD)
    entry = data.find(b"avc1", data.find(b"stsd")) - 4
    data[entry + 32:entry + 36] = struct.pack(">HH", 16384, 16384)
    message = _refused(bytes(data), "too_many_pixels")
    assert "16384×16384" in message and "268.4 MP" in message


def test_a_webm_header_declaring_16384x16384_frames_is_refused_before_decoding() -> None:
    data = bytearray(_clip([_background(256, 256)] * 2, container="webm"))
    for element in (b"\xb0\x82\x01\x00", b"\xba\x82\x01\x00"):  # PixelWidth/Height = 256
        at = data.find(element)
        data[at + 2:at + 4] = struct.pack(">H", 16384)
    assert "16384×16384" in _refused(bytes(data), "too_many_pixels")


def test_a_vp9_frame_declaring_16384x16384_is_refused_without_decoding_it() -> None:
    """Here only the bitstream lies (the key frame's header, 16-bit width-1 and height-1 after
    the sync code and 4 bits of colour config): FFmpeg's decoder, capped at
    MAX_VIDEO_PIXELS, refuses the size, so no 268 MP frame is ever allocated."""
    data = bytearray(_clip([_background(256, 256)] * 2, container="webm"))
    sync = data.find(b"\x49\x83\x42")
    _set_bits(data, (sync + 3) * 8 + 4, 16, 16383)
    _set_bits(data, (sync + 3) * 8 + 20, 16, 16383)
    check = check_video_output(bytes(data))
    assert check.reason in ("undecodable", "too_many_pixels"), check.message
    assert f"{MAX_VIDEO_PIXELS / 1e6:.1f} MP" in check.message


def test_a_declared_ten_hour_duration_is_too_long() -> None:
    """Three frames of five hours each (rate 1/18000)."""
    message = _refused(_with("libx264", n=3, rate=Fraction(1, 18000)), "too_long")
    assert "15.0 h" in message and "300 s" in message


def test_ten_thousand_tiny_frames_are_refused_by_the_duration_cap() -> None:
    """10,000 16×16 frames at 25 fps: 400 s."""
    assert "400.00 s" in _refused(_many_frames(10_000, 25), "too_long")


def test_twenty_thousand_frames_at_120_fps_are_refused_by_the_frame_cap() -> None:
    """166 s is within the duration cap; 20,000 frames are not within the frame cap."""
    assert "20,000 frames" in _refused(_many_frames(20_000, 120), "too_many_frames")


def test_a_frame_rate_over_the_cap_is_refused() -> None:
    assert "240 fps" in _refused(_clip(_moving(12), fps=240), "fps_too_high")


@pytest.mark.parametrize("codec", ["mpeg4", "mjpeg"])
def test_a_codec_outside_the_allow_list_is_refused(codec: str) -> None:
    assert f"'{codec}' is not allowed" in _refused(_with(codec), "codec_not_allowed")


@pytest.mark.parametrize("data", [b"\x00" * 64, b"\x00\x00\x00\x18ftypisom" + b"\xff" * 200,
                                  b"\x1a\x45\xdf\xa3" + b"\x42\x82\x84webm" + b"\x01" * 300,
                                  b"random bytes " * 40, GOOD[:40], GOOD[:-40][::-1]])
def test_garbage_never_raises(data: bytes) -> None:
    check = check_video_output(data)
    assert not check.ok and check.reason and check.message


# --- stills, blanks, freezes -----------------------------------------------------------------


def test_a_single_frame_clip_is_a_still_image() -> None:
    check = check_video_output(_clip(_moving(1)))
    assert check.reason == "still_image" and "single frame" in check.message


def test_the_source_photo_repeated_is_a_still_image() -> None:
    photo = _photo()
    check = check_video_output(_clip([photo] * 24), source=_png(photo))
    assert check.reason == "still_image" and "source photo" in check.message
    assert (check.width, check.height) == (160, 120)


def test_the_same_frame_repeated_is_frozen() -> None:
    """Without a source to compare, or with another one, a still picture is frozen."""
    frozen = _clip([_photo()] * 24)
    assert check_video_output(frozen).reason == "frozen"
    other = check_video_output(frozen, source=_png(_background(160, 120)))
    assert other.reason == "frozen" and "never changes" in other.message


def test_a_small_object_moving_on_a_still_background_is_not_frozen() -> None:
    """A 12-px square crossing a 640×360 frame changes the whole frame's mean by under 0.1;
    region by region it is plain motion."""
    check = check_video_output(_clip(_moving(12, 640, 360, side=12)))
    assert check.ok, check.message


def test_an_all_black_clip_is_blank_black() -> None:
    check = check_video_output(_clip([np.zeros((H, W, 3), np.uint8)] * 12))
    assert check.reason == "blank_black" and "near black" in check.message


def test_a_uniform_colour_clip_is_blank_uniform() -> None:
    check = check_video_output(_clip([np.full((H, W, 3), (200, 30, 90), np.uint8)] * 12))
    assert check.reason == "blank_uniform" and "near-uniform" in check.message


# --- against the request ---------------------------------------------------------------------


def test_a_clip_off_the_requested_duration_is_a_duration_mismatch() -> None:
    check = check_video_output(GOOD, expect=VideoExpectation(duration_s=5))
    assert check.reason == "duration_mismatch"
    assert "lasts 2.00 s, 5 s was asked for" in check.message and check.duration_s == 2.0
    assert check_video_output(GOOD, expect=VideoExpectation(duration_s=2.4)).ok  # ±0.5 s


def test_a_clip_off_the_requested_aspect_is_an_aspect_mismatch() -> None:
    check = check_video_output(GOOD, expect=VideoExpectation(aspect_ratio="9:16"))
    assert check.reason == "aspect_mismatch" and "64×48" in check.message
    portrait = _clip(_moving(12, 36, 64))
    assert check_video_output(portrait, expect=VideoExpectation(aspect_ratio="9:16")).ok


def test_fps_and_resolution_are_checked_when_asked() -> None:
    assert check_video_output(GOOD, expect=VideoExpectation(fps=24)).reason == "fps_mismatch"
    assert check_video_output(GOOD, expect=VideoExpectation(fps=12.1)).ok
    tier = check_video_output(GOOD, expect=VideoExpectation(short_side=720))
    assert tier.reason == "resolution_mismatch" and "short side 48" in tier.message
    exact = check_video_output(GOOD, expect=VideoExpectation(resolution=(1280, 720)))
    assert exact.reason == "resolution_mismatch"
    assert check_video_output(GOOD, expect=VideoExpectation(resolution=(64, 48))).ok


def test_expectations_come_from_the_requests_normalized_params() -> None:
    assert VideoExpectation.from_params({}) is None
    assert VideoExpectation.from_params({"prompt": "x", "aspect_ratio": "auto"}) is None
    expect = VideoExpectation.from_params(
        {"duration_s": 5, "fps": "24", "aspect_ratio": "9:16", "resolution": "720p"})
    assert expect == VideoExpectation(duration_s=5.0, fps=24.0, aspect_ratio="9:16",
                                      short_side=720)
    sized = VideoExpectation.from_params({"resolution": "1280x720"})
    assert sized is not None and sized.resolution == (1280, 720)
    for bad in ({"aspect_ratio": "wide"}, {"resolution": "big"}, {"duration_s": -1},
                {"fps": True}):
        with pytest.raises(ConfigError):
            VideoExpectation.from_params(bad)


def test_a_declared_media_type_of_another_container_is_wrong_media_type() -> None:
    check = check_video_output(GOOD, declared_media_type="video/webm")
    assert check.reason == "wrong_media_type" and "video/mp4" in check.message
    for same in ("video/mp4", "video/quicktime", "application/octet-stream", None):
        assert check_video_output(GOOD, declared_media_type=same).ok


def test_a_clip_shown_rotated_is_checked_and_sampled_upright() -> None:
    """Stored 64×48 with a display rotation of 90° (counter-clockwise): shown 48×64."""
    frames = _moving(12)
    for frame in frames:
        frame[:8, :8] = (0, 255, 0)  # a green marker in the stored top-left corner
    data = _with("libx264", frames=frames, rotation=90)
    clip = sample_frames(data)
    assert clip.rotation == 90 and clip.display_size == (H, W)
    red, green, _ = np.moveaxis(clip.frames[0].astype(int), -1, 0)
    marker = np.argwhere((green > 180) & (red < 100)).mean(axis=0)  # shown bottom-left
    assert clip.frames[0].shape == (W, H, 3) and marker[0] > W - 10 and marker[1] < 10
    assert check_video_output(data, expect=VideoExpectation(aspect_ratio="3:4")).ok


# --- sampling --------------------------------------------------------------------------------


def test_sample_frames_returns_the_requested_count_evenly_spaced_and_bounded_in_size() -> None:
    clip = sample_frames(_clip(_moving(48, 128, 96)), count=8, max_side=64)
    assert len(clip.frames) == 8 and clip.decoded == 48
    assert clip.indices == (0, 7, 13, 20, 27, 34, 40, 47)
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in clip.frames)
    assert clip.timestamps[0] == 0 and clip.timestamps[-1] == pytest.approx(47 / 12)
    short = sample_frames(_clip(_moving(5)), count=12)
    assert len(short.frames) == 5 and short.indices == (0, 1, 2, 3, 4)


def test_a_streamed_webm_that_declares_no_length_is_still_sampled_from_end_to_end() -> None:
    """Written to a pipe, a WebM has no Duration: the frame count is unknown, so the sampler
    keeps every n-th frame (n doubling as it goes) and picks the count from those."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk: bytes) -> int:  # type: ignore[override]
            self.data += chunk
            return len(chunk)

    pipe = Pipe()
    with av.open(pipe, "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for frame in _moving(60):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytes(pipe.data)
    assert (probe_video(data).duration_s, probe_video(data).frame_count) == (None, 0)
    clip = sample_frames(data)
    assert len(clip.frames) == 12 and clip.indices[0] == 0 and clip.indices[-1] == 59
    assert not clip.truncated and clip.decoded_duration_s == pytest.approx(5.0, abs=0.01)
    check = check_video_output(data)
    assert check.ok and check.duration_s == pytest.approx(5.0, abs=0.01)


def test_sampling_a_twenty_second_clip_keeps_only_the_sampled_frames() -> None:
    """240 frames of 640×360: holding them all (even at 512 px) would take 100+ MB of
    arrays; the sampler keeps 12 (~5 MB) whatever the length."""
    data = encode_video(_moving(240, 640, 360, side=40), fps=12, preset="ultrafast")
    tracemalloc.start()
    try:
        clip = sample_frames(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clip.decoded == 240 and len(clip.frames) == 12
    assert all(f.shape == (288, 512, 3) for f in clip.frames)
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --- poster, preview, report cell, the kind --------------------------------------------------


def test_previews_are_an_animated_webp_and_a_poster_made_once(tmp_path: Path) -> None:
    data = _clip(_moving(24, 128, 96, side=20))
    made = previews(data, cache_dir=tmp_path)
    assert not made.cached and made.frames > 1
    animation = Image.open(io.BytesIO(made.preview))
    assert animation.format == "WEBP" and getattr(animation, "n_frames", 1) > 1
    assert max(animation.size) <= 240 and animation.info.get("loop") == 0
    poster = Image.open(io.BytesIO(made.poster))
    assert poster.format == "JPEG" and max(poster.size) <= 320
    again = previews(data, cache_dir=tmp_path)
    assert again.cached and (again.poster, again.preview) == (made.poster, made.preview)
    assert len(list(tmp_path.iterdir())) == 3


def test_the_cell_embeds_a_small_clip_as_a_data_uri_video() -> None:
    cell = VIDEO.cell_html(GOOD, alt="<lamp> & shade", caption="5 s")
    assert "<video class='plx-video-player' controls muted loop playsinline" in cell
    assert "data:video/mp4;base64," in cell and "poster='data:image/jpeg;base64," in cell
    assert "src='data:image/webp;base64," in cell
    assert "<lamp>" not in cell and "&lt;lamp&gt; &amp; shade" in cell


def test_the_cell_names_a_clip_over_the_embed_cap_by_its_store_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setattr(video_module, "EMBED_MAX_BYTES", 1024)
    cell = video_cell_html(GOOD, alt="lamp")
    assert "data:video/mp4" not in cell and "<video" not in cell
    assert f"{hashlib.sha256(GOOD).hexdigest()}.mp4" in cell and "too large to embed" in cell


def test_the_cell_of_bad_bytes_says_why() -> None:
    cell = VIDEO.cell_html(b"<script>", alt="x", caption="")
    assert "not_a_video" in cell and "<script>" not in cell


def test_the_video_kind_is_registered_and_checks_against_the_requests_params() -> None:
    assert kind_for(Task.IMAGE_TO_VIDEO) is VIDEO and kind_for(Task.ANGLES_TO_VIDEO) is VIDEO
    assert VIDEO.extensions["video/webm"] == ".webm" and VIDEO.stored_form("k", GOOD) is GOOD
    check = VIDEO.check(GOOD, task=Task.IMAGE_TO_VIDEO, declared_media_type="video/mp4",
                        expected_size=None, source=None, params={"duration_s": 5})
    assert check.reason == "duration_mismatch"
    sized = VIDEO.check(GOOD, task=Task.IMAGE_TO_VIDEO, declared_media_type=None,
                        expected_size=(128, 96), source=None, params=None)
    assert sized.reason == "resolution_mismatch"
    assert VIDEO.check(GOOD, task=Task.IMAGE_TO_VIDEO, declared_media_type=None,
                       expected_size=None, source=None).ok


# --- a sweep of hostile clips ----------------------------------------------------------------


def _hostile_clips() -> dict[str, tuple[bytes, str]]:
    """Each hostile clip a provider could return, with the reason it must be refused as."""
    gif = io.BytesIO()
    frames = [Image.fromarray(f) for f in _moving(4)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    huge = bytearray(GOOD)
    entry = huge.find(b"avc1", huge.find(b"stsd")) - 4
    huge[entry + 32:entry + 36] = struct.pack(">HH", 16384, 16384)
    return {
        "zero-bytes": (b"", "zero_bytes"),
        "gif-as-mp4": (gif.getvalue(), "not_a_video"),
        "png-as-mp4": (_png(_photo()), "not_a_video"),
        "truncated": (GOOD[:len(GOOD) // 2], "truncated"),
        "audio-only": (_audio_only("mp4", "aac"), "no_video_stream"),
        "16384-square": (bytes(huge), "too_many_pixels"),
        "ten-hours": (_with("libx264", n=3, rate=Fraction(1, 18000)), "too_long"),
        "10000-tiny-frames": (_many_frames(10_000, 25), "too_long"),
        "wrong-codec": (_with("mjpeg"), "codec_not_allowed"),
        "still-image": (_clip(_moving(1)), "still_image"),
        "all-black": (_clip([np.zeros((H, W, 3), np.uint8)] * 12), "blank_black"),
        "frozen": (_clip([_photo()] * 24), "frozen"),
    }


async def test_a_sweep_of_hostile_clips_completes_with_a_clear_reason_for_each(
        tmp_path: Path, dataset_dir: Path) -> None:
    """A provider returns each hostile clip for one request, and a good clip for one more:
    no crash, every request ends, each refused clip is a failed attempt with its reason in
    the ledger, nothing of it is stored, and the good clip is."""
    from pixellab.catalog import load_catalog
    from pixellab.ledger import LedgerWriter
    from pixellab.providers.base import Job, JobState, Output, ProviderRequest
    from pixellab.providers.local import LocalProvider
    from pixellab.runner import Request, Runner
    from pixellab.workbench import Workbench

    clips = {**_hostile_clips(), "good": (GOOD, "")}

    class Replaying(LocalProvider):
        """Answers each request with the clip named by its product id."""

        name = "replicate"

        async def submit(self, request: ProviderRequest) -> Job:
            data = clips[request.request_key][0]
            return Job(f"job-{request.request_key}", JobState.SUCCEEDED,
                       output=Output(data=data, media_type="video/mp4"))

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "video.toml").write_text(
        '[models."replicate:clip"]\ntasks = ["image_to_video"]\nendpoint = "clip"\n'
        'pricing = { unit = "second", usd_per_unit = 0.01, units_per_call = 5 }\n')
    catalog = load_catalog(tmp_path / "cat")
    provider = Replaying()
    workbench = Workbench(tmp_path / "home", catalog=catalog, providers={"replicate": provider})
    writer = LedgerWriter(workbench.ledger)
    runner = Runner(catalog=catalog, providers={"replicate": provider}, writer=writer,
                    store=workbench.store)
    image = str(dataset_dir / "images" / "p00.png")
    requests = [Request(request_key=name, product_id=name, category="kitchen",
                        task=Task.IMAGE_TO_VIDEO, chain=(catalog.model("replicate:clip"),),
                        image_path=image) for name in clips]
    try:
        summary = await runner.run(requests)
    finally:
        writer.close()
    outcomes = {o.request_key: o for o in summary.outcomes}
    assert outcomes["good"].status == "succeeded"
    reasons = dict(workbench.ledger.query(
        "select request_key, error_reason from attempts where status = 'failed'").values)
    assert reasons == {name: reason for name, (_, reason) in clips.items() if reason}
    assert workbench.ledger.scalar("select count(*) from outputs") == 1
