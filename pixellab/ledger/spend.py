"""The spend book: what every process on one ledger has reserved and spent, so that a daily or
monthly cap holds across sweeps, notebooks and ``generate`` calls running at once.

Why a second file beside ``ledger.duckdb``: a cap is checked before **every** paid call, by
whichever process makes it, and the check and the reservation must be one atomic step across
processes (two sweeps that both see $9.90 of a $10 cap must not both spend $0.20). DuckDB lets
one process write at a time and our writer batches commits for a second; SQLite's ``BEGIN
IMMEDIATE`` takes the file's write lock for the few microseconds a reservation needs, from any
number of processes, and WAL lets readers in meanwhile. The ledger's ``costs`` table stays the
full record of what was billed; this book only holds amounts (reserved, then settled) and the
notices sent about them, with its SQL here in the ledger package like every other query.

Amounts are integer micro-units, rounded up, so the book never holds less than was charged. A
reservation whose process died (same host, pid gone) is settled at its estimate when the next
reservation looks: the call may have billed, and a cap errs on the side of spending less.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from pixellab.errors import BudgetExceeded
from pixellab.ledger.sqlite import connection, create

MICRO = Decimal(1_000_000)
KEEP_S = 40 * 86400
"""Rows older than this are dropped: a monthly cap and a day of hourly history need less."""

_SCHEMA = (
    """create table if not exists spend (
        id text primary key, project text not null, at real not null,
        usd_micros integer not null, credit_micros integer not null, state text not null,
        pid integer not null, host text not null, model_id text)""",
    "create index if not exists spend_at on spend (at)",
    """create table if not exists notices (
        key text primary key, kind text not null, at real not null, payload text not null,
        status text not null, detail text, attempts integer not null default 0)""",
)


def micros(amount: float | Decimal) -> int:
    """``amount`` in micro-units, rounded up."""
    return int((Decimal(str(amount)) * MICRO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class CapCheck:
    """One limit to hold when reserving: ``limit`` micro-units of ``unit`` (``usd`` or
    ``credits``) since ``since`` (a period's start, Unix seconds), over every project or one."""

    name: str
    unit: str
    limit: int
    since: float
    project: str | None = None


@dataclass(frozen=True)
class Notice:
    key: str
    kind: str
    at: float
    payload: dict[str, Any]
    status: str
    detail: str | None
    attempts: int


class SpendBook:
    """The book at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._host = socket.gethostname()
        self._ready = False

    def _connection(self, *, write: bool = False
                    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        if not self._ready:
            create(self.path, _SCHEMA)
            self._ready = True
        return connection(self.path, write=write)

    def reserve(self, *, project: str, usd: float | Decimal, credits: float | Decimal,
                caps: Sequence[CapCheck], model_id: str | None = None,
                now: float | None = None) -> str:
        """Hold ``usd`` and ``credits`` against every cap, atomically across processes; the
        reservation's id, or :class:`BudgetExceeded` naming the cap, with nothing held."""
        now = time.time() if now is None else now
        amounts = {"usd": micros(usd), "credits": micros(credits)}
        with self._connection(write=True) as con:
            self._settle_the_dead(con)
            for cap in caps:
                column = "usd_micros" if cap.unit == "usd" else "credit_micros"
                where, args = _scope(cap.since, cap.project)
                spent, held = con.execute(
                    f"select coalesce(sum(case when state = 'settled' then {column} end), 0), "
                    f"coalesce(sum(case when state = 'reserved' then {column} end), 0) "
                    f"from spend where {where}", args).fetchone()
                if spent + held + amounts[cap.unit] > cap.limit:
                    sign = "$" if cap.unit == "usd" else ""
                    unit = "" if cap.unit == "usd" else " credits"

                    def shown(value: int, sign: str = sign, unit: str = unit) -> str:
                        return f"{sign}{Decimal(value) / MICRO:.2f}{unit}"

                    raise BudgetExceeded(
                        f"{cap.name} {shown(cap.limit)} would be exceeded: spent "
                        f"{shown(spent)}, in flight {shown(held)}, next call "
                        f"{shown(amounts[cap.unit])}; nothing was spent",
                        cap_usd=float(Decimal(cap.limit) / MICRO),
                        committed_usd=float(Decimal(spent) / MICRO),
                        reserved_usd=float(Decimal(held) / MICRO),
                        requested_usd=float(Decimal(amounts[cap.unit]) / MICRO))
            reservation = uuid.uuid4().hex
            con.execute("insert into spend values (?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                        [reservation, project, now, amounts["usd"], amounts["credits"],
                         os.getpid(), self._host, model_id])
            con.execute("delete from spend where at < ?", [now - KEEP_S])
        return reservation

    def settle(self, reservation: str, *, usd: float | Decimal, credits: float | Decimal) -> None:
        """Replace a reservation by what the call cost (a free outcome removes it)."""
        with self._connection(write=True) as con:
            if micros(usd) == 0 and micros(credits) == 0:
                con.execute("delete from spend where id = ?", [reservation])
            else:
                con.execute("update spend set usd_micros = ?, credit_micros = ?, "
                            "state = 'settled' where id = ?",
                            [micros(usd), micros(credits), reservation])

    def _settle_the_dead(self, con: sqlite3.Connection) -> None:
        """Reservations of this host's processes that are gone are settled at their estimate."""
        rows = con.execute("select distinct pid from spend where state = 'reserved' and "
                           "host = ?", [self._host]).fetchall()
        dead = [pid for (pid,) in rows if not _alive(pid)]
        for pid in dead:
            con.execute("update spend set state = 'settled' where state = 'reserved' and "
                        "host = ? and pid = ?", [self._host, pid])

    def totals(self, since: float, project: str | None = None) -> tuple[Decimal, Decimal]:
        """USD and credits held since ``since`` (settled and reserved), for one project or all."""
        where, args = _scope(since, project)
        with self._connection() as con:
            usd, credits = con.execute(
                "select coalesce(sum(usd_micros), 0), coalesce(sum(credit_micros), 0) "
                f"from spend where {where}", args).fetchone()
        return Decimal(usd) / MICRO, Decimal(credits) / MICRO

    def hourly_usd(self, since: float, until: float) -> list[Decimal]:
        """USD per whole hour from ``since`` to ``until`` (oldest first, empty hours 0)."""
        hours = max(0, int((until - since) // 3600))
        with self._connection() as con:
            rows = con.execute(
                "select cast((at - ?) / 3600 as integer) h, sum(usd_micros) from spend "
                "where at >= ? and at < ? group by h", [since, since, since + hours * 3600]
            ).fetchall()
        out = [Decimal(0)] * hours
        for hour, value in rows:
            if 0 <= hour < hours:
                out[hour] = Decimal(value) / MICRO
        return out

    def by_project(self, since: float) -> list[tuple[str, Decimal, Decimal, int]]:
        """(project, USD, credits, calls) since ``since``, most spent first."""
        with self._connection() as con:
            rows = con.execute(
                "select project, sum(usd_micros), sum(credit_micros), count(*) from spend "
                "where at >= ? group by project order by 2 desc, 1", [since]).fetchall()
        return [(p, Decimal(u) / MICRO, Decimal(c) / MICRO, n) for p, u, c, n in rows]

    def claim_notice(self, key: str, kind: str, payload: dict[str, Any],
                     now: float | None = None) -> bool:
        """True for the one caller, of any process, that gets to send notice ``key``."""
        with self._connection(write=True) as con:
            cursor = con.execute(
                "insert or ignore into notices (key, kind, at, payload, status) "
                "values (?, ?, ?, ?, 'pending')",
                [key, kind, time.time() if now is None else now,
                 json.dumps(payload, sort_keys=True)])
            return cursor.rowcount == 1

    def finish_notice(self, key: str, *, status: str, detail: str | None,
                      attempts: int) -> None:
        with self._connection(write=True) as con:
            con.execute("update notices set status = ?, detail = ?, attempts = ? "
                        "where key = ?", [status, detail, attempts, key])

    def notices(self) -> list[Notice]:
        """Every notice claimed, oldest first."""
        with self._connection() as con:
            rows = con.execute("select key, kind, at, payload, status, detail, attempts "
                               "from notices order by at, key").fetchall()
        return [Notice(k, kind, at, json.loads(p), s, d, a) for k, kind, at, p, s, d, a in rows]


def _scope(since: float, project: str | None) -> tuple[str, list[Any]]:
    """The ``where`` clause (and its arguments) of the rows since ``since``, of one project
    or (None) of all."""
    if project is None:
        return "at >= ?", [since]
    return "at >= ? and project = ?", [since, project]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
