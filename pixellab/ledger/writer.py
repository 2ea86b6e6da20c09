"""Group commit: every write a sweep makes goes through one :class:`LedgerWriter`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import duckdb

from pixellab.errors import LedgerError
from pixellab.ledger.database import Ledger
from pixellab.ledger.journal import SubmitJournal
from pixellab.ledger.rows import Row, Statement


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
