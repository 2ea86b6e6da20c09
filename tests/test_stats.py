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
    benjamini_hochberg,
    bradley_terry,
    bt_probability,
    cluster_t_interval,
    holm,
    min_products_for,
    paired_difference,
    products_for_power,
    rank_agreement,
    sign_flip_p_value,
    t_interval,
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


# intervals over products


def test_t_interval_contains_the_true_mean_of_a_large_sample() -> None:
    rng = np.random.default_rng(2)
    product_effect = np.repeat(rng.normal(0, 0.1, 400), 5)
    values = 0.7 + product_effect + rng.normal(0, 0.05, 2000)
    interval = cluster_t_interval(values, np.repeat(np.arange(400), 5))
    assert interval.low < 0.7 < interval.high
    assert interval.n == 400


def test_the_interval_narrows_as_products_grow() -> None:
    rng = np.random.default_rng(3)
    few = t_interval(rng.normal(size=50))
    many = t_interval(rng.normal(size=2000))
    assert width(many) < width(few) / 4


def test_identical_rows_within_a_product_are_one_piece_of_evidence() -> None:
    rng = np.random.default_rng(4)
    values = np.repeat(rng.normal(size=200), 10)  # each product's 10 rows are identical
    by_product = cluster_t_interval(values, np.repeat(np.arange(200), 10))
    by_row = t_interval(values)
    assert width(by_product) / width(by_row) == pytest.approx(math.sqrt(10), rel=0.1)


def test_a_product_counts_once_however_many_rows_it_has() -> None:
    interval = cluster_t_interval([0.0, 0.0, 0.0, 1.0], ["big", "big", "big", "small"])
    assert interval.estimate == pytest.approx(0.5) and interval.n == 2


def test_nan_values_are_dropped_with_their_product() -> None:
    interval = cluster_t_interval([1.0, 3.0, math.nan, math.nan, 5.0],
                                  ["p1", "p1", "p2", "p2", "p3"])
    assert interval.estimate == pytest.approx(3.5) and interval.n == 2


def test_no_values_is_a_nan_interval_over_zero_products() -> None:
    interval = t_interval([])
    assert math.isnan(interval.estimate) and math.isnan(interval.low) and interval.n == 0


def test_one_product_has_an_estimate_but_no_interval() -> None:
    interval = cluster_t_interval([0.2, 0.4, 0.9], ["p1", "p1", "p1"])
    assert interval.estimate == pytest.approx(0.5)
    assert math.isnan(interval.low) and math.isnan(interval.high) and interval.n == 1


def test_the_t_interval_covers_a_bounded_gated_mean_at_small_n() -> None:
    rng = np.random.default_rng(8)

    def composite(n: int) -> np.ndarray:  # bounded, gated to 0 one time in ten, heavy tails
        scores = np.clip(rng.beta(5, 2, n) + rng.standard_t(3, n) * 0.08, 0, 1)
        return np.where(rng.random(n) < 0.1, 0.0, scores)

    truth = composite(400_000).mean()
    covered = []
    for _ in range(2000):
        interval = t_interval(composite(10))
        covered.append(interval.low <= truth <= interval.high)
    assert 0.90 <= float(np.mean(covered)) <= 0.97


# the sign-flip test


def test_five_products_cannot_show_a_difference_at_5_percent() -> None:
    assert sign_flip_p_value([0.1, 0.2, 0.3, 0.1, 0.2]) == pytest.approx(2 / 32)
    assert sign_flip_p_value([0.1, 0.2, 0.3, 0.1, 0.2, 0.1]) == pytest.approx(2 / 64)
    assert min_products_for(0.95) == 6 and min_products_for(0.99) == 8


def test_the_sign_flip_p_value_is_two_sided_and_ignores_order() -> None:
    values = np.array([0.3, -0.1, 0.2, 0.25, 0.05, -0.02, 0.4])
    assert sign_flip_p_value(values) == pytest.approx(sign_flip_p_value(-values[::-1]))


def test_no_difference_at_all_gives_p_one_and_no_data_nan() -> None:
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(sign_flip_p_value([]))


def test_random_flips_beyond_the_exact_range_agree_with_enumeration() -> None:
    rng = np.random.default_rng(6)
    values = rng.normal(0.1, 0.3, 16)
    exact = sign_flip_p_value(values)
    sampled_values = np.concatenate([values, [0.0]])  # 17 products: sampled, same sums
    sampled = sign_flip_p_value(sampled_values, resamples=40_000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.01)


def test_the_sign_flip_test_rejects_at_its_level_when_models_are_exchangeable() -> None:
    rng = np.random.default_rng(7)
    rejected = []
    for _ in range(4000):
        product = rng.beta(5, 2, 9)
        a, b = (np.clip(product + rng.standard_t(3, 9) * 0.08, 0, 1) for _ in range(2))
        rejected.append(sign_flip_p_value(a - b) <= 0.05)
    assert float(np.mean(rejected)) == pytest.approx(0.05, abs=0.012)


# products needed and Benjamini-Hochberg


def test_one_standard_deviation_needs_about_ten_products_for_80_percent_power() -> None:
    assert products_for_power(0.1, 0.1) == 10
    assert products_for_power(0.05, 0.1) == 34
    assert products_for_power(0.0, 0.1) is None
    assert products_for_power(1e-6, 1.0) is None  # beyond max_products


def test_benjamini_hochberg_matches_the_textbook_example() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005, math.nan])
    assert q[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(q[4])


# paired_difference


def test_constant_improvement_is_estimated_exactly_and_excludes_zero() -> None:
    frame = paired_frame(np.full(30, 0.1))
    interval = paired_difference(frame, a="new", b="old")
    assert interval.estimate == pytest.approx(0.1)
    assert interval.excludes_zero


def test_pure_noise_difference_gives_an_interval_including_zero() -> None:
    noise = np.random.default_rng(5).normal(0, 0.1, 40)
    frame = paired_frame(noise - noise.mean())  # no true difference, none in the sample either
    interval = paired_difference(frame, a="new", b="old")
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
    interval = paired_difference(frame, a="new", b="old")
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
