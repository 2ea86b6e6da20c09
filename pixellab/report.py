"""What the report notebook shows, computed from the ledger: tables and image grids.

The notebook stays thin; everything here is tested in the package. All functions take a
:class:`~pixellab.ledger.Ledger` and sweep ids and return DataFrames or HTML strings, so the same
numbers appear in the CLI summary, the notebook and any script.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pixellab.errors import InvalidInputImage, PixellabError
from pixellab.ledger import Ledger
from pixellab.ratings import ratings_table
from pixellab.scoring import LOWER_IS_BETTER, TaskScoring, load_task_scoring
from pixellab.scoring.composite import CompositeUsed, composite_scores
from pixellab.scoring.fitted import DEFAULT_L2, FittedWeights, fit_weights, vote_features
from pixellab.stats import wilson_interval
from pixellab.store import Store
from pixellab.validate import decode_image, load_input_image


def _sweep_filter(sweep_ids: Sequence[str] | None) -> tuple[str, list[object]]:
    if not sweep_ids:
        return "", []
    return " and s.sweep_id in (select unnest(?))", [list(sweep_ids)]


def request_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (sweep, request): status, winning model, error, cost and latency."""
    where, params = _sweep_filter(sweep_ids)
    return ledger.query(
        f"""select s.sweep_id, r.request_key, r.product_id, r.category, r.task, r.arm,
                   r.prompt_id, r.seed,
                   r.status, r.model_id, r.output_sha256, r.error_class, r.error_reason,
                   r.error_message, o.media_type,
                   coalesce(a.usd, 0)::double as usd, coalesce(a.credits, 0)::double as credits,
                   a.latency_s, coalesce(a.attempts, 0) as attempts
            from requests r join sweep_requests s using (request_key)
            left join outputs o on o.sha256 = r.output_sha256
            left join (select request_key, sum(usd) usd, sum(credits) credits,
                              sum(latency_s) latency_s, count(*) attempts
                       from attempts group by request_key) a using (request_key)
            where true {where} order by r.task, r.category, r.product_id, r.arm""", params)


def score_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Scores of the sweeps' outputs, one row per (output, metric); value NaN when missing."""
    where, params = _sweep_filter(sweep_ids)
    return ledger.query(
        f"""select distinct sc.output_sha256, sc.metric, sc.value, sc.missing_reason
            from scores sc join requests r on r.output_sha256 = sc.output_sha256
            join sweep_requests s using (request_key) where true {where}""", params)


def scored_requests(ledger: Ledger, sweep_ids: Sequence[str] | None = None,
                    task_scoring: dict[str, TaskScoring] | None = None) -> pd.DataFrame:
    """Requests with one column per metric, plus ``passed`` (succeeded, every gate metric
    present and holding) and ``score``: the task's composite (see
    :mod:`pixellab.scoring.composite`: 0 for a model's failure, NaN when not measurable)."""
    task_scoring = task_scoring or load_task_scoring()
    requests = request_table(ledger, sweep_ids)
    scores = score_table(ledger, sweep_ids)
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
    where, params = _sweep_filter(sweep_ids)
    rows = ledger.query(
        f"""select distinct r.task, r.arm, sc.output_sha256, sc.metric, sc.value,
                   sc.missing_reason
            from scores sc join requests r on r.output_sha256 = sc.output_sha256
            join sweep_requests s using (request_key) where true {where}""", params)
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
    accepted output, median latency."""
    columns = ["task", "category", by, "n", "succeeded", "passed", "pass_rate", "pass_low",
               "pass_high", "mean_score", "usd", "usd_per_request", "usd_per_accepted",
               "latency_p50_s"]
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


COST_GROUPS = {"sweep_id": "sweep_id", "provider": "provider", "model_id": "model_id",
               "day": "strftime(created_at, '%Y-%m-%d')"}


def costs_by(ledger: Ledger, sweep_ids: Sequence[str] | None = None,
             by: Sequence[str] = ("model_id",)) -> pd.DataFrame:
    """Calls, credits and USD from the ledger's cost rows (one per billed attempt), grouped by
    any of ``sweep_id``, ``provider``, ``model_id`` and ``day`` (UTC)."""
    unknown = [b for b in by if b not in COST_GROUPS]
    if unknown:
        raise ValueError(f"cannot group costs by {unknown}; use {sorted(COST_GROUPS)}")
    where, params = ("", [])
    if sweep_ids:
        where, params = "where sweep_id in (select unnest(?))", [list(sweep_ids)]
    keys = ", ".join(f"{COST_GROUPS[b]} as {b}" for b in by)
    return ledger.query(
        f"""select {keys}, count(*) as calls,
                   coalesce(sum(credits), 0)::double as credits,
                   coalesce(sum(usd), 0)::double as usd,
                   coalesce(sum(case when estimated then usd else 0 end), 0)::double
                     as usd_estimated
            from costs {where} group by all order by usd desc, {", ".join(by)}""", params)


FORMATS = {"pass_rate": "{:.0%}", "pass_low": "{:.0%}", "pass_high": "{:.0%}",
           "share": "{:.0%}", "mean_score": "{:.3f}", "usd": "${:.4f}",
           "usd_per_request": "${:.4f}", "usd_per_accepted": "${:.4f}",
           "usd_estimated": "${:.4f}", "credits": "{:.2f}", "latency_p50_s": "{:.2f} s",
           "latency_p95_s": "{:.2f} s", "score": "{:.3f}", "score_low": "{:.3f}",
           "score_high": "{:.3f}"}


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md(text: object) -> str:
    """``text`` (a category, a product id, a report title: anything a dataset or a user wrote)
    safe inside Markdown: HTML escaped, Markdown punctuation backslash-escaped, one line. A
    category ``kitchen<img onerror=…>`` or ``[x](javascript:…)`` prints as written instead of
    becoming markup in the report."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(one_line, quote=False))


def styled(table: pd.DataFrame) -> Any:
    """A table as a merchandiser reads it: text left, numbers right, no index, '—' for missing
    (never a zero), money and rates formatted."""
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    long = [c for c in text if table[c].astype(str).str.len().max() > 40]
    formats = {c: f for c, f in FORMATS.items() if c in table.columns}
    # escape: pandas' Styler writes cell text as raw HTML by default.
    return (table.style.hide(axis="index").format(formats, na_rep="—", escape="html")
            .set_properties(subset=[c for c in text if c not in long],
                            **{"text-align": "left", "white-space": "nowrap"})
            .set_properties(subset=long, **{"text-align": "left", "white-space": "normal",
                                            "min-width": "14em", "max-width": "30em"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))


# -- images -----------------------------------------------------------------------------------


def thumbnail_data_uri(image: Image.Image, max_side: int = 220) -> str:
    """A small embedded image: JPEG for opaque images, PNG where alpha must show."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if "A" in image.getbands():
        image.save(buffer, format="PNG", optimize=True)
        media = "image/png"
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=82)
        media = "image/jpeg"
    return f"data:{media};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def full_data_uri(image: Image.Image, max_side: int = 1024) -> str:
    """The enlarged view: WebP (alpha included) at up to ``max_side`` pixels.

    Why WebP, 1024 px and quality 72: the page embeds every image to stay one self-contained
    file that opens on a phone; a 1600 px PNG packshot or cut-out weighs ~1 MB, an 800 px
    photo as WebP at quality 82 ~40 KB and at 72 ~15 KB, and the difference is not visible
    at screen size. The whole demo report is then ~8 MB instead of ~15 MB."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=72, method=2)  # method 4: 1.4x slower, same size
    return f"data:image/webp;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def zoomable_html(image: Image.Image, *, alt: str, caption: str = "",
                  max_side: int = 220) -> str:
    """A thumbnail that opens the full image over the page on click (no script: a <details>
    whose <summary> holds both; the report template styles it)."""
    size = f"{image.width}×{image.height}"
    label = html.escape(f"{alt} · {size}" + (f" · {caption}" if caption else ""))
    return (f"<details class='plx-zoom'><summary>"
            f"<img src='{thumbnail_data_uri(image, max_side)}' alt='{html.escape(alt)}' "
            f"title='click to enlarge ({size})'>"
            f"<span class='plx-full'><img src='{full_data_uri(image)}' alt='{html.escape(alt)}"
            f" (full size)'><span>{label} — click to close</span></span>"
            f"</summary></details>")


GRID_CSS = """
<style>
.plx-grid { border-collapse: collapse; font: 12px system-ui, sans-serif; }
.plx-grid { margin: 0; }
/* doubled class: outranks JupyterLab's ":not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td" */
table.plx-grid.plx-grid th, table.plx-grid.plx-grid td {
  padding: 4px; text-align: center; vertical-align: top; }
.plx-grid summary > img, .plx-thumbs summary > img {
  max-width: 200px; max-height: 200px; display: block; margin: auto;
  background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
@media (max-width: 700px) {
  .plx-grid summary > img { max-width: 120px; max-height: 120px; } }
.plx-cap { color: #555; max-width: 200px; }
.plx-fail { color: #b00020; max-width: 200px; font-size: 11px; }
.plx-pass { color: #1b7f3b; }
/* Click a thumbnail, see the full image; click again (or Enter) to close. No script: the
   overlay lives inside the <summary> of a <details>, so it works in the static page too. */
details.plx-zoom { display: inline-block; }
details.plx-zoom > summary { list-style: none; cursor: zoom-in; }
details.plx-zoom > summary::-webkit-details-marker { display: none; }
details.plx-zoom .plx-full { display: none; }
details.plx-zoom[open] .plx-full {
  display: flex; position: fixed; inset: 0; z-index: 1000; cursor: zoom-out;
  align-items: center; justify-content: center; flex-direction: column;
  background: rgba(20, 20, 20, 0.88); }
details.plx-zoom[open] .plx-full img {
  max-width: 96vw; max-height: 88vh; width: auto; height: auto;
  background: repeating-conic-gradient(#ccc 0% 25%, #fff 0% 50%) 50% / 20px 20px; }
details.plx-zoom .plx-full span { color: #eee; font: 13px system-ui, sans-serif; margin: 6px; }
</style>
"""


def image_grid_html(frame: pd.DataFrame, store: Store, *, task: str, category: str,
                    product_images: dict[str, str], max_products: int = 6,
                    by: str = "arm") -> str:
    """Input vs each arm's (or each ``by`` value's, e.g. prompt version's) output, one row per
    product, with the score or the failure; every image enlarges on click."""
    subset = frame[(frame["task"] == task) & (frame["category"] == category)]
    arms = sorted(subset[by].dropna().unique())
    products = sorted(subset["product_id"].unique())[:max_products]
    head = "".join(f"<th>{html.escape(a)}</th>" for a in arms)
    rows = []
    for product_id in products:
        cells = [f"<td><b>{html.escape(product_id)}</b></td>",
                 _image_cell(product_images.get(product_id), None)]
        for arm in arms:
            match = subset[(subset["product_id"] == product_id) & (subset[by] == arm)]
            if match.empty:
                cells.append("<td></td>")
                continue
            row = match.iloc[0]
            cells.append(_output_cell(row, store))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (GRID_CSS + f"<table class='plx-grid'><tr><th>product</th><th>input</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _image_cell(path: str | None, caption: str | None) -> str:
    if not path:
        return "<td>—</td>"
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError as exc:
        return f"<td class='plx-fail'>input unreadable: {html.escape(str(exc))}</td>"
    return _input_cell(path, stamp, caption)


@functools.lru_cache(maxsize=256)
def _input_cell(path: str, stamp: int, caption: str | None) -> str:
    """An input photo's cell, made once per file version: the same photo heads the grids of
    every task of its category, and encoding it is most of a grid's cost."""
    try:
        image = load_input_image(path)
    except InvalidInputImage as exc:
        return f"<td class='plx-fail'>input unreadable: {html.escape(str(exc))}</td>"
    cap = f"<div class='plx-cap'>{html.escape(caption)}</div>" if caption else ""
    return f"<td>{zoomable_html(image, alt='input')}{cap}</td>"


def _output_cell(row: pd.Series, store: Store) -> str:
    if row["status"] != "succeeded" or not isinstance(row["output_sha256"], str):
        message = f"{row['error_class']}: {row['error_message']}"
        return f"<td class='plx-fail'>✗ {html.escape(str(message))}</td>"
    try:
        image = decode_image(store.get(row["output_sha256"], row["media_type"]))
    except (PixellabError, OSError) as exc:
        return (f"<td class='plx-fail'>✗ output unreadable: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}</td>")
    score = row["score"]
    verdict = ("<span class='plx-pass'>✓ pass</span>" if row["passed"]
               else "<span class='plx-fail'>✗ gate</span>")
    label = "" if pd.isna(score) else f"score {score:.3g} · "
    return (f"<td>{zoomable_html(image, alt=str(row['arm']), caption=str(row['product_id']))}"
            f"<div class='plx-cap'>{label}{verdict}</div></td>")


def product_images(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> dict[str, str]:
    """product id → source image path, from the datasets the sweeps were planned on."""
    import json

    from pixellab.datasets import load_dataset
    from pixellab.errors import ConfigError

    where, params = ("", [])
    if sweep_ids:
        where, params = "where sweep_id in (select unnest(?))", [list(sweep_ids)]
    specs = ledger.query(f"select spec from sweeps {where}", params)
    images: dict[str, str] = {}
    for spec in specs["spec"]:
        try:
            dataset = load_dataset(json.loads(spec)["dataset"])
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
    scores are read through the ratings' and the report's own queries.
    """
    config = (task_scoring or load_task_scoring()).get(task)
    if config is None or config.composite is None:
        return None
    votes = ratings_table(ledger, sweep_ids)
    features = vote_features(votes, score_table(ledger, sweep_ids), config.composite,
                             config.gates, task=task)
    return fit_weights(features, min_votes=min_votes, l2=l2, folds=folds, seed=seed,
                       position_bias=position_bias)


def human_ratings(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
                  resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per task: Bradley-Terry ratings (Elo scale, 95 % bootstrap intervals) from the people's
    pairwise votes in the ``ratings`` table, with wins, losses, ties and battles per model."""
    from pixellab.stats import BT_COLUMNS, bradley_terry

    votes = ratings_table(ledger, sweep_ids)
    tables = []
    for task, group in votes.groupby("task", sort=True):
        fitted = bradley_terry(group[["arm_a", "arm_b", "winner"]], resamples=resamples,
                               seed=seed)
        tables.append(fitted.assign(task=task, raters=group["rater"].nunique()))
    if not tables:
        return pd.DataFrame(columns=["task", *BT_COLUMNS, "raters"])
    return pd.concat(tables, ignore_index=True)[["task", *BT_COLUMNS, "raters"]]
