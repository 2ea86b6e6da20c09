"""The configuration spine: settings are read in one place, and a workbench decides from its
home which catalog, routing table, task scoring, taxonomy and marketplace profiles its work
follows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pixellab.errors import ConfigError
from pixellab.settings import current
from pixellab.workbench import Workbench
from tests.conftest import REPO


def test_a_bad_setting_is_one_config_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("PIXELLAB_WEBHOOK_PORT", "80a")
    with pytest.raises(ConfigError, match="^PIXELLAB_WEBHOOK_PORT: .*integer"):
        current()


def test_an_empty_setting_means_its_default(monkeypatch) -> None:
    monkeypatch.setenv("PIXELLAB_PROMPTS", "")
    assert current().prompts == Path("prompts")


def test_the_ledger_batch_window_is_a_bounded_number_of_seconds(monkeypatch) -> None:
    assert current().ledger_batch_window_s == 1.0
    monkeypatch.setenv("PIXELLAB_LEDGER_BATCH_WINDOW_S", "0")
    assert current().ledger_batch_window_s == 0.0
    monkeypatch.setenv("PIXELLAB_LEDGER_BATCH_WINDOW_S", "-1")
    with pytest.raises(ConfigError, match="^PIXELLAB_LEDGER_BATCH_WINDOW_S: "):
        current()


def test_the_workbench_reads_its_catalog_from_its_own_home_not_pixellab_home(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIXELLAB_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "home"
    (home / "catalog").mkdir(parents=True)
    (home / "catalog" / "mine.toml").write_text(
        '[models."local:mine"]\ntasks = ["enhance"]\nendpoint = "autoenhance"\n'
        'pricing = { unit = "image", usd_per_unit = 0.0 }\n')
    assert "local:mine" in Workbench(home).catalog.models
    assert "local:mine" not in Workbench(tmp_path / "other").catalog.models


def test_task_scoring_taxonomy_and_marketplaces_come_from_the_home_when_it_has_them(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    plain = Workbench(tmp_path / "plain")
    assert "enhance" in plain.task_scoring and "amazon_main" in plain.marketplaces
    (home / "tasks.toml").write_text('[enhance]\nmetrics = ["blank"]\n')
    (home / "marketplaces.toml").write_text(
        "[profiles.shop_square]\nsquare_required = true\n")
    bench = Workbench(home)
    assert set(bench.task_scoring) == {"enhance"}
    assert bench.task_scoring["enhance"].metrics == ("blank",)
    assert set(bench.marketplaces) == {"shop_square"}
    assert bench.taxonomy.categories == plain.taxonomy.categories  # none in the home


def test_the_routing_table_is_the_homes_unless_the_home_is_the_default_one(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIXELLAB_DEFAULTS", str(tmp_path / "team.toml"))
    assert Workbench(tmp_path / "h").routes_path == tmp_path / "h" / "defaults.toml"
    monkeypatch.setenv("PIXELLAB_HOME", str(tmp_path / "h2"))
    assert Workbench().routes_path == tmp_path / "team.toml"


def test_only_the_settings_module_reads_pixellab_variables() -> None:
    """A variable read elsewhere would escape validation and the workbench (secrets, read
    where they are used and listed for redaction, are not settings)."""
    readers = []
    for path in sorted((REPO / "pixellab").rglob("*.py")):
        if path.name in ("settings.py", "redact.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            read = None
            if isinstance(node, ast.Call) and node.args and (
                    ast.unparse(node.func) in ("os.environ.get", "os.getenv")):
                read = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                read = node.slice
            if (isinstance(read, ast.Constant) and isinstance(read.value, str)
                    and read.value.startswith("PIXELLAB_")):
                readers.append(f"{path.relative_to(REPO)}:{node.lineno}: {read.value}")
    assert readers == []
