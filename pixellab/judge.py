"""The pairwise judge pass over a sweep: which pairs to judge, the judge's requests, its votes,
its biases, and how far it agrees with people.

A judge call is an ordinary request of the ``judge`` task (:mod:`pixellab.verdicts`) through the
catalog and the runner, so retries, fallbacks, budgets, caching by request key and the ledger
apply unchanged; its calls belong to a sweep of their own, ``<sweep>.judge``, so their cost is
in the ledger beside the sweep's. Each pair of arms' outputs for one product (same prompt and
seed) is judged in both orders; each raw verdict is recorded as a rating by ``judge:<model>``
(:data:`~pixellab.ledger.queries.JUDGE_RATER`), which people's tables never include, and the
two orders make one vote (:func:`~pixellab.verdicts.combine`).

Trust is measured, not assumed: :func:`calibration` compares the judge's votes with people's
on the same pairs (accuracy on pairs both decided, Cohen's kappa, Bradley-Terry rank
agreement, each with an interval), and :func:`trusted_votes` hands the decision the judge's
votes only for tasks where the accuracy's lower bound reaches the task's
``judge_min_agreement``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pixellab.catalog import Model
from pixellab.errors import ConfigError
from pixellab.ledger import Ledger, Statement, queries
from pixellab.ledger.queries import JUDGE_RATER
from pixellab.media.json import open_envelope
from pixellab.ratings import Shown
from pixellab.requests import Request, file_sha256, inputs_sha256
from pixellab.scoring import TaskScoring
from pixellab.stats import bradley_terry, rank_agreement, t_interval, wilson_interval
from pixellab.store import Store
from pixellab.tasks import Task
from pixellab.verdicts import DEFAULT_CRITERIA, JudgeSpec, combine, parse_verdict

SUFFIX = ".judge"
PAIR_KEYS = ("task", "product_id", "prompt_id", "seed")
"""Two arms' outputs are compared only for the same product, prompt and seed."""


def judge_sweep_id(sweep_id: str) -> str:
    return sweep_id + SUFFIX


@dataclass(frozen=True)
class JudgePair:
    """Two arms' outputs of one product, ``x`` the arm first in name order."""

    task: str
    category: str
    product_id: str
    sweep_id: str
    prompt_id: str | None
    seed: int | None
    x: Shown
    y: Shown


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def _overlapping(rows: pd.DataFrame) -> set[frozenset[str]]:
    """Pairs of arms (of one task and category) whose composite intervals overlap, or that
    have no interval (too few products, no composite): the pairs a judge can still tell
    apart where the metrics do not."""
    intervals = {}
    for arm, group in rows.groupby("arm"):
        per_product = group.groupby("product_id")["score"].mean().dropna()
        intervals[str(arm)] = (t_interval(per_product.to_numpy()) if len(per_product) >= 2
                               else None)
    found = set()
    for a, b in itertools.combinations(sorted(intervals), 2):
        one, two = intervals[a], intervals[b]
        if (one is None or two is None or math.isnan(one.low) or math.isnan(two.low)
                or (one.low <= two.high and two.low <= one.high)):
            found.add(frozenset((a, b)))
    return found


def candidate_pairs(frame: pd.DataFrame, spec: JudgeSpec) -> list[JudgePair]:
    """The pairs to judge in a sweep's scored requests (:func:`pixellab.evidence.scored_requests`):
    every two arms with a succeeded output for the same product, prompt and seed (``spec.pairs
    = overlapping``: only arms whose composite intervals overlap in that category), in a
    reproducible shuffled order, at most ``spec.max_pairs``."""
    ok = frame[(frame["status"] == "succeeded") & frame["output_sha256"].notna()]
    if ok.empty:
        return []
    allowed: dict[tuple[str, str], set[frozenset[str]]] = {}
    if spec.pairs == "overlapping":
        for (task, category), rows in ok.groupby(["task", "category"]):
            allowed[(str(task), str(category))] = _overlapping(rows)
    keys = [k for k in PAIR_KEYS if k in ok.columns]
    ranked = []
    for _, group in ok.sort_values(["sweep_id", "request_key"]).groupby(keys, dropna=False):
        first = sorted(group.drop_duplicates("arm").to_dict("records"), key=lambda r: r["arm"])
        for one, two in itertools.combinations(first, 2):
            if one["output_sha256"] == two["output_sha256"]:
                continue
            cell = (str(one["task"]), str(one["category"]))
            if spec.pairs == "overlapping" and frozenset(
                    (one["arm"], two["arm"])) not in allowed.get(cell, set()):
                continue
            seed = one.get("seed")
            ranked.append((_digest(one["product_id"], one["output_sha256"],
                                   two["output_sha256"]), JudgePair(
                task=cell[0], category=cell[1], product_id=str(one["product_id"]),
                sweep_id=str(one["sweep_id"]),
                prompt_id=None if pd.isna(one.get("prompt_id")) else str(one["prompt_id"]),
                seed=None if seed is None or pd.isna(seed) else int(seed),
                x=Shown(str(one["arm"]), str(one["output_sha256"]), str(one["media_type"])),
                y=Shown(str(two["arm"]), str(two["output_sha256"]), str(two["media_type"])))))
    ranked.sort(key=lambda item: item[0])
    pairs = [pair for _, pair in ranked]
    return pairs[: spec.max_pairs] if spec.max_pairs else pairs


def criteria_for(task: str, task_scoring: Mapping[str, TaskScoring]) -> dict[str, str]:
    config = task_scoring.get(task)
    return dict(config.judge_criteria) if config and config.judge_criteria else dict(
        DEFAULT_CRITERIA)


def judge_requests(pairs: Sequence[JudgePair], *, chain: tuple[Model, ...],
                   inputs: Mapping[str, Path], store: Store, spec: JudgeSpec,
                   task_scoring: Mapping[str, TaskScoring]) -> list[Request]:
    """Two requests per pair, one per order; ``inputs`` maps a product to its source photo.
    The outputs go as the request's extra photos, read from the store's files (a judge pass
    needs the store on a local file system)."""
    requests = []
    source_hashes: dict[str, str] = {}
    for pair in pairs:
        source = inputs[pair.product_id]
        if pair.product_id not in source_hashes:
            source_hashes[pair.product_id] = file_sha256(source)
        for first, second in ((pair.x, pair.y), (pair.y, pair.x)):
            paths = tuple(store.local_path(side.output_sha256, side.media_type)
                          for side in (first, second))
            if any(path is None for path in paths):
                raise ConfigError(f"judging reads the outputs from the store's files: it needs "
                                  f"a store on a local file system, not {store.root}",
                                  key="store")
            shown = tuple(str(path) for path in paths)
            params: dict[str, Any] = {
                "judged_task": pair.task, "detail": spec.detail, "sweep": pair.sweep_id,
                "criteria": criteria_for(pair.task, task_scoring),
                "shown": [{"arm": s.arm, "output": s.output_sha256, "media_type": s.media_type}
                          for s in (first, second)],
                "prompt_id": pair.prompt_id, "judged_seed": pair.seed}
            requests.append(Request.build(
                product_id=pair.product_id, category=pair.category, task=Task.JUDGE,
                chain=chain, arm=f"judge:{chain[0].id}", image_path=source,
                input_sha256=inputs_sha256(source_hashes[pair.product_id], shown),
                prompt=None, prompt_text=None, params=params, angle_paths=shown))
    return requests


def record_verdicts(ledger: Ledger, store: Store, judge_sweep_ids: Sequence[str]) -> int:
    """Each succeeded judge call's verdict as a rating by ``judge:<model>`` (``a``: the output
    shown first won); returns how many. Idempotent: a verdict keeps its id."""
    results = queries.judge_results(ledger, judge_sweep_ids)
    statements: list[Statement] = []
    for row in results[results["status"] == "succeeded"].itertuples(index=False):
        params = json.loads(row.params) if isinstance(row.params, str) else dict(row.params)
        verdict = parse_verdict(open_envelope(store.get(str(row.output_sha256),
                                                        str(row.media_type))))
        first, second = params["shown"]
        statements += Ledger.replace_rating(
            _digest("judge", row.request_key), JUDGE_RATER + str(row.model_id),
            task=params["judged_task"], category=str(row.category),
            product_id=str(row.product_id), output_a=first["output"],
            output_b=second["output"], arm_a=first["arm"], arm_b=second["arm"],
            winner={"A": "a", "B": "b"}.get(verdict.winner, "tie"), sweep_id=params["sweep"],
            comment=json.dumps({"criteria": verdict.criteria, "reason": verdict.reason,
                                "request_key": row.request_key}, sort_keys=True))
    if statements:
        ledger.write(statements)
    return len(statements) // 2


# -- votes and their quality --------------------------------------------------------------


def judge_votes(raw: pd.DataFrame) -> pd.DataFrame:
    """One vote per judged pair from its two raw verdicts (:func:`~pixellab.verdicts.combine`):
    columns as people's ratings (``arm_a`` the arm first by name, ``winner`` a/b/tie) plus
    ``consistent`` (both orders named the same arm, or both a tie) and ``flipped`` (each order
    chose the same *position*: a positional verdict, made a tie). Pairs judged in one order
    only are left out."""
    columns = ["rater", "task", "category", "product_id", "sweep_id", "arm_a", "arm_b",
               "output_a", "output_b", "winner", "consistent", "flipped"]
    rows = []
    if raw.empty:
        return pd.DataFrame(columns=columns)
    raw = raw.assign(pair=[frozenset((a, b)) for a, b in zip(raw["output_a"], raw["output_b"],
                                                             strict=True)])
    for (rater, task, _), group in raw.groupby(["rater", "task", "pair"], sort=False):
        records = group.to_dict("records")
        x_arm = min(str(r["arm_a"]) for r in records)
        x_first = [r for r in records if r["arm_a"] == x_arm]
        y_first = [r for r in records if r["arm_a"] != x_arm]
        if not x_first or not y_first:
            continue
        one, two = x_first[-1], y_first[-1]
        to_answer = {"a": "A", "b": "B", "tie": "tie"}
        first, second = to_answer[str(one["winner"])], to_answer[str(two["winner"])]
        vote = combine(first, second)
        rows.append({
            "rater": rater, "task": task, "category": one["category"],
            "product_id": one["product_id"], "sweep_id": one["sweep_id"], "arm_a": x_arm,
            "arm_b": str(one["arm_b"]), "output_a": one["output_a"],
            "output_b": one["output_b"], "winner": {"x": "a", "y": "b"}.get(vote, "tie"),
            "consistent": (first == "tie" and second == "tie")
                          or (first in "AB" and second in "AB" and first != second),
            "flipped": first == second and first != "tie"})
    return pd.DataFrame(rows, columns=columns)


def position_bias(raw: pd.DataFrame) -> dict[str, float]:
    """Per judge: the share of its decided raw verdicts that chose the output shown first
    (0.5 for a judge with no position preference)."""
    decided = raw[raw["winner"] != "tie"]
    return {str(r): float((g["winner"] == "a").mean())
            for r, g in decided.groupby("rater")} if not decided.empty else {}


def _preferred(votes: pd.DataFrame) -> pd.Series:
    return pd.Series(np.where(votes["winner"] == "a", votes["arm_a"],
                              np.where(votes["winner"] == "b", votes["arm_b"], "tie")),
                     index=votes.index)


def _kappa(first: Sequence[str], second: Sequence[str]) -> float:
    labels = sorted(set(first) | set(second))
    if len(first) == 0:
        return math.nan
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for a, b in zip(first, second, strict=True):
        table[index[a], index[b]] += 1
    total = table.sum()
    observed = np.trace(table) / total
    expected = float((table.sum(axis=0) * table.sum(axis=1)).sum()) / total ** 2
    return math.nan if expected >= 1 else (observed - expected) / (1 - expected)


def agreement(judge: pd.DataFrame, people: pd.DataFrame, *, resamples: int = 500,
              seed: int = 0, rank: bool = True) -> dict[str, Any]:
    """How far one judge's votes agree with people's on the same pairs (matched by the two
    outputs, whatever the sides): ``n`` matched votes; ``accuracy`` on the pairs both decided,
    with its 95 % Wilson interval; Cohen's ``kappa`` over (arm, arm, tie) with a bootstrap
    interval; ``tau`` (with ``rank``): Kendall's tau between the Bradley-Terry ratings of the
    arms fitted on the judge's votes and on people's, with a bootstrap interval over the
    matched pairs (at most 200 resamples: each refits two rankings)."""
    nan = math.nan
    found: dict[str, Any] = {"n": 0, "decided": 0, "accuracy": nan, "accuracy_low": nan,
                             "accuracy_high": nan, "kappa": nan, "kappa_low": nan,
                             "kappa_high": nan, "tau": nan, "tau_low": nan, "tau_high": nan}
    if judge.empty or people.empty:
        return found
    by_pair = {(t, frozenset((a, b))): p for t, a, b, p in zip(
        judge["task"], judge["output_a"], judge["output_b"], _preferred(judge), strict=True)}
    matched = []
    for row, said in zip(people.itertuples(index=False), _preferred(people), strict=True):
        key = (row.task, frozenset((row.output_a, row.output_b)))
        if key in by_pair:
            matched.append((str(by_pair[key]), str(said), row.arm_a, row.arm_b))
    if not matched:
        return found
    judged = [m[0] for m in matched]
    said = [m[1] for m in matched]
    decided = matched_pairs(judged, said)
    hits = sum(j == p for j, p in decided)
    low, high = wilson_interval(hits, len(decided)) if decided else (nan, nan)
    found.update(n=len(matched), decided=len(decided),
                 accuracy=hits / len(decided) if decided else nan, accuracy_low=low,
                 accuracy_high=high, kappa=_kappa(judged, said))
    rng = np.random.default_rng(seed)
    kappas, taus = [], []
    if rank:
        found["tau"] = _tau(matched)
    for index in range(resamples):
        pick = rng.integers(0, len(matched), len(matched))
        sample = [matched[i] for i in pick]
        kappas.append(_kappa([m[0] for m in sample], [m[1] for m in sample]))
        if rank and index < 200:
            taus.append(_tau(sample))
    for name, values in (("kappa", kappas), ("tau", taus)):
        finite = np.array([v for v in values if not math.isnan(v)])
        if len(finite):
            found[f"{name}_low"], found[f"{name}_high"] = (float(np.quantile(finite, 0.025)),
                                                           float(np.quantile(finite, 0.975)))
    return found


def matched_pairs(judged: Sequence[str], said: Sequence[str]) -> list[tuple[str, str]]:
    """The matched votes where both the judge and the person named an arm."""
    return [(j, p) for j, p in zip(judged, said, strict=True) if j != "tie" and p != "tie"]


def _tau(matched: Sequence[tuple[str, str, Any, Any]]) -> float:
    def ratings(column: int) -> dict[str, float]:
        votes = pd.DataFrame([{"arm_a": m[2], "arm_b": m[3],
                               "winner": "tie" if m[column] == "tie" else
                               ("a" if m[column] == m[2] else "b")} for m in matched])
        fitted = bradley_terry(votes, resamples=0)
        return dict(zip(fitted["arm"].astype(str), fitted["rating"].astype(float),
                        strict=True))

    return float(rank_agreement(ratings(0), ratings(1))["kendall_tau"])


def calibration(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
                task_scoring: Mapping[str, TaskScoring] | None = None,
                resamples: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per judge × task (category ``*``, pooled) and × category: votes, self-consistency,
    first-position share, agreement with people (see :func:`agreement`; the rank agreement
    pooled only), spend, the task's threshold and whether the judge is ``trusted`` there
    (accuracy's lower bound reaches it)."""
    return _calibrated(ledger, sweep_ids, task_scoring, resamples, seed)[0]


def _calibrated(ledger: Ledger, sweep_ids: Sequence[str] | None,
                task_scoring: Mapping[str, TaskScoring] | None, resamples: int,
                seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`calibration`'s table and the combined votes it rests on, the judges' ratings
    read once; nothing more is read where no judge voted (every ``select`` asks)."""
    raw = queries.ratings(ledger, sweep_ids, judges=True)
    votes = judge_votes(raw)
    if votes.empty:
        return pd.DataFrame(), votes
    people = queries.ratings(ledger, sweep_ids)
    bias = position_bias(raw)
    spend = queries.judge_results(ledger, [judge_sweep_id(s) for s in sweep_ids or []])
    rows = []
    for (rater, task), group in votes.groupby(["rater", "task"]):
        config = (task_scoring or {}).get(str(task))
        threshold = config.judge_min_agreement if config else 0.7
        task_people = people[people["task"] == task]
        cells = [("*", group, task_people)] + [
            (str(c), g, task_people[task_people["category"] == c])
            for c, g in group.groupby("category")]
        for category, cell, cell_people in cells:
            found = agreement(cell, cell_people, resamples=resamples, seed=seed,
                              rank=category == "*")
            rows.append({
                "judge": str(rater).removeprefix(JUDGE_RATER), "task": task,
                "category": category, "votes": len(cell),
                "self_consistency": float(cell["consistent"].mean()),
                "flipped": float(cell["flipped"].mean()),
                "first_position": bias.get(str(rater), math.nan), **found,
                "threshold": threshold,
                "trusted": bool(found["accuracy_low"] >= threshold),
                "usd": float(spend.loc[spend["params"].map(_judged_task) == task,
                                       "usd"].sum())})
    return pd.DataFrame(rows), votes


def _judged_task(params: Any) -> str:
    body = json.loads(params) if isinstance(params, str) else dict(params)
    return str(body.get("judged_task"))


def trusted_votes(ledger: Ledger, sweep_ids: Sequence[str] | None,
                  task_scoring: Mapping[str, TaskScoring]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The judges' votes the decision may count (tasks where a judge is trusted, pooled over
    categories) and, per task judged, one sentence saying what was done and why."""
    table, votes = _calibrated(ledger, sweep_ids, task_scoring, 0, 0)
    if table.empty:
        return pd.DataFrame(), {}
    notes: dict[str, str] = {}
    used = []
    for row in table[table["category"] == "*"].itertuples(index=False):
        judge = str(row.judge)
        if row.decided == 0:
            notes[str(row.task)] = (f"{judge}'s votes are not used: no people's votes on the "
                                    "same pairs to check them against")
        elif row.trusted:
            used.append(votes[(votes["rater"] == JUDGE_RATER + judge)
                              & (votes["task"] == row.task)])
            notes[str(row.task)] = (
                f"{judge}'s votes are counted with people's: it agrees with them on "
                f"{row.accuracy:.0%} [{row.accuracy_low:.0%}, {row.accuracy_high:.0%}] of "
                f"{row.decided} decided pairs (threshold {row.threshold:.0%})")
        else:
            notes[str(row.task)] = (
                f"{judge}'s votes are not used: it agrees with people on {row.accuracy:.0%} "
                f"[{row.accuracy_low:.0%}, {row.accuracy_high:.0%}] of {row.decided} decided "
                f"pairs, below the threshold of {row.threshold:.0%}")
    return (pd.concat(used, ignore_index=True) if used else pd.DataFrame()), notes


def beside_people(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Per task and arm: the Bradley-Terry rating (Elo scale) from people's votes and from
    each judge's combined votes, side by side, with how many votes each rests on."""
    people = queries.ratings(ledger, sweep_ids)
    votes = judge_votes(queries.ratings(ledger, sweep_ids, judges=True))
    columns = ["task", "arm", "people", "people_votes", "judge", "judge_rating", "judge_votes"]
    rows = []
    for (rater, task), group in votes.groupby(["rater", "task"]):
        theirs = bradley_terry(group[["arm_a", "arm_b", "winner"]], resamples=0)
        task_people = people[people["task"] == task]
        ours = (bradley_terry(task_people[["arm_a", "arm_b", "winner"]], resamples=0)
                if not task_people.empty else pd.DataFrame(columns=["arm"]))
        for row in theirs.itertuples(index=False):
            mine = ours[ours["arm"] == row.arm]
            rows.append({"task": task, "arm": row.arm,
                         "people": float(mine["rating"].iloc[0]) if len(mine) else math.nan,
                         "people_votes": int(mine["battles"].iloc[0]) if len(mine) else 0,
                         "judge": str(rater).removeprefix(JUDGE_RATER),
                         "judge_rating": float(row.rating), "judge_votes": int(row.battles)})
    return pd.DataFrame(rows, columns=columns)
