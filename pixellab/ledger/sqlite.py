"""Connections to the small SQLite books beside the ledger (the spend book, the job book).

Each call opens its own connection (they are used from many threads and processes); a write
takes the file's lock at once (``BEGIN IMMEDIATE``), so a read-then-write inside it is atomic
across processes, and waits up to a minute for another writer rather than failing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def connection(path: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        if write:
            con.execute("begin immediate")
            try:
                yield con
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")
        else:
            yield con
    finally:
        con.close()


def create(path: Path, schema: Sequence[str]) -> None:
    """The file in WAL mode (readers never wait for a writer) with ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connection(path) as con:
        con.execute("pragma journal_mode = wal")
        for statement in schema:
            con.execute(statement)
