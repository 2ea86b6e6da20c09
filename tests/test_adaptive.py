"""Adaptive sweeps: looks over products, models dropped when significantly worse under a spent
level that looking often cannot inflate, drops in the ledger, resume that keeps them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pixellab import adaptive
from pixellab.selection import select
from pixellab.simulation import ScoreShape, simulated_scores
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import write_dataset

# -- the rule -------------------------------------------------------------------------------------


def test_looks_grow_geometrically_and_end_with_every_product() -> None:
    assert adaptive.look_sizes(32) == [8, 12, 18, 27, 32]
    added = dict(adaptive.looks([f"p{i}" for i in range(32)]))
    assert [len(products) for products in added.values()] == [8, 4, 6, 9, 5]
    assert added[2] == ["p8", "p9", "p10", "p11"]
    assert adaptive.look_sizes(5) == [5]
    assert adaptive.look_sizes(0) == []


def test_the_levels_of_every_look_together_spend_at_most_alpha() -> None:
    spent = sum(adaptive.look_alpha(look, 0.05) for look in range(1, 10_000))
    assert spent == pytest.approx(0.05, rel=1e-3) and spent <= 0.05


def test_looks_take_one_product_of_each_category_in_turn() -> None:
    products = pd.DataFrame({"product_id": ["k1", "k2", "k3", "j1", "a1"],
                             "category": ["kitchen"] * 3 + ["jewelry", "apparel"]})
    assert adaptive.interleaved(products) == ["k1", "j1", "a1", "k2", "k3"]


def test_a_model_worse_on_every_product_is_dropped_and_an_equal_one_is_not() -> None:
    frame = simulated_scores({"good": 0.3, "bad": 0.0, "twin": 0.3}, 8, seed=1,
                             shape=ScoreShape(gate_rate=0.0))
    frame.loc[frame["arm"] == "twin", "score"] = frame.loc[frame["arm"] == "good",
                                                           "score"].to_numpy()
    found = adaptive.drops(frame, ["good", "bad", "twin"], look=1)
    assert [d.arm for d in found] == ["bad"]
    assert found[0].p_value <= found[0].threshold == 0.025
    assert "significantly worse than" in found[0].reason


@pytest.mark.slow
def test_looking_after_every_round_never_drops_an_equal_model_more_than_alpha() -> None:
    rng = np.random.default_rng(3)
    runs, wrong = 300, 0
    for _ in range(runs):
        frame = simulated_scores({"a": 0.0, "b": 0.0, "c": 0.0}, 120,
                                 seed=int(rng.integers(2**31)))
        alive, seen = ["a", "b", "c"], []
        for look, new in adaptive.looks(list(dict.fromkeys(frame["product_id"]))):
            seen += new
            found = adaptive.drops(frame[frame["product_id"].isin(seen)], alive, look)
            if found:
                wrong += 1
                break
    assert wrong / runs <= 0.05 + 2 * (0.05 * 0.95 / runs) ** 0.5


# -- a sweep --------------------------------------------------------------------------------------


def spec(dataset: Path, *, adaptive_sweep: bool, name: str) -> SweepSpec:
    return SweepSpec.parse({"name": name, "task": "enhance", "dataset": str(dataset),
                            "models": ["local:autoenhance", "local:blank"],
                            "adaptive": adaptive_sweep, "concurrency": 2})


@pytest.fixture
def big_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "dataset", n=24)


def test_an_adaptive_sweep_drops_a_losing_model_and_stops_when_decided(
        big_dataset: Path, workbench: Workbench) -> None:
    result = Sweep(spec(big_dataset, adaptive_sweep=True, name="adaptive"), workbench).run()
    assert [d.arm for d in result.dropped] == ["local:blank"]
    drop = result.dropped[0]
    assert drop.look <= 2 and drop.products == adaptive.look_sizes(24)[drop.look - 1]
    assert result.planned == 2 * drop.products  # then only one model is left: decided
    assert result.not_run == 2 * 24 - result.planned
    drops = workbench.ledger.adaptive_drops(["adaptive"])
    assert list(drops["arm"]) == ["local:blank"] and drops["reason"][0].startswith(
        f"significantly worse than local:autoenhance after {drop.products} products")
    decision = select(workbench.ledger, ["adaptive"]).decision("enhance")
    assert decision is not None and decision.pick == "local:autoenhance"


def test_the_adaptive_pick_is_the_full_sweeps_pick(big_dataset: Path,
                                                   workbench: Workbench) -> None:
    Sweep(spec(big_dataset, adaptive_sweep=False, name="full"), workbench).run()
    Sweep(spec(big_dataset, adaptive_sweep=True, name="adaptive"), workbench).run()
    full = select(workbench.ledger, ["full"]).decision("enhance")
    quick = select(workbench.ledger, ["adaptive"]).decision("enhance")
    assert full is not None and quick is not None
    assert (quick.pick, quick.verdict) == (full.pick, full.verdict)


def test_resuming_an_adaptive_sweep_keeps_its_drops_and_runs_no_new_product(
        big_dataset: Path, workbench: Workbench) -> None:
    first = Sweep(spec(big_dataset, adaptive_sweep=True, name="adaptive"), workbench).run()
    again = Sweep.resume("adaptive", workbench).run()
    assert (again.planned, again.not_run) == (first.planned, first.not_run)
    assert again.succeeded == 0  # only the failed (blank) requests are tried again, as any
    assert again.provider_calls == first.failed  # resume does
    assert [d.arm for d in again.dropped] == ["local:blank"]
    assert len(workbench.ledger.adaptive_drops(["adaptive"])) == 1
