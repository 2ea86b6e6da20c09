"""The decision rule on synthetic score tables with known answers, the composite score it ranks
by, and defaults.toml written and read back."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pixellab.scoring import load_task_scoring
from pixellab.scoring.composite import Composite, CompositeTerm, composite_scores
from pixellab.selection import (
    ALL_CATEGORIES,
    CLEAR_WINNER,
    NO_CLEAR_WINNER,
    SelectionPolicy,
    select_from_frame,
    to_toml_data,
    write_defaults,
)

POLICY = SelectionPolicy(resamples=1000, seed=7)


def scores(arms: dict[str, tuple[float, float, float]], products: int = 20, *,
           category: str = "kitchen", seed: int = 0, task: str = "packshot",
           product_effect: float = 0.1) -> pd.DataFrame:
    """A scored-requests table: per arm (mean score, score noise, USD per request), one request
    per product. Products differ in difficulty (shared across arms), as real products do."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, product_effect, products)
    rows = []
    for arm, (mean, noise, usd) in arms.items():
        for p in range(products):
            score = float(np.clip(mean + difficulty[p] + rng.normal(0, noise), 0, 1))
            rows.append({"sweep_id": "s", "request_key": f"{arm}-{category}-{p}", "task": task,
                         "category": category, "arm": arm, "product_id": f"{category}-{p:02d}",
                         "prompt_id": None, "seed": 0, "status": "succeeded",
                         "error_class": None, "passed": score > 0, "score": score, "usd": usd,
                         "latency_s": 2.0 + p / products})
    return pd.DataFrame(rows)


def decide(frame: pd.DataFrame, category: str = "kitchen", **kwargs: object):
    selection = select_from_frame(frame, policy=kwargs.pop("policy", POLICY), **kwargs)
    decision = selection.decision("packshot", category)
    assert decision is not None
    return decision


# -- the pick rule --------------------------------------------------------------------------------


def test_a_model_better_on_every_product_is_the_clear_winner() -> None:
    decision = decide(scores({"fal:good": (0.8, 0.03, 0.04), "local:free": (0.6, 0.03, 0.0)}))
    assert (decision.pick, decision.verdict) == ("fal:good", CLEAR_WINNER)
    assert decision.chain == ("fal:good", "local:free")  # the loser stays as the fallback
    loser = next(a for a in decision.arms if a.arm == "local:free")
    assert loser.vs_best is not None and loser.vs_best.low > 0.15


def test_a_tie_goes_to_the_cheaper_model() -> None:
    decision = decide(scores({"fal:dear": (0.7, 0.05, 0.05), "replicate:cheap": (0.7, 0.05, 0.01)}))
    assert (decision.pick, decision.verdict) == ("replicate:cheap", NO_CLEAR_WINNER)
    assert "cheapest" in decision.reason


def test_a_slightly_better_but_much_dearer_model_loses_when_the_gap_is_within_noise() -> None:
    frame = scores({"fal:dear": (0.72, 0.0, 0.08), "local:free": (0.70, 0.0, 0.0)}, products=8)
    dear = frame["arm"] == "fal:dear"  # on alternate products 0.2 better, then 0.2 worse
    frame.loc[dear, "score"] += [0.2 * (-1) ** i for i in range(8)]
    decision = decide(frame)
    assert decision.pick == "local:free" and decision.verdict == NO_CLEAR_WINNER


def test_too_few_products_is_insufficient_data_and_no_chain() -> None:
    decision = decide(scores({"fal:a": (0.9, 0.01, 0.01), "local:b": (0.1, 0.01, 0.0)},
                             products=3))
    assert decision.verdict == "insufficient data (n < 6)"  # what the sign-flip test needs
    assert decision.chain == () and decision.pick is None


def test_five_products_better_every_time_are_not_yet_a_clear_winner() -> None:
    policy = SelectionPolicy(min_products=5)
    decision = decide(scores({"fal:a": (0.9, 0.01, 0.01), "local:b": (0.1, 0.01, 0.0)},
                             products=5), policy=policy)
    assert decision.verdict == NO_CLEAR_WINNER and decision.p_value == pytest.approx(2 / 32)
    assert "5 shared products cannot show a difference at 5%" in decision.reason
    six = decide(scores({"fal:a": (0.9, 0.01, 0.01), "local:b": (0.1, 0.01, 0.0)},
                        products=6))
    assert six.verdict == CLEAR_WINNER and six.p_value == pytest.approx(2 / 64)


def test_an_arm_below_the_minimum_is_set_aside_while_the_others_are_compared() -> None:
    frame = pd.concat([scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0)}),
                       scores({"openai:few": (0.99, 0.0, 0.0)}, products=2, seed=1)])
    decision = decide(frame)
    assert decision.pick == "fal:a" and decision.verdict == CLEAR_WINNER
    few = next(a for a in decision.arms if a.arm == "openai:few")
    assert math.isnan(few.score.estimate)  # not enough products for an interval


def test_the_decision_is_reproducible_and_its_random_flips_are_seeded() -> None:
    frame = scores({"fal:a": (0.7, 0.1, 0.02), "local:b": (0.65, 0.1, 0.0)}, products=40)
    one, two = decide(frame), decide(frame)
    other = decide(frame, policy=SelectionPolicy(resamples=1000, seed=8))
    assert one == two
    assert [a.score for a in one.arms] == [a.score for a in other.arms]  # t: no resampling
    assert one.p_value != other.p_value  # 40 products: random sign patterns, seeded
    assert one.p_value == pytest.approx(other.p_value, abs=0.01)


def test_the_global_default_pools_every_category() -> None:
    frame = pd.concat([scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0)},
                              category=c, seed=i) for i, c in enumerate(("kitchen", "jewelry"))])
    selection = select_from_frame(frame, policy=POLICY)
    pooled = selection.decision("packshot", ALL_CATEGORIES)
    assert pooled is not None and pooled.products == 40 and pooled.pick == "fal:a"


def test_a_model_that_never_passes_gets_no_place_in_the_chain() -> None:
    frame = scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0)})
    broken = scores({"openai:c": (0.0, 0.0, 0.02)}, seed=3)
    broken["passed"], broken["status"], broken["score"] = False, "failed", 0.0
    decision = decide(pd.concat([frame, broken]))
    assert "openai:c" not in decision.chain


def test_a_chain_arm_contributes_its_models_in_order() -> None:
    decision = decide(scores({"chain:fal:a>local:b": (0.8, 0.03, 0.01),
                              "local:c": (0.5, 0.03, 0.0)}))
    assert decision.chain == ("fal:a", "local:b", "local:c")


def test_each_arm_is_compared_with_the_current_default_on_shared_products() -> None:
    decision = decide(scores({"fal:new": (0.8, 0.03, 0.01), "local:old": (0.6, 0.03, 0.0)}),
                      current={("packshot", ALL_CATEGORIES): "local:old"})
    new = next(a for a in decision.arms if a.arm == "fal:new")
    assert decision.current_default == "local:old"
    assert new.vs_default is not None and 0.15 < new.vs_default.estimate < 0.25


def test_pass_rate_latency_and_cost_per_accepted_output_are_reported() -> None:
    frame = scores({"fal:a": (0.8, 0.03, 0.02)}, products=10)
    frame.loc[frame.index[:5], ["passed", "score"]] = [False, 0.0]
    arm = decide(frame).arms[0]
    assert (arm.passed, arm.judged) == (5, 10)
    assert arm.usd_per_accepted == pytest.approx(0.2 / 5)
    assert 0.18 < arm.pass_low < 0.25 and 0.75 < arm.pass_high < 0.82  # Wilson, 5/10
    assert arm.latency_p50_s == pytest.approx(2.45) and arm.latency_p95_s > arm.latency_p50_s


# -- people's votes -------------------------------------------------------------------------------


def votes(winner_arm: str, loser_arm: str, wins: int, losses: int) -> pd.DataFrame:
    rows = [{"arm_a": winner_arm, "arm_b": loser_arm, "winner": "a", "task": "packshot",
             "category": "kitchen"}] * wins
    rows += [{"arm_a": winner_arm, "arm_b": loser_arm, "winner": "b", "task": "packshot",
              "category": "kitchen"}] * losses
    return pd.DataFrame(rows)


def test_people_who_clearly_prefer_another_model_override_the_composite() -> None:
    frame = scores({"fal:a": (0.72, 0.1, 0.01), "local:b": (0.70, 0.1, 0.0)})
    decision = decide(frame, votes=votes("fal:a", "local:b", 36, 4))
    assert decision.pick == "fal:a" and "human override" in decision.verdict
    assert "People clearly prefer fal:a" in decision.human_note


def test_votes_that_do_not_separate_the_models_leave_the_decision_alone() -> None:
    frame = scores({"fal:a": (0.72, 0.1, 0.01), "local:b": (0.70, 0.1, 0.0)})
    decision = decide(frame, votes=votes("fal:a", "local:b", 7, 5))
    assert decision.pick == "local:b" and decision.verdict == NO_CLEAR_WINNER
    assert "do not clearly favour" in decision.human_note


def test_people_cannot_waive_a_gate() -> None:
    frame = scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0)})
    failing = frame["arm"] == "local:b"
    frame.loc[frame.index[failing][:15], ["passed", "score"]] = [False, 0.0]  # 5/20 pass
    decision = decide(frame, votes=votes("local:b", "fal:a", 40, 0))
    assert decision.pick == "fal:a"


def test_agreement_between_people_and_the_composite_is_reported() -> None:
    frame = scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0),
                    "local:c": (0.4, 0.03, 0.0)})
    people = pd.concat([votes("fal:a", "local:b", 20, 2), votes("local:b", "local:c", 20, 2),
                        votes("fal:a", "local:c", 20, 1)])
    selection = select_from_frame(frame, people, policy=POLICY)
    assert selection.agreement["packshot"]["kendall_tau"] == pytest.approx(1.0)


# -- the composite --------------------------------------------------------------------------------


def composite_frame() -> pd.DataFrame:
    return pd.DataFrame([
        # status, error_class, passed, ssim, delta_e, gate
        ("succeeded", None, True, 1.0, 0.0, 1.0),     # perfect
        ("succeeded", None, True, 0.75, 10.0, 1.0),   # half way on both
        ("succeeded", None, False, 0.9, 1.0, 0.0),    # failed its gate: 0
        ("succeeded", None, False, 0.9, 1.0, None),   # gate not measured: no score
        ("failed", "InvalidOutput", False, None, None, None),       # the model's failure: 0
        ("failed", "MissingCredentials", False, None, None, None),  # never ran: no score
        ("succeeded", None, True, None, 5.0, 1.0),    # lacks a term the others have: no score
    ], columns=["status", "error_class", "passed", "ssim", "delta_e", "gate"])


COMPOSITE = Composite(version=2, terms={
    "ssim": CompositeTerm(weight=3, worst=0.5, best=1.0),
    "delta_e": CompositeTerm(weight=1, worst=20, best=0),
    "clip_text": CompositeTerm(weight=5, worst=15, best=35)})


def test_the_composite_gates_first_then_weights_the_measured_terms() -> None:
    values, used = composite_scores(composite_frame(), "packshot", COMPOSITE, {"gate": 1.0})
    expected = [1.0, 0.5, 0.0, math.nan, 0.0, math.nan, math.nan]
    assert np.allclose(values.to_numpy(), expected, equal_nan=True)
    assert used.terms == ("ssim", "delta_e") and used.dropped == ("clip_text",)
    assert used.id == "packshot@2" and len(used.fingerprint) == 12


def test_an_optional_term_missing_from_one_output_is_scored_on_the_others() -> None:
    optional = Composite(version=1, terms={
        "mask_iou": CompositeTerm(weight=1, worst=0, best=1),
        "delta_e": CompositeTerm(weight=1, worst=20, best=0, optional=True)})
    frame = pd.DataFrame({"status": ["succeeded"] * 2, "error_class": [None] * 2,
                          "passed": [True, True], "mask_iou": [0.0, 0.8],
                          "delta_e": [math.nan, 10.0]})  # nothing kept: ΔE undefined
    values, _ = composite_scores(frame, "remove_background", optional, {})
    assert values.tolist() == [0.0, pytest.approx(0.65)]


def test_the_composite_fingerprint_changes_with_a_weight() -> None:
    heavier = COMPOSITE.model_copy(update={"terms": {
        **COMPOSITE.terms, "ssim": CompositeTerm(weight=4, worst=0.5, best=1.0)}})
    assert COMPOSITE.fingerprint({}) != heavier.fingerprint({})


def test_without_any_measurable_term_a_passing_output_scores_one() -> None:
    frame = composite_frame()[["status", "error_class", "passed", "gate"]]
    values, used = composite_scores(frame, "packshot", COMPOSITE, {"gate": 1.0})
    assert values.iloc[0] == 1.0 and used.terms == ()


def test_every_task_with_metrics_has_a_valid_composite() -> None:
    scoring = load_task_scoring()
    for task in ("enhance", "remove_background", "packshot", "upscale"):
        composite = scoring[task].composite
        assert composite is not None and composite.terms
        assert set(composite.terms) <= set(scoring[task].metrics)


# -- undecided cells and many cells at once ------------------------------------------------------


def test_an_undecided_cell_says_how_many_more_products_would_separate_the_leaders() -> None:
    decision = decide(scores({"fal:a": (0.72, 0.08, 0.04), "local:b": (0.68, 0.08, 0.0)},
                             products=10))
    assert decision.verdict == NO_CLEAR_WINNER
    assert decision.products_needed is not None and decision.products_needed > 10
    extra = decision.products_needed - 10
    assert f"About {extra} more product(s)" in decision.more_products
    assert f"≈ ${extra * (0.04 + 0.0):.2f}" in decision.more_products


def test_identical_models_are_not_worth_more_products() -> None:
    frame = scores({"fal:a": (0.7, 0.0, 0.01), "local:b": (0.7, 0.0, 0.0)}, products=8)
    decision = decide(frame)
    assert decision.products_needed is None
    assert "unlikely to separate" in decision.more_products


def test_a_win_in_one_cell_of_many_is_adjusted_across_the_cells_of_the_task() -> None:
    def cell(category: str, lead: float) -> pd.DataFrame:
        return scores({"fal:a": (0.6 + lead, 0.0, 0.01), "local:b": (0.6, 0.0, 0.0)},
                      products=6, category=category, product_effect=0.0)

    alone = select_from_frame(cell("kitchen", 0.1), policy=POLICY)
    assert alone.decision("packshot", "kitchen").verdict == CLEAR_WINNER  # p = 2/64
    many = select_from_frame(pd.concat([cell("kitchen", 0.1)] + [
        cell(f"other-{i}", 0.0) for i in range(7)]), policy=POLICY)
    kitchen = many.decision("packshot", "kitchen")
    assert kitchen.p_value == pytest.approx(2 / 64)
    assert kitchen.family == 9 and kitchen.q_value > 0.05
    assert kitchen.verdict == NO_CLEAR_WINNER and kitchen.pick == "fal:a"
    assert "adjusting over the task's 9 cells" in kitchen.reason


# -- defaults.toml --------------------------------------------------------------------------------


def test_defaults_toml_carries_the_chain_and_its_evidence(tmp_path: Path) -> None:
    frame = pd.concat([scores({"fal:a": (0.8, 0.03, 0.01), "local:b": (0.6, 0.03, 0.0)}),
                       scores({"fal:a": (0.8, 0.03, 0.01)}, category="toys", products=2)])
    selection = select_from_frame(frame, policy=POLICY, sweeps=("s",))
    path = write_defaults(selection, tmp_path / "defaults.toml")
    data = tomllib.loads(path.read_text())
    kitchen = data["routes"]["packshot"]["kitchen"]
    assert kitchen["chain"] == ["fal:a", "local:b"] and kitchen["verdict"] == CLEAR_WINNER
    assert kitchen["sweeps"] == ["s"] and kitchen["products"] == 20
    packshot = load_task_scoring()["packshot"].composite
    assert packshot is not None
    assert kitchen["composite"] == f"packshot@{packshot.version}"
    assert kitchen["composite_fingerprint"]
    first = kitchen["evidence"][0]
    assert first["arm"] == "fal:a" and first["score_low"] < first["score"] < first["score_high"]
    assert data["routes"]["packshot"]["toys"]["chain"] == []
    assert data["meta"]["resamples"] == 1000 and data["meta"]["seed"] == 7
    assert "sign-flip" in data["meta"]["test"] and "Benjamini-Hochberg" in data["meta"]["family"]
    assert data["meta"]["min_products"] == 6
    assert 0 <= kitchen["p_value"] <= kitchen["q_value"] <= 0.05
    assert kitchen["cells_adjusted_over"] == 2  # kitchen and the pooled "*"; toys has no test
    assert data == tomllib.loads(path.read_text())  # round-trips
    assert to_toml_data(selection)["routes"]["packshot"]["*"]["products"] == 22


def test_an_estimate_resting_on_one_product_prints_without_an_interval_never_nan() -> None:
    from pixellab.selection import _interval_text
    from pixellab.stats import Interval

    one = Interval(estimate=0.0123, low=float("nan"), high=float("nan"), n=1)
    assert _interval_text(one) == "+0.012 (no interval from n = 1)"
    assert _interval_text(Interval(1510.0, float("nan"), float("nan"), 1), digits=0) == \
        "1510 (no interval from n = 1)"
    assert _interval_text(Interval(0.02, -0.01, 0.05, 6)) == "+0.020 [-0.010, +0.050]"
    assert _interval_text(Interval(float("nan"), float("nan"), float("nan"), 0)) == "—"
