"""Every read the package makes of the ledger, by what it answers.

Why one module: the table layout is known here and in :mod:`pixellab.ledger.schema` only, so a
schema change is one diff, and a reader looking for "where do the report's numbers come from"
finds one file. Each function returns plain values or a DataFrame with the columns its
docstring names; none of them writes. Users still query the file themselves with
:meth:`Ledger.query` (the ledger is the product's memory); the package does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pandas as pd

from pixellab.ledger.database import Ledger


def _in(column: str, values: Sequence[str] | None, joiner: str = "and"
        ) -> tuple[str, list[object]]:
    """`` <joiner> column in (…)`` and its parameter, or nothing when ``values`` is empty."""
    if not values:
        return "", []
    return f" {joiner} {column} in (select unnest(?))", [list(values)]


# -- sweeps -----------------------------------------------------------------------------------


def sweep_ids(ledger: Ledger) -> set[str]:
    """Every sweep the ledger knows."""
    return set(ledger.query("select sweep_id from sweeps")["sweep_id"])


def sweep_spec(ledger: Ledger, sweep_id: str) -> dict[str, Any] | None:
    """The spec a sweep was planned with (as stored), or None for an unknown sweep."""
    frame = ledger.query("select spec from sweeps where sweep_id = ?", [sweep_id])
    return None if frame.empty else dict(json.loads(frame["spec"][0]))


def sweep_specs(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The specs of some sweeps (or all)."""
    where, params = _in("sweep_id", sweep_ids, "where")
    frame = ledger.query(f"select spec from sweeps {where}", params)
    return [dict(json.loads(spec)) for spec in frame["spec"]]


def sweep_request_keys(ledger: Ledger, sweep_id: str) -> list[str]:
    return list(ledger.query("select request_key from sweep_requests where sweep_id = ?",
                             [sweep_id])["request_key"])


def sweep_spent_usd(ledger: Ledger, sweep_id: str) -> float:
    """What the sweep's billed attempts cost so far (a resumed sweep's budget starts there)."""
    return float(ledger.scalar("select coalesce(sum(usd), 0) from costs where sweep_id = ?",
                               [sweep_id]) or 0)


def request_cost(ledger: Ledger, request_key: str) -> tuple[Decimal, Decimal]:
    """(USD, credits) every billed attempt of one request cost, whatever sweep or job ran it."""
    frame = ledger.query("select coalesce(sum(usd), 0) usd, coalesce(sum(credits), 0) credits "
                         "from costs where request_key = ?", [request_key])
    return Decimal(str(frame["usd"][0])), Decimal(str(frame["credits"][0]))


def prompt_hashes(ledger: Ledger, prompt_id: str) -> set[str]:
    """Content hashes a prompt id was used with: more than the current one means it was edited."""
    return set(ledger.query("select distinct prompt_hash from requests where prompt_id = ?",
                            [prompt_id])["prompt_hash"])


# -- requests and their outputs ---------------------------------------------------------------


def request_output(ledger: Ledger, request_key: str) -> tuple[str, str] | None:
    """(model id, output sha256) of a request, or None when it has no output."""
    frame = ledger.query("select model_id, output_sha256 from requests where request_key = ?",
                         [request_key])
    if frame.empty or not isinstance(frame["output_sha256"][0], str):
        return None
    return str(frame["model_id"][0]), str(frame["output_sha256"][0])


def output_media_type(ledger: Ledger, sha256: str) -> str | None:
    value = ledger.scalar("select media_type from outputs where sha256 = ?", [sha256])
    return None if value is None else str(value)


def request_attempts(ledger: Ledger, request_key: str) -> pd.DataFrame:
    """Attempts of one request in order: attempt_no, model_id, status, error_class,
    error_message."""
    return ledger.query(
        """select attempt_no, model_id, status, error_class, error_message from attempts
           where request_key = ? order by started_at, attempt_no""", [request_key])


def succeeded_outputs(ledger: Ledger, sweep_id: str) -> pd.DataFrame:
    """product_id, output_sha256, media_type of a sweep's succeeded requests."""
    return ledger.query(
        """select r.product_id, r.output_sha256, o.media_type from requests r
           join sweep_requests s using (request_key)
           join outputs o on o.sha256 = r.output_sha256
           where s.sweep_id = ? and r.status = 'succeeded'""", [sweep_id])


def request_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (sweep, request): status, winning model, error, cost and latency, and the
    dataset the sweep ran on (its spec's ``dataset``, as written)."""
    where, params = _in("s.sweep_id", sweep_ids)
    return ledger.query(
        f"""select s.sweep_id, sw.spec->>'dataset' as dataset,
                   r.request_key, r.product_id, r.category, r.task, r.arm,
                   r.prompt_id, r.seed,
                   r.status, r.model_id, r.output_sha256, r.error_class, r.error_reason,
                   r.error_message, o.media_type, o.duration_s,
                   coalesce(a.usd, 0)::double as usd, coalesce(a.credits, 0)::double as credits,
                   a.latency_s, coalesce(a.attempts, 0) as attempts
            from requests r join sweep_requests s using (request_key)
            left join sweeps sw on sw.sweep_id = s.sweep_id
            left join outputs o on o.sha256 = r.output_sha256
            left join (select request_key, sum(usd) usd, sum(credits) credits,
                              sum(latency_s) latency_s, count(*) attempts
                       from attempts group by request_key) a using (request_key)
            where true {where} order by r.task, r.category, r.product_id, r.arm""", params)


# -- scores -----------------------------------------------------------------------------------


def score_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Scores of the sweeps' outputs, one row per (output, metric); value NaN when missing."""
    where, params = _in("s.sweep_id", sweep_ids)
    return ledger.query(
        f"""select distinct sc.output_sha256, sc.metric, sc.value, sc.missing_reason
            from scores sc join requests r on r.output_sha256 = sc.output_sha256
            join sweep_requests s using (request_key) where true {where}""", params)


def score_details(ledger: Ledger, metrics: Sequence[str],
                  sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """output_sha256, metric, value, missing_reason and details (parsed) of ``metrics`` for the
    sweeps' outputs: what a metric measured, for the report's explanations."""
    where, params = _in("s.sweep_id", sweep_ids)
    frame = ledger.query(
        f"""select distinct sc.output_sha256, sc.metric, sc.value, sc.missing_reason,
                   sc.details::varchar as details
            from scores sc join requests r on r.output_sha256 = sc.output_sha256
            join sweep_requests s using (request_key)
            where sc.metric in (select unnest(?)) {where}""", [list(metrics), *params])
    frame["details"] = [json.loads(d) if d else {} for d in frame["details"]]
    return frame


def arm_scores(ledger: Ledger, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """task, arm, output_sha256, metric, value, missing_reason of the sweeps' scored outputs."""
    where, params = _in("s.sweep_id", sweep_ids)
    return ledger.query(
        f"""select distinct r.task, r.arm, sc.output_sha256, sc.metric, sc.value,
                   sc.missing_reason
            from scores sc join requests r on r.output_sha256 = sc.output_sha256
            join sweep_requests s using (request_key) where true {where}""", params)


def recorded_scores(ledger: Ledger, sweep_id: str) -> dict[tuple[str, str, str], bool]:
    """(output, metric, scorer version) → whether it was recorded missing, for a sweep's
    outputs: the score pass computes only what is not there yet."""
    frame = ledger.query(
        """select distinct sc.output_sha256, sc.metric, sc.scorer_version,
                  sc.value is null as missing from scores sc
           join requests r on r.output_sha256 = sc.output_sha256
           join sweep_requests s using (request_key) where s.sweep_id = ?""", [sweep_id])
    return {(d, m, v): bool(missing) for d, m, v, missing in frame.itertuples(index=False)}


# -- money ------------------------------------------------------------------------------------


COST_GROUPS = {"sweep_id": "sweep_id", "provider": "provider", "model_id": "model_id",
               "day": "strftime(created_at, '%Y-%m-%d')"}


def costs_by(ledger: Ledger, sweep_ids: Sequence[str] | None = None,
             by: Sequence[str] = ("model_id",)) -> pd.DataFrame:
    """Calls, credits and USD from the ledger's cost rows (one per billed attempt), grouped by
    any of ``sweep_id``, ``provider``, ``model_id`` and ``day`` (UTC)."""
    unknown = [b for b in by if b not in COST_GROUPS]
    if unknown:
        raise ValueError(f"cannot group costs by {unknown}; use {sorted(COST_GROUPS)}")
    where, params = _in("sweep_id", sweep_ids, "where")
    keys = ", ".join(f"{COST_GROUPS[b]} as {b}" for b in by)
    return ledger.query(
        f"""select {keys}, count(*) as calls,
                   coalesce(sum(credits), 0)::double as credits,
                   coalesce(sum(usd), 0)::double as usd,
                   coalesce(sum(case when estimated then usd else 0 end), 0)::double
                     as usd_estimated
            from costs {where} group by all order by usd desc, {", ".join(by)}""", params)


# -- analyses ---------------------------------------------------------------------------------


def unrecorded_analyses(ledger: Ledger, request_keys: Sequence[str]) -> pd.DataFrame:
    """request_key, product_id, input_sha256, model_id, output_sha256, media_type of these
    succeeded ``analyze`` requests whose answer is not in ``analyses`` yet."""
    return ledger.query(
        """select r.request_key, r.product_id, r.input_sha256, r.model_id, r.output_sha256,
                  o.media_type
           from requests r join outputs o on o.sha256 = r.output_sha256
           where r.task = 'analyze' and r.status = 'succeeded'
             and r.request_key in (select unnest(?))
             and r.request_key not in (select request_key from analyses)""",
        [list(request_keys)])


def latest_analyses(ledger: Ledger, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """product id → its most recent analysis (``category``, ``audience``, ``aesthetic``,
    ``suggested_tasks``, ``confidence``, ``model_id``), for prompts to use."""
    if not product_ids or not ledger.path.exists():
        return {}
    frame = ledger.query(
        """select product_id, category, audience, aesthetic, suggested_tasks, confidence,
                  model_id from analyses where product_id in (select unnest(?))
           qualify row_number() over (partition by product_id order by created_at desc) = 1""",
        [list(product_ids)])
    result = {}
    for row in frame.to_dict("records"):
        row["suggested_tasks"] = json.loads(row["suggested_tasks"] or "[]")
        result[str(row.pop("product_id"))] = row
    return result


def analyses_without(ledger: Ledger, sweep_id: str, metric: str) -> pd.DataFrame:
    """output_sha256, product_id, category of a sweep's analyses not yet scored on ``metric``."""
    return ledger.query(
        """select distinct a.output_sha256, a.product_id, a.category from analyses a
           join sweep_requests s using (request_key) where s.sweep_id = ?
             and a.output_sha256 not in (select output_sha256 from scores
                                         where metric = ?)""",
        [sweep_id, metric])


# -- ratings ----------------------------------------------------------------------------------


JUDGE_RATER = "judge:"
"""A judge's raw verdicts are ratings by ``judge:<model id>`` (:mod:`pixellab.judge`); every
reading of people's votes leaves them out."""
_PEOPLE = f"rater not like '{JUDGE_RATER}%'"


def has_ratings(ledger: Ledger) -> bool:
    """Whether people have voted (a judge's verdicts do not count)."""
    return bool(ledger.scalar(f"select count(*) from ratings where {_PEOPLE}"))


def rating_count(ledger: Ledger, rater: str) -> int:
    """How many ratings ``rater`` has stored, all sweeps together."""
    return int(ledger.scalar("select count(*) from ratings where rater = ?", [rater]) or 0)


def rated_pairs(ledger: Ledger, rater: str) -> pd.DataFrame:
    """task, output_a, output_b of every pair ``rater`` rated."""
    return ledger.query("select task, output_a, output_b from ratings where rater = ?", [rater])


def ratings(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
            rater: str | None = None, judges: bool = False) -> pd.DataFrame:
    """Stored ratings, oldest first, optionally of some sweeps and one rater, with
    ``preferred``: the arm the vote favoured, or ``tie``. People's votes, or with ``judges``
    the judges' raw verdicts."""
    where, params = _in("sweep_id", sweep_ids)
    where += f" and rater like '{JUDGE_RATER}%'" if judges else f" and {_PEOPLE}"
    if rater:
        where += " and rater = ?"
        params.append(rater)
    return ledger.query(
        f"""select rating_id, rater, rated_at, task, category, product_id, arm_a, arm_b, winner,
                   case winner when 'a' then arm_a when 'b' then arm_b else 'tie' end
                     as preferred,
                   output_a, output_b, sweep_id, comment
            from ratings where true {where} order by rated_at, rating_id""", params)


def judge_results(ledger: Ledger, judge_sweep_ids: Sequence[str]) -> pd.DataFrame:
    """The judge calls of the judge sweeps: each request's params (what was shown, in order),
    its status, its model and its output; with what the calls cost."""
    where, params = _in("s.sweep_id", judge_sweep_ids)
    return ledger.query(
        f"""select r.request_key, r.product_id, r.category, r.params, r.status, r.model_id,
                   r.output_sha256, o.media_type, s.sweep_id,
                   (select coalesce(sum(c.usd), 0) from costs c
                     where c.request_key = r.request_key) as usd
            from requests r join sweep_requests s using (request_key)
            left join outputs o on o.sha256 = r.output_sha256
            where r.task = 'judge' {where}""", params)
