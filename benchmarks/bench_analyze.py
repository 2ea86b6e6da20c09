"""The offline analysers side by side: how often does each name the labelled category, how sure
is ``local:embed`` when it is right, and what does an answer cost in time?

Two labelled sets: the sample dataset's 38 products (``datasets/sample/manifest.csv``) and 48
held-out products (``benchmarks/data/analyze_heldout.csv``, titles and one-line descriptions
written for this benchmark, six per category, many naming their product without any of the
taxonomy's keywords). In one run:

- **accuracy** (``category_match``) of ``local:rules`` and ``local:embed`` on each set, with
  the products each gets wrong;
- **confidence**: ``local:embed``'s temperature fitted by likelihood on the sample (temperature
  scaling) against the module's :data:`~pixellab.providers.local.embed.TEMPERATURE`, and on the
  held-out set the mean confidence against the accuracy, the Brier score and the expected
  calibration error over five bins;
- **time** per product (after the one-off model load, reported apart).

    .venv/bin/python benchmarks/bench_analyze.py      # ~30 s on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SETS = {"sample": REPO / "datasets" / "sample" / "manifest.csv",
        "held-out": REPO / "benchmarks" / "data" / "analyze_heldout.csv"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _nll(scores: list[dict[str, float]], labels: list[str], temperature: float) -> float:
    total = 0.0
    for score, label in zip(scores, labels, strict=True):
        if label not in score:
            continue
        values = np.array(list(score.values())) / temperature
        values -= values.max()
        total -= values[list(score).index(label)] - np.log(np.exp(values).sum())
    return total


def _calibration(confidences: np.ndarray, right: np.ndarray, bins: int = 5) -> float:
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidences > low) & (confidences <= high)
        if inside.any():
            error += inside.mean() * abs(confidences[inside].mean() - right[inside].mean())
    return float(error)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from pixellab.intel.taxonomy import analyze_by_rules, load_taxonomy, product_data
    from pixellab.providers.local import embed

    taxonomy = load_taxonomy()
    started = time.perf_counter()
    embed.encode(["warm up"])
    load_s = time.perf_counter() - started
    results: dict[str, object] = {"model_load_s": round(load_s, 1)}
    fitted: dict[str, object] = {}
    for name, path in SETS.items():
        rows = _rows(path)
        labels = [row["category"] for row in rows]
        data = [product_data(row) for row in rows]
        started = time.perf_counter()
        rules = [analyze_by_rules(d, taxonomy).category for d in data]
        rules_ms = (time.perf_counter() - started) * 1000 / len(rows)
        started = time.perf_counter()
        scores = [embed.similarities(d, taxonomy) for d in data]
        answers = [embed.analyze_by_embedding(d, taxonomy) for d in data]
        embed_ms = (time.perf_counter() - started) * 1000 / len(rows) / 2
        right = np.array([a.category == label for a, label in zip(answers, labels, strict=True)])
        confidences = np.array([a.confidence for a in answers])
        if name == "sample":
            grid = np.geomspace(0.002, 0.5, 400)
            best = grid[int(np.argmin([_nll(scores, labels, t) for t in grid]))]
            fitted = {"fitted_temperature": round(float(best), 4),
                      "module_temperature": embed.TEMPERATURE}
        results[name] = {
            "products": len(rows),
            "rules_right": sum(r == label for r, label in zip(rules, labels, strict=True)),
            "embed_right": int(right.sum()),
            "embed_wrong": [f"{row['title'][:40]} -> {a.category}"
                            for row, a, ok in zip(rows, answers, right, strict=True) if not ok],
            "rules_ms_per_product": round(rules_ms, 2),
            "embed_ms_per_product": round(embed_ms, 1),
            "embed_mean_confidence": round(float(confidences.mean()), 3),
            "embed_brier": round(float(((confidences - right) ** 2).mean()), 3),
            "embed_ece_5_bins": round(_calibration(confidences, right), 3),
        }
    results.update(fitted)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
