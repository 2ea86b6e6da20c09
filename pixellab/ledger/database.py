"""The ledger file: short-lived connections, transactions, migrations and the statements the
runner and sweep write (see :mod:`pixellab.ledger` for why connections never stay open)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pixellab.errors import DataRemoved, LedgerError, OutcomeUnknown
from pixellab.ledger.journal import SubmitJournal
from pixellab.ledger.rows import Row, Statement, as_json, coalesce, money, now
from pixellab.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from pixellab.redact import redact

PLANNED_COLUMNS = ("request_key", "product_id", "category", "task", "arm", "chain", "prompt_id",
                   "prompt_hash", "prompt_text", "params", "seed", "input_sha256")
"""What planning writes of a ``requests`` row (:meth:`pixellab.requests.Request.row`); the
rest (status, outcome, times) the runner fills in."""

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


BLOCKING_REASONS = frozenset({OutcomeUnknown.reason, DataRemoved.reason})
"""A model whose latest attempt ended so was paid for without a usable answer: creating it again
is the user's explicit call (``--resubmit``)."""


@dataclass(frozen=True)
class ResumeState:
    """See :meth:`Ledger.resume_state`."""

    unfinished: dict[str, dict[str, Any]]
    blocked: dict[str, dict[str, str]]



class Ledger:
    """Short-lived connections to one DuckDB file; see the module docstring for why."""

    def __init__(self, path: str | Path, *, read_only: bool = False,
                 lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self._write_lock = threading.Lock()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migrate()

    # -- connections -------------------------------------------------------------------------

    @property
    def waiting_marker(self) -> Path:
        """``<ledger>.waiting``: left by :meth:`open` while it waits for the file's lock, so that
        a sweep's :class:`~pixellab.ledger.LedgerWriter`, which keeps the file open under load,
        lets go of it at its next commit instead of after ``max_hold_s``."""
        return self.path.with_name(self.path.name + ".waiting")

    def open(self, *, read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
        """A new connection; retries while another process holds the file's lock (at most
        ~0.1 s apart: a writer that lets go for a reader stays away longer than that)."""
        read_only = self.read_only if read_only is None else read_only
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.005
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if not any(m in str(exc) for m in _LOCK_MARKERS):
                    raise LedgerError(f"{self.path}: cannot open ledger: {exc}") from None
                if time.monotonic() > deadline:
                    raise LedgerError(
                        f"{self.path}: still locked by another process after "
                        f"{self.lock_timeout_s:.0f} s (a notebook holding a connection?)") from None
                self._mark_waiting()
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.05)

    def _mark_waiting(self) -> None:
        try:
            os.close(os.open(self.waiting_marker, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError:
            pass  # a folder this process cannot write: the writer lets go within max_hold_s

    @contextmanager
    def connect(self, *, read_only: bool | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open, yield and close."""
        connection = self.open(read_only=read_only)
        try:
            yield connection
        finally:
            connection.close()

    def write(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction: all of them are durable, or none."""
        if self.read_only:
            raise LedgerError(f"{self.path}: opened read-only")
        if not statements:
            return
        with self._write_lock, self.connect() as con:
            self.execute_in_transaction(con, statements)

    def record_plan(self, sweep: Statement, sweep_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """The sweep row, every planned request (new ones only) and its link to the sweep, in
        one transaction and two bulk statements: planning 20,000 requests row by row would cost
        DuckDB ~80 s."""
        columns = list(PLANNED_COLUMNS)
        frame = pd.DataFrame([{c: as_json(r[c]) if c in ("chain", "params") else r[c]
                               for c in columns} for r in rows], columns=columns)
        frame = frame.drop_duplicates("request_key")
        frame["seed"] = frame["seed"].astype("Int64")
        stamp = now()
        with self._write_lock, self.connect() as con:
            con.register("planned_requests", frame)
            self.execute_in_transaction(con, [
                sweep,
                (f"""insert into requests ({", ".join(columns)}, status, created_at, updated_at)
                     select {", ".join(columns)}, 'pending', ?, ? from planned_requests
                     on conflict (request_key) do nothing""", [stamp, stamp]),
                ("""insert into sweep_requests select ?, request_key from planned_requests
                    on conflict do nothing""", [sweep_id]),
            ])
            con.unregister("planned_requests")

    @staticmethod
    def execute_in_transaction(con: duckdb.DuckDBPyConnection,
                               statements: Sequence[Statement]) -> None:
        con.execute("begin transaction")
        try:
            for sql, params in coalesce(statements):
                con.execute(sql, list(params))
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run a read query and return a DataFrame; safe while a sweep is writing."""
        if not self.path.exists():
            raise LedgerError(f"{self.path}: no ledger here yet (run a sweep first)")
        with self.connect() as con:
            return con.execute(sql, list(params)).df()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.connect() as con:
            row = con.execute(sql, list(params)).fetchone()
        return row[0] if row else None

    # -- schema ------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the file to :data:`SCHEMA_VERSION`; refuse a file written by a newer pixellab."""
        with self._write_lock, self.connect(read_only=False) as con:
            con.execute("create table if not exists schema_migrations ("
                        "version integer primary key, applied_at timestamp)")
            current = con.execute("select coalesce(max(version), 0) from schema_migrations"
                                  ).fetchone()[0]  # type: ignore[index]
            if current > SCHEMA_VERSION:
                raise LedgerError(f"{self.path}: schema v{current} is newer than this pixellab "
                                  f"(v{SCHEMA_VERSION}); upgrade pixellab")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                con.execute("begin transaction")
                for sql in MIGRATIONS[version]:
                    con.execute(sql)
                con.execute("insert into schema_migrations values (?, ?)", [version, now()])
                con.execute("commit")
        return SCHEMA_VERSION

    # -- statements the runner and sweep use ----------------------------------------------------
    # They return statements instead of executing, so callers can group them in one transaction.

    @staticmethod
    def upsert_sweep(sweep_id: str, name: str, task: str, spec: dict[str, Any],
                     budget_usd: float | None, status: str, message: str = "") -> Statement:
        return (
            """insert into sweeps values (?, ?, ?, ?, ?, ?, ?, ?, ?)
               on conflict (sweep_id) do update set spec = excluded.spec,
                 budget_usd = excluded.budget_usd, status = excluded.status,
                 message = excluded.message, updated_at = excluded.updated_at""",
            [sweep_id, name, task, as_json(spec), money(budget_usd), status, message, now(),
             now()],
        )

    @staticmethod
    def plan_request(row: dict[str, Any]) -> Statement:
        """One request outside any sweep (``pixellab generate``); a no-op if it exists."""
        values = [as_json(row[c]) if c in ("chain", "params") else row[c]
                  for c in PLANNED_COLUMNS]
        return (f"""insert into requests ({", ".join(PLANNED_COLUMNS)}, status, created_at,
                                          updated_at)
                    values ({", ".join("?" * (len(PLANNED_COLUMNS) + 3))})
                    on conflict (request_key) do nothing""",
                [*values, "pending", now(), now()])

    @staticmethod
    def set_sweep_status(sweep_id: str, status: str, message: str = "") -> Statement:
        return ("update sweeps set status = ?, message = ?, updated_at = ? where sweep_id = ?",
                [status, redact(message), now(), sweep_id])

    @staticmethod
    def finish_request(request_key: str, *, status: str, model_id: str | None = None,
                       output_sha256: str | None = None, error_class: str | None = None,
                       error_reason: str | None = None,
                       error_message: str | None = None) -> Statement:
        return Row("requests", ("request_key", "status", "model_id", "output_sha256",
                                "error_class", "error_reason", "error_message", "updated_at"),
                   (request_key, status, model_id, output_sha256, error_class, error_reason,
                    redact(error_message), now()), key=("request_key",), update=True)

    @staticmethod
    def start_attempt(attempt_id: str, request_key: str, sweep_id: str | None, attempt_no: int,
                      provider: str, model_id: str, *, status: str = "started") -> Row:
        """``status`` is ``submitting`` for a create that may bill: until the job id is
        recorded, a crash leaves this row for the next run to settle (see
        :meth:`resume_state`); ``started`` where nothing is billed."""
        return Row("attempts", ("attempt_id", "request_key", "sweep_id", "attempt_no",
                                "provider", "model_id", "status", "started_at"),
                   (attempt_id, request_key, sweep_id, attempt_no, provider, model_id, status,
                    now()), key=("attempt_id",))

    @staticmethod
    def set_provider_job(attempt_id: str, provider_job_id: str,
                         context: dict[str, str] | None = None) -> Statement:
        """The provider accepted the create: the job to poll if the run is cut short."""
        return Row("attempts", ("attempt_id", "provider_job_id", "provider_context", "status"),
                   (attempt_id, provider_job_id, as_json(context or {}), "started"),
                   key=("attempt_id",), update=True)

    @staticmethod
    def finish_attempt(attempt_id: str, *, status: str, latency_s: float | None,
                       credits: float | None = None, usd: float | None = None,
                       cost_estimated: bool = False, output_sha256: str | None = None,
                       provider_job_id: str | None = None, error_class: str | None = None,
                       error_reason: str | None = None, error_message: str | None = None,
                       retryable: bool | None = None) -> Statement:
        return Row("attempts", ("attempt_id", "status", "finished_at", "latency_s", "credits",
                                "usd", "cost_estimated", "output_sha256", "provider_job_id",
                                "error_class", "error_reason", "error_message", "retryable"),
                   (attempt_id, status, now(), latency_s, money(credits), money(usd),
                    cost_estimated, output_sha256, provider_job_id, error_class, error_reason,
                    redact(error_message), retryable),
                   key=("attempt_id",), update=True, keep=frozenset({"provider_job_id"}))

    @staticmethod
    def record_cost(attempt_id: str, request_key: str, sweep_id: str | None, provider: str,
                    model_id: str, credits: float, usd: float, estimated: bool) -> Statement:
        return Row("costs", ("attempt_id", "request_key", "sweep_id", "provider", "model_id",
                             "credits", "usd", "estimated", "created_at"),
                   (attempt_id, request_key, sweep_id, provider, model_id, money(credits),
                    money(usd), estimated, now()), key=("attempt_id",), ignore_conflict=True)

    @staticmethod
    def record_output(sha256: str, media_type: str, width: int | None, height: int | None,
                      size: int, duration_s: float | None = None) -> Statement:
        return Row("outputs", ("sha256", "media_type", "width", "height", "bytes", "duration_s",
                               "created_at"),
                   (sha256, media_type, width, height, size, duration_s, now()),
                   key=("sha256",), ignore_conflict=True)

    @staticmethod
    def record_score(output_sha256: str, metric: str, scorer_version: str, value: float | None,
                     missing_reason: str | None, details: dict[str, Any]) -> Statement:
        return Row("scores", ("output_sha256", "metric", "scorer_version", "value",
                              "missing_reason", "details", "created_at"),
                   (output_sha256, metric, scorer_version, value, missing_reason,
                    as_json(details), now()),
                   key=("output_sha256", "metric", "scorer_version"), ignore_conflict=True)

    @staticmethod
    def record_drop(sweep_id: str, arm: str, *, look: int, products: int, leader: str,
                    difference: tuple[float, float, float], p_value: float, threshold: float,
                    reason: str) -> Row:
        """An adaptive sweep stopped running ``arm``; the first record of a drop stands (a
        resumed sweep finds the same drop again)."""
        return Row("adaptive_drops", ("sweep_id", "arm", "look", "products", "leader",
                                      "difference", "difference_low", "difference_high",
                                      "p_value", "threshold", "reason", "created_at"),
                   (sweep_id, arm, look, products, leader, *difference, p_value, threshold,
                    reason, now()),
                   key=("sweep_id", "arm"), ignore_conflict=True)

    def adaptive_drops(self, sweep_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Every model adaptive sweeps dropped, by sweep and look (none from a read-only view
        of a ledger older than the table)."""
        if not self.scalar("select count(*) from information_schema.tables "
                           "where table_name = 'adaptive_drops'"):
            return pd.DataFrame(columns=["sweep_id", "task", "arm", "look", "products", "leader",
                                         "difference", "difference_low", "difference_high",
                                         "p_value", "threshold", "reason"])
        where, params = ("", [])
        if sweep_ids:
            where, params = "where d.sweep_id in (select unnest(?))", [list(sweep_ids)]
        return self.query(f"""select d.sweep_id, s.task, d.arm, d.look, d.products, d.leader,
                                     d.difference, d.difference_low, d.difference_high,
                                     d.p_value, d.threshold, d.reason
                              from adaptive_drops d join sweeps s using (sweep_id) {where}
                              order by d.sweep_id, d.look, d.arm""", params)

    @staticmethod
    def forget_missing_score(output_sha256: str, metric: str, scorer_version: str) -> Statement:
        """Drop a score recorded missing, so that a score computed now can take its place."""
        return ("""delete from scores where output_sha256 = ? and metric = ?
                     and scorer_version = ? and value is null""",
                [output_sha256, metric, scorer_version])

    @staticmethod
    def record_analysis(request_key: str, product_id: str, input_sha256: str, model_id: str,
                        *, category: str, audience: str, aesthetic: str,
                        suggested_tasks: Sequence[str], confidence: float,
                        output_sha256: str) -> Statement:
        """One parsed ``analyze`` answer; the first record of a request stands."""
        return ("""insert into analyses values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   on conflict (request_key) do nothing""",
                [request_key, product_id, input_sha256, model_id, category, audience,
                 aesthetic, as_json(list(suggested_tasks)), confidence, output_sha256, now()])

    @staticmethod
    def record_rating(rating_id: str, rater: str, *, task: str, category: str, product_id: str,
                      output_a: str, output_b: str, arm_a: str, arm_b: str, winner: str,
                      sweep_id: str, comment: str | None) -> Statement:
        """One pairwise vote (``output_a`` was shown on the left)."""
        return ("""insert into ratings (rating_id, rater, rated_at, task, category, product_id,
                                        output_a, output_b, arm_a, arm_b, winner, sweep_id,
                                        comment)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [rating_id, rater, now(), task, category, product_id, output_a, output_b,
                 arm_a, arm_b, winner, sweep_id, comment])

    @staticmethod
    def replace_rating(rating_id: str, rater: str, **fields: Any) -> list[Statement]:
        """:meth:`record_rating`, replacing a vote of the same id (a judge's verdict is recorded
        again, the same, whenever its pass reruns)."""
        return [Ledger.delete_rating(rating_id), Ledger.record_rating(rating_id, rater, **fields)]

    @staticmethod
    def delete_rating(rating_id: str) -> Statement:
        return ("delete from ratings where rating_id = ?", [rating_id])

    # -- reads -------------------------------------------------------------------------------

    def resume_state(self, request_keys: Sequence[str]) -> ResumeState:
        """What earlier runs left for ``request_keys``, in two queries for a whole sweep.

        ``unfinished``: each request's latest attempt that a crash or kill cut short - a job
        that reached a provider (its id is known: resuming polls it instead of paying for a
        second one) or a create that was ``submitting`` (resuming asks the provider whether it
        made a job, or charges it as unknown). ``blocked``: per request, the models whose
        latest job was paid for with an unknown outcome or a deleted output; they are not
        called again for that request unless the user resubmits."""
        self.recover_journals()
        if not request_keys:
            return ResumeState({}, {})
        keys = [list(request_keys)]
        frame = self.query(
            """select request_key, attempt_id, attempt_no, model_id, provider_job_id,
                      provider_context, started_at
               from attempts where status in ('started', 'submitting')
                 and request_key in (select unnest(?))
               qualify row_number() over (partition by request_key
                                          order by started_at desc) = 1""", keys)
        unfinished: dict[str, dict[str, Any]] = {}
        for row in frame.to_dict("records"):
            context, job_id = row["provider_context"], row["provider_job_id"]
            row["provider_context"] = json.loads(context) if isinstance(context, str) else {}
            row["provider_job_id"] = job_id if isinstance(job_id, str) else None
            row["started_at"] = row["started_at"].to_pydatetime()
            unfinished[row["request_key"]] = row
        latest = self.query(
            """select request_key, model_id, error_reason from attempts
               where status not in ('skipped', 'started', 'submitting')
                 and request_key in (select unnest(?))
               qualify row_number() over (partition by request_key, model_id
                                          order by started_at desc) = 1""", keys)
        blocked: dict[str, dict[str, str]] = {}
        for key, model_id, reason in latest.itertuples(index=False):
            if reason in BLOCKING_REASONS:
                blocked.setdefault(key, {})[model_id] = reason
        return ResumeState(unfinished, blocked)

    def recover_journals(self) -> int:
        """Fold the journals of processes that died (see :class:`SubmitJournal`) into the
        ledger: rows already committed are left as they are, the others land as written.
        Returns how many journals were folded in."""
        folder = SubmitJournal.folder(self.path)
        if self.read_only or not folder.is_dir():
            return 0
        folded = 0
        for path in sorted(folder.glob("*.jsonl")):
            rows = SubmitJournal.rows(path)
            if rows is None:
                continue  # its process is alive
            self.write(rows)
            path.unlink(missing_ok=True)
            folded += 1
        return folded

    def succeeded_request_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` already have a stored output: a resumed sweep skips them."""
        if not keys:
            return set()
        frame = self.query("select request_key from requests where status = 'succeeded' "
                           "and request_key in (select unnest(?))", [list(keys)])
        return set(frame["request_key"])


