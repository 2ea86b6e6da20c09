"""Specifications for pixellab.stats: cluster bootstrap, paired differences, Bradley-Terry,
rank agreement and Holm, on real numbers drawn from seeded generators."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pixellab.stats import (
    BT_COLUMNS,
    Interval,
    bradley_terry,
    bt_probability,
    cluster_bootstrap_mean,
    holm,
    paired_difference,
    rank_agreement,
    win_matrix,
)

TRUE_ELO = {"w": 1000.0, "x": 1100.0, "y": 1200.0, "z": 1400.0}


def simulate_votes(seed: int, battles: int = 3000, tie_rate: float = 0.1) -> pd.DataFrame:
    """Votes between random pairs of TRUE_ELO arms. Ties occur at ``tie_rate`` and the decisive
    votes are tilted so that the expected score (tie = 0.5) equals the Bradley-Terry win
    probability, which is what the model with ties-as-half-wins estimates."""
    rng = np.random.default_rng(seed)
    names = np.array(list(TRUE_ELO))
    ratings = np.array(list(TRUE_ELO.values()))
    first = rng.integers(0, len(names), battles)
    second = (first + rng.integers(1, len(names), battles)) % len(names)
    p = 1.0 / (1.0 + 10.0 ** ((ratings[second] - ratings[first]) / 400.0))
    decisive_win = (p - tie_rate / 2) / (1 - tie_rate)
    tie = rng.random(battles) < tie_rate
    a_wins = rng.random(battles) < decisive_win
    winner = np.where(tie, "tie", np.where(a_wins, "a", "b"))
    return pd.DataFrame({"arm_a": names[first], "arm_b": names[second], "winner": winner})


def votes_from(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["arm_a", "arm_b", "winner"])


def paired_frame(
    differences: np.ndarray, rows_per_product: int = 3, seed: int = 0
) -> pd.DataFrame:
    """Arms "new" and "old" scored on the same (product, prompt, seed) units; each product's
    difficulty is shared by both arms and ``differences[product]`` is added to "new"."""
    rng = np.random.default_rng(seed)
    records = []
    for product, difference in enumerate(differences):
        difficulty = rng.normal(0.5, 0.2)
        for prompt in range(rows_per_product):
            records.append((f"p{product}", prompt, 7, "old", difficulty))
            records.append((f"p{product}", prompt, 7, "new", difficulty + difference))
    return pd.DataFrame(records, columns=["product_id", "prompt_id", "seed", "arm", "score"])


def width(interval: Interval) -> float:
    return interval.high - interval.low


# Interval


def test_interval_prints_estimate_and_bounds_with_three_decimals() -> None:
    assert str(Interval(0.1234, 0.05, 0.19, 12)) == "0.123 [0.050, 0.190]"


def test_interval_excludes_zero_only_when_both_bounds_share_a_sign() -> None:
    assert Interval(0.1, 0.02, 0.2, 5).excludes_zero
    assert Interval(-0.1, -0.2, -0.02, 5).excludes_zero
    assert not Interval(0.1, -0.02, 0.2, 5).excludes_zero


def test_nan_interval_does_not_exclude_zero() -> None:
    assert not Interval(math.nan, math.nan, math.nan, 0).excludes_zero


# cluster_bootstrap_mean


def test_cluster_bootstrap_is_identical_with_the_same_seed() -> None:
    rng = np.random.default_rng(1)
    values, clusters = rng.normal(size=500), np.repeat(np.arange(50), 10)
    first = cluster_bootstrap_mean(values, clusters, seed=3)
    second = cluster_bootstrap_mean(values, clusters, seed=3)
    assert first == second


def test_cluster_bootstrap_bounds_change_with_another_seed() -> None:
    rng = np.random.default_rng(1)
    values, clusters = rng.normal(size=500), np.repeat(np.arange(50), 10)
    first = cluster_bootstrap_mean(values, clusters, seed=3)
    other = cluster_bootstrap_mean(values, clusters, seed=4)
    assert (first.low, first.high) != (other.low, other.high)
    assert first.estimate == other.estimate


def test_cluster_bootstrap_interval_contains_the_true_mean_of_a_large_sample() -> None:
    rng = np.random.default_rng(2)
    product_effect = np.repeat(rng.normal(0, 0.1, 400), 5)
    values = 0.7 + product_effect + rng.normal(0, 0.05, 2000)
    interval = cluster_bootstrap_mean(values, np.repeat(np.arange(400), 5))
    assert interval.low < 0.7 < interval.high
    assert interval.n == 400


def test_cluster_bootstrap_interval_narrows_as_products_grow() -> None:
    rng = np.random.default_rng(3)
    few = cluster_bootstrap_mean(rng.normal(size=50), np.arange(50))
    many = cluster_bootstrap_mean(rng.normal(size=2000), np.arange(2000))
    assert width(many) < width(few) / 4


def test_identical_rows_within_a_product_widen_the_interval_by_about_sqrt_rows() -> None:
    rng = np.random.default_rng(4)
    values = np.repeat(rng.normal(size=200), 10)  # each product's 10 rows are identical
    by_product = cluster_bootstrap_mean(values, np.repeat(np.arange(200), 10))
    by_row = cluster_bootstrap_mean(values, np.arange(values.size))
    assert width(by_product) / width(by_row) == pytest.approx(math.sqrt(10), rel=0.2)


def test_cluster_bootstrap_drops_nan_values_with_their_cluster() -> None:
    values = [1.0, 3.0, math.nan, math.nan, 5.0]
    clusters = ["p1", "p1", "p2", "p2", "p3"]
    interval = cluster_bootstrap_mean(values, clusters, resamples=200)
    assert interval.estimate == pytest.approx(3.0)
    assert interval.n == 2


def test_cluster_bootstrap_of_no_values_is_a_nan_interval_over_zero_clusters() -> None:
    interval = cluster_bootstrap_mean([], [])
    assert math.isnan(interval.estimate) and math.isnan(interval.low)
    assert math.isnan(interval.high) and interval.n == 0


def test_one_cluster_gives_a_degenerate_interval_at_the_estimate() -> None:
    interval = cluster_bootstrap_mean([0.2, 0.4, 0.9], ["p1", "p1", "p1"])
    assert interval.low == interval.high == pytest.approx(interval.estimate)


def test_cluster_bootstrap_weights_clusters_by_their_size() -> None:
    interval = cluster_bootstrap_mean([0.0, 0.0, 0.0, 1.0], ["big", "big", "big", "small"])
    assert interval.estimate == pytest.approx(0.25)


# paired_difference


def test_constant_improvement_is_estimated_exactly_and_excludes_zero() -> None:
    frame = paired_frame(np.full(30, 0.1))
    interval = paired_difference(frame, a="new", b="old")
    assert interval.estimate == pytest.approx(0.1)
    assert interval.excludes_zero


def test_pure_noise_difference_gives_an_interval_including_zero() -> None:
    noise = np.random.default_rng(5).normal(0, 0.1, 40)
    frame = paired_frame(noise - noise.mean())  # no true difference, none in the sample either
    interval = paired_difference(frame, a="new", b="old", seed=0)
    assert not interval.excludes_zero


def test_units_scored_by_only_one_arm_are_ignored() -> None:
    frame = paired_frame(np.full(10, 0.1))
    only_new = pd.DataFrame({
        "product_id": ["p0", "extra"], "prompt_id": [99, 0], "seed": [7, 7],
        "arm": ["new", "new"], "score": [50.0, 50.0],
    })
    interval = paired_difference(pd.concat([frame, only_new]), a="new", b="old")
    assert interval.estimate == pytest.approx(0.1)
    assert interval.n == 10


def test_a_unit_with_a_nan_score_is_dropped_from_the_pairing() -> None:
    frame = paired_frame(np.full(5, 0.1))
    frame.loc[(frame["product_id"] == "p0") & (frame["arm"] == "old"), "score"] = math.nan
    interval = paired_difference(frame, a="new", b="old", resamples=200)
    assert interval.n == 4


def test_repeated_units_are_refused_rather_than_silently_averaged() -> None:
    frame = paired_frame(np.full(3, 0.1))
    with pytest.raises(ValueError, match="repeat"):
        paired_difference(pd.concat([frame, frame.head(1)]), a="new", b="old")


def test_paired_difference_without_shared_units_is_a_nan_interval() -> None:
    frame = paired_frame(np.full(3, 0.1))
    interval = paired_difference(frame[frame["arm"] == "new"], a="new", b="old")
    assert math.isnan(interval.estimate) and interval.n == 0


# bradley_terry


@pytest.fixture(scope="module")
def simulated_table() -> pd.DataFrame:
    """One seeded simulation. Each 95 % interval misses its true rating in about 1 draw of 20
    (measured over 150 simulations: coverage 93-95 %, bias under 1 Elo), so all three
    non-anchor arms are covered in only ~85 % of draws; seed 4 is one of those."""
    return bradley_terry(simulate_votes(seed=4), anchor="w", resamples=500, seed=0)


def test_bradley_terry_recovers_known_ratings_within_40_elo(
    simulated_table: pd.DataFrame,
) -> None:
    fitted = simulated_table.set_index("arm")["rating"]
    for arm, true in TRUE_ELO.items():
        assert fitted[arm] == pytest.approx(true, abs=40)


def test_bradley_terry_intervals_contain_the_true_ratings(
    simulated_table: pd.DataFrame,
) -> None:
    for row in simulated_table.itertuples():
        assert row.low <= TRUE_ELO[row.arm] <= row.high


def test_bradley_terry_rows_are_sorted_strongest_first(simulated_table: pd.DataFrame) -> None:
    assert list(simulated_table["arm"]) == ["z", "y", "x", "w"]


def test_bradley_terry_table_has_the_documented_columns(
    simulated_table: pd.DataFrame,
) -> None:
    assert tuple(simulated_table.columns) == BT_COLUMNS


def test_bradley_terry_tallies_wins_losses_and_ties_per_arm() -> None:
    votes = votes_from([("p", "q", "a"), ("q", "p", "a"), ("p", "r", "tie"), ("r", "q", "b")])
    table = bradley_terry(votes, resamples=0).set_index("arm")
    assert table.loc["p", ["wins", "losses", "ties", "battles"]].tolist() == [1, 1, 1, 3]
    assert table.loc["q", ["wins", "losses", "ties", "battles"]].tolist() == [2, 1, 0, 3]


def test_anchor_arm_is_rated_exactly_1000() -> None:
    table = bradley_terry(simulate_votes(seed=1, battles=600), anchor="y", resamples=100)
    anchor_row = table.set_index("arm").loc["y"]
    assert (anchor_row["rating"], anchor_row["low"], anchor_row["high"]) == (1000, 1000, 1000)


def test_without_anchor_the_mean_rating_is_1000() -> None:
    table = bradley_terry(simulate_votes(seed=1, battles=600), resamples=0)
    assert table["rating"].mean() == pytest.approx(1000.0)


def test_an_unknown_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        bradley_terry(votes_from([("p", "q", "a")]), anchor="nobody", resamples=0)


def test_arms_that_only_tied_get_equal_ratings() -> None:
    votes = votes_from([("p", "q", "tie")] * 6 + [("q", "p", "tie")] * 4)
    ratings = bradley_terry(votes, resamples=50)["rating"]
    assert ratings.iloc[0] == pytest.approx(ratings.iloc[1], abs=1e-3)


def test_a_tie_counts_as_half_a_win() -> None:
    two_ties = bradley_terry(votes_from([("p", "q", "tie")] * 2), resamples=0)
    split = bradley_terry(votes_from([("p", "q", "a"), ("p", "q", "b")]), resamples=0)
    assert two_ties["rating"].tolist() == pytest.approx(split["rating"].tolist(), abs=1e-3)


def test_an_undefeated_arm_gets_a_finite_rating_above_the_others() -> None:
    votes = votes_from([("p", "q", "a")] * 5 + [("q", "r", "a"), ("r", "q", "a")])
    table = bradley_terry(votes, resamples=100)
    assert table["arm"].iloc[0] == "p"
    assert np.isfinite(table[["rating", "low", "high"]].to_numpy()).all()


def test_bradley_terry_is_identical_with_the_same_seed() -> None:
    votes = simulate_votes(seed=2, battles=500)
    first = bradley_terry(votes, resamples=100, seed=9)
    second = bradley_terry(votes, resamples=100, seed=9)
    pd.testing.assert_frame_equal(first, second)


def test_no_votes_give_an_empty_table_with_the_columns() -> None:
    table = bradley_terry(votes_from([]))
    assert table.empty and tuple(table.columns) == BT_COLUMNS


def test_an_unknown_winner_value_is_refused() -> None:
    with pytest.raises(ValueError, match="winner"):
        bradley_terry(votes_from([("p", "q", "A")]), resamples=0)


def test_bt_probability_is_ten_to_one_odds_at_400_elo() -> None:
    assert bt_probability(1400, 1000) == pytest.approx(10 / 11)
    assert bt_probability(1000, 1000) == 0.5


# win_matrix


def test_win_matrix_counts_battles_in_both_orders_with_ties_as_half() -> None:
    votes = votes_from([("p", "q", "a"), ("q", "p", "b"), ("q", "p", "tie"), ("p", "r", "b")])
    matrix = win_matrix(votes)
    assert matrix.loc["p", "q"] == pytest.approx(2.5 / 3)
    assert matrix.loc["q", "p"] == pytest.approx(0.5 / 3)
    assert matrix.loc["r", "p"] == 1.0


def test_win_matrix_is_nan_where_arms_never_met() -> None:
    matrix = win_matrix(votes_from([("p", "q", "a"), ("p", "r", "b")]))
    assert math.isnan(matrix.loc["q", "r"]) and math.isnan(matrix.loc["p", "p"])


# rank_agreement


def test_identical_rankings_agree_completely() -> None:
    agreement = rank_agreement({"p": 3.0, "q": 2.0, "r": 1.0}, {"p": 0.9, "q": 0.5, "r": 0.1})
    assert agreement == {"kendall_tau": pytest.approx(1.0), "n": 3, "pairwise_agreement": 1.0}


def test_reversed_rankings_have_tau_minus_one() -> None:
    agreement = rank_agreement({"p": 3.0, "q": 2.0, "r": 1.0}, {"p": 0.1, "q": 0.5, "r": 0.9})
    assert agreement["kendall_tau"] == pytest.approx(-1.0)
    assert agreement["pairwise_agreement"] == 0.0


def test_rank_agreement_uses_only_shared_arms() -> None:
    agreement = rank_agreement({"p": 3.0, "q": 2.0, "r": 1.0, "s": 9.0}, {"p": 2.0, "q": 1.0})
    assert agreement["n"] == 2 and agreement["kendall_tau"] == pytest.approx(1.0)


def test_rank_agreement_with_fewer_than_two_shared_arms_is_nan() -> None:
    agreement = rank_agreement({"p": 1.0, "q": 2.0}, {"p": 1.0, "r": 2.0})
    assert math.isnan(agreement["kendall_tau"]) and agreement["n"] == 1


# holm


def test_holm_adjusts_step_down_and_keeps_input_order() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_adjusted_values_at_one() -> None:
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
