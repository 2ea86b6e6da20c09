"""The evidence a decision rests on, computed from the ledger: per-request rows with their
metrics, gates and composite; leaderboards with intervals; failures by kind; spend; fitted
weights and human ratings.

Between the ledger and its readers: :mod:`pixellab.selection` decides from these frames and
:mod:`pixellab.report` shows them, so the CLI summary, the notebook, the routing table and any
script see the same numbers, and deciding never imports presentation code. The SQL lives in
:mod:`pixellab.ledger.queries`; this module only computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pixellab.datasets import load_dataset
from pixellab.errors import ConfigError
from pixellab.ledger import Ledger, queries
from pixellab.ratings import ratings_table
from pixellab.scoring import LOWER_IS_BETTER, TaskScoring, load_task_scoring
from pixellab.scoring.composite import CompositeUsed, composite_scores
from pixellab.scoring.fitted import DEFAULT_L2, FittedWeights, fit_weights, vote_features
from pixellab.stats import BT_COLUMNS, bradley_terry, wilson_interval

COST_GROUPS = queries.COST_GROUPS


def scored_requests(ledger: Ledger, sweep_ids: Sequence[str] | None = None,
                    task_scoring: dict[str, TaskScoring] | None = None) -> pd.DataFrame:
    """Requests with one column per metric, plus ``passed`` (succeeded, every gate metric
    present and holding) and ``score``: the task's composite (see
    :mod:`pixellab.scoring.composite`: 0 for a model's failure, NaN when not measurable)."""
    task_scoring = task_scoring or load_task_scoring()
    requests = queries.request_table(ledger, sweep_ids)
    requests = requests[requests["task"] != "judge"]  # a judge's calls are evidence about arms
    scores = queries.score_table(ledger, sweep_ids)  # of other sweeps, not an arm of their own
    if not scores.empty:
        wide = scores.pivot_table(index="output_sha256", columns="metric", values="value",
                                  aggfunc="first", dropna=False)
        requests = requests.merge(wide, how="left", left_on="output_sha256", right_index=True)
    passed = []
    for row in requests.itertuples(index=False):
        config = task_scoring.get(row.task)
        ok = row.status == "succeeded"
        for metric, required in (config.gates.items() if config else []):
            measured = getattr(row, metric, None)
            ok = ok and measured is not None and not pd.isna(measured) and measured == required
        passed.append(ok)
    requests["passed"] = pd.Series(passed, index=requests.index, dtype=bool)
    requests["score"] = pd.Series(math.nan, index=requests.index, dtype="float64")
    for task, rows in requests.groupby("task"):
        config = task_scoring.get(str(task))
        values, _ = composite_scores(rows, str(task), config.composite if config else None,
                                     dict(config.gates) if config else {})
        requests.loc[rows.index, "score"] = values
    return requests


def composites_used(frame: pd.DataFrame, task_scoring: dict[str, TaskScoring] | None = None
                    ) -> dict[str, CompositeUsed]:
    """Per task in ``frame``: which composite (id, fingerprint, terms) its ``score`` is."""
    task_scoring = task_scoring or load_task_scoring()
    used = {}
    for task, rows in frame.groupby("task"):
        config = task_scoring.get(str(task))
        used[str(task)] = composite_scores(rows, str(task), config.composite if config else None,
                                           dict(config.gates) if config else {})[1]
    return used


def metric_summary(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Per task × arm: every metric's mean over the outputs that have it, or, where no output
    has it, ``missing: <reason>`` (e.g. CLIP without weights), so an absent number is never
    read as a zero. Lower-is-better metrics are marked with a ↓ in the column name."""
    rows = queries.arm_scores(ledger, sweep_ids)
    if rows.empty:
        return pd.DataFrame(columns=["task", "arm"])
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for (task, arm, metric), group in rows.groupby(["task", "arm", "metric"]):
        measured = group["value"].dropna()
        name = f"{metric} ↓" if metric in LOWER_IS_BETTER else metric
        if measured.empty:
            reason = group["missing_reason"].dropna().mode()
            full = str(reason.iloc[0]) if not reason.empty else "unknown"
            text = f"missing: {full.split(':')[0][:40]}"  # the gist; the ledger has all of it
        else:
            text = f"{measured.mean():.3g}"
            if len(measured) < len(group):
                text += f" ({len(group) - len(measured)} missing)"
        cells.setdefault((str(task), str(arm)), {})[name] = text
    table = pd.DataFrame([{"task": task, "arm": arm, **values}
                          for (task, arm), values in sorted(cells.items())])
    return table  # NaN: the metric is not one of this task's


def leaderboard(frame: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per category × task × ``by`` (the arm, or e.g. ``prompt_id`` for a prompt sweep): n,
    successes, pass rate with its 95 % Wilson interval, mean score, spend per request and per
    accepted output, median latency. Video tasks add the seconds of video delivered and the
    spend per delivered second (``usd_per_second``: everything spent, failures included,
    over the seconds of the clips that came back)."""
    columns = ["task", "category", by, "n", "succeeded", "passed", "pass_rate", "pass_low",
               "pass_high", "mean_score", "usd", "usd_per_request", "usd_per_accepted",
               "latency_p50_s"]
    video = "duration_s" in frame.columns and bool(frame["duration_s"].notna().any())
    if video:
        columns.insert(columns.index("usd_per_accepted") + 1, "video_s")
        columns.insert(columns.index("video_s") + 1, "usd_per_second")
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grouped = frame.groupby(["task", "category", by], dropna=False)
    table = grouped.agg(
        n=("request_key", "count"),
        succeeded=("status", lambda s: int((s == "succeeded").sum())),
        passed=("passed", "sum"),
        mean_score=("score", "mean"),
        usd=("usd", "sum"),
        latency_p50_s=("latency_s", "median"),
        **({"video_s": ("duration_s", "sum")} if video else {}),
    ).reset_index()
    table["passed"] = table["passed"].astype(int)
    table["pass_rate"] = table["passed"] / table["n"]
    bounds = [wilson_interval(k, n) for k, n in zip(table["passed"], table["n"], strict=True)]
    table["pass_low"] = [low for low, _ in bounds]
    table["pass_high"] = [high for _, high in bounds]
    table["usd_per_request"] = table["usd"] / table["n"]
    table["usd_per_accepted"] = np.where(table["passed"] > 0,
                                         table["usd"] / table["passed"].where(table["passed"] > 0),
                                         np.nan)
    if video:
        table["usd_per_second"] = table["usd"] / table["video_s"].where(table["video_s"] > 0)
    return table[columns].sort_values(["task", "category", "mean_score"],
                                      ascending=[True, True, False]).reset_index(drop=True)


def pareto_front(table: pd.DataFrame, *, cost: str = "usd_per_request",
                 quality: str = "mean_score") -> pd.Series:
    """True for rows no other row beats: none is at least as good on both quality (higher) and
    cost (lower) and strictly better on one. Rows without a quality value are never on it."""
    values = table[[cost, quality]].to_numpy(dtype=float)
    front = []
    for i, (c, q) in enumerate(values):
        if math.isnan(q) or math.isnan(c):
            front.append(False)
            continue
        dominated = any(
            j != i and not math.isnan(q2) and not math.isnan(c2)
            and c2 <= c and q2 >= q and (c2 < c or q2 > q)
            for j, (c2, q2) in enumerate(values))
        front.append(not dominated)
    return pd.Series(front, index=table.index, dtype=bool)


def task_summary(frame: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per task × ``by`` with every category pooled: the one-glance answer before the details."""
    if frame.empty:
        return pd.DataFrame(columns=["task", by, "n", "pass_rate", "mean_score", "usd",
                                     "usd_per_request"])
    table = frame.groupby(["task", by], dropna=False).agg(
        n=("request_key", "count"), products=("product_id", "nunique"),
        pass_rate=("passed", "mean"), mean_score=("score", "mean"), usd=("usd", "sum"),
        latency_p50_s=("latency_s", "median")).reset_index()
    table["usd_per_request"] = table["usd"] / table["n"]
    return table.sort_values(["task", "mean_score"], ascending=[True, False]).reset_index(drop=True)


def dataset_kind(dataset: object) -> str:
    """What a sweep's photos are: ``real`` for a dataset folder named ``real…`` (the bundled
    real-photo slice), ``procedural`` for the bundled rendered ``sample``, else the folder's
    own name (a team's catalogue is its own kind)."""
    name = str(dataset or "").rstrip("/").rsplit("/", 1)[-1]
    if name.startswith("real"):
        return "real"
    if name == "sample":
        return "procedural"
    return name or "unknown"


def by_dataset(frame: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per task × dataset kind (real photos / procedural renders, :func:`dataset_kind`) ×
    ``by``: n, pass rate, mean composite and, where the task has it, the share of outputs
    whose product survived (``identity`` = 1) and the mean label-text score: the same
    models on real and rendered photos, side by side."""
    columns = ["task", "photos", by, "n", "pass_rate", "mean_score", "identity_kept",
               "label_text"]
    if frame.empty or "dataset" not in frame.columns:
        return pd.DataFrame(columns=columns)
    table = frame.assign(photos=[dataset_kind(d) for d in frame["dataset"]])
    agg: dict[str, Any] = {"n": ("request_key", "count"), "pass_rate": ("passed", "mean"),
                           "mean_score": ("score", "mean")}
    if "identity" in table.columns:
        agg["identity_kept"] = ("identity", "mean")
    if "label_text" in table.columns:
        agg["label_text"] = ("label_text", "mean")
    out = table.groupby(["task", "photos", by], dropna=False).agg(**agg).reset_index()
    for column in columns:
        if column not in out.columns:
            out[column] = math.nan
    return out[columns].sort_values(["task", by, "photos"]).reset_index(drop=True)


def identity_failures(ledger: Ledger, frame: pd.DataFrame,
                      sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Outputs whose product did not survive (``identity`` = 0), one row each: the request's
    task, category, product and arm, why (``reasons``), where the product was looked for in
    the output (``box``: x0, y0, x1, y1, or None when not found), and the label text read on
    the source and the output where the label-text metric ran."""
    columns = ["task", "category", "product_id", "arm", "output_sha256", "media_type",
               "reasons", "box", "source_text", "output_text", "label_score"]
    details = queries.score_details(ledger, ["identity", "label_text"], sweep_ids)
    if details.empty or "identity" not in frame.columns:
        return pd.DataFrame(columns=columns)
    lost = details[(details["metric"] == "identity") & (details["value"] == 0)]
    labels = {row.output_sha256: row for row in
              details[details["metric"] == "label_text"].itertuples(index=False)}
    rows = []
    for row in lost.itertuples(index=False):
        match = frame[frame["output_sha256"] == row.output_sha256]
        if match.empty:
            continue
        first = match.iloc[0]
        label = labels.get(row.output_sha256)
        label_details = label.details if label is not None else {}
        rows.append({"task": first["task"], "category": first["category"],
                     "product_id": first["product_id"], "arm": first["arm"],
                     "output_sha256": row.output_sha256, "media_type": first["media_type"],
                     "reasons": ", ".join(row.details.get("reasons") or
                                          [str(row.details.get("reason") or "lost")]),
                     "box": row.details.get("box_in_output"),
                     "source_text": label_details.get("source_text"),
                     "output_text": label_details.get("output_text"),
                     "label_score": None if label is None else label.value})
    return pd.DataFrame(rows, columns=columns)


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Requests that did not produce an accepted output, with the reason in words."""
    failed = frame[~frame["passed"]].copy()
    failed["reason"] = [failure_reason(row) for _, row in failed.iterrows()]
    return failed[["task", "category", "product_id", "arm", "status", "error_reason", "reason"]]


def failure_reason(row: Any) -> str:
    """Why a request has no accepted output, in a few words; empty when it passed."""
    if row["status"] != "succeeded":
        cls, message = row.get("error_class"), row.get("error_message")
        text = ": ".join(str(p) for p in (cls, message) if isinstance(p, str) and p)
        return text or str(row["status"])
    if not bool(row["passed"]):
        return "output failed a gate (see its scores)"
    return ""


def failure_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Failures counted by task, model and kind of reason (the error class, or the gate), so a
    pattern — one model's content rejections, another's blank outputs — shows at a glance."""
    failed = frame[~frame["passed"]]
    if failed.empty:
        return pd.DataFrame(columns=["task", "arm", "reason", "count", "share", "example"])
    kinds = [row.error_class if row.status != "succeeded" else "failed a gate"
             for row in failed.itertuples(index=False)]
    failed = failed.assign(kind=kinds)
    totals = frame.groupby(["task", "arm"])["request_key"].count()
    rows = []
    for (task, arm, kind), group in failed.groupby(["task", "arm", "kind"]):
        first = group.iloc[0]
        example = (f"{first['product_id']}: {failure_reason(first)}")[:140]
        rows.append({"task": task, "arm": arm, "reason": kind, "count": len(group),
                     "share": len(group) / totals[(task, arm)], "example": example})
    return pd.DataFrame(rows).sort_values(["task", "count"], ascending=[True, False]
                                          ).reset_index(drop=True)


def costs(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Spend by sweep and model: calls, credits, USD, how much of it is an estimate."""
    return costs_by(ledger, sweep_ids, ["sweep_id", "provider", "model_id"])


def costs_by(ledger: Ledger, sweep_ids: Sequence[str] | None = None,
             by: Sequence[str] = ("model_id",)) -> pd.DataFrame:
    """Calls, credits and USD from the ledger's cost rows (one per billed attempt), grouped by
    any of ``sweep_id``, ``provider``, ``model_id`` and ``day`` (UTC)."""
    return queries.costs_by(ledger, sweep_ids, by)


def product_images(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> dict[str, str]:
    """product id → source image path, from the datasets the sweeps were planned on."""
    images: dict[str, str] = {}
    for spec in queries.sweep_specs(ledger, sweep_ids):
        try:
            dataset = load_dataset(spec["dataset"])
        except ConfigError:
            continue
        images.update({p.id: str(p.image) for p in dataset.products if p.refusal is None})
    return images


def fit_from_ledger(ledger: Ledger, task: str, sweep_ids: Sequence[str] | None = None, *,
                    task_scoring: Mapping[str, TaskScoring] | None = None,
                    min_votes: int | None = None, l2: float = DEFAULT_L2, folds: int = 5,
                    seed: int = 0, position_bias: bool = False) -> FittedWeights | None:
    """:func:`~pixellab.scoring.fitted.fit_weights` on the ledger's own votes and scores of
    ``task`` (some sweeps, or all). None when the task has no composite or too few votes.

    Here rather than in :mod:`pixellab.scoring.fitted`, which stays pure: the votes and the
    scores are read through the ledger's queries.
    """
    config = (task_scoring or load_task_scoring()).get(task)
    if config is None or config.composite is None:
        return None
    votes = ratings_table(ledger, sweep_ids)
    features = vote_features(votes, queries.score_table(ledger, sweep_ids), config.composite,
                             config.gates, task=task)
    return fit_weights(features, min_votes=min_votes, l2=l2, folds=folds, seed=seed,
                       position_bias=position_bias)


def human_ratings(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
                  resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per task: Bradley-Terry ratings (Elo scale, 95 % bootstrap intervals) from the people's
    pairwise votes in the ``ratings`` table, with wins, losses, ties and battles per model."""
    votes = ratings_table(ledger, sweep_ids)
    tables = []
    for task, group in votes.groupby("task", sort=True):
        fitted = bradley_terry(group[["arm_a", "arm_b", "winner"]], resamples=resamples,
                               seed=seed)
        tables.append(fitted.assign(task=task, raters=group["rater"].nunique()))
    if not tables:
        return pd.DataFrame(columns=["task", *BT_COLUMNS, "raters"])
    return pd.concat(tables, ignore_index=True)[["task", *BT_COLUMNS, "raters"]]
