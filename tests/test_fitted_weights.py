"""Composite weights fitted to people's votes: recovered when people weigh differently, kept by
hand when they do not, and judged only on votes (and products) the fit never saw.

Votes are simulated from a known weighting: each product has one output per arm with random
term values, and a simulated person prefers the left output of a pair with probability
σ(sharpness · (C_true(left) − C_true(right))). The end-to-end test fits from a real ledger.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pixellab import evidence, ratings
from pixellab.evidence import fit_from_ledger
from pixellab.ledger import queries
from pixellab.scoring import load_task_scoring
from pixellab.scoring.composite import Composite, CompositeTerm, composite_scores
from pixellab.scoring.fitted import (
    FAILED_GATE,
    GATE_NOT_MEASURED,
    LACKS_REQUIRED_TERM,
    FittedWeights,
    assign_folds,
    fit_weights,
    vote_features,
)
from pixellab.selection import SelectionPolicy, select, to_toml_data
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import REPO

TASK = "remove_background"
HAND = Composite(version=1, note="as tasks.toml's remove_background@1", terms={
    "mask_iou": CompositeTerm(weight=0.5, worst=0.5, best=1.0),
    "boundary_f": CompositeTerm(weight=0.3, worst=0.0, best=1.0),
    "delta_e": CompositeTerm(weight=0.1, worst=20.0, best=0.0, optional=True),
    "clip_fidelity": CompositeTerm(weight=0.1, worst=0.5, best=1.0)})
GATES = {"blank": 0.0}
HAND_WEIGHTS = {"mask_iou": 0.5, "boundary_f": 0.3, "delta_e": 0.1, "clip_fidelity": 0.1}
EDGES_AND_COLOUR = {"mask_iou": 0.1, "boundary_f": 0.6, "delta_e": 0.3, "clip_fidelity": 0.0}
"""People who care about clean edges and true colour, hardly about IoU and not at all CLIP."""


def simulate(truth: Mapping[str, float], *, products: int = 120, arms: int = 3,
             sharpness: float = 15.0, seed: int = 0, left_bias: float = 0.0
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(votes, scores) shaped like ratings_table and score_table: every pair of arms on every
    product voted once, sides in random order, by a person who weighs terms by ``truth``."""
    rng = np.random.default_rng(seed)
    score_rows, vote_rows = [], []
    for p in range(products):
        product = f"kitchen-{p:03d}"
        shares = rng.uniform(0, 1, (arms, len(HAND.terms)))
        for arm in range(arms):
            output = f"{product}-arm{arm}"
            score_rows.append((output, "blank", 0.0))
            for share, (metric, term) in zip(shares[arm], HAND.terms.items(), strict=True):
                score_rows.append((output, metric, term.worst + share * (term.best - term.worst)))
        true_composite = shares @ np.array([truth[t] for t in HAND.terms])
        for one, two in itertools.combinations(range(arms), 2):
            left, right = (one, two) if rng.random() < 0.5 else (two, one)
            logit = sharpness * (true_composite[left] - true_composite[right]) + left_bias
            winner = "a" if rng.random() < 1 / (1 + math.exp(-logit)) else "b"
            vote_rows.append({"rating_id": f"{product}-{left}-{right}", "task": TASK,
                              "category": "kitchen", "product_id": product,
                              "arm_a": f"arm{left}", "arm_b": f"arm{right}", "winner": winner,
                              "output_a": f"{product}-arm{left}",
                              "output_b": f"{product}-arm{right}"})
    scores = pd.DataFrame(score_rows, columns=["output_sha256", "metric", "value"])
    return pd.DataFrame(vote_rows), scores


def features(votes: pd.DataFrame, scores: pd.DataFrame, composite: Composite = HAND):
    return vote_features(votes, scores, composite, GATES, task=TASK)


def without(scores: pd.DataFrame, output: str, metric: str) -> pd.DataFrame:
    return scores[~((scores["output_sha256"] == output) & (scores["metric"] == metric))]


# -- what the fit recovers and when it is used ------------------------------------------------


@pytest.fixture(scope="module")
def edges_fit() -> FittedWeights:
    """360 votes on 120 products by people who weigh as :data:`EDGES_AND_COLOUR`."""
    fitted = fit_weights(features(*simulate(EDGES_AND_COLOUR)))
    assert fitted is not None
    return fitted


def test_weights_people_voted_by_are_recovered_including_a_zero(edges_fit: FittedWeights) -> None:
    fitted = edges_fit
    for term, weight in EDGES_AND_COLOUR.items():
        assert fitted.weights[term] == pytest.approx(weight, abs=0.1), term
    assert sum(fitted.weights.values()) == pytest.approx(1.0)
    assert min(fitted.weights.values()) >= 0  # never a negative weight


def test_fitted_weights_are_used_when_people_clearly_weigh_otherwise_than_the_hand(
        edges_fit: FittedWeights) -> None:
    fitted = edges_fit
    assert fitted.difference.low > 0 and fitted.p_value < 0.05 and fitted.better
    assert fitted.cv_accuracy_fitted > fitted.cv_accuracy_hand
    assert fitted.cv_log_loss_fitted < fitted.cv_log_loss_hand


def test_people_who_vote_by_the_hand_weights_leave_the_hand_weights_in_place() -> None:
    fitted = fit_weights(features(*simulate(HAND_WEIGHTS)))
    assert fitted is not None
    assert fitted.difference.low <= 0 <= fitted.difference.high and fitted.p_value > 0.05
    assert not fitted.better


def test_too_few_decided_votes_is_no_fit_and_ties_do_not_count_towards_enough() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=20)  # 60 votes, 4 terms: 40 needed
    decided_40 = votes.assign(winner=["tie" if i >= 40 else w
                                      for i, w in enumerate(votes["winner"])])
    decided_39 = votes.assign(winner=["tie" if i >= 39 else w
                                      for i, w in enumerate(votes["winner"])])
    assert fit_weights(features(decided_39, scores)) is None
    assert fit_weights(features(decided_40, scores)) is not None
    assert fit_weights(features(decided_40, scores), min_votes=41) is None


def test_fewer_products_than_folds_is_no_fit() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=4, arms=6)  # 60 votes on 4 products
    assert fit_weights(features(votes, scores), folds=5) is None
    assert fit_weights(features(votes, scores), folds=4) is not None


def test_a_single_term_leaves_nothing_to_weigh() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR)
    only_iou = Composite(version=1, terms={"mask_iou": HAND.terms["mask_iou"]})
    assert fit_weights(features(votes, scores, only_iou)) is None


# -- cross-validation ------------------------------------------------------------------------


def test_a_products_votes_are_held_out_together_and_every_fold_holds_some() -> None:
    fitted = fit_weights(features(*simulate(EDGES_AND_COLOUR, products=37)), folds=5)
    assert fitted is not None
    folds_per_product = fitted.predictions.groupby("product_id")["fold"].nunique()
    assert (folds_per_product == 1).all()
    assert sorted(fitted.predictions["fold"].unique()) == [0, 1, 2, 3, 4]
    assert fitted.predictions["correct_fitted"].notna().all()  # every vote predicted held out


def test_folds_hold_similar_numbers_of_votes_when_products_have_unequal_votes() -> None:
    products = ["big"] * 12 + [f"p{i}" for i in range(20) for _ in range(i % 3 + 1)]
    fold = assign_folds(products, 5, seed=0)
    loads = np.bincount(fold, minlength=5)
    assert loads.max() - loads.min() <= 12  # at most the largest product apart
    assert len({f for p, f in zip(products, fold, strict=True) if p == "big"}) == 1


def test_the_same_seed_gives_the_same_fit_and_another_seed_other_folds() -> None:
    data = features(*simulate(EDGES_AND_COLOUR, products=60))
    one, two, other = fit_weights(data), fit_weights(data), fit_weights(data, seed=1)
    assert one is not None and two is not None and other is not None
    assert one.weights == two.weights and one.difference == two.difference
    assert one.p_value == two.p_value
    pd.testing.assert_frame_equal(one.predictions, two.predictions)
    assert not one.predictions["fold"].equals(other.predictions["fold"])
    assert one.weights == other.weights  # the full-data fit does not depend on the folds


# -- which votes a fit may use ----------------------------------------------------------------


def test_a_vote_on_an_output_that_failed_or_lacks_its_gate_is_left_out_and_counted() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=10)
    blank = (scores["output_sha256"] == "kitchen-000-arm0") & (scores["metric"] == "blank")
    failed = scores.assign(value=scores["value"].mask(blank, 1.0))
    data = features(votes, failed)
    assert data.dropped[FAILED_GATE] == 2  # arm0 of product 0 is in two of its three pairs
    assert len(data.votes) == len(votes) - 2
    unmeasured = features(votes, without(scores, "kitchen-000-arm0", "blank"))
    assert unmeasured.dropped[GATE_NOT_MEASURED] == 2 and unmeasured.dropped[FAILED_GATE] == 0


def test_a_vote_on_an_output_lacking_a_required_term_is_left_out_and_counted() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=10)
    data = features(votes, without(scores, "kitchen-003-arm1", "boundary_f"))
    assert data.dropped[LACKS_REQUIRED_TERM] == 2
    assert "kitchen-003" in set(data.votes["product_id"])  # the product's third pair stays
    assert not np.isnan(data.side_a[:, data.terms.index("boundary_f")]).any()


def test_an_optional_term_missing_keeps_the_vote_and_is_renormalised_as_the_composite_is() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=10)
    scores = without(scores, "kitchen-005-arm2", "delta_e")
    data = features(votes, scores)
    assert sum(data.dropped.values()) == 0 and len(data.votes) == len(votes)
    wide = scores.pivot_table(index="output_sha256", columns="metric", values="value")
    frame = wide.assign(status="succeeded", passed=True, error_class=None)
    composite = composite_scores(frame, TASK, HAND, GATES)[0]
    expected = (composite[votes["output_a"]].to_numpy() - composite[votes["output_b"]].to_numpy())
    np.testing.assert_allclose(data.composite_difference(data.hand_weights), expected,
                               atol=1e-7)


def test_a_term_no_voted_output_has_is_not_fitted_and_the_hand_weights_renormalise() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=60)
    data = features(votes, scores[scores["metric"] != "clip_fidelity"])
    assert data.terms == ("mask_iou", "boundary_f", "delta_e")
    assert data.unmeasured == ("clip_fidelity",)
    assert data.hand_weights == pytest.approx({"mask_iou": 5 / 9, "boundary_f": 3 / 9,
                                               "delta_e": 1 / 9})
    fitted = fit_weights(data)
    assert fitted is not None and set(fitted.weights) == set(data.terms)


def test_a_tie_is_half_a_win_in_the_fit_and_has_no_side_to_predict() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, products=60)
    votes.loc[votes.index % 6 == 0, "winner"] = "tie"
    data = features(votes, scores)
    assert set(data.votes.loc[data.votes["winner"] == "tie", "outcome"]) == {0.5}
    fitted = fit_weights(data)
    assert fitted is not None
    ties = fitted.predictions["winner"] == "tie"
    assert fitted.n_ties == int(ties.sum()) == 30 and fitted.n_votes == 150
    assert fitted.predictions.loc[ties, "correct_fitted"].isna().all()
    assert fitted.predictions.loc[ties, "log_loss_fitted"].notna().all()


def test_a_habit_of_choosing_the_left_side_is_fitted_apart_from_the_weights() -> None:
    votes, scores = simulate(EDGES_AND_COLOUR, left_bias=1.0)
    fitted = fit_weights(features(votes, scores), position_bias=True)
    assert fitted is not None and fitted.position_bias is not None
    assert fitted.position_bias == pytest.approx(1.0, abs=0.4)
    assert fitted.weights["boundary_f"] == pytest.approx(0.6, abs=0.1)
    plain = fit_weights(features(votes, scores))
    assert plain is not None and plain.position_bias is None


# -- the fitted composite ---------------------------------------------------------------------


def test_the_fitted_composite_has_its_own_fingerprint_and_leaves_out_zero_weights(
        edges_fit: FittedWeights) -> None:
    fitted = edges_fit
    composite = fitted.as_composite(HAND)
    assert composite.fingerprint(GATES) != HAND.fingerprint(GATES)
    assert set(composite.terms) == {t for t, w in fitted.weights.items() if round(w, 3) > 0}
    assert composite.terms["delta_e"].optional and composite.terms["delta_e"].worst == 20.0
    assert "fitted to 360 votes on 120 products" in composite.note
    assert list(fitted.table()["term"]) == list(HAND.terms)
    assert "fitted weights used" in fitted.describe()


# -- from a real ledger -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rated_workbench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    """Two local cut-out models over six sample products, and eight people who each rate the
    six pairs, preferring the cleaner edge (boundary F) most of the time. Both cut-outs of
    apparel-04 keep background and drop the cap: they fail the identity gate."""
    workbench = Workbench(tmp_path_factory.mktemp("fitted") / "home")
    spec = SweepSpec.parse({"name": "fit", "task": TASK,
                            "dataset": str(REPO / "datasets" / "sample"),
                            "models": ["local:cutout", "local:cutout-threshold"], "limit": 6,
                            "concurrency": 2})
    assert Sweep(spec, workbench).run().succeeded == 12
    frame = evidence.scored_requests(workbench.ledger, ["fit"])
    edge = dict(zip(frame["output_sha256"], frame["boundary_f"], strict=True))
    rng = np.random.default_rng(0)
    for rater in range(8):
        for pair in ratings.pairs_to_rate(frame, rater=f"rater{rater}", seed=rater):
            cleaner = edge[pair.left.output_sha256] >= edge[pair.right.output_sha256]
            agrees = rng.random() < 0.8
            ratings.record(workbench.ledger, pair, "a" if cleaner == agrees else "b",
                           f"rater{rater}")
    return workbench


def test_weights_are_fitted_from_the_ledgers_own_votes_and_scores(
        rated_workbench: Workbench) -> None:
    fitted = fit_from_ledger(rated_workbench.ledger, TASK, ["fit"])
    assert fitted is not None
    # apparel-04's eight votes are left out: both of its cut-outs failed the identity gate
    assert (fitted.n_votes, fitted.n_products) == (40, 5)
    assert "apparel-04" not in set(fitted.predictions["product_id"])
    assert fitted.unmeasured == ("clip_fidelity",)  # no CLIP weights on this machine
    assert max(fitted.weights, key=fitted.weights.__getitem__) == "boundary_f"  # as people voted
    assert (fitted.predictions.groupby("product_id")["fold"].nunique() == 1).all()
    assert not fitted.better  # five products cannot show it: the hand weights stay


def test_the_ledgers_votes_see_the_same_composite_the_report_shows(
        rated_workbench: Workbench) -> None:
    ledger = rated_workbench.ledger
    config = load_task_scoring()[TASK]
    assert config.composite is not None
    votes = ratings.ratings_table(ledger, ["fit"])
    data = vote_features(votes, queries.score_table(ledger, ["fit"]), config.composite,
                         config.gates, task=TASK)
    score = evidence.scored_requests(ledger, ["fit"]).set_index("output_sha256")["score"]
    kept = votes.set_index("rating_id").loc[data.votes["rating_id"]]
    expected = score[kept["output_a"]].to_numpy() - score[kept["output_b"]].to_numpy()
    np.testing.assert_allclose(data.composite_difference(data.hand_weights), expected, atol=1e-7)


def test_a_task_without_votes_or_composite_is_no_fit(rated_workbench: Workbench) -> None:
    assert fit_from_ledger(rated_workbench.ledger, "packshot") is None
    assert fit_from_ledger(rated_workbench.ledger, "no-such-task") is None


def test_the_decision_reports_the_fit_and_keeps_the_hand_composite_when_not_better(
        rated_workbench: Workbench, tmp_path: Path) -> None:
    selection = select(rated_workbench.ledger, ["fit"], policy=SelectionPolicy(min_products=2))
    fitted = selection.fitted[TASK]
    decision = selection.decision(TASK)
    assert decision is not None and not fitted.better
    assert decision.composite.id == f"{TASK}@{load_task_scoring()[TASK].composite.version}"
    data = to_toml_data(selection)["fitted_weights"][TASK]
    assert data["used"] is False and data["votes"] == 40
    assert set(data["weights"]) == set(data["hand_weights"])


def test_a_fitted_composite_is_what_the_decision_ranks_by_when_it_is_better(
        edges_fit: FittedWeights) -> None:
    fitted = edges_fit.as_composite(HAND)
    frame = pd.DataFrame({"task": ["t"], "status": ["succeeded"], "passed": [True],
                          "error_class": [None], **{t: [0.5] for t in HAND.terms}})
    _, used = composite_scores(frame, "t", fitted, GATES)
    assert used.id == f"t@{HAND.version}+fitted"
    assert used.fingerprint == fitted.fingerprint(GATES) != HAND.fingerprint(GATES)
