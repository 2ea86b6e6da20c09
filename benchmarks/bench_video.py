"""How fast is video validation and scoring, against PyAV decoding the same clips, and is its
memory bounded in the clip's length?

Makes H.264 clips of a product photo panning and zooming (the kind a model returns), then in
the same run, clip by clip:

- **decode-only**: PyAV demuxes and decodes every frame and does nothing with it: the floor
  any validation that looks at every frame must pay;
- **validation**: :func:`pixellab.media.video.check_video_output` against the request (probe,
  header caps, full sequential decode for frozen/truncated, 12 sampled frames for the content
  checks); goal: throughput ≥ 0.8 of decode-only;
- **scoring**: :func:`~pixellab.media.video.sample_frames` plus every video metric of the
  ``image_to_video`` scoring (the sweep's score pass), cost per clip printed.

Then, each in a fresh process, the peak RSS of validating and sampling a 4-second and a
60-second 1080p clip: the goal is a peak that does not grow with the length.

    .venv/bin/python benchmarks/bench_video.py                # ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_video.py --clips 4      # quicker
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def photo(seed: int, size: tuple[int, int] = (960, 720)) -> np.ndarray:
    """A product-like photo: a shaded box with a label on a light, slightly noisy background."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = np.full((h, w, 3), 236, dtype=np.uint8)
    colour = rng.integers(30, 200, 3)
    x0, y0 = w // 3, h // 4
    shade = np.linspace(0.75, 1.1, h // 2)[:, None, None]
    image[y0:y0 + h // 2, x0:x0 + w // 3] = np.clip(colour * shade, 0, 255).astype(np.uint8)
    image[y0 + h // 8:y0 + h // 8 + 30, x0 + 20:x0 + w // 3 - 20] = 250
    noise = rng.integers(-4, 5, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def frames(source: np.ndarray, *, seconds: float, fps: int,
           size: tuple[int, int]) -> Iterator[np.ndarray]:
    """A slow zoom and pan across ``source``, ``size`` = (width, height) frames."""
    import cv2

    count = round(seconds * fps)
    h, w = source.shape[:2]
    for i in range(count):
        t = i / max(1, count - 1)
        zoom = 1.0 + 0.15 * t
        cw, ch = w / zoom, h / zoom
        x = (w - cw) * t
        matrix = np.array([[size[0] / cw, 0, -x * size[0] / cw],
                           [0, size[1] / ch, 0]], dtype=np.float32)
        yield cv2.warpAffine(source, matrix, size, flags=cv2.INTER_LINEAR)


def clip(seed: int, *, seconds: float, fps: int, size: tuple[int, int]) -> bytes:
    from pixellab.media.encode import encode_video

    return encode_video(frames(photo(seed), seconds=seconds, fps=fps, size=size), fps=fps,
                        preset="ultrafast")


def decode_only(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 2
        return sum(1 for _ in container.decode(stream))


def score_all(data: bytes, source_png: bytes) -> int:
    from PIL import Image

    from pixellab.media.video import sample_frames
    from pixellab.scoring import ScoreContext, compute, load_task_scoring
    from pixellab.validate import decode_image

    metrics = [m for m in load_task_scoring()["image_to_video"].metrics]
    sampled = sample_frames(data)
    width, height = sampled.display_size
    ctx = ScoreContext(task="image_to_video", output=Image.fromarray(sampled.frames[0]),
                       source=decode_image(source_png), frames=sampled.frames,
                       video={"duration_s": sampled.info.duration_s, "fps": sampled.info.fps,
                              "width": width, "height": height, "codec": sampled.info.codec,
                              "container": sampled.info.container,
                              "sampled_indices": list(sampled.indices)})
    return sum(compute(m, ctx).value is not None for m in metrics)


def throughput(clips: list[bytes], seconds: float, fps: int) -> None:
    from PIL import Image

    from pixellab.media.video import VideoExpectation, check_video_output

    expect = VideoExpectation(duration_s=seconds, fps=fps, aspect_ratio="16:9")
    png = io.BytesIO()
    Image.fromarray(photo(0)).save(png, format="PNG")
    timings: dict[str, float] = {}
    for name, run in (("decode-only", decode_only),
                      ("validation", lambda d: check_video_output(d, expect=expect)),
                      ("scoring", lambda d: score_all(d, png.getvalue()))):
        run(clips[0])  # warm
        started = time.perf_counter()
        results = [run(data) for data in clips]
        timings[name] = time.perf_counter() - started
        if name == "validation":
            bad = [r for r in results if not r.ok]
            assert not bad, bad[0]
    n = len(clips)
    decode = timings["decode-only"]
    print(f"{n} clips of {seconds:g} s at {fps} fps, 1280×720 (same run, same clips):")
    for name, total in timings.items():
        print(f"  {name:<12} {total / n * 1000:7.0f} ms per clip  "
              f"{n * seconds / total:6.1f} s of video per s")
    print(f"  validation throughput / decode-only: {decode / timings['validation']:.2f} "
          "(goal ≥ 0.8)")
    print(f"  scoring (12 sampled frames + every image_to_video metric): "
          f"{timings['scoring'] / n * 1000:.0f} ms per clip")


_MEMORY_CHILD = """
import json, resource, sys
from pixellab.media.video import check_video_output, sample_frames
data = open(sys.argv[1], 'rb').read()
check = check_video_output(data)
sampled = sample_frames(data)
print(json.dumps({"ok": check.ok, "reason": check.reason, "duration_s": check.duration_s,
                  "kept": len(sampled.frames), "decoded": sampled.decoded,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes_mb": len(data) / 2**20}))
"""


def memory(folder: Path) -> None:
    print("peak RSS of validating and sampling one 1080p clip, fresh process each:")
    peaks = {}
    for seconds in (4, 60):
        path = folder / f"clip-{seconds}s.mp4"
        path.write_bytes(clip(1, seconds=seconds, fps=30, size=(1920, 1080)))
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path)], check=True,
                             capture_output=True, text=True, cwd=REPO).stdout
        facts = json.loads(out)
        peaks[seconds] = facts["peak_mb"]
        print(f"  {seconds:>3} s 1080p30 ({facts['bytes_mb']:.1f} MB file, "
              f"{facts['decoded']} frames decoded, {facts['kept']} kept): "
              f"peak {facts['peak_mb']:.0f} MB, check ok={facts['ok']}")
    print(f"  60 s / 4 s peak: {peaks[60] / peaks[4]:.2f} (goal: close to 1, not 15)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    import tempfile

    fps = 24
    clips = [clip(i, seconds=args.seconds, fps=fps, size=(1280, 720))
             for i in range(args.clips)]
    throughput(clips, args.seconds, fps)
    with tempfile.TemporaryDirectory() as folder:
        memory(Path(folder))


if __name__ == "__main__":
    main()
