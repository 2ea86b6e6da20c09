"""Group commit: every write a sweep makes goes through one :class:`LedgerWriter`."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence

import duckdb

from pixellab.errors import LedgerError
from pixellab.ledger.database import Ledger
from pixellab.ledger.journal import SubmitJournal
from pixellab.ledger.rows import Row, Statement

_Unit = tuple[Sequence[Statement], asyncio.Future[None]]

_IDLE_POLL_S = 0.1
"""While it holds the file with nothing to write, how often the writer looks for a waiter."""


class LedgerWriter:
    """Group commit for async code: ``await writer.write([...])`` returns once durable.

    One background thread drains the queue; everything queued goes into one transaction, so 64
    concurrent attempts cost a handful of commits, not 64. A commit costs about the same for 1
    request as for 30 (~10 ms of CPU for the five statements a batch of attempts makes, P10), so
    the writer lets write-behind units (:meth:`submit`, :meth:`journal`) gather for up to
    ``batch_window_s`` after the first of them, or until ``max_batch_units`` are queued. Nothing
    that waits is delayed by it: :meth:`write` and :meth:`flush` commit what is queued at once,
    and so does :meth:`close`. The window bounds how much a kill loses: the outcomes of the last
    ``batch_window_s`` of finished attempts, which the next run settles like any attempt a crash
    cut short (see :meth:`Ledger.resume_state`), never charging less than the estimate.

    The file lock: the thread keeps its connection while work keeps coming (opening the file
    costs ~15 ms of CPU and closing it ~5, as much as a commit) and closes it, letting a
    notebook's read in,

    - as soon as another process waits for the file: :meth:`Ledger.open` leaves a marker
      (:attr:`Ledger.waiting_marker`) when it finds the file locked, and the writer looks for it
      after every commit and every 0.1 s while idle, then stays closed for ``release_gap_s``
      (longer than :meth:`Ledger.open`'s longest retry delay), so :meth:`Ledger.query` gets in
      within about one batch window;
    - when nothing was written for ``linger_s`` (3 s: longer than the lull between waves of
      answers, when a sweep's requests take about as long as each other; closing and opening
      again in every lull cost ~0.4 ms of CPU per attempt in ``bench_sweep`` at 2 s a request);
    - after ``max_hold_s`` in any case, for readers that do not leave the marker (a raw
      ``duckdb.connect(..., read_only=True)``).
    """

    def __init__(self, ledger: Ledger, *, batch_window_s: float = 1.0,
                 max_batch_units: int = 128, linger_s: float = 3.0, max_hold_s: float = 10.0,
                 release_gap_s: float = 0.15) -> None:
        self.ledger = ledger
        self.batch_window_s = batch_window_s
        self.max_batch_units = max_batch_units
        self.linger_s = linger_s
        self.max_hold_s = max_hold_s
        self.release_gap_s = release_gap_s
        self._pending: list[_Unit] = []
        self._first_queued = 0.0
        self._flush = False
        self._condition = threading.Condition()
        self._journal: SubmitJournal | None = None
        self._closed = False
        self.commits = 0
        self.opens = 0
        """Times the writer opened the file (each ~20 ms of CPU with its close)."""
        self.failed = False
        self.thread_cpu_s = 0.0
        """CPU seconds the writer thread used, known once closed (benchmarks report it)."""
        self._thread = threading.Thread(target=self._drain, name="pixellab-ledger", daemon=True)
        self._thread.start()

    async def write(self, statements: Sequence[Statement]) -> None:
        """Queue ``statements`` as one atomic unit, commit at once and return once durable."""
        future = self.submit(statements)
        self.flush()
        await future

    def submit(self, statements: Sequence[Statement]) -> asyncio.Future[None]:
        """Queue ``statements`` as one atomic unit; the future resolves once they are durable,
        at the latest ``batch_window_s`` after the oldest unit queued (sooner after
        :meth:`flush`).

        Units commit in the order they were submitted, so a caller may go on without waiting
        (a later unit never lands before an earlier one) and collect the future later. Must be
        called from a running event loop.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._condition:
            if self._closed:
                raise LedgerError("ledger writer is closed")
            pending = self._pending
            if not pending:
                self._first_queued = time.monotonic()
            pending.append((statements, future))
            if len(pending) == 1 or len(pending) == self.max_batch_units:
                self._condition.notify()  # the writer waits for the first, or for a full batch
        return future

    def flush(self) -> None:
        """Commit what is queued now instead of at the end of the batching window: for a
        caller about to wait for its writes."""
        with self._condition:
            if self._pending and not self._flush:
                self._flush = True
                self._condition.notify()

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

    def _next_batch(self, holding: bool) -> list[_Unit]:
        """What to commit next: everything queued, once the window since the oldest unit has
        passed (at once when flushed, full or closing). Empty when nothing came: at once when
        closing, else after a short poll while ``holding`` the file."""
        with self._condition:
            if not self._pending and not self._closed:
                self._condition.wait(timeout=_IDLE_POLL_S if holding else None)
            if not self._pending:
                return []
            while not (self._flush or self._closed
                       or len(self._pending) >= self.max_batch_units):
                left = self._first_queued + self.batch_window_s - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(timeout=left)
            batch, self._pending, self._flush = self._pending, [], False
            return batch

    def _open(self) -> duckdb.DuckDBPyConnection:
        con = self.ledger.open(read_only=False)
        self.opens += 1
        # A waiter's mark from before this open (or this writer's own, from its retries) is
        # stale: whoever still waits marks again on its next try.
        _unlink(self.ledger.waiting_marker)
        # One DuckDB thread: these statements are tiny, and its worker threads would spend
        # ~30 % more CPU handing them around (P10). A setting of the database, not of this
        # connection, so other connections of this process still share it.
        con.execute("set threads = 1")
        return con

    def _drain(self) -> None:
        con: duckdb.DuckDBPyConnection | None = None
        held_since = last_commit = 0.0
        marker = str(self.ledger.waiting_marker)
        try:
            while True:
                batch = self._next_batch(holding=con is not None)
                if batch:
                    error: BaseException | None = None
                    try:
                        if con is None:
                            con = self._open()
                            held_since = time.monotonic()
                        with self.ledger._write_lock:
                            Ledger.execute_in_transaction(
                                con, [s for statements, _ in batch for s in statements])
                        self.commits += 1
                    except BaseException as exc:  # handed to every waiter below
                        error = exc
                        self.failed = True
                    _resolve_all(batch, error)
                    last_commit = time.monotonic()
                if con is None:
                    if not batch and self._finished():
                        return
                    continue
                now = time.monotonic()
                if not batch and (now - last_commit >= self.linger_s or self._finished()):
                    con.close()  # idle (or done): let readers in
                    con = None
                elif os.path.exists(marker) or now - held_since > self.max_hold_s:
                    con.close()
                    con = None
                    time.sleep(self.release_gap_s)  # the waiter's turn
        finally:
            if con is not None:
                con.close()
            self.thread_cpu_s = time.thread_time()

    def _finished(self) -> bool:
        with self._condition:
            return self._closed and not self._pending

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


def _resolve_all(batch: list[_Unit], error: BaseException | None) -> None:
    """Hand the outcome to each waiter's loop: one wake-up per loop, not one per unit."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, future in batch:
        by_loop.setdefault(future.get_loop(), []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures, error)
        except RuntimeError:  # the loop is closed: nobody is left to wait
            pass


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _unlink(path: os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
