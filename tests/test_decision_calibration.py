"""The pick rule, measured: on simulated score tables where the truth is known (seeded), through
the public ``select_from_frame``, a "clear winner" between equally good models is called at most
5 % of the time (within simulation error), and a real difference of one within-product standard
deviation is found at 30 products at least 80 % of the time."""

from __future__ import annotations

import math

import pytest

from pixellab.selection import CLEAR_WINNER, SelectionPolicy, select_from_frame
from pixellab.simulation import ScoreShape, shift_for, simulated_runs, within_product_sd

RUNS = 300
LEVEL = 0.95
DEMO = ScoreShape()
"""Shaped like the demo's composites."""
HEAVY = ScoreShape(noise_scale=0.08, gate_rate=0.1)
"""Heavier than the demo's composites: a gate fails one output in ten, wider tails."""


def clear_winner_rate(effects: dict[str, float], products: int, *, seed: int,
                      shape: ScoreShape = DEMO, pick: str | None = None,
                      policy: SelectionPolicy | None = None) -> float:
    """Share of simulated runs whose category cell is called a clear winner (for ``pick``
    only, when given)."""
    frame = simulated_runs(effects, products, RUNS, seed=seed, shape=shape)
    selection = select_from_frame(frame, policy=policy or SelectionPolicy(level=LEVEL))
    cells = [d for d in selection.decisions if d.category != "*"]
    assert len(cells) == RUNS
    return sum(d.verdict == CLEAR_WINNER and (pick is None or d.pick == pick)
               for d in cells) / RUNS


def within_simulation_error(rate: float, target: float = 1 - LEVEL) -> bool:
    return rate <= target + 2 * math.sqrt(target * (1 - target) / RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("arms", [2, 4])
@pytest.mark.parametrize("products", [5, 10, 30])
def test_equally_good_models_are_rarely_called_a_clear_winner(products: int, arms: int
                                                               ) -> None:
    # at 5 products the rule is asked to decide anyway (min_products=5), and cannot
    policy = SelectionPolicy(level=LEVEL, min_products=5)
    rate = clear_winner_rate({f"model-{i}": 0.0 for i in range(arms)}, products,
                             seed=100 * products + arms, policy=policy)
    assert within_simulation_error(rate), f"{rate:.1%} false clear winners"
    if products == 5:
        assert rate == 0.0  # 2/2^5 > 5 %: the verdict says the test cannot decide yet


@pytest.mark.slow
@pytest.mark.parametrize("products", [10, 30])
def test_gates_and_heavy_tails_do_not_make_ties_look_like_winners(products: int) -> None:
    rate = clear_winner_rate({"a": 0.0, "b": 0.0}, products, seed=7 + products, shape=HEAVY)
    assert within_simulation_error(rate), f"{rate:.1%} false clear winners"


@pytest.mark.slow
def test_two_tied_leaders_ahead_of_the_rest_are_not_called_a_clear_winner() -> None:
    # the hardest case for "best beats every rival": two rivals far behind are beaten every
    # time, so the whole claim rests on the one comparison between the tied leaders
    effects = {"lead-a": 0.3, "lead-b": 0.3, "far-c": 0.0, "far-d": 0.0}
    rate = clear_winner_rate(effects, 30, seed=11)
    assert within_simulation_error(rate), f"{rate:.1%} false clear winners"


@pytest.mark.slow
@pytest.mark.parametrize("arms", [2, 4])
def test_one_within_product_sd_is_found_at_30_products_80_percent_of_the_time(arms: int
                                                                             ) -> None:
    effect = shift_for(within_product_sd(DEMO), DEMO)  # true means differ by one SD
    effects = {"better": effect, **{f"model-{i}": 0.0 for i in range(arms - 1)}}
    power = clear_winner_rate(effects, 30, seed=21 + arms, pick="better")
    assert power >= 0.8, f"power {power:.1%}"
