"""The ledger: one DuckDB file, the only place results and money are recorded.

Reports, routing tables and notebooks are all derived from it.

Concurrency (DuckDB allows one process to hold a file read-write, and while it does no other
process can open it, not even read-only): the ledger never keeps a connection open between
operations. Each write opens, commits one transaction and closes, so the file lock is held for
milliseconds. A sweep funnels its writes through :class:`LedgerWriter`, which groups everything
that queued up while the previous commit ran into one transaction (group commit), so throughput
grows with load while every caller still waits for its own write to be durable. A notebook reads
a running sweep with :meth:`Ledger.query`, which opens read-only, retries briefly if a commit is
in progress, and closes at once. Do not hold a ``duckdb.connect`` on the file in a notebook: it
would lock the sweep out.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pixellab.errors import DataRemoved, OutcomeUnknown, PixellabError
from pixellab.redact import redact


@dataclass(frozen=True)
class Row:
    """One row to insert into, or update in, a table, written as data rather than SQL.

    Why: DuckDB spends ~0.6 ms on every statement however small, and a sweep at 64 concurrent
    requests writes five rows per request. Rows of the same shape that one group commit
    carries are merged into one multi-row statement (64 rows cost about what three single
    rows did), see :func:`coalesce`. ``key`` names the columns that identify the row (they
    must come first in ``columns``); an update sets every other column, except that columns in
    ``keep`` keep the stored value when the new one is NULL.
    """

    table: str
    columns: tuple[str, ...]
    values: tuple[Any, ...]
    key: tuple[str, ...]
    update: bool = False
    ignore_conflict: bool = False
    keep: frozenset[str] = frozenset()

    @property
    def shape(self) -> tuple[Any, ...]:
        return (self.table, self.columns, self.update, self.ignore_conflict, self.keep)

    def key_value(self) -> tuple[Any, ...]:
        return (self.table, *self.values[:len(self.key)])


Statement = tuple[str, Sequence[Any]] | Row
"""Raw SQL with its parameters, or a :class:`Row` that may be merged with others."""

_ROWS_PER_STATEMENT = 256


def _row_sql(rows: Sequence[Row]) -> tuple[str, list[Any]]:
    first = rows[0]
    width = len(first.columns)
    tuples = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(rows))
    params = [value for row in rows for value in row.values]
    if not first.update:
        conflict = " on conflict do nothing" if first.ignore_conflict else ""
        return (f"insert into {first.table} ({', '.join(first.columns)}) values {tuples}"
                f"{conflict}", params)
    sets = ", ".join(
        f"{c} = coalesce(v.{c}, {first.table}.{c})" if c in first.keep else f"{c} = v.{c}"
        for c in first.columns[len(first.key):])
    match = " and ".join(f"{first.table}.{c} = v.{c}" for c in first.key)
    return (f"update {first.table} set {sets} from (values {tuples}) "
            f"v({', '.join(first.columns)}) where {match}", params)


class _Segment:
    """Rows that may be merged and reordered without changing the result: all inserts run
    before all updates, each shape as one statement. A row that touches a row already touched
    by another shape, in an order this would break, ends the segment instead."""

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], list[Row]] = {}
        self.touched: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def add(self, row: Row) -> bool:
        """Take ``row``; False when it must wait for a new segment."""
        key = row.key_value()
        before = self.touched.get(key)
        if before is not None:
            same = before == row.shape
            if same and row.ignore_conflict:
                return True  # a second insert of the same key would do nothing
            if same and row.update:
                return False  # one statement cannot update a row twice
            insert_then_update = not before[2] and row.update
            if not same and not insert_then_update:
                return False
        self.touched[key] = row.shape
        self.groups.setdefault(row.shape, []).append(row)
        return True

    def statements(self) -> Iterator[tuple[str, list[Any]]]:
        ordered = sorted(self.groups.values(), key=lambda rows: rows[0].update)  # stable
        for rows in ordered:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                yield _row_sql(rows[start:start + _ROWS_PER_STATEMENT])


def coalesce(statements: Iterable[Statement]) -> Iterator[tuple[str, Sequence[Any]]]:
    """The SQL to run for ``statements``, in one transaction, with the same result as running
    them one by one in order: raw SQL runs where it stands; the :class:`Row` writes between two
    raw statements are merged by shape."""
    segment = _Segment()
    for statement in statements:
        if isinstance(statement, Row):
            if not segment.add(statement):
                yield from segment.statements()
                segment = _Segment()
                segment.add(statement)
            continue
        yield from segment.statements()
        segment = _Segment()
        yield statement
    yield from segment.statements()


SCHEMA_VERSION = 5
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """create table sweeps (
            sweep_id varchar primary key, name varchar, task varchar, spec json,
            budget_usd decimal(18, 6), status varchar, message varchar,
            created_at timestamp, updated_at timestamp)""",
        """create table requests (
            request_key varchar primary key, product_id varchar, category varchar,
            task varchar, arm varchar, chain json, prompt_id varchar, prompt_hash varchar,
            prompt_text varchar, params json, seed integer, input_sha256 varchar,
            status varchar, model_id varchar, output_sha256 varchar, error_class varchar,
            error_reason varchar, error_message varchar,
            created_at timestamp, updated_at timestamp)""",
        """create table sweep_requests (
            sweep_id varchar, request_key varchar, primary key (sweep_id, request_key))""",
        """create table attempts (
            attempt_id varchar primary key, request_key varchar, sweep_id varchar,
            attempt_no integer, provider varchar, model_id varchar, provider_job_id varchar,
            status varchar, error_class varchar, error_reason varchar, error_message varchar,
            retryable boolean, started_at timestamp, finished_at timestamp, latency_s double,
            credits decimal(18, 6), usd decimal(18, 6), cost_estimated boolean,
            output_sha256 varchar)""",
        """create table outputs (
            sha256 varchar primary key, media_type varchar, width integer, height integer,
            bytes bigint, created_at timestamp)""",
        """create table costs (
            attempt_id varchar primary key, request_key varchar, sweep_id varchar,
            provider varchar, model_id varchar, credits decimal(18, 6), usd decimal(18, 6),
            estimated boolean, created_at timestamp)""",
        """create table scores (
            output_sha256 varchar, metric varchar, scorer_version varchar, value double,
            missing_reason varchar, details json, created_at timestamp,
            primary key (output_sha256, metric, scorer_version))""",
    ],
    # What an adapter needs to poll a job again after a crash (e.g. fal's status/result URLs).
    2: ["alter table attempts add column provider_context json"],
    # Pairwise human judgements from the review notebook (pixellab.ratings). ``output_a`` is the
    # one shown on the left; ``winner`` is 'a', 'b' or 'tie'.
    3: ["""create table ratings (
            rating_id varchar primary key, rater varchar, rated_at timestamp,
            task varchar, category varchar, product_id varchar,
            output_a varchar, output_b varchar, arm_a varchar, arm_b varchar,
            winner varchar, sweep_id varchar, comment varchar)"""],
    # Product analyses (pixellab.intel.analyze): the parsed answer of every succeeded
    # ``analyze`` request, so "what did we decide this product is" is one SQL query away.
    4: ["""create table analyses (
            request_key varchar primary key, product_id varchar, input_sha256 varchar,
            model_id varchar, category varchar, audience varchar, aesthetic varchar,
            suggested_tasks json, confidence double, output_sha256 varchar,
            created_at timestamp)"""],
    # Models an adaptive sweep stopped running (pixellab.adaptive), with the evidence.
    5: ["""create table adaptive_drops (
            sweep_id varchar, arm varchar, look integer, products integer, leader varchar,
            difference double, difference_low double, difference_high double,
            p_value double, threshold double, reason varchar, created_at timestamp,
            primary key (sweep_id, arm))"""],
}

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


BLOCKING_REASONS = frozenset({OutcomeUnknown.reason, DataRemoved.reason})
"""A model whose latest attempt ended so was paid for without a usable answer: creating it again
is the user's explicit call (``--resubmit``)."""


@dataclass(frozen=True)
class ResumeState:
    """See :meth:`Ledger.resume_state`."""

    unfinished: dict[str, dict[str, Any]]
    blocked: dict[str, dict[str, str]]


class LedgerError(PixellabError):
    """The ledger file cannot be opened or written (locked too long, corrupt, newer schema)."""


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def money(value: float | Decimal | None) -> Decimal | None:
    """USD and credits are stored exactly, to the micro-unit."""
    if value is None:
        return None
    return Decimal(str(value)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


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

    def open(self, *, read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
        """A new connection; retries while another process holds the file's lock."""
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
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.05)

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
        columns = ["request_key", "product_id", "category", "task", "arm", "chain", "prompt_id",
                   "prompt_hash", "prompt_text", "params", "seed", "input_sha256"]
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
                for sql in _MIGRATIONS[version]:
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
        columns = ("request_key", "product_id", "category", "task", "arm", "chain",
                   "prompt_id", "prompt_hash", "prompt_text", "params", "seed", "input_sha256")
        values = [as_json(row[c]) if c in ("chain", "params") else row[c] for c in columns]
        return (f"""insert into requests ({", ".join(columns)}, status, created_at, updated_at)
                    values ({", ".join("?" * (len(columns) + 3))})
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
                      size: int) -> Statement:
        return Row("outputs", ("sha256", "media_type", "width", "height", "bytes", "created_at"),
                   (sha256, media_type, width, height, size, now()), key=("sha256",),
                   ignore_conflict=True)

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


class SubmitJournal:
    """Rows that must be on disk before this process acts on them: a paid create's
    ``submitting`` attempt, appended before the create is sent.

    Why not an awaited DuckDB commit: the create would wait for it, and under a sweep's load a
    commit waits behind the group commit in progress (measured at 64 creates in flight on 2
    cores: 80-110 ms median, 250-300 ms p99 per create). A line appended to a file
    (``os.write`` on an ``O_APPEND`` descriptor; no fsync) is in the kernel's page cache in
    microseconds and survives the process being killed (SIGKILL, the OOM killer, a crash),
    which is the failure it guards against; a power cut between the append and the ledger's own
    commit of the same row, a moment later, is not covered.

    One file per writer, ``<ledger>.journal/<uuid>.jsonl``, held under an exclusive ``flock``
    while its process lives. :meth:`Ledger.recover_journals` folds the files of dead processes
    into the ledger (rows already there are left alone) and deletes them; a writer deletes its
    own once all its rows are committed.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def folder(cls, ledger_path: Path) -> Path:
        return ledger_path.with_name(ledger_path.name + ".journal")

    @classmethod
    def create(cls, ledger_path: Path) -> SubmitJournal:
        folder = cls.folder(ledger_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    def append(self, row: Row) -> None:
        line = json.dumps({"table": row.table, "columns": row.columns, "key": row.key,
                           "values": row.values}, default=_journal_value) + "\n"
        os.write(self._fd, line.encode())

    def close(self, *, delete: bool) -> None:
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)

    @staticmethod
    def rows(path: Path) -> list[Row] | None:
        """The rows of a journal no live process holds, or None while one does."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            with os.fdopen(os.dup(fd), encoding="utf-8") as handle:
                text = handle.read()
        finally:
            os.close(fd)
        rows = []
        for line in text.splitlines():
            try:
                item = json.loads(line)
                values = tuple(_from_journal(v) for v in item["values"])
                rows.append(Row(item["table"], tuple(item["columns"]), values,
                                key=tuple(item["key"]), ignore_conflict=True))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short: nothing was sent after it
        return rows


def _journal_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    raise TypeError(f"cannot journal {type(value).__name__}")


def _from_journal(value: Any) -> Any:
    if isinstance(value, dict) and "datetime" in value:
        return datetime.fromisoformat(value["datetime"])
    return value


class LedgerWriter:
    """Group commit for async code: ``await writer.write([...])`` returns once durable.

    One background thread drains the queue; everything queued while a commit runs goes into the
    next transaction together, so 64 concurrent attempts cost a handful of commits, not 64. The
    thread keeps its connection while work keeps coming (opening a DuckDB file costs ~15 ms, a
    commit ~1 ms) but lets go of the file lock when idle for ``linger_s`` and, under sustained
    load, for ``release_gap_s`` after every ``max_hold_s``, so a notebook's read gets in.
    """

    def __init__(self, ledger: Ledger, *, linger_s: float = 0.05, max_hold_s: float = 1.0,
                 release_gap_s: float = 0.06) -> None:
        self.ledger = ledger
        self.linger_s = linger_s
        self.max_hold_s = max_hold_s
        self.release_gap_s = release_gap_s
        self._pending: list[tuple[Sequence[Statement], asyncio.Future[None]]] = []
        self._condition = threading.Condition()
        self._journal: SubmitJournal | None = None
        self._closed = False
        self.commits = 0
        self.failed = False
        self.thread_cpu_s = 0.0
        """CPU seconds the writer thread used, known once closed (benchmarks report it)."""
        self._thread = threading.Thread(target=self._drain, name="pixellab-ledger", daemon=True)
        self._thread.start()

    async def write(self, statements: Sequence[Statement]) -> None:
        """Queue ``statements`` as one atomic unit and return once they are durable."""
        await self.submit(statements)

    def submit(self, statements: Sequence[Statement]) -> asyncio.Future[None]:
        """Queue ``statements`` as one atomic unit; the future resolves once they are durable.

        Units commit in the order they were submitted, so a caller may go on without waiting
        (a later unit never lands before an earlier one) and collect the future later. Must be
        called from a running event loop.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._condition:
            if self._closed:
                raise LedgerError("ledger writer is closed")
            self._pending.append((statements, future))
            self._condition.notify()
        return future

    def journal(self, row: Row) -> asyncio.Future[None]:
        """Put ``row`` on disk now, before the caller acts on it, and queue it for the ledger
        like :meth:`submit` (the future resolves once it is committed there too).

        For the one fact that must survive a kill before a paid create is sent (see
        :class:`SubmitJournal`): a microsecond append, where waiting for a commit would put
        the group commit on every paid call's critical path."""
        if self._journal is None:
            self._journal = SubmitJournal.create(self.ledger.path)
        self._journal.append(row)
        return self.submit([row])

    def _next_batch(self, holding: bool) -> list[tuple[Sequence[Statement], asyncio.Future[None]]]:
        with self._condition:
            if not self._pending and not self._closed:
                self._condition.wait(timeout=self.linger_s if holding else None)
            batch, self._pending = self._pending, []
            return batch

    def _drain(self) -> None:
        con: duckdb.DuckDBPyConnection | None = None
        held_since = 0.0
        try:
            while True:
                batch = self._next_batch(holding=con is not None)
                if not batch:
                    if con is not None:  # idle: let readers in
                        con.close()
                        con = None
                    if self._closed:
                        with self._condition:
                            if not self._pending:
                                return
                    continue
                error: BaseException | None = None
                try:
                    if con is None:
                        con = self.ledger.open(read_only=False)
                        held_since = time.monotonic()
                    with self.ledger._write_lock:
                        Ledger.execute_in_transaction(con, [s for g, _ in batch for s in g])
                    self.commits += 1
                except BaseException as exc:  # handed to every waiter below
                    error = exc
                    self.failed = True
                for _, future in batch:
                    future.get_loop().call_soon_threadsafe(_resolve, future, error)
                if con is not None and time.monotonic() - held_since > self.max_hold_s:
                    con.close()
                    con = None
                    time.sleep(self.release_gap_s)
        finally:
            if con is not None:
                con.close()
            self.thread_cpu_s = time.thread_time()

    def close(self) -> None:
        """Commit what is queued and stop; the journal goes once everything in it is in the
        ledger (after a failed commit it stays, for the next run to fold in)."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()
        if self._journal is not None:
            self._journal.close(delete=not self.failed)
            self._journal = None


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
