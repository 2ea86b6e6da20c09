"""Rows written as data, and the SQL they batch into.

Why: DuckDB spends ~1-2 ms of CPU on every statement however small; a sweep's writes are rows of
a few shapes, so one group commit merges rows of the same shape into one statement each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


@dataclass(frozen=True)
class Row:
    """One row to insert into, or update in, a table, written as data rather than SQL.

    Why: DuckDB spends ~1-2 ms of CPU on every statement however small, and a sweep writes
    five rows per request. Rows of the same shape that one group commit carries are merged
    into one statement, their columns passed as lists (64 rows cost less than two single rows
    do), see :func:`coalesce`. ``key`` names the columns that identify the row (they
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

_ROWS_PER_STATEMENT = 4096


def _row_sql(rows: Sequence[Row]) -> tuple[str, list[Any]]:
    """One statement for rows of one shape, each column passed as one list and unnested.

    Why lists rather than ``values (?, ?, ...), (...)``: DuckDB binds every ``?`` on its own, so
    a 32-row attempts update (13 columns, 416 parameters) cost ~4 ms; as 13 lists it costs about
    what one row does (~1.5-2 ms a statement, measured with the ledger's own shapes, P10). The
    lists unnest in step, row by row, and are cast to the columns' types like the values were."""
    first = rows[0]
    columns = first.columns
    params = [[row.values[i] for row in rows] for i in range(len(columns))]
    unnested = ", ".join(f"unnest(?) as {c}" for c in columns)
    if not first.update:
        conflict = " on conflict do nothing" if first.ignore_conflict else ""
        return (f"insert into {first.table} ({', '.join(columns)}) select {unnested}"
                f"{conflict}", params)
    sets = ", ".join(
        f"{c} = coalesce(v.{c}, {first.table}.{c})" if c in first.keep else f"{c} = v.{c}"
        for c in columns[len(first.key):])
    match = " and ".join(f"{first.table}.{c} = v.{c}" for c in first.key)
    return (f"update {first.table} set {sets} from (select {unnested}) v where {match}", params)


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



def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def money(value: float | Decimal | None) -> Decimal | None:
    """USD and credits are stored exactly, to the micro-unit."""
    if value is None:
        return None
    return Decimal(str(value)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


