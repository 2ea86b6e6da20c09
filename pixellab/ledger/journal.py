"""The submit journal: rows on disk before a paid create is sent (see :class:`SubmitJournal`)."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pixellab.ledger.rows import Row


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
    def create(cls, ledger_path: Path, owner: str = "") -> SubmitJournal:
        """A journal of this process; ``owner`` prefixes its name, so another process can
        wait for that owner's journals to be free (a cluster hub's, see
        :func:`pixellab.cluster.fence`)."""
        folder = cls.folder(ledger_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{owner + '-' if owner else ''}{uuid.uuid4().hex}.jsonl"
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


