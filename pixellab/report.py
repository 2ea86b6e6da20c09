"""What the report notebook shows, computed from the ledger: tables and image grids.

The notebook stays thin; everything here is tested in the package. All functions take a
:class:`~pixellab.ledger.Ledger` and sweep ids and return DataFrames or HTML strings, so the same
numbers appear in the CLI summary, the notebook and any script.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from pixellab.ledger import Ledger
from pixellab.scoring import LOWER_IS_BETTER, TaskScoring, load_task_scoring
from pixellab.store import Store
from pixellab.validate import decode_image


def _sweep_filter(sweep_ids: Sequence[str] | None) -> tuple[str, list[object]]:
    if not sweep_ids:
        return "", []
    return " and s.sweep_id in (select unnest(?))", [list(sweep_ids)]


def request_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (sweep, request): status, winning model, error, cost and latency."""
    where, params = _sweep_filter(sweep_ids)
    return ledger.query(
        f"""select s.sweep_id, r.request_key, r.product_id, r.category, r.task, r.arm,
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
    """Requests with one column per metric, plus ``score`` (the task's primary metric) and
    ``passed`` (succeeded, every metric present and every gate holds)."""
    task_scoring = task_scoring or load_task_scoring()
    requests = request_table(ledger, sweep_ids)
    scores = score_table(ledger, sweep_ids)
    if not scores.empty:
        wide = scores.pivot_table(index="output_sha256", columns="metric", values="value",
                                  aggfunc="first", dropna=False)
        requests = requests.merge(wide, how="left", left_on="output_sha256", right_index=True)
    scores_primary, passed = [], []
    for row in requests.itertuples(index=False):
        config = task_scoring.get(row.task)
        primary = config.primary if config else None
        value = getattr(row, primary, None) if primary else None
        scores_primary.append(value if value is not None else math.nan)
        ok = row.status == "succeeded"
        for metric, required in (config.gates.items() if config else []):
            measured = getattr(row, metric, None)
            ok = ok and measured is not None and not pd.isna(measured) and measured == required
        passed.append(ok)
    requests["score"] = pd.Series(scores_primary, index=requests.index, dtype="float64")
    requests["passed"] = passed
    return requests


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


def leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """Per category × task × arm: n, success rate, pass rate, mean score, cost, latency."""
    if frame.empty:
        return pd.DataFrame(columns=["task", "category", "arm", "n", "succeeded", "pass_rate",
                                     "mean_score", "usd", "usd_per_accepted", "latency_p50_s"])
    grouped = frame.groupby(["task", "category", "arm"], dropna=False)
    table = grouped.agg(
        n=("request_key", "count"),
        succeeded=("status", lambda s: int((s == "succeeded").sum())),
        pass_rate=("passed", "mean"),
        mean_score=("score", "mean"),
        usd=("usd", "sum"),
        latency_p50_s=("latency_s", "median"),
    ).reset_index()
    accepted = table["pass_rate"] * table["n"]
    table["usd_per_accepted"] = np.where(accepted > 0, table["usd"] / accepted.where(accepted > 0),
                                         np.nan)
    return table.sort_values(["task", "category", "mean_score"],
                             ascending=[True, True, False]).reset_index(drop=True)


def task_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task × arm with every category pooled: the one-glance answer before the details."""
    if frame.empty:
        return pd.DataFrame(columns=["task", "arm", "n", "pass_rate", "mean_score", "usd"])
    table = frame.groupby(["task", "arm"], dropna=False).agg(
        n=("request_key", "count"), products=("product_id", "nunique"),
        pass_rate=("passed", "mean"), mean_score=("score", "mean"), usd=("usd", "sum"),
        latency_p50_s=("latency_s", "median")).reset_index()
    return table.sort_values(["task", "mean_score"], ascending=[True, False]).reset_index(drop=True)


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Requests that did not produce an accepted output, with the reason in words."""
    failed = frame[~frame["passed"]].copy()
    reasons = []
    for row in failed.itertuples(index=False):
        if row.status != "succeeded":
            reasons.append(f"{row.error_class}: {row.error_message}")
        else:
            reasons.append("output failed a gate (see its scores)")
    failed["reason"] = reasons
    return failed[["task", "category", "product_id", "arm", "status", "error_reason", "reason"]]


def costs(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Spend by sweep and model: calls, credits, USD, how much of it is an estimate."""
    where, params = ("", [])
    if sweep_ids:
        where, params = "where sweep_id in (select unnest(?))", [list(sweep_ids)]
    return ledger.query(
        f"""select sweep_id, provider, model_id, count(*) as calls,
                   sum(credits)::double as credits, sum(usd)::double as usd,
                   sum(case when estimated then usd else 0 end)::double as usd_estimated
            from costs {where} group by all order by usd desc, sweep_id, model_id""", params)


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


GRID_CSS = """
<style>
.plx-grid { border-collapse: collapse; font: 12px system-ui, sans-serif; }
.plx-grid th, .plx-grid td { padding: 4px; text-align: center; vertical-align: top; }
.plx-grid img { max-width: 200px; max-height: 200px; display: block; margin: auto;
  background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
.plx-cap { color: #555; max-width: 200px; }
.plx-fail { color: #b00020; max-width: 200px; font-size: 11px; }
.plx-pass { color: #1b7f3b; }
</style>
"""


def image_grid_html(frame: pd.DataFrame, store: Store, *, task: str, category: str,
                    product_images: dict[str, str], max_products: int = 6) -> str:
    """Input vs each arm's output, one row per product, with the score or the failure."""
    subset = frame[(frame["task"] == task) & (frame["category"] == category)]
    arms = sorted(subset["arm"].unique())
    products = sorted(subset["product_id"].unique())[:max_products]
    head = "".join(f"<th>{html.escape(a)}</th>" for a in arms)
    rows = []
    for product_id in products:
        cells = [f"<td><b>{html.escape(product_id)}</b></td>",
                 _image_cell(product_images.get(product_id), None)]
        for arm in arms:
            match = subset[(subset["product_id"] == product_id) & (subset["arm"] == arm)]
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
        with open(path, "rb") as handle:
            uri = thumbnail_data_uri(decode_image(handle.read()))
    except Exception as exc:
        return f"<td class='plx-fail'>input unreadable: {html.escape(str(exc))}</td>"
    cap = f"<div class='plx-cap'>{html.escape(caption)}</div>" if caption else ""
    return f"<td><img src='{uri}' alt='input'>{cap}</td>"


def _output_cell(row: pd.Series, store: Store) -> str:
    if row["status"] != "succeeded" or not isinstance(row["output_sha256"], str):
        message = f"{row['error_class']}: {row['error_message']}"
        return f"<td class='plx-fail'>✗ {html.escape(str(message))}</td>"
    image = decode_image(store.get(row["output_sha256"], row["media_type"]))
    score = row["score"]
    verdict = ("<span class='plx-pass'>✓ pass</span>" if row["passed"]
               else "<span class='plx-fail'>✗ gate</span>")
    label = "" if pd.isna(score) else f"score {score:.3g} · "
    return (f"<td><img src='{thumbnail_data_uri(image)}' alt='output'>"
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
        images.update({p.id: str(p.image) for p in dataset.products})
    return images
