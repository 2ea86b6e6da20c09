"""The statistics the report and the selection share: intervals, paired model comparisons,
Bradley-Terry ratings from human votes, and rank agreement.

Why one module: having them in one place means the report and ``select`` can never disagree
about what "95 %" means. The recipes: Wilson for pass rates; the product as the unit of
evidence for scores (rows of one product are not independent); Student's t intervals over
products and a paired sign-flip permutation test between models, chosen because they are
calibrated at the 5-30 products a category has (measured in benchmarks/bench_decisions.py,
where the percentile bootstrap this module used before was not); Benjamini-Hochberg across the
category cells of a task; and a Bradley-Terry fit with bootstrap intervals for pairwise votes
(FastChat ``elo_analysis.py``).

Every random function takes ``seed`` and draws from its own ``numpy.random.default_rng(seed)``:
no global RNG, so two reports over the same data print the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize
from scipy import stats as scipy_stats

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927).

    Why Wilson and not the normal approximation: with the small n of a product sweep (5-50
    products per category) and pass rates near 0 or 1, p ± z·sqrt(p(1-p)/n) collapses to a
    zero-width interval at 0 % or 100 %, claiming a certainty the data does not have. Returns
    (nan, nan) for n = 0: no evidence is not a rate of zero.
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, not {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


ELO_POINTS_PER_LOG_STRENGTH = 400.0 / math.log(10.0)
"""Elo points per natural-log unit of Bradley-Terry strength: 400 Elo = a factor 10 in odds."""

ELO_BASE = 1000.0
"""The rating of the anchor arm (or the mean arm when there is no anchor)."""

BT_COLUMNS = ("arm", "rating", "low", "high", "wins", "losses", "ties", "battles")
"""The columns of :func:`bradley_terry`'s table, in order, also when there are no votes."""

_OUTCOME_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class Interval:
    """A point estimate, its confidence interval, and how many independent units it rests on.

    ``n`` counts what was resampled (products for a cluster bootstrap, battles for
    Bradley-Terry), not rows, so a reader can tell 3 products x 100 images from 300 products.
    With no data ``estimate``, ``low`` and ``high`` are NaN, never zero: no evidence is not an
    effect of zero.
    """

    estimate: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero, i.e. the sign of the effect is
        established at the interval's level. False for a NaN interval (NaN compares False)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _check_bootstrap_arguments(resamples: int, level: float) -> None:
    if resamples < 0:
        raise ValueError(f"resamples must be >= 0, not {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (exclusive), not {level}")


def _percentile_bounds(
    replicates: npt.NDArray[np.float64], level: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Percentile bounds over axis 0; NaN when there are no replicates (``resamples=0``)."""
    if replicates.shape[0] == 0:
        nan = np.full(replicates.shape[1:], np.nan)
        return nan, nan.copy()
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail], axis=0)
    return low, high


def cluster_means(values: npt.ArrayLike, clusters: npt.ArrayLike) -> pd.Series:
    """The mean of ``values`` per cluster (product), NaN values dropped with their cluster
    label first; a cluster left with no values does not appear. Indexed by cluster label, in
    order of first appearance.

    Why per cluster: the rows of one product (several prompts, seeds, images) share the
    product's difficulty, so they are not independent evidence (arena-hard-auto#8; design
    effect 1 + (m-1)rho); the product is the unit every interval and test below counts.
    """
    value_array = np.asarray(values, dtype=float)
    if value_array.ndim != 1:
        raise ValueError(f"values must be one-dimensional, not of shape {value_array.shape}")
    labels = pd.Series(clusters) if not isinstance(clusters, pd.Series) else clusters
    if len(labels) != len(value_array):
        raise ValueError(f"{len(value_array)} values but {len(labels)} cluster labels")
    codes, uniques = pd.factorize(labels)
    if (codes < 0).any():
        raise ValueError(
            f"cluster labels must not be missing (row {int(np.flatnonzero(codes < 0)[0])})")
    present = ~np.isnan(value_array)
    sums = np.bincount(codes[present], weights=value_array[present], minlength=len(uniques))
    counts = np.bincount(codes[present], minlength=len(uniques))
    kept = counts > 0
    return pd.Series(sums[kept] / counts[kept], index=uniques[kept])


def t_interval(values: npt.ArrayLike, *, level: float = 0.95) -> Interval:
    """Mean of independent ``values`` (one per product) with Student's t interval.

    Why t and not the percentile bootstrap this module used before: measured on composite-
    shaped scores (bounded 0-1, gates that zero some products, heavy tails), a 95 % percentile
    bootstrap of the mean covers the truth 79 % of the time at 5 products and 89 % at 10; the t
    interval covers 92-93 % for an arm's mean and 95-98 % for a paired difference at those n
    (simulated; benchmarks/bench_decisions.py keeps measuring it). NaN values are dropped.
    One value: a NaN interval around it (one product cannot show how results vary); none: NaN
    with ``n = 0``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (exclusive), not {level}")
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    estimate = float(array.mean())
    if n == 1:
        return Interval(estimate, math.nan, math.nan, 1)
    half = (float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * float(array.std(ddof=1))
            / math.sqrt(n))
    return Interval(estimate, estimate - half, estimate + half, n)


def cluster_t_interval(values: npt.ArrayLike, clusters: npt.ArrayLike, *,
                       level: float = 0.95) -> Interval:
    """:func:`t_interval` over the per-cluster means (:func:`cluster_means`): every product
    counts once, however many rows it has; ``n`` is the number of products."""
    return t_interval(cluster_means(values, clusters).to_numpy(), level=level)


EXACT_FLIPS_UP_TO = 16
"""Products up to which :func:`sign_flip_p_value` enumerates every sign pattern (2^16 x 16)."""


def sign_flip_p_value(differences: npt.ArrayLike, *, resamples: int = 20_000,
                      seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test that the mean of
    ``differences`` (one per product: model A's score minus model B's) is zero.

    Why this test: if two models are equally good, which of the two scored higher on a product
    is a coin flip, so every pattern of signs is equally likely and the test is exact, whatever
    the scores' shape (bounded, gated to 0, heavy-tailed) and at any n (Fisher's randomisation
    test; the null is that the two models' scores on a product are exchangeable). Up to
    :data:`EXACT_FLIPS_UP_TO` products every one of the 2^n patterns is enumerated; beyond,
    ``resamples`` random patterns (seeded) give ``(1 + count) / (1 + resamples)``, which stays
    valid. The smallest p-value n products can give is ``2 / 2^n``: 5 products cannot show a
    difference at 5 % (see :func:`min_products_for`). NaN differences are dropped; no
    differences give NaN; all-zero differences give 1.
    """
    array = np.asarray(differences, dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return math.nan
    observed = abs(float(array.sum()))
    if observed == 0:
        return 1.0
    tolerance = 1e-9 * max(1.0, float(np.abs(array).sum()))
    if n <= EXACT_FLIPS_UP_TO:
        every = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        sums = np.abs(every @ array)
        return float(np.mean(sums >= observed - tolerance))
    rng = np.random.default_rng(seed)
    count = 0
    width = (n + 7) // 8
    for start in range(0, resamples, 4096):
        size = min(4096, resamples - start)
        bits = np.unpackbits(np.frombuffer(rng.bytes(size * width), dtype=np.uint8)
                             .reshape(size, width), axis=1)[:, :n]
        patterns = 1.0 - 2.0 * bits  # one random bit per product: its sign
        count += int(np.sum(np.abs(patterns @ array) >= observed - tolerance))
    return (1 + count) / (1 + resamples)


def min_products_for(level: float = 0.95) -> int:
    """The fewest products on which :func:`sign_flip_p_value` can reach ``1 - level``: the
    smallest n with ``2 / 2^n <= 1 - level`` (6 at 95 %)."""
    alpha = 1 - level
    if not 0 < alpha < 1:
        raise ValueError(f"level must be between 0 and 1 (exclusive), not {level}")
    return max(1, math.ceil(1 - math.log2(alpha)))


@dataclass(frozen=True)
class PairedComparison:
    """Model ``a`` against model ``b`` on the products both were scored on."""

    difference: Interval
    """Mean over products of the product's mean ``a - b``, with its t interval."""
    p_value: float
    """Two-sided paired sign-flip p-value (:func:`sign_flip_p_value`); NaN with no products."""
    sd: float
    """Standard deviation of the per-product differences (what :func:`products_for_power`
    needs); NaN under two products."""

    @property
    def n(self) -> int:
        return self.difference.n


def paired_comparison(
    frame: pd.DataFrame,
    *,
    a: Any,
    b: Any,
    cluster: str = "product_id",
    pair_on: Sequence[str] = ("product_id", "prompt_id", "seed"),
    arm: str = "arm",
    value: str = "score",
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """``a - b`` over the units both arms were scored on: the per-product mean difference,
    its t interval and the sign-flip p-value.

    Why paired: scoring both models on the same (product, prompt, seed) units removes the
    variation between units from the comparison, so a small real difference shows with few
    products. A unit is one combination of the ``pair_on`` columns (plus ``cluster``); a unit
    where either arm has no value (missing row or NaN) is dropped. Each unit must appear at
    most once per arm: aggregate repeats first, or add the column that tells them apart to
    ``pair_on``. The units of one product are averaged, and the product is what is counted,
    flipped and resampled. With no shared unit the result is NaN with ``n = 0``.
    """
    if a == b:
        raise ValueError(f"a paired comparison needs two different arms, got {a!r} twice")
    keys = list(dict.fromkeys([cluster, *pair_on]))
    missing = [column for column in [*keys, arm, value] if column not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {', '.join(map(repr, missing))}")
    rows = frame.loc[frame[arm].isin([a, b]), [*keys, arm, value]]
    repeated = rows.duplicated(subset=[*keys, arm])
    if repeated.any():
        raise ValueError(
            f"{int(repeated.sum())} row(s) repeat a ({', '.join(keys)}, {arm}) unit; aggregate "
            "them first or add the column that tells them apart to pair_on"
        )
    nothing = PairedComparison(Interval(math.nan, math.nan, math.nan, 0), math.nan, math.nan)
    if rows.empty:
        return nothing
    wide = rows.assign(**{value: pd.to_numeric(rows[value])}).pivot(
        index=keys, columns=arm, values=value
    )
    if a not in wide.columns or b not in wide.columns:
        return nothing
    shared = wide[[a, b]].dropna()
    if shared.empty:
        return nothing
    per_product = cluster_means((shared[a] - shared[b]).to_numpy(dtype=float),
                                shared.index.get_level_values(cluster)).to_numpy()
    return PairedComparison(
        difference=t_interval(per_product, level=level),
        p_value=sign_flip_p_value(per_product, seed=seed),
        sd=float(per_product.std(ddof=1)) if per_product.size > 1 else math.nan)


def paired_difference(frame: pd.DataFrame, *, a: Any, b: Any, **options: Any) -> Interval:
    """The interval of :func:`paired_comparison` alone."""
    return paired_comparison(frame, a=a, b=b, **options).difference


def products_for_power(mean_difference: float, sd: float, *, alpha: float = 0.05,
                       power: float = 0.8, max_products: int = 10_000) -> int | None:
    """About how many products a paired comparison needs to show ``mean_difference`` at
    ``alpha`` (two-sided) with probability ``power``, when per-product differences vary with
    ``sd``: the smallest n whose paired t test reaches that power (noncentral t), at least
    :func:`min_products_for`. The sign-flip test the decision uses has about the t test's power
    on composite-shaped scores (within 6 points at 6-30 products, simulated). None
    when the difference is zero or not a number, or more than ``max_products`` are needed:
    more products are then unlikely to separate the two.
    """
    if not (math.isfinite(mean_difference) and math.isfinite(sd)) or mean_difference == 0:
        return None
    if sd <= 0:
        return min_products_for(1 - alpha)
    effect = abs(mean_difference) / sd

    def achieved(n: int) -> float:
        critical = float(scipy_stats.t.ppf(1 - alpha / 2, n - 1))
        shift = effect * math.sqrt(n)
        return float(scipy_stats.nct.sf(critical, n - 1, shift)
                     + scipy_stats.nct.cdf(-critical, n - 1, shift))

    low = max(2, min_products_for(1 - alpha))
    if achieved(low) >= power:
        return low
    high = low
    while achieved(high) < power:
        if high >= max_products:
            return None
        high = min(max_products, high * 2)
    while high - low > 1:  # power grows with n: bisect
        middle = (low + high) // 2
        low, high = (middle, high) if achieved(middle) < power else (low, middle)
    return high


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order; NaN stays NaN and
    is not counted.

    Why: a task is decided in many category cells at once, so some "clear winners" would be
    chance at 5 % each; comparing the q-values with the level keeps the expected share of
    false clear winners among those claimed at most the level (valid for independent cells,
    and for the positively dependent ones a pooled cell makes; Benjamini & Yekutieli 2001).
    """
    p = np.asarray(p_values, dtype=float)
    present = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, np.nan)
    if present.size == 0:
        return [float(v) for v in adjusted]
    values = p[present]
    if not ((values >= 0) & (values <= 1)).all():
        raise ValueError("p-values must lie in [0, 1]")
    m = values.size
    order = np.argsort(values, kind="stable")
    ranked = values[order] * m / np.arange(1, m + 1)
    steps = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    result = np.empty(m)
    result[order] = steps
    adjusted[present] = result
    return [float(v) for v in adjusted]


def bt_probability(r_a: float, r_b: float) -> float:
    """Probability that an arm rated ``r_a`` beats one rated ``r_b`` on the Elo scale of
    :func:`bradley_terry`: 1 / (1 + 10^((r_b - r_a) / 400)), so +400 Elo = 10:1 odds."""
    return 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / 400.0))


def _check_votes(votes: pd.DataFrame) -> None:
    missing = [c for c in ("arm_a", "arm_b", "winner") if c not in votes.columns]
    if missing:
        raise ValueError(f"votes has no column(s) {', '.join(map(repr, missing))}")
    unknown = sorted(set(votes["winner"]) - set(_OUTCOME_SCORE), key=repr)
    if unknown:
        raise ValueError(f"winner must be 'a', 'b' or 'tie', not {', '.join(map(repr, unknown))}")
    itself = votes["arm_a"] == votes["arm_b"]
    if itself.any():
        raise ValueError(f"{int(itself.sum())} vote(s) compare an arm with itself")


def _fit_log_strengths(
    pair_i: npt.NDArray[np.intp],
    pair_j: npt.NDArray[np.intp],
    battles: npt.NDArray[np.float64],
    score_i: npt.NDArray[np.float64],
    n_arms: int,
    ridge: float,
    start: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Maximum a posteriori log-strengths: minimise the negative Bradley-Terry log-likelihood
    of the per-pair (battles, score of i) totals plus ``ridge / 2 * |beta|^2``.

    The objective is strictly convex (the ridge term), so L-BFGS-B from any start finds the
    unique optimum; the gradient is analytic.
    """

    def objective(beta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        difference = beta[pair_i] - beta[pair_j]
        negative_log_likelihood = np.sum(
            score_i * np.logaddexp(0.0, -difference)
            + (battles - score_i) * np.logaddexp(0.0, difference)
        )
        residual = score_i - battles / (1.0 + np.exp(-difference))
        gradient = (
            ridge * beta
            - np.bincount(pair_i, weights=residual, minlength=n_arms)
            + np.bincount(pair_j, weights=residual, minlength=n_arms)
        )
        return float(negative_log_likelihood + 0.5 * ridge * beta @ beta), gradient

    result = optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-8}
    )
    return np.asarray(result.x, dtype=float)


def bradley_terry(
    votes: pd.DataFrame,
    *,
    anchor: Any = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    prior_sd: float = 400.0,
) -> pd.DataFrame:
    """Bradley-Terry ratings on the Elo scale from pairwise votes, with bootstrap intervals.

    ``votes`` has columns ``arm_a``, ``arm_b`` and ``winner`` in {"a", "b", "tie"} ("a": arm_a
    won). The model is P(i beats j) = 1 / (1 + 10^((r_j - r_i) / 400)), FastChat's
    ``elo_analysis.py`` scale; a tie counts as half a win for each side. Why Bradley-Terry and
    not online Elo: the fit uses all votes at once, so the ratings do not depend on the order
    the votes came in.

    The fit maximises the log-likelihood over the aggregated per-pair outcome counts plus a
    Gaussian prior on each arm's rating, sd ``prior_sd`` Elo around the mean (a ridge of
    ``1 / (prior_sd / 400 * ln 10)^2`` on natural-log strengths). Why a prior: without it an
    arm that never lost has rating +infinity; with the default 400 Elo, an arm 5-0 against one
    rival is placed about 500 Elo above it, and with a few hundred battles per arm the prior
    moves ratings by well under one Elo point. Arms with no chain of battles between them are
    placed relative to each other by the prior alone; their gap means nothing.

    Ratings are shifted so that ``anchor`` is exactly 1000 (its interval is then [1000, 1000]
    and the others' intervals are relative to it), or, without an anchor, so that the mean
    rating is 1000. ``low``/``high`` are percentile bounds of ``resamples`` refits on battles
    resampled with replacement (multinomial over the (arm_a, arm_b, outcome) counts), anchored
    the same way; NaN when ``resamples=0``. Rows are the arms that took part in at least one
    battle, sorted by rating (highest first), with their raw wins, losses, ties and battles.
    No votes give an empty table with the same columns.
    """
    _check_bootstrap_arguments(resamples, level)
    if prior_sd <= 0:
        raise ValueError(f"prior_sd must be > 0, not {prior_sd}")
    _check_votes(votes)
    if len(votes) == 0:
        if anchor is not None:
            raise ValueError(f"anchor {anchor!r} has no battles (there are no votes)")
        return pd.DataFrame({column: [] for column in BT_COLUMNS})

    codes, arms = pd.factorize(pd.concat([votes["arm_a"], votes["arm_b"]], ignore_index=True))
    n_arms = len(arms)
    if anchor is not None and anchor not in set(arms):
        raise ValueError(f"anchor {anchor!r} has no battles; arms are {sorted(map(str, arms))}")
    arm_a, arm_b = codes[: len(votes)], codes[len(votes) :]
    score_a = votes["winner"].map(_OUTCOME_SCORE).to_numpy(dtype=float)

    # Orient every vote as (lower index i, higher index j, score of i) and count each cell.
    flip = arm_a > arm_b
    cell_table = pd.DataFrame({
        "i": np.where(flip, arm_b, arm_a),
        "j": np.where(flip, arm_a, arm_b),
        "score": np.where(flip, 1.0 - score_a, score_a),
    })
    cells = cell_table.value_counts(sort=False).reset_index(name="count")
    pair_codes, pairs = pd.factorize(pd.MultiIndex.from_frame(cells[["i", "j"]]))
    pair_i = np.array([i for i, _ in pairs], dtype=np.intp)
    pair_j = np.array([j for _, j in pairs], dtype=np.intp)
    # cell -> pair indicator, and the same weighted by the cell's score for i
    to_battles = np.zeros((len(cells), len(pairs)))
    to_battles[np.arange(len(cells)), pair_codes] = 1.0
    to_score = to_battles * cells["score"].to_numpy(dtype=float)[:, None]
    cell_counts = cells["count"].to_numpy(dtype=float)

    ridge = 1.0 / (prior_sd / ELO_POINTS_PER_LOG_STRENGTH) ** 2
    anchor_index = None if anchor is None else int(np.flatnonzero(arms == anchor)[0])

    def to_ratings(log_strengths: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        elo = log_strengths * ELO_POINTS_PER_LOG_STRENGTH
        reference = elo[..., anchor_index] if anchor_index is not None else elo.mean(axis=-1)
        return np.asarray(elo - np.expand_dims(reference, -1) + ELO_BASE, dtype=float)

    def fit(counts: npt.NDArray[np.float64], start: npt.NDArray[np.float64]) -> Any:
        return _fit_log_strengths(
            pair_i, pair_j, counts @ to_battles, counts @ to_score, n_arms, ridge, start
        )

    log_strengths = fit(cell_counts, np.zeros(n_arms))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(votes), cell_counts / cell_counts.sum(), size=resamples)
    replicates = np.array(
        [fit(draw.astype(float), log_strengths) for draw in draws]
    ).reshape(resamples, n_arms)
    low, high = _percentile_bounds(to_ratings(replicates), level)

    wins = np.bincount(arm_a, weights=score_a == 1.0, minlength=n_arms) + np.bincount(
        arm_b, weights=score_a == 0.0, minlength=n_arms
    )
    tied = score_a == 0.5
    ties = np.bincount(arm_a, weights=tied, minlength=n_arms) + np.bincount(
        arm_b, weights=tied, minlength=n_arms
    )
    battles = np.bincount(np.concatenate([arm_a, arm_b]), minlength=n_arms)
    table = pd.DataFrame({
        "arm": list(arms),
        "rating": to_ratings(log_strengths),
        "low": low,
        "high": high,
        "wins": wins.astype(int),
        "losses": (battles - wins - ties).astype(int),
        "ties": ties.astype(int),
        "battles": battles.astype(int),
    })
    return table.sort_values(
        ["rating", "arm"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def win_matrix(votes: pd.DataFrame) -> pd.DataFrame:
    """Row arm's win fraction against column arm over their battles in both orders, a tie
    counting 0.5; NaN where two arms never met (and on the diagonal).

    Why alongside Bradley-Terry: the ratings assume one strength per arm; the raw matrix shows
    where that assumption bends (A beats B, B beats C, C beats A) and which pairs rest on few
    battles. Rows and columns are the arms in sorted order.
    """
    _check_votes(votes)
    arms = sorted(set(votes["arm_a"]) | set(votes["arm_b"]))
    position = {name: index for index, name in enumerate(arms)}
    row = votes["arm_a"].map(position).to_numpy(dtype=np.intp)
    column = votes["arm_b"].map(position).to_numpy(dtype=np.intp)
    score = votes["winner"].map(_OUTCOME_SCORE).to_numpy(dtype=float)
    points = np.zeros((len(arms), len(arms)))
    meetings = np.zeros((len(arms), len(arms)))
    np.add.at(points, (row, column), score)
    np.add.at(points, (column, row), 1.0 - score)
    np.add.at(meetings, (row, column), 1.0)
    np.add.at(meetings, (column, row), 1.0)
    with np.errstate(invalid="ignore"):
        fractions = np.where(meetings > 0, points / meetings, np.nan)
    return pd.DataFrame(
        fractions,
        index=pd.Index(arms, name="arm"),
        columns=pd.Index(arms, name="opponent"),
    )


def rank_agreement(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """How far two rankings of the same arms agree, e.g. an automatic score vs human ratings.

    Returns ``kendall_tau`` (scipy's tau-b over the arms both rankings have), ``n`` (the number
    of shared arms) and ``pairwise_agreement`` (the share of pairs of shared arms that both
    rankings order the same way, a tie agreeing only with a tie). Why both: tau is the
    standard, the pairwise share is what a reader can picture ("the metric picks the human
    favourite in 8 of 10 pairs"). Fewer than 2 shared arms give NaN for both.
    """
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return {"kendall_tau": math.nan, "n": len(shared), "pairwise_agreement": math.nan}
    first = np.array([a[name] for name in shared], dtype=float)
    second = np.array([b[name] for name in shared], dtype=float)
    tau = scipy_stats.kendalltau(first, second).statistic
    upper = np.triu_indices(len(shared), k=1)
    same = np.sign(np.subtract.outer(first, first))[upper] == np.sign(
        np.subtract.outer(second, second)
    )[upper]
    return {
        "kendall_tau": float(tau),
        "n": len(shared),
        "pairwise_agreement": float(same.mean()),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order.

    Why: choosing a winner among k models makes k - 1 comparisons; comparing each raw p-value
    with 0.05 would find a "significant" winner by chance far more often than 5 % of the time.
    Holm controls that family-wise error at no cost in assumptions and is never less powerful
    than Bonferroni. Compare the adjusted values with the level as usual.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size and not ((p >= 0) & (p <= 1)).all():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(steps)
    return [float(value) for value in adjusted]
