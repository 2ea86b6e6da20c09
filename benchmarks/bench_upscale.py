"""Real-ESRGAN on ncnn (``providers/local/esrgan.py``): does tiling cost throughput, is memory
bounded by the tile row rather than the image, and how does it compare with Lanczos?

In one run:

- **throughput**: :func:`esrgan.upscale` on a photo against the raw network forward over the
  same tile regions (the context-padded tiles the upscaler runs, without cutting, blending or
  assembling): goal ≥ 0.9 of the raw rate;
- **peak RSS** of upscaling a 2000×2000 input ×2 with the compact network in a fresh process,
  against the output image alone (what any upscaler must hold) and the untiled forward's
  estimate;
- **quality** on sample photos shrunk by two: PSNR and SSIM against the original, Lanczos and
  the network side by side (and the time per image).

    .venv/bin/python benchmarks/bench_upscale.py             # ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_upscale.py --quick     # fewer photos, no 2000 px run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "datasets" / "sample"


def throughput(model: str, scale: int, tile: int, overlap: int, threads: int) -> dict[str, float]:
    from pixellab.providers.local import esrgan

    image = Image.open(SAMPLE / "images" / "kitchen-07.jpg").convert("RGB")
    image = image.resize((image.width // 2, image.height // 2))
    rgb = np.asarray(image)
    h, w = rgb.shape[:2]
    net = esrgan._net(esrgan._file_stem(model, scale), threads)
    esrgan.upscale(image.crop((0, 0, 64, 64)), model=model, scale=scale, tile=tile,
                   overlap=overlap, threads=threads)  # warm
    start = time.perf_counter()
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            region = rgb[max(0, ty - overlap):min(h, ty + tile + overlap),
                         max(0, tx - overlap):min(w, tx + tile + overlap)]
            esrgan.forward(net, region)
    raw = time.perf_counter() - start
    start = time.perf_counter()
    esrgan.upscale(image, model=model, scale=scale, tile=tile, overlap=overlap, threads=threads)
    tiled = time.perf_counter() - start
    return {"pixels": float(h * w), "raw_s": raw, "tiled_s": tiled, "ratio": raw / tiled}


PEAK = """
import json, resource, sys
import numpy as np
from PIL import Image
from pixellab.providers.local import esrgan
side = int(sys.argv[1])
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)
image = Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = esrgan.upscale(image, scale=2, tile=int(sys.argv[2]), overlap=16, threads=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mb": before / 1024, "peak_mb": after / 1024, "size": out.size}))
"""


def peak_rss(side: int, tile: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PEAK, str(side), str(tile)], check=True,
                          capture_output=True, text=True, cwd=REPO, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def quality(products: list[str], threads: int) -> list[dict[str, object]]:
    from pixellab.providers.local import esrgan
    from pixellab.scoring import compute
    from pixellab.scoring.base import ScoreContext

    rows = []
    for pid in products:
        original = Image.open(SAMPLE / "images" / f"{pid}.jpg").convert("RGB")
        original = original.crop((0, 0, original.width // 2 * 2, original.height // 2 * 2))
        small = original.resize((original.width // 2, original.height // 2),
                                Image.Resampling.BICUBIC)
        start = time.perf_counter()
        neural = esrgan.upscale(small, scale=2, threads=threads)
        seconds = time.perf_counter() - start
        lanczos = small.resize(original.size, Image.Resampling.LANCZOS)
        row: dict[str, object] = {"product": pid, "input": f"{small.width}x{small.height}",
                                  "esrgan_s": round(seconds, 2)}
        for name, output in (("lanczos", lanczos), ("esrgan", neural)):
            ctx = ScoreContext(task="upscale", output=output, source=small, reference=original)
            for metric in ("psnr", "ssim"):
                row[f"{name}_{metric}"] = round(compute(metric, ctx).value or float("nan"), 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for tile in (128, 256):
        result = throughput("realesr-animevideov3", 2, tile, 16, args.threads)
        print(f"compact x2, tile {tile}: raw forward {result['raw_s']:.2f} s, tiled upscale "
              f"{result['tiled_s']:.2f} s, raw/tiled {result['ratio']:.2f} (goal >= 0.9)")
    if not args.quick:
        for tile in (128, 256):
            peak = peak_rss(2000, tile)
            print(f"2000x2000 x2, tile {tile}: peak RSS {peak['peak_mb']:.0f} MB (before the "
                  f"upscale {peak['before_mb']:.0f} MB; the 4000x4000 RGB output alone is 48 MB, "
                  f"an untiled float32 output 192 MB)")
    products = ["cosmetics-06", "kitchen-07", "electronics-07", "furniture-06", "jewelry-06",
                "apparel-01"][:2 if args.quick else 6]
    rows = quality(products, args.threads)
    for row in rows:
        print(json.dumps(row))
    for name in ("lanczos", "esrgan"):
        psnr = np.mean([float(r[f"{name}_psnr"]) for r in rows])  # type: ignore[arg-type]
        ssim = np.mean([float(r[f"{name}_ssim"]) for r in rows])  # type: ignore[arg-type]
        print(f"{name}: mean PSNR {psnr:.2f} dB, SSIM {ssim:.3f}")


if __name__ == "__main__":
    main()
