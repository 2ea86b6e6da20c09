"""The pairwise judge (:mod:`pixellab.judge`) against an emulated GPT-4o judge whose verdicts
follow a known truth, with configurable noise and position bias, through the real OpenAI SDK.

The truth: every output of an enhance sweep gets a latent quality (drawn here); people's votes
follow it exactly; the emulated judge answers "A" with probability ``position_bias`` whatever
it sees, else compares the two qualities plus Gaussian noise (``pixellab/emulator/judge.py``).
What must hold:

- judging both orders removes the position bias: the raw verdicts favour the first output,
  the combined votes agree with the truth more often than single-order verdicts do;
- the agreement with people the judge pass reports is an interval that covers the judge's true
  agreement (computed here by simulating the same rule on the same pairs);
- the decision counts a judge's votes where its agreement clears the task's threshold and
  ignores a judge below it, saying which;
- a sweep with the judge on stays within its estimate, and the ledger holds every judge call
  the emulator answered, with its cost.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pixellab import judge as judging
from pixellab.emulator import Emulator
from pixellab.evidence import scored_requests
from pixellab.ledger import queries
from pixellab.ratings import pairs_to_rate, record
from pixellab.runner import RetryPolicy
from pixellab.selection import select
from pixellab.sweep import Sweep, SweepSpec
from pixellab.verdicts import JudgeSpec, combine
from pixellab.workbench import Workbench
from tests.conftest import write_dataset
from tests.emulated import emulated_providers, point_sdks_at

ARMS = ["local:autoenhance", "local:autoenhance-gentle"]
PRODUCTS = 40
FAST = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.05)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(latency_s=0.0) as emu:
        yield emu


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One enhance sweep of two local models over 40 products, run once for the module; each
    test judges it in its own copy of the home."""
    root = tmp_path_factory.mktemp("judged")
    dataset = write_dataset(root / "ds", n=PRODUCTS)
    home = root / "home"
    Sweep(spec(dataset), Workbench(home)).run(score=False)
    return dataset, home


def spec(dataset: Path, **judge: object) -> SweepSpec:
    raw: dict[str, object] = {"name": "judged", "task": "enhance", "dataset": str(dataset),
                              "models": ARMS}
    if judge:
        raw["judge"] = {"pairs": "all", **judge}
    return SweepSpec.parse(raw)


def bench(tmp_path: Path, swept: tuple[Path, Path], emulator: Emulator,
          monkeypatch: pytest.MonkeyPatch) -> Workbench:
    import shutil

    point_sdks_at(emulator, monkeypatch)
    home = tmp_path / "home"
    shutil.copytree(swept[1], home)
    return Workbench(home, providers=emulated_providers(emulator))


def truth(workbench: Workbench, seed: int) -> dict[str, float]:
    """A latent quality per output, and people's votes following it on every pair."""
    rng = random.Random(seed)
    frame = scored_requests(workbench.ledger, ["judged"])
    quality = {str(sha): rng.gauss(0.0, 1.0) for sha in frame["output_sha256"].dropna()}
    for pair in pairs_to_rate(frame, rater="ann"):
        left, right = quality[pair.left.output_sha256], quality[pair.right.output_sha256]
        record(workbench.ledger, pair, "a" if left > right else "b", rater="ann")
    return quality


def simulated_accuracy(quality: dict[str, float], pairs: list[tuple[str, str]], *,
                       noise: float, position_bias: float, draws: int = 4000) -> float:
    """The emulated judge's true accuracy against the truth on decided combined votes."""
    rng = np.random.default_rng(1)
    right = decided = 0
    for x, y in pairs:
        d = quality[x] - quality[y]

        def verdict(shown_d: float) -> np.ndarray:
            biased = rng.random(draws) < position_bias
            noisy = shown_d + rng.normal(0.0, noise, draws)
            return np.where(biased | (noisy > 0), "A", "B")

        votes = [combine(a, b) for a, b in zip(verdict(d), verdict(-d), strict=True)]
        for vote in votes:
            if vote != "tie":
                decided += 1
                right += (vote == "x") == (d > 0)
    return right / decided


def judged_pairs(workbench: Workbench) -> list[tuple[str, str]]:
    raw = queries.ratings(workbench.ledger, ["judged"], judges=True)
    votes = judging.judge_votes(raw)
    return list(zip(votes["output_a"], votes["output_b"], strict=True))


def test_both_orders_remove_the_position_bias_and_the_agreement_covers_the_truth(
        tmp_path: Path, swept: tuple[Path, Path], emulator: Emulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    workbench = bench(tmp_path, swept, emulator, monkeypatch)
    quality = truth(workbench, seed=3)
    noise, bias = 0.6, 0.35
    emulator.judge(quality, noise=noise, position_bias=bias, seed=11)
    try:
        sweep = Sweep(spec(swept[0], max_pairs=PRODUCTS), workbench)
        result = sweep.judge(retry=FAST)
    finally:
        emulator.clear_judge()
    raw = queries.ratings(workbench.ledger, ["judged"], judges=True)
    assert result.succeeded == len(raw) == 2 * len(judged_pairs(workbench)) > 60
    first = judging.position_bias(raw)["judge:openai:gpt-4o"]
    assert first > 0.6  # the raw verdicts favour whatever is shown first
    single = raw.assign(right=[(w == "a") == (quality[a] > quality[b]) for w, a, b in zip(
        raw["winner"], raw["output_a"], raw["output_b"], strict=True)])
    votes = judging.judge_votes(raw)
    decided = votes[votes["winner"] != "tie"]
    combined = np.mean([(w == "a") == (quality[a] > quality[b]) for w, a, b in zip(
        decided["winner"], decided["output_a"], decided["output_b"], strict=True)])
    assert combined > single["right"].mean() + 0.1
    table = judging.calibration(workbench.ledger, ["judged"],
                                task_scoring=workbench.task_scoring)
    pooled = table[table["category"] == "*"].iloc[0]
    true_accuracy = simulated_accuracy(quality, judged_pairs(workbench), noise=noise,
                                       position_bias=bias)
    assert pooled["accuracy_low"] <= true_accuracy <= pooled["accuracy_high"]
    assert pooled["decided"] == len(decided) and pooled["n"] == len(votes)
    assert -1 <= pooled["kappa_low"] <= pooled["kappa"] <= pooled["kappa_high"] <= 1
    assert pooled["usd"] > 0


@pytest.mark.parametrize(("noise", "bias", "counted"), [(0.2, 0.1, True), (3.0, 0.7, False)])
def test_the_decision_counts_a_judge_only_above_its_threshold(
        tmp_path: Path, swept: tuple[Path, Path], emulator: Emulator,
        monkeypatch: pytest.MonkeyPatch, noise: float, bias: float, counted: bool) -> None:
    workbench = bench(tmp_path, swept, emulator, monkeypatch)
    quality = truth(workbench, seed=5)
    emulator.judge(quality, noise=noise, position_bias=bias, seed=2)
    try:
        Sweep(spec(swept[0], max_pairs=PRODUCTS), workbench).judge(retry=FAST)
    finally:
        emulator.clear_judge()
    selection = select(workbench.ledger, ["judged"])
    note = selection.judge["enhance"]
    assert ("counted with people's" in note) is counted, note
    assert ("not used" in note) is not counted, note
    decision = selection.decision("enhance")
    assert decision is not None
    votes = sum(arm.human_votes for arm in decision.arms) // 2
    people = len(queries.ratings(workbench.ledger, ["judged"]))
    judged = len(judged_pairs(workbench))
    assert people == judged > 30
    assert votes == (people + judged if counted else people)


def test_a_sweep_with_the_judge_on_stays_within_its_estimate(
        tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdks_at(emulator, monkeypatch)
    dataset = write_dataset(tmp_path / "ds", n=6)
    workbench = Workbench(tmp_path / "home", providers=emulated_providers(emulator))
    sweep = Sweep(spec(dataset, detail="high"), workbench)
    estimate = sweep.estimate()
    assert estimate.judge_calls == 12 and estimate.judge_usd > 0
    before = len(emulator.creates("openai"))
    result = sweep.run(retry=FAST)
    assert result.judged is not None and result.judged.succeeded == 12
    calls = emulator.creates("openai")[before:]
    ledger = workbench.ledger
    judge_costs = ledger.query("select request_key, usd from costs where sweep_id = ?",
                               ["judged.judge"])
    assert len(calls) == len(judge_costs) == 12
    spent = float(judge_costs["usd"].sum())
    assert 0 < spent <= estimate.judge_usd
    assert spent >= sum(c.cost_usd for c in calls) - 1e-9  # never less than the bill
    assert float(ledger.scalar("select sum(usd) from costs")) <= estimate.usd


def test_overlapping_pairs_leave_out_arms_the_metrics_already_separate() -> None:
    """Arms a and b score alike, c far below: only a-b pairs are worth a judge's call."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        for arm, mean in (("a", 0.80), ("b", 0.78), ("c", 0.20)):
            rows.append({"task": "enhance", "category": "kitchen", "product_id": f"p{i}",
                         "prompt_id": None, "seed": 0, "status": "succeeded",
                         "output_sha256": f"{arm}{i}", "media_type": "image/png", "arm": arm,
                         "score": mean + rng.normal(0, 0.05), "sweep_id": "s",
                         "request_key": f"{arm}{i}"})
    frame = pd.DataFrame(rows)
    overlapping = judging.candidate_pairs(frame, JudgeSpec(pairs="overlapping"))
    assert {frozenset((p.x.arm, p.y.arm)) for p in overlapping} == {frozenset(("a", "b"))}
    assert len(overlapping) == 8
    assert len(judging.candidate_pairs(frame, JudgeSpec(pairs="all"))) == 24
    assert len(judging.candidate_pairs(frame, JudgeSpec(pairs="all", max_pairs=5))) == 5
