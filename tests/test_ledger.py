"""The ledger: a real DuckDB file, versioned schema, exact money, readable during a sweep."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pixellab.errors import LedgerError
from pixellab.ledger import SCHEMA_VERSION, Ledger, Row, Statement, coalesce
from tests.conftest import started


def test_a_new_ledger_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    assert ledger.scalar("select max(version) from schema_migrations") == SCHEMA_VERSION


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.duckdb")
    ledger = Ledger(tmp_path / "l.duckdb")
    assert ledger.scalar("select count(*) from schema_migrations") == SCHEMA_VERSION


def test_a_ledger_from_a_newer_pixellab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    Ledger(path)
    with duckdb.connect(str(path)) as con:
        con.execute("insert into schema_migrations values (99, now())")
    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)


def test_money_is_stored_exactly(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    ledger.write([Ledger.record_cost(f"a{i}", "k", "s", "fal", "fal:x", 0, 0.1, True)
                  for i in range(10)])
    assert ledger.scalar("select sum(usd) from costs") == Decimal("1.000000")


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    with pytest.raises(duckdb.Error):
        ledger.write([Ledger.record_cost("a", "k", "s", "fal", "fal:x", 0, 0.1, True),
                      ("insert into nowhere values (1)", [])])
    assert ledger.scalar("select count(*) from costs") == 0


def test_a_notebook_can_read_while_a_sweep_writes(tmp_path: Path, dataset_dir: Path) -> None:
    """Another process reads the ledger read-only, repeatedly, while a sweep is writing it.

    The sweep commits each attempt at once (``PIXELLAB_LEDGER_BATCH_WINDOW_S=0``) and runs one
    at a time: with the default one-second window a short sweep on a fast machine may land in
    a single commit, and the reader would rightly see only before and after."""
    home = tmp_path / "home"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: live\ntask: remove_background\ndataset: {dataset_dir}\n"
                    "models: [local:cutout, local:cutout-threshold]\nseeds: [0, 1, 2]\n"
                    "concurrency: 1\n")
    Ledger(home / "ledger.duckdb")  # exists before the reader starts
    log = tmp_path / "sweep.log"  # a file, not a pipe: a full pipe would stall the sweep
    with log.open("w") as output, \
            started([sys.executable, "-m", "pixellab.cli", "sweep", "run", str(spec),
                     "--home", str(home)], stdout=output, stderr=output,
                    env={**os.environ, "PIXELLAB_LEDGER_BATCH_WINDOW_S": "0"}) as sweep:
        reader = Ledger(home / "ledger.duckdb", read_only=True)
        counts = []
        deadline = time.monotonic() + 300
        while sweep.poll() is None:
            assert time.monotonic() < deadline, "the sweep did not finish in 300 s"
            counts.append(reader.scalar("select count(*) from attempts"))
            time.sleep(0.05)
    assert sweep.returncode == 0, log.read_text()
    counts.append(reader.scalar("select count(*) from attempts"))
    assert counts == sorted(counts) and counts[-1] == 4 * 2 * 3
    assert len(set(counts)) > 2  # we saw the sweep progress, not just before and after


# --- merged row writes ---------------------------------------------------------------------


def _tables(ledger: Ledger) -> dict[str, list[tuple[object, ...]]]:
    with ledger.connect() as con:
        return {table: sorted(con.execute(f"select * from {table}").fetchall(), key=repr)
                for table in ("attempts", "costs", "outputs", "requests", "scores")}


def _tricky_units() -> list[Statement]:
    """Orders a merge could get wrong: an attempt finished before another starts and finishes
    (a skip), a job id set then the attempt finished, the same output twice, raw SQL between."""
    statements: list[Statement] = [
        ("insert into requests (request_key, status) values ('k1', 'planned'), "
         "('k2', 'planned')", []),
        Ledger.start_attempt("a1", "k1", "s", 1, "fal", "fal:x"),
        Ledger.set_provider_job("a1", "job-1", {"status_url": "u"}),
        Ledger.finish_attempt("a1", status="failed", latency_s=1.0, error_class="ProviderError",
                              retryable=True),
        Ledger.start_attempt("a2", "k1", "s", 2, "fal", "fal:y"),
        Ledger.finish_attempt("a2", status="skipped", latency_s=0.0,
                              error_class="MissingCredentials"),
        Ledger.start_attempt("a3", "k2", "s", 1, "fal", "fal:x"),
        Ledger.finish_attempt("a3", status="succeeded", latency_s=2.0, credits=2, usd=0.05,
                              output_sha256="h1"),
        Ledger.record_output("h1", "image/png", 8, 8, 100),
        Ledger.record_output("h1", "image/png", 8, 8, 100),
        Ledger.record_cost("a3", "k2", "s", "fal", "fal:x", 2, 0.05, False),
        Ledger.finish_request("k2", status="succeeded", model_id="fal:x", output_sha256="h1"),
        ("update requests set status = 'running' where request_key = 'k1'", []),
        Ledger.finish_request("k1", status="failed", error_class="ProviderError"),
        Ledger.record_score("h1", "blank", "q", 0.0, None, {}),
        Ledger.record_score("h1", "blank", "q", 0.0, None, {}),
        # two update shapes whose first appearance is in the other order than for k1
        Row("requests", ("request_key", "status", "model_id"), ("k2", "x", "m"),
            key=("request_key",), update=True),
        Row("requests", ("request_key", "status"), ("k1", "first"), key=("request_key",),
            update=True),
        Row("requests", ("request_key", "status", "model_id"), ("k1", "last", "m"),
            key=("request_key",), update=True),
    ]
    return statements


def test_merged_row_writes_leave_the_same_tables_as_one_statement_each(tmp_path: Path) -> None:
    merged, one_by_one = Ledger(tmp_path / "m.duckdb"), Ledger(tmp_path / "o.duckdb")
    statements = _tricky_units()
    merged.write(statements)
    for statement in statements:
        one_by_one.write([statement])
    assert _tables(merged) == _tables(one_by_one)
    row = merged.query("select provider_job_id, status from attempts where attempt_id = 'a1'")
    assert row.iloc[0].tolist() == ["job-1", "failed"]  # the finish kept the job id
    assert merged.scalar("select status from requests where request_key = 'k1'") == "last"


def test_rows_of_one_shape_become_one_statement() -> None:
    starts = [Ledger.start_attempt(f"a{i}", f"k{i}", "s", 1, "fal", "fal:x") for i in range(64)]
    finishes = [Ledger.finish_attempt(f"a{i}", status="succeeded", latency_s=1.0)
                for i in range(64)]
    assert len(list(coalesce([*starts, *finishes]))) == 2
    # the same attempt updated twice in different shapes keeps its order: three statements
    twice = [starts[0], Ledger.set_provider_job("a0", "j"), finishes[0]]
    assert [sql.split()[0] for sql, _ in coalesce(twice)] == ["insert", "update", "update"]


# --- the submit journal: a paid create is on disk before it is sent ----------------------


def _start(attempt_id: str) -> Row:
    return Ledger.start_attempt(attempt_id, "k", "s", 1, "fal", "fal:x", status="submitting")


async def test_a_journaled_row_is_on_disk_before_its_commit_and_gone_after_close(
        tmp_path: Path) -> None:
    from pixellab.ledger import LedgerWriter, SubmitJournal

    ledger = Ledger(tmp_path / "l.duckdb")
    writer = LedgerWriter(ledger)
    try:
        future = writer.journal(_start("a1"))
        [journal] = SubmitJournal.folder(ledger.path).glob("*.jsonl")
        assert '"a1"' in journal.read_text()  # before anything was awaited
        await future
    finally:
        writer.close()
    assert not journal.exists()
    assert ledger.scalar("select status from attempts where attempt_id = 'a1'") == "submitting"


def test_a_dead_processs_journal_is_folded_into_the_ledger_and_a_live_ones_is_not(
        tmp_path: Path) -> None:
    """What a SIGKILL between the journal append and the commit leaves: the next run's resume
    finds the attempt as ``submitting``; a journal still locked by a running sweep is left."""
    from pixellab.ledger import SubmitJournal

    ledger = Ledger(tmp_path / "l.duckdb")
    dead = SubmitJournal.create(ledger.path)
    dead.append(_start("orphan"))
    dead.append(_start("landed"))
    ledger.write([_start("landed")])  # this one had reached the ledger too
    with open(dead.path, "ab") as handle:
        handle.write(b'{"table": "attempts", "colu')  # killed mid-line
    live = SubmitJournal.create(ledger.path)
    live.append(_start("in-flight"))
    live.close(delete=False)  # and hand its lock to another process, still running
    script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    with started([sys.executable, "-c", script, str(live.path)],
                 stdout=subprocess.PIPE) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        dead.close(delete=False)  # its process died: nothing holds its lock
        assert ledger.recover_journals() == 1
        assert not dead.path.exists() and live.path.exists()
        assert sorted(ledger.query("select attempt_id from attempts")["attempt_id"]) == [
            "landed", "orphan"]
    ledger.resume_state(["k"])  # its holder has gone too: folded in on the next resume
    assert not live.path.exists()
    assert set(ledger.query("select status from attempts")["status"]) == {"submitting"}
    assert ledger.scalar("select count(*) from attempts") == 3


# --- the writer: batching window, and letting readers in while it holds the file ----------


async def test_an_awaited_write_does_not_wait_for_the_batching_window(tmp_path: Path) -> None:
    """Write-behind units gather for up to ``batch_window_s``; ``write`` (and ``flush``)
    commit what is queued at once, in order, and every future resolves once durable."""
    from pixellab.ledger import LedgerWriter

    ledger = Ledger(tmp_path / "l.duckdb")
    writer = LedgerWriter(ledger, batch_window_s=60.0)
    try:
        behind = writer.submit([Ledger.record_cost("a1", "k", "s", "fal", "fal:x", 0, 0.1, True)])
        started_at = time.monotonic()
        await writer.write([Ledger.record_cost("a2", "k", "s", "fal", "fal:x", 0, 0.1, True)])
        assert time.monotonic() - started_at < 10
        assert behind.done() and behind.exception() is None  # committed with it
        assert writer.commits == 1
        later = writer.submit([Ledger.record_cost("a3", "k", "s", "fal", "fal:x", 0, 0.1, True)])
        writer.flush()
        await asyncio.wait_for(later, 10)
    finally:
        writer.close()
    assert ledger.scalar("select count(*) from costs") == 3


async def test_write_behind_units_are_committed_within_the_window(tmp_path: Path) -> None:
    from pixellab.ledger import LedgerWriter

    ledger = Ledger(tmp_path / "l.duckdb")
    writer = LedgerWriter(ledger, batch_window_s=0.2)
    try:
        futures = [writer.submit([Ledger.record_cost(f"a{i}", "k", "s", "fal", "fal:x", 0, 0.1,
                                                     True)]) for i in range(5)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)  # nobody flushed
        assert writer.commits == 1  # all five in one transaction
    finally:
        writer.close()


_READER = """
import sys, time
from pixellab.ledger import Ledger
reader = Ledger(sys.argv[1], read_only=True, lock_timeout_s=20)
for _ in range(4):
    started = time.monotonic()
    count = reader.scalar("select count(*) from costs")
    print(f"{time.monotonic() - started:.3f} {count}", flush=True)
    time.sleep(0.3)
"""


async def test_a_reader_is_let_in_while_the_writer_holds_the_file_under_load(
        tmp_path: Path) -> None:
    """Under sustained load the writer keeps the file (no idle gap, ``max_hold_s`` far away),
    yet a reader in another process gets in within about a commit: its wait leaves
    :attr:`Ledger.waiting_marker`, and the writer lets go at its next commit."""
    from pixellab.ledger import LedgerWriter

    ledger = Ledger(tmp_path / "l.duckdb")
    writer = LedgerWriter(ledger, batch_window_s=0.05, linger_s=600, max_hold_s=600)
    lines: list[str] = []
    try:
        await writer.write([Ledger.record_cost("a0", "k", "s", "fal", "fal:x", 0, 0.1, True)])
        assert writer.opens == 1
        with started([sys.executable, "-c", _READER, str(ledger.path)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as reader:
            i = 0
            deadline = time.monotonic() + 120
            while reader.poll() is None:  # a write every 10 ms until the reader is done
                assert time.monotonic() < deadline, "the reader did not finish in 120 s"
                i += 1
                writer.submit([Ledger.record_cost(f"a{i}", "k", "s", "fal", "fal:x", 0, 0.1,
                                                  True)])
                await asyncio.sleep(0.01)
            assert reader.stdout is not None
            lines = reader.stdout.read().splitlines()
            assert reader.returncode == 0, lines
        writer.flush()
    finally:
        writer.close()
    waits = [float(line.split()[0]) for line in lines]
    counts = [int(line.split()[1]) for line in lines]
    assert len(waits) == 4 and max(waits) < 5, lines
    assert counts == sorted(counts) and counts[-1] > counts[0]  # it saw the writes land
    assert writer.opens > 1  # the writer let go for it (and came back)
