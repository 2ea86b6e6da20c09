"""House rules that a reviewer would otherwise check by hand."""

from __future__ import annotations

import ast
import json
import re
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


def test_the_layer_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter]: every module imports only from layers below it,
    adapters never reach the ledger, scorers never reach a provider."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = run_process([lint, "--no-cache", "--no-logo"], cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout


def _import_cycles() -> list[list[str]]:
    """Strongly connected groups of modules of pixellab/ that import each other (lazy
    imports inside functions included: grimp reads every import statement)."""
    import grimp

    graph = grimp.build_graph("pixellab", cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_the_package_is_in_an_import_cycle() -> None:
    assert _import_cycles() == []


_SQL = re.compile(r"^\s*(select|insert\s+into|update\s+\w+\s+set|delete\s+from|create\s+table"
                  r"|alter\s+table|with\s+\w+\s+as)\b", re.IGNORECASE)
_SQL_BODY = re.compile(r"\b(from|into|set|table|values|where)\b", re.IGNORECASE)


def test_sql_lives_only_in_the_ledger_package() -> None:
    """Every SQL statement of pixellab is in pixellab/ledger/: the table layout is known in one
    place. (The emulator is a stand-in for providers and speaks no SQL either.)"""
    found = []
    for path in sorted((REPO / "pixellab").rglob("*.py")):
        if path.is_relative_to(REPO / "pixellab" / "ledger"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # an f-string: its literal parts, joined
                text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if _SQL.match(text) and _SQL_BODY.search(text):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text[:60]!r}")
    assert found == []


def test_the_public_face_exports_each_name_from_its_home_and_loads_nothing_heavy() -> None:
    script = ("import sys, pixellab\n"
              "heavy = [m for m in ('pixellab.sweep', 'pixellab.routing', 'duckdb', 'pandas')"
              " if m in sys.modules]\n"
              "from pixellab import (Sweep, SweepSpec, Workbench, generate, load_catalog, route,"
              " select)\n"
              "print(heavy, select.__module__, Sweep.__module__, generate.__module__)\n")
    result = run_process([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "pixellab.selection", "pixellab.sweep",
                                     "pixellab.routing"]
