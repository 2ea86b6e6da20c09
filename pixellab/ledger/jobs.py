"""The job service's book: API keys (hashed), their credit wallets, and jobs.

``pixellab serve`` takes jobs over HTTP and runs each through ``generate`` (so every provider
call, its cost and its output land in the ledger as any other). What the service itself must
remember lives here, in SQLite beside the ledger (``jobs.sqlite``), for the reasons the spend
book does: a job's state changes from HTTP handlers and workers at once, a wallet's debit must
be atomic (``BEGIN IMMEDIATE``), and DuckDB's single writer is busy with the ledger.

- A key is stored as its SHA-256 only; the key itself is shown once, when it is made.
- A wallet is debited by the job's estimate when the job is accepted (never below zero: the
  debit is one conditional update), and credited back the difference when the job settles.
- An idempotency key is unique per API key: the same ``(key, Idempotency-Key)`` returns the
  same job, so a client that retries a POST never pays twice.
- A job that was ``running`` when the service died is ``pending`` again at the next start; it
  reruns through ``generate``, whose request key finds the attempt the ledger already has
  (finished: reused; in flight: polled), so nothing is paid twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixellab.ledger.spend import micros
from pixellab.ledger.sqlite import connection, create

_SCHEMA = (
    """create table if not exists api_keys (
        id text primary key, name text not null unique, key_sha256 text not null unique,
        credit_micros integer not null check (credit_micros >= 0),
        created_at real not null, revoked integer not null default 0)""",
    """create table if not exists jobs (
        id text primary key, key_id text not null, idempotency_key text,
        task text not null, category text, input_sha256 text not null,
        input_media_type text not null, params text not null, callback_url text,
        status text not null, attempts integer not null default 0,
        reserved_micros integer not null, credit_micros integer, usd text,
        model_id text, request_key text, output_sha256 text, output_media_type text,
        error text, callback_status text, created_at real not null, updated_at real not null,
        unique (key_id, idempotency_key))""",
    "create index if not exists jobs_status on jobs (status, created_at)",
)

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    credits: float


@dataclass(frozen=True)
class Job:
    id: str
    key_id: str
    task: str
    category: str | None
    input_sha256: str
    input_media_type: str
    params: dict[str, Any]
    callback_url: str | None
    status: str
    attempts: int
    reserved_credits: float
    credits: float | None
    usd: str | None
    model_id: str | None
    request_key: str | None
    output_sha256: str | None
    output_media_type: str | None
    error: str | None
    callback_status: str | None
    created_at: float
    updated_at: float


_JOB_COLUMNS = ("id, key_id, task, category, input_sha256, input_media_type, params, "
                "callback_url, status, attempts, reserved_micros, credit_micros, usd, model_id, "
                "request_key, output_sha256, output_media_type, error, callback_status, "
                "created_at, updated_at")


_IDEMPOTENT = "key_id = ? and idempotency_key = ?"


def _job(row: tuple[Any, ...]) -> Job:
    (job_id, key_id, task, category, input_sha256, input_media_type, params, callback_url,
     status, attempts, reserved, credits, usd, model_id, request_key, output_sha256,
     output_media_type, error, callback_status, created_at, updated_at) = row
    return Job(job_id, key_id, task, category, input_sha256, input_media_type,
               json.loads(params), callback_url, status, attempts, reserved / 1e6,
               None if credits is None else credits / 1e6, usd, model_id, request_key,
               output_sha256, output_media_type, error, callback_status, created_at,
               updated_at)


def _find(con: sqlite3.Connection, where: str, args: list[Any]) -> Job | None:
    """The job matching ``where`` (a clause on the jobs table), or None."""
    row = con.execute(f"select {_JOB_COLUMNS} from jobs where {where}", args).fetchone()
    return None if row is None else _job(row)


def _fetch(con: sqlite3.Connection, job_id: str) -> Job:
    job = _find(con, "id = ?", [job_id])
    assert job is not None, job_id
    return job


class InsufficientCredits(Exception):
    """The wallet holds less than the job's estimate."""


class JobBook:
    """Keys, wallets and jobs in the SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        create(self.path, _SCHEMA)

    def _connection(self, *, write: bool = False
                    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return connection(self.path, write=write)

    def create_key(self, name: str, credits: float) -> str:
        """A new API key for ``name`` with ``credits`` in its wallet; the key is returned
        once and only its SHA-256 is kept."""
        key = "plk_" + secrets.token_urlsafe(32)
        with self._connection(write=True) as con:
            con.execute("insert into api_keys values (?, ?, ?, ?, ?, 0)",
                        [uuid.uuid4().hex, name, key_digest(key), micros(credits), time.time()])
        return key

    def add_credits(self, name: str, credits: float) -> float:
        with self._connection(write=True) as con:
            con.execute("update api_keys set credit_micros = credit_micros + ? where name = ?",
                        [micros(credits), name])
            row = con.execute("select credit_micros from api_keys where name = ?",
                              [name]).fetchone()
        if row is None:
            raise KeyError(name)
        return row[0] / 1e6

    def authenticate(self, key: str) -> ApiKey | None:
        with self._connection() as con:
            row = con.execute("select id, name, credit_micros from api_keys "
                              "where key_sha256 = ? and revoked = 0",
                              [key_digest(key)]).fetchone()
        return None if row is None else ApiKey(row[0], row[1], row[2] / 1e6)

    def keys(self) -> list[ApiKey]:
        with self._connection() as con:
            rows = con.execute("select id, name, credit_micros from api_keys where revoked = 0 "
                               "order by name").fetchall()
        return [ApiKey(i, n, c / 1e6) for i, n, c in rows]

    # -- jobs -------------------------------------------------------------------------------

    def submit(self, *, key_id: str, idempotency_key: str | None, task: str,
               category: str | None, input_sha256: str, input_media_type: str,
               params: dict[str, Any], callback_url: str | None,
               estimate_credits: float) -> tuple[Job, bool]:
        """The job, and whether it is new. A known idempotency key returns its job unchanged
        (nothing debited); a new job debits its estimate or raises
        :class:`InsufficientCredits` with nothing recorded."""
        now = time.time()
        reserved = micros(estimate_credits)
        with self._connection(write=True) as con:
            if idempotency_key is not None:
                known = _find(con, _IDEMPOTENT, [key_id, idempotency_key])
                if known is not None:
                    return known, False
            debited = con.execute("update api_keys set credit_micros = credit_micros - ? "
                                  "where id = ? and credit_micros >= ?",
                                  [reserved, key_id, reserved]).rowcount
            if debited != 1:
                raise InsufficientCredits(
                    f"this job may cost up to {reserved / 1e6:g} credits; the key's wallet "
                    "holds less")
            job_id = "job_" + uuid.uuid4().hex
            con.execute(
                "insert into jobs (id, key_id, idempotency_key, task, category, input_sha256, "
                "input_media_type, params, callback_url, status, reserved_micros, created_at, "
                "updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                [job_id, key_id, idempotency_key, task, category, input_sha256,
                 input_media_type, json.dumps(params, sort_keys=True), callback_url, reserved,
                 now, now])
            return _fetch(con, job_id), True

    def submit_known(self, key_id: str, idempotency_key: str) -> Job | None:
        """The job a key already submitted under ``idempotency_key``, if any."""
        with self._connection() as con:
            return _find(con, _IDEMPOTENT, [key_id, idempotency_key])

    def get(self, job_id: str, key_id: str | None = None) -> Job | None:
        with self._connection() as con:
            if key_id is None:
                return _find(con, "id = ?", [job_id])
            return _find(con, "id = ? and key_id = ?", [job_id, key_id])

    def claim(self) -> Job | None:
        """The oldest pending job, now ``running`` (one worker gets it). Idle workers look
        without taking the write lock, so an empty queue costs readers nothing."""
        with self._connection() as con:
            if con.execute("select 1 from jobs where status = 'pending' limit 1"
                           ).fetchone() is None:
                return None
        with self._connection(write=True) as con:
            row = con.execute("select id from jobs where status = 'pending' "
                              "order by created_at, id limit 1").fetchone()
            if row is None:
                return None
            con.execute("update jobs set status = 'running', attempts = attempts + 1, "
                        "updated_at = ? where id = ?", [time.time(), row[0]])
            return _fetch(con, row[0])

    def requeue_running(self) -> int:
        """At start: jobs a dead service left ``running`` are pending again."""
        with self._connection(write=True) as con:
            return con.execute("update jobs set status = 'pending', updated_at = ? "
                               "where status = 'running'", [time.time()]).rowcount

    def finish(self, job_id: str, *, status: str, credits: float, usd: str | None,
               model_id: str | None, request_key: str | None, output_sha256: str | None,
               output_media_type: str | None, error: str | None) -> Job | None:
        """Settle a running job: the wallet gets back its estimate less what the job cost
        (a cost above the estimate takes no more than the wallet holds). None when the job is
        no longer running (cancelled meanwhile)."""
        with self._connection(write=True) as con:
            row = con.execute("select key_id, reserved_micros, status from jobs where id = ?",
                              [job_id]).fetchone()
            if row is None or row[2] != "running":
                return None
            key_id, reserved, _ = row
            cost = micros(credits)
            refund = reserved - cost
            con.execute("update api_keys set credit_micros = max(0, credit_micros + ?) "
                        "where id = ?", [refund, key_id])
            con.execute(
                "update jobs set status = ?, credit_micros = ?, usd = ?, model_id = ?, "
                "request_key = ?, output_sha256 = ?, output_media_type = ?, error = ?, "
                "updated_at = ? where id = ?",
                [status, cost, usd, model_id, request_key, output_sha256, output_media_type,
                 error, time.time(), job_id])
            return _fetch(con, job_id)

    def cancel(self, job_id: str, key_id: str) -> Job | None:
        """Cancel a pending job (its estimate goes back to the wallet); a running or finished
        job is returned unchanged. None when the key has no such job."""
        with self._connection(write=True) as con:
            row = con.execute("select status, reserved_micros from jobs where id = ? and "
                              "key_id = ?", [job_id, key_id]).fetchone()
            if row is None:
                return None
            if row[0] == "pending":
                con.execute("update api_keys set credit_micros = credit_micros + ? "
                            "where id = ?", [row[1], key_id])
                con.execute("update jobs set status = 'cancelled', credit_micros = 0, "
                            "updated_at = ? where id = ?", [time.time(), job_id])
            return _fetch(con, job_id)

    def set_callback_status(self, job_id: str, status: str) -> None:
        with self._connection(write=True) as con:
            con.execute("update jobs set callback_status = ? where id = ?", [status, job_id])

    def counts(self) -> dict[str, int]:
        with self._connection() as con:
            return dict(con.execute("select status, count(*) from jobs group by status"
                                    ).fetchall())


__all__ = ["ApiKey", "InsufficientCredits", "Job", "JobBook", "TERMINAL", "key_digest"]
