"""The score pass's unit of work (:func:`pixellab.scoring.units.measure`) on threads in this
process against a local Ray cluster, on the same outputs in the same run.

N distinct outputs (packshot-like 512² PNGs of a drawn product on white, each with its
product photo and mask) are put in a store; both executors measure ``identity``, ``blank``,
``sharpness`` and ``boundary_f`` for every one. Reported:

- wall time of each and their ratio (Ray / threads; on one machine Ray can only add its
  overhead, since both use the same cores);
- Ray's overhead per batch: the same batches running a function that returns at once;
- a projection to M machines of C cores: N × (CPU s per output) / (M × C) + batches ×
  overhead / (M × C), from the per-output and per-batch costs measured here;
- the driver's peak RSS after each run (results stream back batch by batch; nothing is kept
  per output but its scores).

    .venv/bin/python benchmarks/bench_scale.py --n 400     # ~3 min on 2 cores

``--sweep N`` also runs a sweep of N products through ``local:autoenhance`` (free, CPU-bound:
the local model runs wherever the request does) in this process and on the local cluster
(:mod:`pixellab.cluster`: shards on the workers, the ledger written here), and reports both
walls, what the cluster adds per request (the hub's ledger and budget calls, the quota
actor's slots) and whether the ledger rows are the same.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


METRICS = ("identity", "blank", "sharpness", "boundary_f")


def make_outputs(root: Path, n: int, metrics: tuple[str, ...] = METRICS
                 ) -> tuple[list[Any], str]:
    from pixellab.datasets import Product
    from pixellab.scoring import scorer_version
    from pixellab.scoring.units import ScoreUnit
    from pixellab.store import Store

    store = Store(root / "store")
    (root / "photos").mkdir()
    versions = {m: scorer_version(m) for m in metrics}
    units = []
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = int(rng.integers(80, 200)), int(rng.integers(80, 200))
        colour = tuple(int(c) for c in rng.integers(20, 200, 3))
        mask = Image.new("L", (512, 512), 0)
        ImageDraw.Draw(mask).ellipse((256 - w, 256 - h, 256 + w, 256 + h), fill=255)
        photo = Image.new("RGB", (512, 512), (int(rng.integers(120, 220)),) * 3)
        photo.paste(Image.new("RGB", (512, 512), colour), mask=mask)
        output = Image.new("RGB", (512, 512), (255, 255, 255))
        output.paste(Image.new("RGB", (512, 512), colour), mask=mask)
        photo_path, mask_path = root / "photos" / f"{i}.png", root / "photos" / f"{i}-m.png"
        photo.save(photo_path)
        mask.save(mask_path)
        buffer = io.BytesIO()
        output.save(buffer, "PNG")
        digest = store.put(buffer.getvalue(), "image/png")
        product = Product(id=f"p{i}", title=f"Product {i}", description="", category="bench",
                          image=photo_path, mask=mask_path)
        units.append(ScoreUnit(digest, "image/png", product, metrics, versions, photo_path))
    return units, str(store.root)


def _nothing(unit: object) -> None:
    return None


def _digest(scores: Any) -> int:
    """One output's scores as a number: what both runs must agree on, without keeping every
    score object in the driver (its peak RSS is part of what is measured)."""
    return hash(tuple((s.metric, s.value if s.value == s.value else None, s.missing_reason)
                      for s in scores))


def sweep_on_both(root: Path, n: int, cpus: int) -> None:
    """The same sweep in-process and on the local cluster (already started by the caller)."""
    from pixellab.settings import Settings
    from pixellab.sweep import Sweep, SweepSpec
    from pixellab.workbench import Workbench

    data = root / "sweep-data"
    (data / "images").mkdir(parents=True)
    rows = ["id,title,description,category,image"]
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
            data / "images" / f"p{i}.png")
        rows.append(f"p{i},Product {i},A product,bench,images/p{i}.png")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    spec = SweepSpec.parse({"name": "scale", "task": "enhance", "dataset": str(data),
                            "models": ["local:autoenhance"], "concurrency": 2 * cpus})
    walls, found = {}, {}
    for executor in ("threads", "ray"):
        bench = Workbench(root / executor, settings=Settings(executor=executor))  # type: ignore[arg-type]
        started = time.perf_counter()
        result = Sweep(spec, bench).run(score=False)
        walls[executor] = time.perf_counter() - started
        found[executor] = bench.ledger.query(
            "select product_id, status, output_sha256 from requests order by 1").values.tolist()
        print(f"sweep on {executor}: {result.succeeded} of {n} in {walls[executor]:.1f} s "
              f"({1000 * walls[executor] / n:.1f} ms a request)")
    print(f"sweep ray / threads = {walls['ray'] / walls['threads']:.2f}; same ledger rows: "
          f"{found['ray'] == found['threads']}; driver peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sweep", type=int, default=0,
                        help="also a sweep of this many products, in-process and on the cluster")
    parser.add_argument("--no-score", action="store_true", help="skip the score-pass part")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help="the metrics measured (blank alone: the driver's side at scale)")
    args = parser.parse_args()
    if args.no_score:
        from pixellab.executors import connect_ray

        ray, _ = connect_ray(num_cpus=args.cpus)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                sweep_on_both(Path(tmp), args.sweep, args.cpus)
        finally:
            ray.shutdown()
        return
    from pixellab.executors import RayExecutor, ThreadExecutor
    from pixellab.scoring.units import Recipe, measure

    with tempfile.TemporaryDirectory() as tmp:
        units, store_url = make_outputs(Path(tmp), args.n, tuple(args.metrics.split(",")))
        recipe = Recipe(task="packshot", output_kind="image", upscale_factor=None,
                        marketplaces=None, store_url=store_url)
        work = functools.partial(measure, recipe)
        threads = ThreadExecutor(args.cpus)
        list(threads.map(work, units[: args.cpus]))  # imports and caches, as Ray's warm-up
        cpu = time.process_time()
        started = time.perf_counter()
        local = [_digest(m.scores) for m in threads.map(work, units)]
        thread_wall = time.perf_counter() - started
        thread_cpu = time.process_time() - cpu
        threads.close()
        rss_threads = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"threads ({args.cpus}): {args.n} outputs in {thread_wall:.1f} s, "
              f"{thread_cpu / args.n * 1000:.0f} ms CPU per output; driver peak RSS "
              f"{rss_threads:.0f} MB")
        started = time.perf_counter()
        ray = RayExecutor(num_cpus=args.cpus, batch=args.batch)
        print(f"ray: local cluster up in {time.perf_counter() - started:.1f} s")
        try:
            list(ray.map(work, units[: args.batch * args.cpus]))  # workers import pixellab
            started = time.perf_counter()
            list(ray.map(_nothing, units))
            batches = -(-args.n // args.batch)
            overhead = (time.perf_counter() - started) / batches
            started = time.perf_counter()
            remote = [_digest(m.scores) for m in ray.map(work, units)]
            ray_wall = time.perf_counter() - started
            if args.sweep:
                sweep_on_both(Path(tmp), args.sweep, args.cpus)
        finally:
            ray.close()
        rss_ray = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        same = local == remote
        print(f"ray ({args.cpus} CPUs, batch {args.batch}): {ray_wall:.1f} s; ray / threads "
              f"= {ray_wall / thread_wall:.2f}; overhead {overhead * 1000:.1f} ms per batch "
              f"({batches} batches); same scores: {same}; driver peak RSS {rss_ray:.0f} MB")
        per_output = thread_wall * args.cpus / args.n  # core-seconds per output
        for machines, cores in ((1, 2), (8, 16), (64, 16)):
            outputs = 1_200_000
            hours = (outputs * per_output + outputs / args.batch * overhead) / (
                machines * cores) / 3600
            print(f"projection: 1.2 M outputs on {machines} × {cores} cores ≈ {hours:.1f} h")


if __name__ == "__main__":
    main()
