"""The decision: which model chain to use per category × task, with its uncertainty.

Evidence comes only from the ledger (the sweeps' requests, their composite scores, costs,
latencies, and the people's pairwise votes); the result is a :class:`Selection` that the report
shows and ``pixellab select`` writes to ``defaults.toml``, which :mod:`pixellab.routing` reads.

The pick rule (per category × task; ``*`` pools every category for the global default):

1. **Enough data?** An arm (a model, or a whole chain a sweep compared) counts only with a
   composite on at least ``min_products`` distinct products; by default the fewest on which the
   test below can show a difference at all (6 at 95 %: with 5, even a model better on every
   product gives p = 2/32). With none, the verdict is ``insufficient data (n < N)`` and no chain
   is written: routing then uses the task's global default, or the catalog's chain.
2. **Clear winner.** The arm with the best mean composite (over products) is compared with
   every rival on the products both have, by a paired sign-flip permutation test (exact under
   the null that the two models are equally good, whatever the scores' shape). It wins outright
   when every comparison is significant at ``1 - level``: the claim "beats every rival" is an
   intersection of the k - 1 claims, so it is false only if one of them is, and needs no
   further correction (intersection-union; the false clear-winner rate measured at k = 2..6 is
   at most the level, tests/test_decision_calibration.py). Across the category cells of a task
   the cell p-values (the largest of its comparisons) are adjusted by Benjamini-Hochberg, so
   among the clear winners a task claims, at most ``1 - level`` are expected to be false.
3. **Otherwise the cheapest not significantly worse.** Among the best arm and the rivals it did
   not beat, the lowest cost per accepted output wins (spend ÷ outputs that passed the gates;
   ties broken by mean composite). The verdict says ``no clear winner``, and how many more
   products would likely separate the leaders at the difference seen (80 % power).
4. **The chain** is the pick's models, then the other arms that ever passed, best mean composite
   first, without repeats, at most ``max_chain`` long: a fallback runs only when the one before
   fails.

Intervals are Student's t over products (a product counts once however many prompts and seeds
it has); measured coverage and the rule's calibration are in benchmarks/bench_decisions.py.

Human votes (``30_review.ipynb``) are fitted with Bradley-Terry (ties are half a win) per task,
and per category × task where that cell alone has ``human_min_votes``. They **override** the
automatic pick only when an arm's rating interval lies entirely above the pick's (people
clearly prefer it) and its pass rate's Wilson interval overlaps the pick's (people cannot waive a
gate: a packshot the marketplace refuses stays refused). Otherwise the votes are shown beside the
decision, with the rank agreement (Kendall's tau) between people and the composite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pixellab import evidence, judge
from pixellab.ledger import Ledger, queries
from pixellab.ratings import ratings_table
from pixellab.routing import ALL_CATEGORIES
from pixellab.scoring import TaskScoring, load_task_scoring
from pixellab.scoring.composite import CompositeUsed
from pixellab.scoring.fitted import FittedWeights
from pixellab.stats import (
    Interval,
    PairedComparison,
    benjamini_hochberg,
    bradley_terry,
    cluster_t_interval,
    min_products_for,
    paired_comparison,
    paired_difference,
    products_for_power,
    rank_agreement,
    wilson_interval,
)

PAIR_ON = ("product_id", "prompt_id", "seed")
"""Two arms' requests are compared only on the same product, prompt and seed."""

CLEAR_WINNER = "clear winner"
NO_CLEAR_WINNER = "no clear winner"
ONLY_CANDIDATE = "only candidate"
NOTHING_PASSED = "no model passed"


def insufficient(min_products: int) -> str:
    return f"insufficient data (n < {min_products})"


TEST = "paired sign-flip permutation test over products"
FAMILY = ("every rival (a clear winner must beat each: intersection-union); "
          "Benjamini-Hochberg across the task's category cells")
POWER = 0.8
"""The power "products needed" is computed for."""


@dataclass(frozen=True)
class SelectionPolicy:
    """The knobs of the pick rule, recorded with every decision.

    ``min_products`` None (or 0): the fewest products on which the test can show a difference
    at ``level`` (:func:`~pixellab.stats.min_products_for`, 6 at 95 %). ``resamples`` is the
    bootstrap of people's ratings; ``seed`` seeds it and the random sign patterns of a test
    over more than 16 products."""

    min_products: int | None = None
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    max_chain: int = 3
    human_min_votes: int = 10

    def __post_init__(self) -> None:
        if ((self.min_products is not None and self.min_products < 0)
                or self.resamples < 100 or not 0.5 < self.level < 1):
            raise ValueError("min_products >= 0 (0: what the test needs), resamples >= 100 and "
                             "0.5 < level < 1")

    @property
    def minimum(self) -> int:
        """The products an arm needs to be compared."""
        return self.min_products or min_products_for(self.level)

    @property
    def alpha(self) -> float:
        return 1 - self.level


@dataclass(frozen=True)
class ArmEvidence:
    """One arm's record in one category × task."""

    arm: str
    models: tuple[str, ...]
    requests: int
    products: int
    """Distinct products with a composite score."""
    score: Interval
    """Mean composite over products with its t interval."""
    passed: int
    judged: int
    """Requests the model had a fair chance at (the pass-rate denominator)."""
    pass_low: float
    pass_high: float
    usd: float
    usd_per_accepted: float
    latency_p50_s: float
    latency_p95_s: float
    vs_best: Interval | None = None
    """Paired difference best − this arm (None for the best itself)."""
    vs_best_p: float | None = None
    """The sign-flip p-value of that difference."""
    vs_default: Interval | None = None
    """Paired difference this arm − the current default, on shared products."""
    human: Interval | None = None
    """Bradley-Terry rating (Elo scale) from people's pairwise votes, when there are any."""
    human_votes: int = 0
    dropped: str = ""
    """Why an adaptive sweep stopped running this arm ('' when it did not)."""

    @property
    def pass_rate(self) -> float:
        return self.passed / self.judged if self.judged else math.nan

    @property
    def enough(self) -> bool:
        return not math.isnan(self.score.estimate)


@dataclass(frozen=True)
class Decision:
    task: str
    category: str
    chain: tuple[str, ...]
    """Model ids in fallback order; empty when there is no decision."""
    pick: str | None
    verdict: str
    reason: str
    products: int
    composite: CompositeUsed
    current_default: str | None
    arms: tuple[ArmEvidence, ...]
    human_note: str = ""
    sweeps: tuple[str, ...] = ()
    p_value: float = math.nan
    """The cell's p-value: the largest of the best arm's comparisons (NaN: nothing compared)."""
    q_value: float = math.nan
    """``p_value`` adjusted by Benjamini-Hochberg across the task's cells."""
    family: int = 0
    """How many cells of the task the q-value is adjusted over."""
    products_needed: int | None = None
    """Undecided: about how many products in all would separate the leaders (80 % power at
    the difference seen); None when decided, or when no difference is seen."""
    more_products: str = ""
    """Undecided: the same in words, with what the extra products would cost."""

    @property
    def p_and_q(self) -> str:
        """``p / q`` as the table and the CLI print them ('' when nothing was compared)."""
        if math.isnan(self.p_value):
            return ""
        return f"{self.p_value:.2g} / {self.q_value:.2g}"


@dataclass
class Selection:
    decisions: list[Decision]
    sweeps: tuple[str, ...]
    policy: SelectionPolicy
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per task: Kendall's tau and pairwise agreement between the composite's ranking and the
    people's (Bradley-Terry), over the arms both rank."""
    fitted: dict[str, FittedWeights] = field(default_factory=dict)
    """Per task with enough votes: composite weights fitted to them, with their
    cross-validated agreement against the hand weights' (used when ``better``)."""
    task_scoring: dict[str, TaskScoring] = field(default_factory=dict)
    """The scoring the decision ranked by (the fitted composite where it was used)."""
    judge: dict[str, str] = field(default_factory=dict)
    """Per task a pairwise judge voted on: whether its votes were counted with people's, and
    why (its measured agreement with them against the task's threshold)."""

    def decision(self, task: str, category: str = ALL_CATEGORIES) -> Decision | None:
        return next((d for d in self.decisions
                     if d.task == task and d.category == category), None)

    def table(self) -> pd.DataFrame:
        """One row per category × task: the chain, the verdict and the pick's evidence."""
        rows = []
        for d in self.decisions:
            pick = next((a for a in d.arms if a.arm == d.pick), None)
            rows.append({
                "task": d.task, "category": d.category,
                "chain": " → ".join(d.chain) or "—",
                "verdict": d.verdict,
                "products": d.products,
                "composite": "—" if pick is None else str(pick.score),
                "passed": "—" if pick is None else f"{pick.passed}/{pick.judged}",
                "usd_per_accepted": math.nan if pick is None else pick.usd_per_accepted,
                "why": (f"(p / q: {d.p_and_q}) " if d.p_and_q else "") + d.reason
                       + (f" {d.more_products}" if d.more_products else "")
                       + (f" {d.human_note}" if d.human_note else ""),
            })
        return pd.DataFrame(rows, columns=["task", "category", "chain", "verdict", "products",
                                           "composite", "passed", "usd_per_accepted", "why"])

    def evidence_table(self) -> pd.DataFrame:
        """Every arm of every decision, the leaderboard the decision was made from, as a person
        reads it: each estimate beside its interval, the pick marked, one column per
        comparison (what the report shows; defaults.toml carries the same numbers)."""
        rows = []
        for d in self.decisions:
            for a in d.arms:
                latency = ("—" if math.isnan(a.latency_p50_s)
                           else f"{a.latency_p50_s:.2f} / {a.latency_p95_s:.2f}")
                rows.append({
                    "task": d.task, "category": d.category,
                    "model": ("✓ " if a.arm == d.pick else "") + a.arm
                             + (" (dropped early)" if a.dropped else ""),
                    "products": a.products,
                    "composite": ("—" if math.isnan(a.score.estimate) else str(a.score)),
                    "pass": (f"{a.passed}/{a.judged} [{a.pass_low:.0%}–{a.pass_high:.0%}]"
                             if a.judged else "—"),
                    "usd_per_accepted": a.usd_per_accepted,
                    "latency p50 / p95 s": latency,
                    "best − this": _interval_text(a.vs_best) + (
                        f", p = {a.vs_best_p:.3g}" if a.vs_best_p is not None
                        and not math.isnan(a.vs_best_p) else ""),
                    "this − default": _interval_text(a.vs_default),
                    "people (Elo)": (_interval_text(a.human, digits=0)
                                     + (f", {a.human_votes} votes" if a.human_votes else "")),
                })
        return pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)  # its columns, even when empty


EVIDENCE_COLUMNS = ("task", "category", "model", "products", "composite", "pass",
                    "usd_per_accepted", "latency p50 / p95 s", "best − this", "this − default",
                    "people (Elo)")


def _interval_text(interval: Interval | None, digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.030]``; an estimate without an interval (one product cannot be
    resampled) says so instead of printing ``[+nan, +nan]``."""
    if interval is None or math.isnan(interval.estimate):
        return "—"
    if math.isnan(interval.low) or math.isnan(interval.high):
        shown = f"{interval.estimate:+.{digits}f}" if digits else f"{interval.estimate:.0f}"
        return f"{shown} (no interval from n = {interval.n})"
    return (f"{interval.estimate:+.{digits}f} [{interval.low:+.{digits}f}, "
            f"{interval.high:+.{digits}f}]" if digits else
            f"{interval.estimate:.0f} [{interval.low:.0f}, {interval.high:.0f}]")


def arm_models(arm: str) -> tuple[str, ...]:
    """The model ids of a sweep arm: ``provider:slug``, or ``chain:a>b`` for a whole chain."""
    if arm.startswith("chain:"):
        return tuple(m for m in arm.removeprefix("chain:").split(">") if m)
    return (arm,)


# -- the computation ---------------------------------------------------------------------------


def select(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
           policy: SelectionPolicy | None = None,
           current: dict[tuple[str, str], str] | None = None,
           task_scoring: dict[str, TaskScoring] | None = None) -> Selection:
    """Decide every category × task the sweeps cover (see the module docstring for the rule).

    ``current`` maps (task, category) to the model in use today (the first of its chain), to
    report each arm's paired difference against it; :func:`pixellab.routing.current_defaults`
    builds it from an existing defaults.toml and the catalog.

    Where a task has enough of people's votes, its composite weights are also fitted to them
    (:mod:`pixellab.scoring.fitted`); the decision ranks by the fitted weights only when they
    agree with people significantly better than the hand weights on votes they were not fitted
    to, and says so (``Selection.fitted``, the composite id ``<task>@<v>+fitted``).
    """
    policy = policy or SelectionPolicy()
    task_scoring = dict(task_scoring or load_task_scoring())
    votes = ratings_table(ledger, sweep_ids) if _has_ratings(ledger) else pd.DataFrame()
    fitted: dict[str, FittedWeights] = {}
    if not votes.empty:
        for task in votes["task"].dropna().unique():
            config = task_scoring.get(str(task))
            weights = evidence.fit_from_ledger(ledger, str(task), sweep_ids,
                                             task_scoring=task_scoring, seed=policy.seed)
            if weights is None or config is None or config.composite is None:
                continue
            fitted[str(task)] = weights
            if weights.better:
                task_scoring[str(task)] = config.model_copy(
                    update={"composite": weights.as_composite(config.composite)})
    judged, judge_notes = judge.trusted_votes(ledger, sweep_ids, task_scoring)
    if not judged.empty:  # a judge that agrees with people well enough votes beside them
        votes = pd.concat([votes, judged[[c for c in votes.columns if c in judged.columns]]],
                          ignore_index=True)
    frame = evidence.scored_requests(ledger, sweep_ids, task_scoring)
    dropped: dict[str, dict[str, str]] = {}
    for row in ledger.adaptive_drops(sweep_ids).itertuples(index=False):
        dropped.setdefault(str(row.task), {})[str(row.arm)] = str(row.reason)
    selection = select_from_frame(frame, votes, policy=policy, current=current or {},
                                  task_scoring=task_scoring, dropped=dropped,
                                  sweeps=tuple(sweep_ids or sorted(frame["sweep_id"].unique())
                                               if not frame.empty else ()))
    selection.fitted = fitted
    selection.task_scoring = task_scoring
    selection.judge = judge_notes
    return selection


def _has_ratings(ledger: Ledger) -> bool:
    return queries.has_ratings(ledger)


def select_from_frame(frame: pd.DataFrame, votes: pd.DataFrame | None = None, *,
                      policy: SelectionPolicy | None = None,
                      current: dict[tuple[str, str], str] | None = None,
                      task_scoring: dict[str, TaskScoring] | None = None,
                      sweeps: tuple[str, ...] = (),
                      dropped: Mapping[str, Mapping[str, str]] | None = None) -> Selection:
    """:func:`select` on a frame shaped like :func:`pixellab.evidence.scored_requests` (columns
    ``task, category, arm, product_id, prompt_id, seed, status, error_class, passed, score, usd,
    latency_s``), so the rule can be tested on synthetic score tables.

    ``dropped`` maps a task to the arms adaptive sweeps stopped running (arm → why; see
    :mod:`pixellab.adaptive`): each was shown significantly worse than the leader of its day
    under a level that looking often cannot inflate, so it is no longer a candidate for the
    pick; it stays in the evidence with its reason."""
    policy = policy or SelectionPolicy()
    task_scoring = task_scoring or load_task_scoring()
    current = current or {}
    votes = votes if votes is not None else pd.DataFrame()
    selection = Selection(decisions=[], sweeps=sweeps, policy=policy)
    if frame.empty:
        return selection
    used = evidence.composites_used(frame, task_scoring)
    for task, rows in frame.groupby("task", sort=True):
        task = str(task)
        task_votes = (votes[votes["task"] == task] if not votes.empty
                      else pd.DataFrame(columns=["arm_a", "arm_b", "winner", "category"]))
        pooled_human = _human_ratings(task_votes, policy)
        cells = []
        for category, cell in [(ALL_CATEGORIES, rows)] + [(str(c), g) for c, g in
                                                          rows.groupby("category", sort=True)]:
            cell_votes = (task_votes if category == ALL_CATEGORIES
                          else task_votes[task_votes["category"] == category])
            human = (_human_ratings(cell_votes, policy)
                     if len(cell_votes) >= policy.human_min_votes else pooled_human)
            cells.append(_compare(
                task, category, cell, policy=policy, composite=used[task],
                current=current.get((task, category)) or current.get((task, ALL_CATEGORIES)),
                human=human, sweeps=sweeps, dropped=(dropped or {}).get(task, {})))
        p_values = [c.p_value for c in cells]
        family = sum(not math.isnan(p) for p in p_values)
        for compared, q_value in zip(cells, benjamini_hochberg(p_values), strict=True):
            selection.decisions.append(_decide(compared, q_value, family, policy))
        selection.agreement[task] = _agreement(selection.decision(task), pooled_human)
    return selection


def _human_ratings(votes: pd.DataFrame, policy: SelectionPolicy) -> tuple[dict[str, Interval],
                                                                          dict[str, int]]:
    if votes.empty:
        return {}, {}
    fitted = bradley_terry(votes[["arm_a", "arm_b", "winner"]], resamples=policy.resamples,
                           seed=policy.seed, level=policy.level)
    ratings = {str(r.arm): Interval(float(r.rating), float(r.low), float(r.high),
                                    int(r.battles)) for r in fitted.itertuples(index=False)}
    return ratings, {arm: interval.n for arm, interval in ratings.items()}


def _agreement(decision: Decision | None,
               human: tuple[dict[str, Interval], dict[str, int]]) -> dict[str, float]:
    if decision is None:
        return {}
    automatic = {a.arm: a.score.estimate for a in decision.arms if a.enough}
    people = {arm: interval.estimate for arm, interval in human[0].items()}
    return dict(rank_agreement(automatic, people))


@dataclass
class _Compared:
    """One cell's evidence and the best arm's comparisons, before the task's cells are
    adjusted together (Benjamini-Hochberg needs every cell's p-value)."""

    base: Decision
    arms: list[ArmEvidence]
    human: tuple[dict[str, Interval], dict[str, int]]
    eligible: list[ArmEvidence]
    dropped: Mapping[str, str] = field(default_factory=dict)
    best: ArmEvidence | None = None
    comparisons: dict[str, PairedComparison] = field(default_factory=dict)
    """The best against every other eligible arm (dropped ones too, for the evidence)."""

    @property
    def rivals(self) -> dict[str, PairedComparison]:
        """The comparisons that decide: with the arms still candidates (not dropped)."""
        return {arm: c for arm, c in self.comparisons.items() if arm not in self.dropped}

    @property
    def p_value(self) -> float:
        """The cell's p-value for "the best beats every rival": the largest comparison's."""
        if not self.rivals:
            return math.nan
        values = [c.p_value for c in self.rivals.values()]
        return math.nan if any(math.isnan(v) for v in values) else max(values)


def _compare(task: str, category: str, cell: pd.DataFrame, *, policy: SelectionPolicy,
             composite: CompositeUsed, current: str | None,
             human: tuple[dict[str, Interval], dict[str, int]],
             sweeps: tuple[str, ...], dropped: Mapping[str, str]) -> _Compared:
    arms = [replace(_evidence(str(arm), rows, policy, human), dropped=dropped.get(str(arm), ""))
            for arm, rows in cell.groupby("arm", sort=True)]
    if "sweep_id" in cell.columns:  # the sweeps this cell's evidence comes from
        sweeps = tuple(sorted(str(s) for s in cell["sweep_id"].dropna().unique()))
    scored = cell[cell["score"].notna()]
    base = Decision(task=task, category=category, chain=(), pick=None, verdict="", reason="",
                    products=int(scored["product_id"].nunique()), composite=composite,
                    current_default=current, arms=(), sweeps=sweeps)
    if current is not None and any(a.arm == current for a in arms):
        arms = [replace(a, vs_default=None if a.arm == current else paired_difference(
            cell, a=a.arm, b=current, pair_on=PAIR_ON, level=policy.level,
            seed=policy.seed)) for a in arms]
    eligible = [a for a in arms if a.products >= policy.minimum]
    compared = _Compared(base=base, arms=arms, human=human, eligible=eligible, dropped=dropped)
    if not eligible or not any(a.passed for a in eligible):
        return compared
    candidates = [a for a in eligible if not a.dropped] or eligible
    best = max(candidates, key=lambda a: (a.score.estimate, -_cost_key(a)))
    compared.best = best
    compared.comparisons = {
        a.arm: paired_comparison(cell, a=best.arm, b=a.arm, pair_on=PAIR_ON,
                                 level=policy.level, seed=policy.seed)
        for a in eligible if a.arm != best.arm}
    compared.arms = [replace(a, vs_best=_within(c.difference, -1.0, 1.0), vs_best_p=c.p_value)
                     if (c := compared.comparisons.get(a.arm)) is not None else a
                     for a in arms]
    return compared


def _decide(compared: _Compared, q_value: float, family: int,
            policy: SelectionPolicy) -> Decision:
    base, arms, eligible, best = compared.base, compared.arms, compared.eligible, compared.best
    alpha = policy.alpha
    if not eligible:
        most = max((a.products for a in arms), default=0)
        return replace(base, arms=tuple(arms), verdict=insufficient(policy.minimum),
                       reason=f"the best-covered model has a score on {most} product(s); "
                              f"{policy.minimum} are needed to decide (with fewer, the "
                              f"paired sign-flip test cannot show a difference at "
                              f"{alpha:.0%})")
    if best is None:
        return replace(base, arms=tuple(arms), verdict=NOTHING_PASSED,
                       reason=f"none of {len(eligible)} model(s) produced an output that "
                              "passed the gates")
    by_name = {a.arm: a for a in arms}
    comparisons = compared.rivals
    gone = [arm for arm in compared.comparisons if arm not in comparisons]
    p_value = compared.p_value
    decided = replace(base, p_value=p_value, q_value=q_value, family=family)
    more = ""
    needed: int | None = None
    if not comparisons and gone:
        pick, verdict = by_name[best.arm], CLEAR_WINNER
        reason = (f"the adaptive sweep dropped every rival ({', '.join(gone)}) as significantly "
                  "worse than the leader of its look, on every category's products pooled")
    elif not comparisons:
        pick, verdict = by_name[best.arm], ONLY_CANDIDATE
        reason = (f"{best.arm} is the only model with {policy.minimum}+ scored products "
                  f"(composite {best.score})")
    elif q_value <= alpha:
        pick, verdict = by_name[best.arm], CLEAR_WINNER
        closest = max(comparisons, key=lambda arm: comparisons[arm].p_value)
        reason = (f"beats every rival on shared products; closest: {closest} by "
                  f"{comparisons[closest].difference} (p = {comparisons[closest].p_value:.3g}"
                  + (f"; q = {q_value:.3g} over {family} cells" if family > 1 else "") + ")")
    else:
        beaten = {arm for arm, c in comparisons.items() if c.p_value <= alpha}
        tied = [by_name[best.arm]] + [by_name[arm] for arm in comparisons if arm not in beaten]
        tied = [a for a in tied if a.passed]
        pick = min(tied, key=lambda a: (_cost_key(a), -a.score.estimate, a.arm))
        verdict = NO_CLEAR_WINNER
        others = [a for a in tied if a.arm != best.arm]
        closest = max(comparisons, key=lambda arm: comparisons[arm].p_value)
        shown = comparisons[closest]
        lead = (f"{best.arm} leads {', '.join(a.arm for a in others)} within noise (by "
                f"{shown.difference}, p = {shown.p_value:.3g})" if len(others) == 1 else
                f"{best.arm} leads {len(others)} models within noise" if others else
                f"{best.arm} beats every rival at {alpha:.0%} one by one, but not after "
                f"adjusting over the task's {family} cells (q = {q_value:.3g})"
                if not math.isnan(q_value) else
                f"{best.arm} is not clearly ahead of models that never passed a gate")
        if shown.n < min_products_for(policy.level):
            lead += (f"; {shown.n} shared products cannot show a difference at {alpha:.0%} "
                     f"(the sign-flip test needs {min_products_for(policy.level)})")
        cost = ("" if math.isnan(pick.usd_per_accepted)
                else f" at ${pick.usd_per_accepted:.4f}")
        reason = (f"{lead}; it is also the cheapest per accepted output{cost}"
                  if pick.arm == best.arm else
                  f"{lead}; {pick.arm} is the cheapest per accepted output{cost}")
        needed, more = _more_products(best, by_name[closest], shown, eligible, policy)
    pick, verdict, human_note = _apply_human(pick, verdict, arms, compared.human, policy)
    chain = _chain(pick, arms, policy.max_chain)
    return replace(decided, arms=tuple(arms), chain=chain, pick=pick.arm, verdict=verdict,
                   reason=reason, human_note=human_note, products_needed=needed,
                   more_products=more)


def _more_products(best: ArmEvidence, rival: ArmEvidence, comparison: PairedComparison,
                   eligible: list[ArmEvidence], policy: SelectionPolicy
                   ) -> tuple[int | None, str]:
    """About how many products would separate the leaders, and what running the compared
    arms on the extra ones would cost at their observed spend per product."""
    needed = products_for_power(comparison.difference.estimate, comparison.sd,
                                alpha=policy.alpha, power=POWER)
    if needed is None:
        return None, (f"No difference is seen between {best.arm} and {rival.arm}: more "
                      "products are unlikely to separate them.")
    extra = max(0, needed - comparison.n)
    per_product = sum(a.usd / a.products for a in eligible if a.products)
    cost = (f" (≈ ${extra * per_product:.2f} for the {len(eligible)} models)"
            if extra and per_product > 0 else "")
    return needed, (f"About {extra} more product(s) ({needed} in all) would likely separate "
                    f"{best.arm} from {rival.arm} ({POWER:.0%} power at the difference "
                    f"seen){cost}.")


def _cost_key(arm: ArmEvidence) -> float:
    return math.inf if math.isnan(arm.usd_per_accepted) else arm.usd_per_accepted


def _apply_human(pick: ArmEvidence, verdict: str, arms: list[ArmEvidence],
                 human: tuple[dict[str, Interval], dict[str, int]],
                 policy: SelectionPolicy) -> tuple[ArmEvidence, str, str]:
    """The documented override: people clearly prefer another arm that passes as often."""
    ratings, _ = human
    mine = ratings.get(pick.arm)
    if not ratings:
        return pick, verdict, ""
    if mine is None:
        return pick, verdict, f"People have not rated {pick.arm} against the others yet."
    preferred = [a for a in arms if a.arm in ratings and a.arm != pick.arm and a.passed
                 and ratings[a.arm].low > mine.high
                 and a.pass_high >= pick.pass_low and a.pass_low <= pick.pass_high]
    if not preferred:
        return pick, verdict, (f"People's ratings do not clearly favour another model "
                               f"({pick.arm}: {_interval_text(mine, 0)}).")
    top = max(preferred, key=lambda a: ratings[a.arm].estimate)
    note = (f"People clearly prefer {top.arm} (rating {_interval_text(ratings[top.arm], 0)} vs "
            f"{_interval_text(mine, 0)} for {pick.arm}, {ratings[top.arm].n} votes) and it "
            "passes the gates as often: the human evidence overrides the composite.")
    return top, f"{verdict}; human override", note


def _chain(pick: ArmEvidence, arms: list[ArmEvidence], max_chain: int) -> tuple[str, ...]:
    chain: list[str] = list(pick.models)
    others = sorted((a for a in arms if a.arm != pick.arm and a.passed),
                    key=lambda a: (-_nan_low(a.score.estimate), _cost_key(a), a.arm))
    for arm in others:
        for model in arm.models:
            if model not in chain:
                chain.append(model)
    return tuple(chain[:max(max_chain, len(pick.models))])


def _within(interval: Interval, low: float, high: float) -> Interval:
    """A t interval of a bounded mean (a composite is 0-1) clipped to what the mean can be:
    at a few products it can reach past the bounds, which no reader should see."""
    if math.isnan(interval.low) or math.isnan(interval.high):
        return interval
    return replace(interval, low=max(low, interval.low), high=min(high, interval.high))


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _evidence(arm: str, rows: pd.DataFrame, policy: SelectionPolicy,
              human: tuple[dict[str, Interval], dict[str, int]]) -> ArmEvidence:
    scored = rows[rows["score"].notna()]
    products = int(scored["product_id"].nunique())
    score = (_within(cluster_t_interval(scored["score"].to_numpy(dtype=float),
                                        scored["product_id"].to_numpy(), level=policy.level),
                     0.0, 1.0)
             if products >= policy.minimum
             else Interval(math.nan, math.nan, math.nan, products))
    judged_rows = rows[rows["score"].notna() | rows["passed"]]
    judged = len(judged_rows)
    passed = int(judged_rows["passed"].sum())
    low, high = wilson_interval(passed, judged) if judged else (math.nan, math.nan)
    usd = float(rows["usd"].sum())
    latency = rows["latency_s"].dropna().to_numpy(dtype=float)
    ratings, counts = human
    return ArmEvidence(
        arm=arm, models=arm_models(arm), requests=len(rows), products=products, score=score,
        passed=passed, judged=judged, pass_low=low, pass_high=high, usd=usd,
        usd_per_accepted=usd / passed if passed else math.nan,
        latency_p50_s=float(np.percentile(latency, 50)) if latency.size else math.nan,
        latency_p95_s=float(np.percentile(latency, 95)) if latency.size else math.nan,
        human=ratings.get(arm), human_votes=counts.get(arm, 0))


# -- defaults.toml -----------------------------------------------------------------------------


def _number(value: float) -> float | str:
    """TOML has nan, but a person reading the file should see that a number is missing."""
    return "missing" if value is None or math.isnan(value) else round(float(value), 6)


def _interval_dict(prefix: str, interval: Interval | None) -> dict[str, Any]:
    if interval is None:
        return {}
    return {prefix: _number(interval.estimate), f"{prefix}_low": _number(interval.low),
            f"{prefix}_high": _number(interval.high)}


def to_toml_data(selection: Selection) -> dict[str, Any]:
    """The routing table as plain data: ``routes.<task>.<category>`` with the chain and the
    evidence behind it (see :mod:`pixellab.routing` for how it is read)."""
    p = selection.policy
    routes: dict[str, dict[str, Any]] = {}
    for d in selection.decisions:
        entry: dict[str, Any] = {
            "chain": list(d.chain), "verdict": d.verdict, "reason": d.reason,
            "products": d.products, "composite": d.composite.id,
            "composite_fingerprint": d.composite.fingerprint,
            "composite_terms": list(d.composite.terms), "sweeps": list(d.sweeps),
        }
        if d.current_default:
            entry["previous_default"] = d.current_default
        if d.human_note:
            entry["human"] = d.human_note
        if not math.isnan(d.p_value):
            entry.update({"p_value": _number(d.p_value), "q_value": _number(d.q_value),
                          "cells_adjusted_over": d.family})
        if d.more_products:
            entry["more_products"] = d.more_products
        if d.products_needed is not None:
            entry["products_needed"] = d.products_needed
        entry["evidence"] = [{
            "arm": a.arm, "models": list(a.models), "products": a.products,
            **_interval_dict("score", a.score), "passed": a.passed, "judged": a.judged,
            "pass_low": _number(a.pass_low), "pass_high": _number(a.pass_high),
            "usd": round(a.usd, 6), "usd_per_accepted": _number(a.usd_per_accepted),
            "latency_p50_s": _number(a.latency_p50_s), "latency_p95_s": _number(a.latency_p95_s),
            **_interval_dict("vs_best", a.vs_best),
            **({"vs_best_p": _number(a.vs_best_p)} if a.vs_best_p is not None else {}),
            **_interval_dict("vs_default", a.vs_default),
            **_interval_dict("human_rating", a.human),
            **({"human_votes": a.human_votes} if a.human_votes else {}),
            **({"dropped": a.dropped} if a.dropped else {}),
        } for a in d.arms]
        routes.setdefault(d.task, {})[d.category] = entry
    return {
        "meta": {"generated_at": selection.generated_at.replace(microsecond=0).isoformat(),
                 "sweeps": list(selection.sweeps), "min_products": p.minimum,
                 "test": TEST, "family": FAMILY, "intervals": "Student's t over products",
                 "resamples": p.resamples, "seed": p.seed, "level": p.level,
                 "max_chain": p.max_chain, "human_min_votes": p.human_min_votes},
        "routes": routes,
        **({"fitted_weights": {task: {
            "used": f.better, "votes": f.n_votes, "products": f.n_products,
            "cv_accuracy_fitted": _number(f.cv_accuracy_fitted),
            "cv_accuracy_hand": _number(f.cv_accuracy_hand), "p_value": _number(f.p_value),
            "weights": {t: round(w, 3) for t, w in f.weights.items()},
            "hand_weights": {t: round(w, 3) for t, w in f.hand_weights.items()}}
            for task, f in selection.fitted.items()}} if selection.fitted else {}),
    }


HEADER = """\
# pixellab routing table: the default fallback chain per task × product category, with the
# evidence it was chosen on. Written by `pixellab select`; read by `pixellab generate` and
# pixellab.route(). Category "*" is the global default (every category pooled), used for a
# category that has no decision of its own. An empty chain means no decision (see `verdict`).
# Scores are the task's composite (0-1, `composite` names its definition) with 95 % t intervals
# over products. A clear winner beat every rival by a paired sign-flip test (p_value: the
# largest of those), with q_value adjusted by Benjamini-Hochberg across the task's category
# cells; the rule is in pixellab/selection.py.
"""


def write_defaults(selection: Selection, path: str | Path) -> Path:
    """Write ``defaults.toml`` atomically (a reader never sees half a routing table)."""
    import tomli_w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + "\n" + tomli_w.dumps(to_toml_data(selection))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
