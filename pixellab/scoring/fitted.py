"""Fitted composite weights: the hand weights of a task's composite, checked against people.

A task's composite weights (``scoring/tasks.toml``) are a judgement written down before anyone
voted. People's pairwise votes (:mod:`pixellab.ratings`) say which of two outputs of the same
product is better. Bradley-Terry turns those votes into a ranking of *arms*
(:func:`pixellab.stats.bradley_terry`), and that stays as it is. This module asks the same votes
a different question: which weights would make the composite agree with people, and do those
weights agree better than the hand weights on votes they were not fitted to? The fitted weights
replace the hand weights only when they clearly do.

The model, stated so it can be checked:

1. **What a vote says.** P(left preferred) = σ(s · (C_w(a) − C_w(b)) [+ c]), where C_w is the
   task's composite, computed by its own rule (:mod:`pixellab.scoring.composite`: each term
   normalised 0–1 with :meth:`CompositeTerm.normalise`, then the weighted mean over the terms
   the output has). The weights w ≥ 0 sum to 1 like the hand weights, and s ≥ 0 says how sharply
   people tell composites apart. With β = s·w this is a logistic regression of the vote on the
   term differences, β · (x_a − x_b), whenever both outputs have every term. An output without
   an *optional* term has its composite renormalised over the other terms, as the composite
   does, and the model follows it exactly rather than inventing a value.
2. **A tie is half a win for each side** (outcome 0.5), as in Bradley-Terry. Two outputs far
   apart on a term that people call a tie say that the term matters less, so dropping ties would
   throw that evidence away. Accuracy is measured on decided votes only, because a tie has no
   side to predict. ``min_votes`` counts decided votes.
3. **Gates stay gates.** A vote is left out when either output failed a gate (its composite is
   0 whatever the weights) or its gate was not measured (it has no composite). People cannot
   waive a gate, so only the weights of the quality terms are fitted, on outputs that passed.
4. **Missing is missing.** A vote is left out when an output lacks a *required* term, because
   the composite gives that output no score. Imputing the term's mean would fit weights to
   values the composite never uses. A term that no voted output has is not fitted, just as the
   composite drops a term no output has. The counts of left-out votes come back with the
   result, so the report can say what the fit rests on.
5. **No intercept by default.** The review notebook shows each pair's sides in a seeded random
   order (:func:`pixellab.ratings.pairs_to_rate`), so a habit of favouring the left side
   averages out instead of biasing the weights. ``position_bias=True`` fits an unpenalised
   intercept c and reports it. The intercept only enters the probabilities; accuracy asks
   whether the composite difference alone points at the side people chose.
6. **Non-negative weights and a ridge.** A term may matter not at all, but never negatively (a
   higher IoU is never worse). The weights are fitted with L-BFGS-B under bounds β ≥ 0 and a
   ridge ``l2 · |β|²``, a Gaussian prior of sd ≈ 2.2 per unit of term difference at the
   default of 0.1. That is weak next to 30 votes but keeps a small, separable set of votes
   finite. The ridge pulls β towards 0, which at a given scale favours equal weights and not
   the hand weights, so it does not tilt the comparison between the two.
7. **Enough votes.** There is no fit below ``max(30, 10 × terms)`` decided votes, the usual ten
   events per parameter of a logistic regression (Peduzzi et al. 1996), nor when there are
   fewer products than folds.
8. **Cross-validated agreement.** K folds by product: the votes on one product share its
   outputs, so they are not independent evidence, and a product's votes are held out together.
   On each held-out vote, the composite difference under the fitted weights and under the hand
   weights each predict the vote. A difference of exactly 0 counts as half right. The log-loss
   gives the hand weights the same treatment: their scale s (and intercept) is fitted on the
   training folds, which is the fitted model restricted to the hand direction. The paired
   difference (fitted − hand) in held-out accuracy is taken per product, and the product is
   the unit counted, as in :mod:`pixellab.stats`: a Student's t interval over products and the
   paired sign-flip p-value.
9. **When the fitted weights win.** ``better`` is True only when the fitted weights agree
   better on average over products *and* the sign-flip test says so at ``1 - level``, the same
   test :mod:`pixellab.selection` uses to call a clear winner. The votes must also support some
   positive weight. A higher point estimate is not enough, because with a few dozen votes a
   better-looking fit is mostly noise. Below 6 products the test cannot reach 5 %
   (:func:`pixellab.stats.min_products_for`), so the hand weights stay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, special

from pixellab.scoring.composite import Composite
from pixellab.stats import Interval, cluster_means, sign_flip_p_value, t_interval

MIN_VOTES = 30
"""The fewest decided votes a fit needs, whatever the number of terms."""
VOTES_PER_TERM = 10
"""...and at least this many per fitted weight (ten events per parameter)."""
DEFAULT_L2 = 0.1
"""Ridge on β: a Gaussian prior of sd 1/sqrt(2·0.1) ≈ 2.2 logits per unit of term difference."""

FAILED_GATE = "an output failed a gate"
GATE_NOT_MEASURED = "an output's gate is not measured"
LACKS_REQUIRED_TERM = "an output lacks a required term"
DROP_REASONS = (FAILED_GATE, GATE_NOT_MEASURED, LACKS_REQUIRED_TERM)
"""Why a vote is left out of the fit, in the order they are checked (see the module
docstring, points 3 and 4)."""

_OUTCOME = {"a": 1.0, "b": 0.0, "tie": 0.5}
_DENOMINATOR_FLOOR = 1e-9  # keeps an output whose present terms all weigh 0 finite (composite 0)
_SAME_COMPOSITE = 1e-9
_MAX_ITERATIONS = 1000

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class VoteFeatures:
    """The votes of one task that a fit can use, with each side's normalised term values.

    ``side_a`` and ``side_b`` have one row per kept vote and one column per term of ``terms``,
    on the 0–1 scale of :meth:`CompositeTerm.normalise`. A cell is NaN only for an optional term
    the output lacks. ``votes`` is the kept votes (``rating_id``, ``product_id``, ``category``,
    ``winner``, ``outcome``: 1 for a, 0 for b, 0.5 for a tie), in the same order as the rows.
    """

    task: str
    terms: tuple[str, ...]
    """Terms at least one voted output has, in the order of the composite's definition."""
    optional: tuple[bool, ...]
    hand_weights: dict[str, float]
    """The composite's hand weights over ``terms``, renormalised to sum 1."""
    votes: pd.DataFrame
    side_a: Matrix
    side_b: Matrix
    dropped: dict[str, int]
    """Votes left out, by reason (every one of :data:`DROP_REASONS`, 0 included)."""
    unmeasured: tuple[str, ...]
    """Terms of the composite that no voted output has: not fitted."""

    @property
    def decided(self) -> npt.NDArray[np.bool_]:
        """Which kept votes chose a side (not a tie)."""
        return np.asarray(self.votes["outcome"].to_numpy(dtype=float) != 0.5)

    def composite_difference(self, weights: Mapping[str, float]) -> Matrix:
        """C_w(a) − C_w(b) of every kept vote under ``weights`` (any non-negative scale),
        computed by the composite's rule: the weighted mean over the terms an output has."""
        beta = np.array([float(weights.get(term, 0.0)) for term in self.terms])
        return _composite(beta, self.side_a) - _composite(beta, self.side_b)

    def table(self) -> pd.DataFrame:
        """The kept votes with one ``Δ<term>`` column per term (a − b; NaN where a side lacks an
        optional term): what the logistic model regresses the vote on."""
        deltas = pd.DataFrame(self.side_a - self.side_b, columns=[f"Δ{t}" for t in self.terms],
                              index=self.votes.index)
        return pd.concat([self.votes, deltas], axis=1)


def vote_features(votes: pd.DataFrame, scores: pd.DataFrame, composite: Composite,
                  gates: Mapping[str, float], *, task: str) -> VoteFeatures:
    """The votes on ``task`` with what the composite sees of each side.

    ``votes`` is shaped like :func:`pixellab.ratings.ratings_table` (``task``, ``product_id``,
    ``winner``, ``output_a``, ``output_b``; ``rating_id`` and ``category`` where present).
    ``scores`` is shaped like :func:`pixellab.ledger.queries.score_table` (``output_sha256``,
    ``metric``, ``value``). ``gates`` are the task's gates (metric → required value). A vote is
    left out, and counted in ``dropped``, for the first of :data:`DROP_REASONS` that holds for
    either side.
    """
    if "task" in votes.columns:
        votes = votes[votes["task"] == task]
    unknown = sorted(set(votes["winner"]) - set(_OUTCOME), key=repr)
    if unknown:
        raise ValueError(f"winner must be 'a', 'b' or 'tie', not {', '.join(map(repr, unknown))}")
    wide = _wide(scores)
    voted = pd.Index(pd.unique(pd.concat([votes["output_a"], votes["output_b"]])))
    seen = wide.reindex(voted)
    terms = tuple(t for t in composite.terms
                  if t in seen.columns and bool(seen[t].notna().any()))
    unmeasured = tuple(t for t in composite.terms if t not in terms)
    optional = tuple(composite.terms[t].optional for t in terms)

    def side(column: str) -> tuple[Matrix, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        rows = wide.reindex(votes[column].to_numpy())
        values = np.column_stack(
            [[composite.terms[t].normalise(float(v)) for v in rows[t].to_numpy(dtype=float)]
             for t in terms]) if terms else np.zeros((len(rows), 0))
        failed = np.zeros(len(rows), dtype=bool)
        unknown_gate = np.zeros(len(rows), dtype=bool)
        for metric, required in gates.items():
            measured = (rows[metric].to_numpy(dtype=float) if metric in rows.columns
                        else np.full(len(rows), math.nan))
            failed |= ~np.isnan(measured) & (measured != required)
            unknown_gate |= np.isnan(measured)
        return values, failed, unknown_gate

    side_a, failed_a, unknown_a = side("output_a")
    side_b, failed_b, unknown_b = side("output_b")
    required = ~np.array(optional, dtype=bool)
    lacks = (np.isnan(side_a[:, required]).any(axis=1)
             | np.isnan(side_b[:, required]).any(axis=1))
    failed = failed_a | failed_b
    unknown_gate = (unknown_a | unknown_b) & ~failed
    lacking = lacks & ~failed & ~unknown_gate
    keep = ~(failed | unknown_gate | lacking)
    kept = votes[keep]
    table = pd.DataFrame({
        "rating_id": (kept["rating_id"].astype(str) if "rating_id" in kept.columns
                      else pd.Series([str(i) for i in kept.index], index=kept.index)),
        "product_id": kept["product_id"].astype(str),
        "category": kept["category"] if "category" in kept.columns else None,
        "winner": kept["winner"],
        "outcome": kept["winner"].map(_OUTCOME).astype(float),
    }).reset_index(drop=True)
    hand = {t: composite.terms[t].weight for t in terms}
    total = sum(hand.values())
    return VoteFeatures(
        task=task, terms=terms, optional=optional,
        hand_weights={t: w / total for t, w in hand.items()}, votes=table,
        side_a=side_a[keep], side_b=side_b[keep],
        dropped={FAILED_GATE: int(failed.sum()), GATE_NOT_MEASURED: int(unknown_gate.sum()),
                 LACKS_REQUIRED_TERM: int(lacking.sum())},
        unmeasured=unmeasured)


def _wide(scores: pd.DataFrame) -> pd.DataFrame:
    """output → one column per metric (NaN when missing), as ``evidence.scored_requests``."""
    if scores.empty:
        return pd.DataFrame(index=pd.Index([], name="output_sha256"))
    return scores.pivot_table(index="output_sha256", columns="metric", values="value",
                              aggfunc="first", dropna=False)


@dataclass(frozen=True, eq=False)
class FittedWeights:
    """Weights fitted to people's votes, and how well each set of weights agrees with people
    on votes it was not fitted to (see the module docstring for the model and the rule)."""

    task: str
    terms: tuple[str, ...]
    weights: dict[str, float]
    """Fitted on every kept vote, summing to 1. All 0 when the votes support no term."""
    hand_weights: dict[str, float]
    """The task's hand weights over the same terms, summing to 1."""
    scale: float
    """s: logits per unit of composite difference (how sharply people tell outputs apart)."""
    position_bias: float | None
    """The intercept c in logits (> 0: the left side is favoured); None when not fitted."""
    cv_accuracy_fitted: float
    cv_accuracy_hand: float
    cv_log_loss_fitted: float
    cv_log_loss_hand: float
    difference: Interval
    """Held-out accuracy, fitted − hand: the mean over products of each product's difference,
    with its t interval (n = products)."""
    p_value: float
    """Two-sided paired sign-flip p-value of ``difference`` (products flipped)."""
    level: float
    n_votes: int
    """Decided votes the fit used (ties not counted)."""
    n_ties: int
    n_products: int
    folds: int
    dropped: dict[str, int]
    unmeasured: tuple[str, ...]
    predictions: pd.DataFrame = field(repr=False)
    """One row per kept vote: ``rating_id``, ``product_id``, ``fold``, ``winner``, the held-out
    composite differences ``difference_fitted``/``difference_hand``, ``correct_fitted``/
    ``correct_hand`` (1, 0.5 or 0; NaN for a tie) and ``log_loss_fitted``/``log_loss_hand``."""

    @property
    def better(self) -> bool:
        """The fitted weights agree with people better than the hand weights on held-out votes,
        and the paired sign-flip test over products says so at ``1 - level``: not just a higher
        point estimate."""
        return (self.difference.estimate > 0 and self.p_value <= 1 - self.level
                and sum(self.weights.values()) > 0)

    def table(self) -> pd.DataFrame:
        """One row per term: ``term``, ``hand`` and ``fitted`` weight (for the report)."""
        return pd.DataFrame({"term": list(self.terms),
                             "hand": [self.hand_weights[t] for t in self.terms],
                             "fitted": [self.weights[t] for t in self.terms]})

    def describe(self) -> str:
        """One line: agreement of each set of weights with people, and which one is used."""
        verdict = ("fitted weights used" if self.better
                   else "hand weights kept (the fitted ones do not clearly agree better)")
        return (f"{self.task}: {self.n_votes} votes on {self.n_products} products, "
                f"held-out agreement fitted {self.cv_accuracy_fitted:.0%} vs hand "
                f"{self.cv_accuracy_hand:.0%} (per product {self.difference}, "
                f"p = {self.p_value:.2g}); {verdict}")

    def as_composite(self, hand: Composite, *, digits: int = 3) -> Composite:
        """``hand`` with the fitted weights (rounded to ``digits``, so the fingerprint does not
        move with the last bits of the optimiser). A term whose weight rounds to 0 is left out,
        which is what a weight of 0 means, as are terms the votes could not judge.
        Its fingerprint differs from the hand composite's whenever a weight does."""
        terms = {term: hand.terms[term].model_copy(update={"weight": round(weight, digits)})
                 for term, weight in self.weights.items() if round(weight, digits) > 0}
        if not terms:
            raise ValueError(f"the votes on {self.task} support no positive weight")
        note = (f"fitted to {self.n_votes} votes on {self.n_products} products "
                f"(from {self.task}@{hand.version}: {hand.note})")
        return Composite(version=hand.version, terms=terms, note=note, variant="fitted")


def fit_weights(features: VoteFeatures, *, min_votes: int | None = None, l2: float = DEFAULT_L2,
                folds: int = 5, seed: int = 0, position_bias: bool = False,
                level: float = 0.95, resamples: int = 20_000) -> FittedWeights | None:
    """Fit the composite's weights to the votes and cross-validate them against the hand
    weights. Returns None when there is nothing to fit or not enough evidence to judge the fit:
    fewer than two terms, fewer than ``min_votes`` decided votes (default ``max(30, 10 ×
    terms)``), or fewer products than ``folds``. The same ``seed`` (the folds, and the
    sign-flip test's ``resamples`` beyond 16 products) gives the same result."""
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, not {l2}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, not {folds}")
    k = len(features.terms)
    needed = min_votes if min_votes is not None else max(MIN_VOTES, VOTES_PER_TERM * k)
    decided = features.decided
    products = features.votes["product_id"].to_numpy()
    n_products = len(set(products))
    if k < 2 or int(decided.sum()) < needed or n_products < folds:
        return None
    hand = np.array([features.hand_weights[t] for t in features.terms])
    outcome = features.votes["outcome"].to_numpy(dtype=float)
    fold = assign_folds(products, folds, seed)
    held_out = {name: np.full(len(outcome), math.nan) for name in
                ("difference_fitted", "difference_hand", "log_loss_fitted", "log_loss_hand")}
    for f in range(folds):
        train, test = fold != f, fold == f
        data = _Votes(features.side_a[train], features.side_b[train], outcome[train])
        beta, intercept = _fit(data, l2=l2, intercept=position_bias, start=hand)
        scale, hand_intercept = _fit(data, l2=l2, intercept=position_bias, direction=hand)
        a, b, y = features.side_a[test], features.side_b[test], outcome[test]
        for name, weights, logits_scale, c in (("fitted", beta, beta.sum(), intercept),
                                               ("hand", hand, scale[0], hand_intercept)):
            shares = weights / weights.sum() if weights.sum() > 0 else weights
            difference = _composite(shares, a) - _composite(shares, b)
            logits = logits_scale * difference + c
            held_out[f"difference_{name}"][test] = difference
            held_out[f"log_loss_{name}"][test] = np.logaddexp(0.0, logits) - y * logits
    beta, intercept = _fit(_Votes(features.side_a, features.side_b, outcome), l2=l2,
                           intercept=position_bias, start=hand)
    total = float(beta.sum())
    predictions = features.votes[["rating_id", "product_id", "winner"]].assign(fold=fold)
    for name in ("fitted", "hand"):
        predictions[f"difference_{name}"] = held_out[f"difference_{name}"]
        predictions[f"correct_{name}"] = _correct(held_out[f"difference_{name}"], outcome)
        predictions[f"log_loss_{name}"] = held_out[f"log_loss_{name}"]
    chose = predictions[decided]
    gain = cluster_means((chose["correct_fitted"] - chose["correct_hand"]).to_numpy(dtype=float),
                         chose["product_id"].to_numpy()).to_numpy()
    return FittedWeights(
        task=features.task, terms=features.terms,
        weights={t: (float(w) / total if total > 0 else 0.0)
                 for t, w in zip(features.terms, beta, strict=True)},
        hand_weights=dict(features.hand_weights), scale=total,
        position_bias=intercept if position_bias else None,
        cv_accuracy_fitted=float(chose["correct_fitted"].mean()),
        cv_accuracy_hand=float(chose["correct_hand"].mean()),
        cv_log_loss_fitted=float(predictions["log_loss_fitted"].mean()),
        cv_log_loss_hand=float(predictions["log_loss_hand"].mean()),
        difference=t_interval(gain, level=level),
        p_value=sign_flip_p_value(gain, resamples=resamples, seed=seed), level=level,
        n_votes=int(decided.sum()), n_ties=int((~decided).sum()),
        n_products=n_products, folds=folds, dropped=dict(features.dropped),
        unmeasured=features.unmeasured, predictions=predictions)


def assign_folds(products: Sequence[str] | npt.NDArray[np.object_], folds: int,
                 seed: int) -> npt.NDArray[np.int_]:
    """The fold (0 … folds−1) of each vote, given its product: every vote of a product lands
    in the same fold. Products are taken in a seeded random order, the most-voted first, and
    each goes to the fold with the fewest votes so far, so folds hold similar numbers of votes
    and, with at least ``folds`` products, none is empty."""
    labels = pd.Series(np.asarray(products, dtype=object))
    counts = labels.value_counts()
    names = sorted(counts.index, key=str)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda name: -int(counts[name]))  # stable: the shuffle breaks ties
    load = [0] * folds
    fold_of: dict[object, int] = {}
    for name in order:
        target = min(range(folds), key=lambda f: load[f])
        fold_of[name] = target
        load[target] += int(counts[name])
    return labels.map(fold_of).to_numpy(dtype=int)


# -- the arithmetic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Votes:
    side_a: Matrix
    side_b: Matrix
    outcome: Matrix


def _composite(beta: Matrix, side: Matrix) -> Matrix:
    """The composite of each row under weights ``beta``: the weighted mean over present terms."""
    present = ~np.isnan(side)
    values = np.where(present, side, 0.0)
    return np.asarray((values @ beta) / (present @ beta + _DENOMINATOR_FLOOR))


def _composite_gradient(beta: Matrix, side: Matrix) -> tuple[Matrix, Matrix]:
    """The composite of each row and its derivative with respect to each weight."""
    present = ~np.isnan(side)
    values = np.where(present, side, 0.0)
    denominator = present @ beta + _DENOMINATOR_FLOOR
    composite = (values @ beta) / denominator
    gradient = present * (values - composite[:, None]) / denominator[:, None]
    return composite, gradient


def _fit(votes: _Votes, *, l2: float, intercept: bool, start: Matrix | None = None,
         direction: Matrix | None = None) -> tuple[Matrix, float]:
    """Penalised maximum likelihood of P(a) = σ(Σβ · (C_β(a) − C_β(b)) + c), β ≥ 0.

    With ``direction``, β = s · direction and only s (≥ 0) is fitted: the hand weights' own
    scale. Returns (β, or (s,) with ``direction``; c, 0 without ``intercept``).
    """
    k = votes.side_a.shape[1]
    y = votes.outcome
    size = 1 if direction is not None else k

    def objective(theta: Matrix) -> tuple[float, Matrix]:
        weights = theta[:size]
        beta = weights[0] * direction if direction is not None else weights
        c = theta[size] if intercept else 0.0
        composite_a, gradient_a = _composite_gradient(beta, votes.side_a)
        composite_b, gradient_b = _composite_gradient(beta, votes.side_b)
        difference = composite_a - composite_b
        total = beta.sum()
        logits = total * difference + c
        loss = float(np.sum(np.logaddexp(0.0, logits) - y * logits) + l2 * beta @ beta)
        residual = special.expit(logits) - y
        d_logits = difference[:, None] + total * (gradient_a - gradient_b)
        d_beta = residual @ d_logits + 2.0 * l2 * beta
        d_weights = np.array([d_beta @ direction]) if direction is not None else d_beta
        gradient = np.append(d_weights, residual.sum()) if intercept else d_weights
        return loss, gradient

    first = np.ones(1) if direction is not None else (
        np.asarray(start, dtype=float) if start is not None else np.full(k, 1.0 / k))
    theta0 = np.append(first, 0.0) if intercept else first
    bounds = [(0.0, None)] * size + ([(None, None)] if intercept else [])
    result = optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                               options={"maxiter": _MAX_ITERATIONS, "gtol": 1e-8})
    theta = np.asarray(result.x, dtype=float)
    return theta[:size], float(theta[size]) if intercept else 0.0


def _correct(difference: Matrix, outcome: Matrix) -> Matrix:
    """1 when the composite difference points at the chosen side, 0.5 when it is 0, 0 when it
    points the other way; NaN for a tie (nothing to predict) or no prediction."""
    sign = np.where(outcome == 1.0, 1.0, np.where(outcome == 0.0, -1.0, math.nan))
    signed = sign * difference
    return np.where(np.isnan(signed), math.nan,
                    np.where(np.abs(signed) <= _SAME_COMPOSITE, 0.5,
                             np.where(signed > 0, 1.0, 0.0)))
