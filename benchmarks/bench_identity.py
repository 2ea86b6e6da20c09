"""What product identity and label text cost per output, by kind of output, and how that
compares with the cheap image metrics scored on the same outputs in the same run.

Builds the local baselines' outputs for a few sample products (enhance, cut-out, packshot,
lifestyle scene), then times, in this process, one fresh :class:`ScoreContext` per output:

- **baseline**: ``blank`` and ``sharpness`` (the metrics every image task gets);
- **identity**: every identity metric of the output (one shared analysis: locating the product
  and measuring it), with the dataset's mask and without it (the main object estimated, its
  two readings compared; the estimate is remembered per photo, as in a sweep);
- **label_text**: OCR of the source and the output product region (needs ``pixellab[ocr]``;
  the source read is cached, as in a sweep, so this is about one read per output);
- **lifestyle**: ``scene_change`` and ``product_placement`` on the scenes, which reuse the
  identity analysis of the same context.

Prints seconds per output (median and max) per kind and metric group, and each group's ratio
to the baseline of the same outputs.

    .venv/bin/python benchmarks/bench_identity.py               # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_identity.py --products 3  # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from pixellab.providers.local import ops
from pixellab.providers.local.scene import render_scene
from pixellab.scoring import compute
from pixellab.scoring.base import ScoreContext
from pixellab.scoring.identity import METRICS as IDENTITY
from pixellab.scoring.ocr import unavailable_reason

SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"
PRODUCTS = ["cosmetics-06", "kitchen-07", "electronics-07", "furniture-06", "jewelry-06",
            "kitchen-04", "cosmetics-07", "apparel-01"]
"""Labelled products first (the OCR metric needs text to compare)."""

OUTPUTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "enhance": ops.autoenhance,
    "cutout": ops.cutout,
    "packshot": lambda image: ops.packshot(image, size=1000),
    "scene": lambda image: render_scene(image, prompt="a warm tabletop", seed=0,
                                        size=768).image,
}
TASK = {"enhance": "enhance", "cutout": "remove_background", "packshot": "packshot",
        "scene": "lifestyle"}


def timed(metrics: list[str], ctx: ScoreContext) -> float:
    start = time.perf_counter()
    for metric in metrics:
        compute(metric, ctx)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=len(PRODUCTS))
    args = parser.parse_args()
    ocr = unavailable_reason() is None
    groups: dict[str, list[str]] = {"baseline": ["blank", "sharpness"],
                                    "identity (mask)": list(IDENTITY),
                                    "identity (no mask)": list(IDENTITY)}
    if ocr:
        groups["label_text"] = ["label_text"]
    times: dict[tuple[str, str], list[float]] = {}
    for pid in PRODUCTS[:args.products]:
        image = Image.open(SAMPLE / "images" / f"{pid}.jpg").convert("RGB")
        mask = Image.open(SAMPLE / "masks" / f"{pid}.png").convert("L")
        label = {"cosmetics-06": "AQUAVIVE Serum 30ml", "kitchen-07":
                 "OAT CRUNCH Honey Almond 500g"}.get(pid)
        for kind, make in OUTPUTS.items():
            output = make(image)
            for group, metrics in groups.items():
                with_mask = group != "identity (no mask)"
                ctx = ScoreContext(task=TASK[kind], output=output, source=image,
                                   mask=mask if with_mask else None, label_text=label)
                if group == "label_text":
                    compute("label_text", ScoreContext(task=TASK[kind], output=image,
                                                       source=image, mask=mask))  # warm
                times.setdefault((kind, group), []).append(timed(metrics, ctx))
            if kind == "scene":
                ctx = ScoreContext(task="lifestyle", output=output, source=image, mask=mask)
                timed(list(IDENTITY), ctx)  # the analysis a sweep has already made
                times.setdefault((kind, "lifestyle after identity"), []).append(
                    timed(["scene_change", "product_placement"], ctx))
    print(f"seconds per output, {args.products} products (OCR {'on' if ocr else 'off'})")
    print(f"{'output':10} {'metrics':26} {'median':>8} {'max':>8} {'÷ baseline':>11}")
    for kind in OUTPUTS:
        base = statistics.median(times[(kind, "baseline")])
        for (k, group), values in times.items():
            if k != kind:
                continue
            median = statistics.median(values)
            print(f"{kind:10} {group:26} {median:8.3f} {max(values):8.3f} "
                  f"{median / base:11.1f}")


if __name__ == "__main__":
    main()
