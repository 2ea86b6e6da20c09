"""Ledger write throughput: group commit (LedgerWriter) vs one transaction per write.

A sweep with C requests in flight issues ~4 small writes per attempt. DuckDB is built for bulk
work, not many tiny transactions, and every write must be durable before the runner moves on
(the attempt row exists before the provider is called). Group commit keeps both properties.
Prints writes/s of each and the ratio; medians of 5 runs.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pixellab.ledger import Ledger, LedgerWriter

N_WRITES = 2000
CONCURRENCY = 64


def _statement(i: int) -> list:
    return [Ledger.record_cost(f"a{i}", f"k{i}", "bench", "fal", "fal:x", 1, 0.01, True)]


def naive(path: Path) -> float:
    ledger = Ledger(path)
    started = time.perf_counter()
    for i in range(N_WRITES):
        ledger.write(_statement(i))
    return N_WRITES / (time.perf_counter() - started)


def grouped(path: Path) -> float:
    ledger = Ledger(path)

    async def main() -> None:
        writer = LedgerWriter(ledger)
        queue = iter(range(N_WRITES))

        async def worker() -> None:
            for i in queue:
                await writer.write(_statement(i))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        writer.close()

    started = time.perf_counter()
    asyncio.run(main())
    return N_WRITES / (time.perf_counter() - started)


def main() -> None:
    results: dict[str, list[float]] = {"naive": [], "grouped": []}
    for _ in range(5):
        for name, fn in (("naive", naive), ("grouped", grouped)):
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(fn(Path(tmp) / "l.duckdb"))
    naive_rate = statistics.median(results["naive"])
    grouped_rate = statistics.median(results["grouped"])
    print(f"{N_WRITES} durable writes, {CONCURRENCY} concurrent writers, median of 5")
    print(f"  one transaction per write : {naive_rate:8.0f} writes/s")
    print(f"  group commit (LedgerWriter): {grouped_rate:8.0f} writes/s")
    print(f"  ratio                      : {grouped_rate / naive_rate:8.1f}x")


if __name__ == "__main__":
    main()
