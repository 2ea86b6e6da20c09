"""Is the report's memory flat in the number of outputs?

Builds two ledgers with the real sweep (local models on small generated photos, scored): a
small one (N = 192 requests, the demo's size) and a large one (N = 10,000), then renders the
report notebook (``notebooks/90_report.ipynb``) over each, exactly as ``pixellab demo`` does,
each in a fresh process, and prints each process's peak RSS: the one that executes and exports
(papermill, nbconvert) and the notebook kernel (its child). The report's grids show a bounded
number of products per category × task and its tables are a few rows per model, so the peak
should not grow with N; the ratio large / small is the figure (target: close to 1; both under
1 GB).

    .venv/bin/python benchmarks/bench_report_memory.py               # ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_report_memory.py --large 2000  # a quicker look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CATEGORIES = ("kitchen", "apparel", "beauty", "toys")
MODELS = ["local:autoenhance", "local:autoenhance-gentle"]


def make_dataset(root: Path, products: int) -> None:
    """``products`` 96×96 photos: a coloured square on a light background, 4 categories."""
    (root / "images").mkdir(parents=True)
    rows = ["id,title,description,category,image"]
    rng = np.random.default_rng(0)
    for i in range(products):
        pixels = np.full((96, 96, 3), 235, dtype=np.uint8)
        pixels[20:76, 20:76] = rng.integers(20, 200, 3, dtype=np.uint8)
        pixels = np.clip(pixels + rng.integers(-6, 7, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"p{i:05d}.png")
        rows.append(f"p{i:05d},Product {i},A product,{CATEGORIES[i % 4]},images/p{i:05d}.png")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")


def build(root: Path, requests: int) -> str:
    """A home whose ledger holds one scored sweep of ``requests`` requests; its sweep id."""
    from pixellab import Sweep, SweepSpec, Workbench

    make_dataset(root / "dataset", requests // len(MODELS))
    spec = SweepSpec.parse({"name": f"report-{requests}", "task": "enhance",
                            "dataset": str(root / "dataset"), "models": MODELS,
                            "concurrency": 8})
    started = time.monotonic()
    result = Sweep(spec, Workbench(root / "home")).run()
    print(f"  built {result.planned} requests, {result.scores_written} scores in "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return result.sweep_id


RENDER = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from pixellab import notebook
    home, sweep_id, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    executed = notebook.execute(Path(sys.argv[4]), out.with_suffix(".ipynb"), {
        "ledger_path": str(home / "ledger.duckdb"), "store_path": str(home / "store"),
        "sweep_ids": [sweep_id], "routes_path": str(home / "defaults.toml"),
        "title": "memory benchmark"})
    notebook.export_html(executed, out)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    kernel = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(own, kernel, out.stat().st_size // 1024)
""")


def render(root: Path, sweep_id: str) -> tuple[int, int, int, float]:
    """(renderer peak MB, kernel peak MB, HTML KB, seconds) in a fresh process."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", RENDER, str(root / "home"), sweep_id,
                           str(root / "report.html"), str(REPO / "notebooks" / "90_report.ipynb")],
                          capture_output=True, text=True, cwd=root, timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    own, kernel, html = (int(v) for v in done.stdout.split()[-3:])
    return own, kernel, html, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=192)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="pixellab-report-mem-") as tmp:
        for n in (args.small, args.large):
            root = Path(tmp) / str(n)
            print(f"N = {n}", flush=True)
            sweep_id = build(root, n)
            figures[n] = render(root, sweep_id)
            own, kernel, html, seconds = figures[n]
            print(f"  report: renderer peak {own} MB, kernel peak {kernel} MB, "
                  f"HTML {html} KB, {seconds:.0f} s", flush=True)
    small, large = figures[args.small], figures[args.large]
    print(f"large / small: renderer {large[0] / small[0]:.2f}, kernel "
          f"{large[1] / small[1]:.2f}, HTML {large[2] / small[2]:.2f}")


if __name__ == "__main__":
    main()
