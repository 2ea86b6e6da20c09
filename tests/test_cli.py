"""The command line, run as a user runs it: a subprocess, real files, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixellab.ledger import Ledger
from tests.conftest import BAD_INPUTS, REPO, run_process, write_dataset_with_bad_inputs


def pixellab(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return run_process([sys.executable, "-m", "pixellab.cli", *args], cwd=cwd,
                       env={**os.environ, **(env or {})}, timeout=600)


def paid_sweep(tmp_path: Path, dataset_dir: Path, command: str, spec_lines: str
               ) -> subprocess.CompletedProcess[str]:
    """`pixellab sweep COMMAND` on an enhance sweep of a $0.05-per-image model, budget $0.10."""
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "paid.toml").write_text('[models."local:paid"]\ntasks = ["enhance"]\n'
                                      'endpoint = "autoenhance"\n'
                                      'pricing = { usd_per_unit = 0.05 }\n')
    spec = tmp_path / "s.yaml"
    spec.write_text(f"{spec_lines}task: enhance\ndataset: {dataset_dir}\nmodels: [local:paid]\n"
                    "budget_usd: 0.1\n")
    return pixellab("sweep", command, str(spec), "--home", str(tmp_path / "h"),
                    env={"PIXELLAB_CATALOG": str(folder)})


def test_a_malformed_catalog_is_one_clear_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "mine.toml").write_text('[models."fal:x"]\ntasks = ["enhance"]\n'
                                      'pricing = { usd_per_unit = "lots" }\n')
    result = pixellab("catalog", env={"PIXELLAB_CATALOG": str(folder)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "mine.toml" in lines[0] and 'models."fal:x".pricing.usd_per_unit' in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "mine.toml").write_text("[models\n")
    result = pixellab("--debug", "catalog", env={"PIXELLAB_CATALOG": str(folder)})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_catalog_lists_the_local_models() -> None:
    result = pixellab("catalog")
    assert result.returncode == 0 and "local:cutout" in result.stdout


def test_sweep_run_stops_on_budget_with_a_clear_message_and_exit_3(
        tmp_path: Path, dataset_dir: Path) -> None:
    result = paid_sweep(tmp_path, dataset_dir, "run", "name: b\nconcurrency: 1\n")
    assert result.returncode == 3, result.stderr
    assert "budget" in result.stderr and "sweep resume b" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_writes_the_report_and_a_second_run_makes_no_provider_calls(tmp_path: Path) -> None:
    dataset = write_dataset_with_bad_inputs(tmp_path / "data")
    home, report = tmp_path / "home", tmp_path / "out" / "demo.html"
    args = ("demo", "--dataset", str(dataset), "--home", str(home), "--report", str(report))

    first = pixellab(*args)
    assert first.returncode == 0, first.stderr
    html = report.read_text()
    assert html.count("data:image/") >= 4 * 6  # inputs and outputs embedded
    for reason in BAD_INPUTS.values():
        assert reason in html
    ledger = Ledger(home / "ledger.duckdb", read_only=True)
    attempts = ledger.scalar("select count(*) from attempts")
    costs = ledger.scalar("select count(*) from costs")
    # 4 good photos x 3 image tasks x 2 models; clips, upscales and scenes of the first product
    # of each of the two categories from 2 models each; no product has angles, so no
    # multi-angle sweep, and no real-photo sweeps beside a dataset other than the sample
    assert ledger.scalar("select count(*) from requests where status = 'succeeded'") == (
        4 * 6 + 2 * 2 + 2 * 2 + 2 * 2)
    assert ledger.scalar("select count(*) from requests where task = 'upscale' and "
                         "model_id = 'local:realesrgan-compact' and status = 'succeeded'") == 2
    assert ledger.scalar("select count(*) from requests where task = 'image_to_video' and "
                         "status = 'succeeded'") == 2 * 2
    assert ledger.scalar("select count(*) from requests where error_class = "
                         "'InvalidInputImage'") == 3 * 6

    second = pixellab(*args)
    assert second.returncode == 0, second.stderr
    assert ledger.scalar("select count(*) from attempts") == attempts
    assert ledger.scalar("select count(*) from costs") == costs
    assert "Report:" in second.stdout


def test_sweep_estimate_prints_the_cost_and_exits_3_over_budget(
        tmp_path: Path, dataset_dir: Path) -> None:
    result = paid_sweep(tmp_path, dataset_dir, "estimate", "name: e\n")
    assert result.returncode == 3, result.stderr
    assert "4 of 4 request(s) to run; estimated $0.2000" in result.stdout
    assert "over budget" in result.stderr
    ledger = tmp_path / "h" / "ledger.duckdb"
    assert not ledger.exists() or Ledger(ledger).scalar("select count(*) from attempts") == 0
