"""Sweep throughput against the loopback emulator: how close to ideal, at what CPU and memory.

N requests, each one job of fixed latency L on the emulator (a separate process, so its image
work does not count against ours), run at concurrency C through the real OpenAI SDK (a
synchronous API: no poll interval in the way; Replicate/fal add at most one poll interval, or
nothing with webhooks on). Ideal wall time = ceil(N / C) * L. Prints wall / ideal (target
<= 1.05), CPU seconds per attempt of this process, and its peak RSS (target < 500 MB at 20,000
requests: results stream to the ledger, nothing in the runner grows with N but the outcome list).

    .venv/bin/python benchmarks/bench_sweep.py --n 2000 --latency 1.0 --concurrency 64
    .venv/bin/python benchmarks/bench_sweep.py --n 20000 --latency 0.2 --no-baseline

Baseline, same process, same emulator, first: the bare SDK. C coroutines call
``images.with_raw_response.edit`` N times in total and decode the answer; no ledger, no
validation, no store. Its wall / ideal is the floor any orchestration built on this SDK can reach
on this machine; pixellab / baseline is what pixellab itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CATALOG = """
[models."openai:emu-enhance"]
tasks = ["enhance"]
endpoint = "emu-enhance"
inputs = { prompt = "prompt" }
pricing = { unit = "image", usd_per_unit = 0.02 }
timeout_s = 60
max_concurrency = 1024

[providers.openai]
max_concurrency = 1024
"""


def make_dataset(root: Path, seeds: int) -> None:
    (root / "images").mkdir(parents=True)
    rows = ["id,title,description,category,image"]
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"p{i}.png")
        rows.append(f"p{i},Product {i},A product,bench,images/p{i}.png")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")


def start_emulator(latency: float, cpus: set[int] | None = None
                   ) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The emulator in its own process; with ``cpus``, pinned to those cores (``--pin``)."""
    process = subprocess.Popen([sys.executable, "-m", "pixellab.emulator", "--latency",
                                str(latency)], stdout=subprocess.PIPE, text=True,
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus
                               else None)
    env: dict[str, str] = {}
    assert process.stdout is not None
    while "OPENAI_BASE_URL" not in env:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("emulator did not start")
        if line.startswith("export "):
            for pair in line.removeprefix("export ").split("#")[0].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return process, env


async def bare_sdk(n: int, concurrency: int, image: bytes) -> tuple[float, float]:
    """The baseline: the SDK alone at the same concurrency. Returns (wall s, CPU s)."""
    import base64

    import openai

    client = openai.AsyncOpenAI(max_retries=0, timeout=120.0)
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            raw = await client.images.with_raw_response.edit(
                image=("input.png", image, "image/png"), model="emu-enhance",
                prompt="Improve this photo.")
            base64.b64decode(raw.parse().data[0].b64_json or "", validate=True)  # type: ignore[index]

    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.close()
    return wall, time.process_time() - cpu_before


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(args: argparse.Namespace) -> dict[str, float]:
    """One bare-SDK run (unless ``--no-baseline``), then one pixellab sweep, against a fresh
    emulator; prints both and returns the figures."""
    seeds = math.ceil(args.n / 4)
    ideal = math.ceil(seeds * 4 / args.concurrency) * args.latency
    figures: dict[str, float] = {}
    emulator, env = start_emulator(args.latency, {1} if args.pin else None)
    try:
        os.environ.update(env)
        os.environ["OPENAI_API_KEY"] = "sk-bench-" + "x" * 24
        if not args.no_baseline:
            buffer = io.BytesIO()
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3),
                                                              dtype=np.uint8)).save(buffer, "PNG")
            base_wall, base_cpu = asyncio.run(bare_sdk(seeds * 4, args.concurrency,
                                                       buffer.getvalue()))
            figures.update(base_wall=base_wall, base_cpu_ms=1000 * base_cpu / (seeds * 4))
            print(f"baseline (bare SDK): wall {base_wall:.1f} s, wall / ideal = "
                  f"{base_wall / ideal:.3f}, CPU {figures['base_cpu_ms']:.2f} ms per call")
        emulator_cpu_before = _process_cpu_s(emulator.pid)
        from pixellab.catalog import load_catalog
        from pixellab.runner import RetryPolicy
        from pixellab.sweep import Sweep, SweepSpec
        from pixellab.workbench import Workbench

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_dataset(root / "data", seeds)
            (root / "catalog").mkdir()
            (root / "catalog" / "bench.toml").write_text(CATALOG)
            workbench = Workbench(root / "home", catalog=load_catalog(root / "catalog"))
            spec = SweepSpec.parse({"name": "bench", "task": "enhance",
                                    "dataset": str(root / "data"), "models": ["openai:emu-enhance"],
                                    "seeds": list(range(seeds)), "concurrency": args.concurrency})
            sweep = Sweep(spec, workbench)
            cpu_before = time.process_time()
            started = time.perf_counter()
            result = sweep.run(retry=RetryPolicy(max_attempts=1), score=False)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            emulator_cpu = _process_cpu_s(emulator.pid) - emulator_cpu_before
    finally:
        emulator.terminate()
        emulator.wait()
    n = result.planned
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures.update(wall=wall, cpu_ms=1000 * cpu / max(1, n))
    print(f"requests {n}, succeeded {result.succeeded}, failed {result.failed}, "
          f"L = {args.latency:g} s, C = {args.concurrency}")
    print(f"wall {wall:.1f} s, ideal {ideal:.1f} s, wall / ideal = {wall / ideal:.3f}")
    if not args.no_baseline:
        print(f"pixellab / bare SDK wall = {wall / figures['base_wall']:.3f} (what orchestration "
              f"costs); CPU {figures['cpu_ms'] - figures['base_cpu_ms']:+.2f} ms per attempt")
    print(f"CPU {cpu:.1f} s = {figures['cpu_ms']:.2f} ms per attempt (this process)")
    print(f"  of which the ledger writer thread {1000 * result.ledger_cpu_s / max(1, n):.2f} ms "
          f"per attempt ({result.ledger_commits} commits)")
    print(f"peak RSS {peak_mb:.0f} MB")
    print(f"emulator CPU {emulator_cpu:.1f} s (the other process on this machine)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the bare-SDK baseline (for the memory run)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="bare SDK then pixellab this many times, each pair against a fresh "
                             "emulator; prints the median ratios (a shared machine's load "
                             "moves single runs by a few %%)")
    parser.add_argument("--pin", action="store_true",
                        help="pin this process to core 0 and the emulator to core 1, so the "
                             "emulator's work does not share a core with the client's (Linux)")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
    runs = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"--- run {i + 1} of {args.repeat}")
        runs.append(run_once(args))
    if args.repeat > 1 and not args.no_baseline:
        walls = [r["wall"] / r["base_wall"] for r in runs]
        extra = [r["cpu_ms"] - r["base_cpu_ms"] for r in runs]
        print(f"--- median of {args.repeat}: pixellab / bare SDK wall = "
              f"{statistics.median(walls):.3f} ({', '.join(f'{w:.3f}' for w in walls)}); "
              f"CPU per attempt over the bare SDK's {statistics.median(extra):+.2f} ms "
              f"({', '.join(f'{e:+.2f}' for e in extra)})")


if __name__ == "__main__":
    main()
