"""The ledger: a real DuckDB file, versioned schema, exact money, readable during a sweep."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pixellab.ledger import SCHEMA_VERSION, Ledger, LedgerError, Row, Statement, coalesce


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
    """Another process reads the ledger read-only, repeatedly, while a sweep is writing it."""
    home = tmp_path / "home"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: live\ntask: remove_background\ndataset: {dataset_dir}\n"
                    "models: [local:cutout, local:cutout-threshold]\nseeds: [0, 1, 2]\n")
    Ledger(home / "ledger.duckdb")  # exists before the reader starts
    sweep = subprocess.Popen([sys.executable, "-m", "pixellab.cli", "sweep", "run", str(spec),
                              "--home", str(home)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    reader = Ledger(home / "ledger.duckdb", read_only=True)
    counts = []
    while sweep.poll() is None:
        counts.append(reader.scalar("select count(*) from attempts"))
        time.sleep(0.05)
    output = sweep.stdout.read() if sweep.stdout else ""
    assert sweep.returncode == 0, output
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
