"""House rules that a reviewer would otherwise check by hand."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_process


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    result = run_process([ruff, "check", "pixellab", "tests", "benchmarks", "datasets"],
                         cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_mypy_finds_nothing_in_the_package() -> None:
    result = run_process([sys.executable, "-m", "mypy", "pixellab"], cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout


def test_notebooks_are_committed_without_outputs() -> None:
    for path in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name


def test_the_ci_script_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && ") and command.endswith("-m pytest")
    assert f"```bash\n{command}\n```" in readme
    assert "clip" in command, "the CLIP tests need the clip extra in the test set-up"
