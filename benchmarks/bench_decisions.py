"""How trustworthy the decision is, on simulated pools with a known truth (seeded, on demand).

Scenarios (6 models, scores shaped like the demo's composites, see pixellab.simulation):

* **null**: the six models are equally good (and "null, k=2": two equally good models, where
  the old rule's false clear winners were measured at 17 % for 5 products);
* **one best**: one model is truly best by half a within-product standard deviation (in true
  mean composite) over the runner-up, the others further behind.

For each, over RUNS simulated sweeps of 10, 30 and 200 products, through the public
``select_from_frame``: the false clear-winner rate (null; goal <= 5 %), the wrong-pick rate
(one best: a clear winner that is not the best model), how often the best is picked at all, and
the coverage of the reported 95 % intervals (every model's mean composite, every difference
from the leader; goal 93-97 %). The baseline in the same run is the rule before P9: a 95 %
percentile cluster bootstrap of each paired difference, Bonferroni-widened over the rivals.

Adaptive sweeps (pixellab.adaptive) on the 200-product pools: the share of the full sweep's
requests and of its cost an adaptive sweep needs, and how often its pick is the full sweep's
(goal <= 40 % of requests).

    .venv/bin/python benchmarks/bench_decisions.py            # 200 runs per scenario
    .venv/bin/python benchmarks/bench_decisions.py --runs 50  # a quick look
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pixellab import adaptive
from pixellab.selection import CLEAR_WINNER, SelectionPolicy, select_from_frame
from pixellab.simulation import ScoreShape, shift_for, simulated_scores, within_product_sd

ARMS = ("m0", "m1", "m2", "m3", "m4", "m5")
USD = {"m0": 0.04, "m1": 0.03, "m2": 0.05, "m3": 0.0, "m4": 0.02, "m5": 0.08}
"""Per request: the best model (m0 in "one best") is not the cheapest."""
LEVEL = 0.95


def scenarios(shape: ScoreShape) -> dict[str, dict[str, float]]:
    """Effects (added before clipping) per model; "one best": true means 0.5 sd apart."""
    sd = within_product_sd(shape)
    runner_up = shift_for(0.5 * sd, shape)  # m0 leads m1 by half an sd in true mean
    return {
        "null, k=2": {"m0": 0.0, "m1": 0.0},
        "null": dict.fromkeys(ARMS, 0.0),
        "one best": {"m0": runner_up, "m1": 0.0, "m2": -0.05, "m3": -0.1, "m4": -0.15,
                     "m5": -0.2},
    }


@dataclass
class Tally:
    runs: int = 0
    clear: int = 0
    wrong: int = 0
    picked_best: int = 0
    covered: int = 0
    intervals: int = 0
    covered_diff: int = 0
    diffs: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _frames(effects: dict[str, float], products: int, runs: int, seed: int,
            shape: ScoreShape) -> list[pd.DataFrame]:
    seeds = np.random.SeedSequence(seed).spawn(runs)
    return [simulated_scores(effects, products, seed=int(s.generate_state(1)[0]), shape=shape,
                             task=f"run-{i:04d}", usd=USD) for i, s in enumerate(seeds)]


def measure_rule(frames: list[pd.DataFrame], truth: dict[str, float], best: str | None
                 ) -> Tally:
    tally = Tally()
    started = time.perf_counter()
    selection = select_from_frame(pd.concat(frames, ignore_index=True),
                                  policy=SelectionPolicy(level=LEVEL))
    tally.seconds = time.perf_counter() - started
    for decision in selection.decisions:
        if decision.category == "*":
            continue
        tally.runs += 1
        clear = decision.verdict == CLEAR_WINNER
        tally.clear += clear
        tally.wrong += clear and decision.pick != best
        tally.picked_best += decision.pick == best
        leader = max((a for a in decision.arms if a.enough), key=lambda a: a.score.estimate)
        for arm in decision.arms:
            if arm.enough:
                tally.intervals += 1
                tally.covered += arm.score.low <= truth[arm.arm] <= arm.score.high
            if arm.vs_best is not None and arm.vs_best.n > 1:
                gap = truth[leader.arm] - truth[arm.arm]
                tally.diffs += 1
                tally.covered_diff += arm.vs_best.low <= gap <= arm.vs_best.high
    return tally


def measure_baseline(frames: list[pd.DataFrame], best: str | None, *, resamples: int = 1000,
                     seed: int = 0) -> Tally:
    """The rule before P9: percentile cluster bootstrap, Bonferroni over the rivals."""
    tally = Tally()
    rng = np.random.default_rng(seed)
    for frame in frames:
        wide = frame.pivot(index="product_id", columns="arm", values="score")
        means = wide.mean()
        leader = str(means.idxmax())
        rivals = [a for a in wide.columns if a != leader]
        level = 1 - (1 - LEVEL) / len(rivals)
        n = len(wide)
        draws = rng.integers(0, n, (resamples, n))
        clear = True
        for rival in rivals:
            difference = (wide[leader] - wide[rival]).to_numpy()
            boot = difference[draws].mean(axis=1)
            low = np.quantile(boot, (1 - level) / 2)
            clear &= bool(low > 0)
        tally.runs += 1
        tally.clear += clear
        tally.wrong += clear and leader != best
    return tally


def measure_adaptive(frames: list[pd.DataFrame]) -> Tally:
    """Adaptive looks over each 200-product pool against the full sweep of it."""
    tally = Tally()
    requests = cost = full_requests = full_cost = 0.0
    same = 0
    for frame in frames:
        order = list(dict.fromkeys(frame["product_id"]))
        alive = list(ARMS)
        ran: set[str] = set()
        gone: dict[str, str] = {}
        for look, new in adaptive.looks(order):
            chunk = frame[frame["product_id"].isin(new) & frame["arm"].isin(alive)]
            ran.update(chunk["request_key"])
            found = adaptive.drops(frame[frame["request_key"].isin(ran)], alive, look)
            gone.update({d.arm: d.reason for d in found})
            alive = adaptive.remaining(alive, found)
            if len(alive) <= 1:
                break
        run = frame[frame["request_key"].isin(ran)]
        requests += len(run)
        cost += float(run["usd"].sum())
        full_requests += len(frame)
        full_cost += float(frame["usd"].sum())
        full = select_from_frame(frame, policy=SelectionPolicy(level=LEVEL)).decisions[0]
        task = str(frame["task"].iloc[0])
        quick = select_from_frame(run, policy=SelectionPolicy(level=LEVEL),
                                  dropped={task: gone}).decisions[0]
        same += full.pick == quick.pick
        tally.runs += 1
    tally.extra = {"requests": requests / full_requests, "cost": cost / full_cost,
                   "same_pick": same / tally.runs}
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = ScoreShape()
    print(f"score shape {shape}; within-product sd {within_product_sd(shape):.3f}; "
          f"{args.runs} runs per cell; 6 models")
    print(f"{'scenario':10} {'n':>4} | {'clear':>6} {'wrong':>6} {'best':>6} "
          f"{'cover':>6} {'cover-d':>7} | {'old clear':>9} {'old wrong':>9} | {'s':>5}")
    for name, effects in scenarios(shape).items():
        truth = {arm: shape.mean(effect) for arm, effect in effects.items()}
        best = None if name.startswith("null") else "m0"
        for products in (6, 10, 30, 200):
            frames = _frames(effects, products, args.runs, args.seed + products, shape)
            new = measure_rule(frames, truth, best)
            old = measure_baseline(frames, best, seed=args.seed)
            print(f"{name:10} {products:>4} | {new.clear / new.runs:6.1%} "
                  f"{new.wrong / new.runs:6.1%} {new.picked_best / new.runs:6.1%} "
                  f"{new.covered / max(1, new.intervals):6.1%} "
                  f"{new.covered_diff / max(1, new.diffs):7.1%} | "
                  f"{old.clear / old.runs:9.1%} {old.wrong / old.runs:9.1%} | "
                  f"{new.seconds:5.1f}", flush=True)
        if name == "null, k=2":
            continue
        frames = _frames(effects, 200, args.runs, args.seed + 7, shape)
        quick = measure_adaptive(frames)
        print(f"{name:10} adaptive on 200 products: {quick.extra['requests']:.1%} of the full "
              f"sweep's requests, {quick.extra['cost']:.1%} of its cost; same pick as the full "
              f"sweep in {quick.extra['same_pick']:.1%} of runs", flush=True)


if __name__ == "__main__":
    main()
