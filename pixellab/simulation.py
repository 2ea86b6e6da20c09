"""Synthetic score tables with a known truth, to measure a decision rule before trusting it.

A statistical claim is checked by simulation before it is printed: :func:`simulated_scores`
builds tables shaped like :func:`pixellab.evidence.scored_requests` (what
:func:`pixellab.selection.select_from_frame` decides on), where we know which model is better and
by how much. The shape follows the demo's composites: bounded to 0-1, products that differ in
difficulty (shared by every model), heavy-tailed noise per output, and gates that zero some
outputs. ``tests/test_decision_calibration.py`` and ``benchmarks/bench_decisions.py`` use it to
measure the rule's false clear-winner rate, its power and its intervals' coverage.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ScoreShape:
    """How simulated composites are distributed.

    A product's difficulty is Beta(``difficulty_a``, ``difficulty_b``) (mean 0.71 by default,
    like the demo's composites); an output scores that plus the arm's effect plus Student-t
    noise (``noise_df`` degrees of freedom, scaled by ``noise_scale``), clipped to 0-1; with
    probability ``gate_rate`` an output fails a gate and scores 0, as the composite rule does.
    """

    difficulty_a: float = 5.0
    difficulty_b: float = 2.0
    noise_scale: float = 0.05
    noise_df: float = 3.0
    gate_rate: float = 0.03

    def draw(self, rng: np.random.Generator, effects: np.ndarray,
             products: int) -> np.ndarray:
        """Scores of shape (arms, products)."""
        difficulty = rng.beta(self.difficulty_a, self.difficulty_b, products)
        noise = rng.standard_t(self.noise_df, (effects.size, products)) * self.noise_scale
        scores = np.clip(difficulty[None, :] + effects[:, None] + noise, 0.0, 1.0)
        gated = rng.random(scores.shape) < self.gate_rate
        return np.where(gated, 0.0, scores)

    def mean(self, effect: float = 0.0, draws: int = 400_000, seed: int = 0) -> float:
        """The true mean composite of an arm with ``effect`` (by a large seeded draw)."""
        return float(self.draw(np.random.default_rng(seed), np.array([effect]), draws).mean())


@functools.lru_cache(maxsize=64)
def shift_for(mean_difference: float, shape: ScoreShape = ScoreShape(), draws: int = 200_000,
              seed: int = 0) -> float:
    """The effect (added before clipping and gates) that makes an arm's true mean composite
    ``mean_difference`` above an arm with no effect: the ceiling at 1 and the gates shrink a
    shift, so an effect stated as a difference of means is found by bisection."""
    base = shape.mean(0.0, draws, seed)
    if not 0 <= mean_difference < shape.mean(5.0, draws, seed) - base:
        raise ValueError(f"a mean difference of {mean_difference} is not reachable with {shape}")
    low, high = 0.0, 5.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = ((middle, high) if shape.mean(middle, draws, seed) - base < mean_difference
                     else (low, middle))
    return (low + high) / 2


@functools.lru_cache(maxsize=16)
def within_product_sd(shape: ScoreShape = ScoreShape(), draws: int = 400_000,
                      seed: int = 0) -> float:
    """The standard deviation of one output's score around its product's expected score
    (gates included): the unit "an effect of one within-product standard deviation" is in.
    Two equally good arms on the same products differ by sqrt(2) times it."""
    scores = shape.draw(np.random.default_rng(seed), np.zeros(2), draws)
    return float(np.std(scores[0] - scores[1], ddof=1) / np.sqrt(2))


def simulated_scores(effects: Mapping[str, float], products: int, *, seed: int,
                     shape: ScoreShape = ScoreShape(), task: str = "packshot",
                     category: str = "simulated", usd: Mapping[str, float] | None = None
                     ) -> pd.DataFrame:
    """One request per arm and product, shaped like
    :func:`pixellab.evidence.scored_requests`: ``effects`` maps each arm to what it adds to
    every output's score (0 for all: equally good models), ``usd`` to its cost per request
    (default 0). ``passed`` is whether the output scored above 0 (a gate zeroes a failure)."""
    rng = np.random.default_rng(seed)
    names = list(effects)
    scores = shape.draw(rng, np.array([effects[a] for a in names], dtype=float), products)
    costs = usd or {}
    arm = np.repeat(names, products)
    product = np.tile([f"{category}-{p:04d}" for p in range(products)], len(names))
    flat = scores.ravel()
    return pd.DataFrame({
        "sweep_id": "simulated", "request_key": [f"{a}|{p}" for a, p in zip(arm, product,
                                                                             strict=True)],
        "task": task, "category": category, "arm": arm, "product_id": product,
        "prompt_id": None, "seed": 0, "status": "succeeded", "error_class": None,
        "passed": flat > 0, "score": flat,
        "usd": np.repeat([costs.get(a, 0.0) for a in names], products),
        "latency_s": 1.0})


def simulated_runs(effects: Mapping[str, float], products: int, runs: int, *, seed: int,
                   shape: ScoreShape = ScoreShape(),
                   usd: Mapping[str, float] | None = None) -> pd.DataFrame:
    """``runs`` independent :func:`simulated_scores` tables in one frame, each its own task
    (``run-0000``…), so one :func:`~pixellab.selection.select_from_frame` call decides every run
    and no run's decision is adjusted for another's."""
    seeds = np.random.SeedSequence(seed).spawn(runs)
    return pd.concat([simulated_scores(effects, products, seed=int(s.generate_state(1)[0]),
                                       shape=shape, task=f"run-{i:04d}", usd=usd)
                      for i, s in enumerate(seeds)], ignore_index=True)
