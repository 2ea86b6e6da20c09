"""The ledger: a real DuckDB file, versioned schema, exact money, readable during a sweep."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pixellab.ledger import SCHEMA_VERSION, Ledger, LedgerError


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
