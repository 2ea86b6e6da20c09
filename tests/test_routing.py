"""Auto-routing: the chain comes from defaults.toml (category, then the global default, then the
catalog), it runs with fallbacks like a sweep, and the ledger's attempt rows show each step."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

import pixellab
from pixellab.errors import ConfigError
from pixellab.routing import current_defaults, generate, load_routes, route
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import product_photo
from tests.test_cli import pixellab as run_cli

ROUTES = """
[routes.packshot.kitchen]
chain = ["local:blank", "local:packshot"]
verdict = "clear winner"

[routes.packshot."*"]
chain = ["local:packshot-threshold"]
verdict = "no clear winner"

[routes.packshot.toys]
chain = []
verdict = "insufficient data (n < 5)"
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "defaults.toml"
    path.write_text(ROUTES)
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    image, _ = product_photo(4)
    path = tmp_path / "mug.png"
    image.save(path)
    return path


def test_a_known_category_gets_its_own_chain(workbench: Workbench, routes_file: Path) -> None:
    chosen = route("kitchen", "packshot", routes=routes_file, catalog=workbench.catalog)
    assert chosen.model_ids == ("local:blank", "local:packshot")
    assert "routes.packshot.kitchen" in chosen.source and chosen.verdict == "clear winner"


@pytest.mark.parametrize("category", ["garden", "toys", None])
def test_an_unknown_or_undecided_category_gets_the_global_default(
        workbench: Workbench, routes_file: Path, category: str | None) -> None:
    chosen = route(category, "packshot", routes=routes_file, catalog=workbench.catalog)
    assert chosen.model_ids == ("local:packshot-threshold",)
    assert 'routes.packshot."*"' in chosen.source


def test_without_a_routing_table_the_catalog_chain_is_used(workbench: Workbench,
                                                           tmp_path: Path) -> None:
    chosen = route("kitchen", "packshot", routes=tmp_path / "absent.toml",
                   catalog=workbench.catalog)
    assert chosen.model_ids == workbench.catalog.chains[chosen.task]
    assert "catalog" in chosen.source


def test_a_task_the_table_does_not_decide_falls_back_to_the_catalog(
        workbench: Workbench, routes_file: Path) -> None:
    chosen = route("kitchen", "enhance", routes=routes_file, catalog=workbench.catalog)
    assert chosen.model_ids == ("local:autoenhance",) and "no decision for enhance" in chosen.source


def test_a_chain_naming_a_model_the_catalog_lost_is_a_clear_error(
        workbench: Workbench, tmp_path: Path) -> None:
    path = tmp_path / "defaults.toml"
    path.write_text('[routes.packshot.kitchen]\nchain = ["fal:gone"]\n')
    with pytest.raises(ConfigError, match=r"routes.packshot.kitchen.chain\[0\]: unknown model"):
        route("kitchen", "packshot", routes=path, catalog=workbench.catalog)


def test_a_malformed_routing_table_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "defaults.toml"
    path.write_text('[routes.repaint.kitchen]\nchain = ["local:packshot"]\n')
    with pytest.raises(ConfigError, match="defaults.toml: routes.repaint"):
        load_routes(path)


def test_current_defaults_prefer_the_table_over_the_catalog(workbench: Workbench,
                                                            routes_file: Path) -> None:
    current = current_defaults(load_routes(routes_file), workbench.catalog)
    assert current[("packshot", "kitchen")] == "local:blank"
    assert current[("packshot", "*")] == "local:packshot-threshold"
    assert current[("enhance", "*")] == "local:autoenhance"


def test_generate_follows_the_table_falls_back_and_the_attempts_show_it(
        workbench: Workbench, routes_file: Path, photo: Path, tmp_path: Path) -> None:
    result = pixellab.generate(photo, "packshot", category="kitchen", workbench=workbench,
                               routes=routes_file, out=tmp_path / "out")
    assert result.succeeded and result.outcome.model_id == "local:packshot"
    attempts = workbench.ledger.query(
        "select attempt_no, model_id, status, error_class, error_reason from attempts "
        "where request_key = ? order by attempt_no", [result.request_key])
    assert attempts[["model_id", "status"]].values.tolist() == [
        ["local:blank", "failed"], ["local:packshot", "succeeded"]]
    assert attempts["error_class"].iloc[0] == "InvalidOutput"
    assert attempts["error_reason"].iloc[0] == "blank_black"
    assert result.written_to == tmp_path / "out" / "mug.packshot.png"
    assert result.written_to.read_bytes() == workbench.store.get(result.outcome.output_sha256,
                                                                 "image/png")
    request = workbench.ledger.query("select category, arm, status from requests "
                                     "where request_key = ?", [result.request_key])
    assert request.values.tolist() == [["kitchen", "route:local:blank>local:packshot",
                                        "succeeded"]]


def test_generating_the_same_photo_again_calls_no_model(workbench: Workbench, routes_file: Path,
                                                       photo: Path) -> None:
    first = generate(photo, "packshot", category="kitchen", workbench=workbench,
                     routes=routes_file)
    again = generate(photo, "packshot", category="kitchen", workbench=workbench,
                     routes=routes_file)
    assert again.reused and again.outcome.output_sha256 == first.outcome.output_sha256
    assert workbench.ledger.scalar("select count(*) from attempts") == 2


def test_generate_refuses_a_missing_image(workbench: Workbench, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no image file"):
        generate(tmp_path / "nope.png", "packshot", workbench=workbench)


def test_select_then_generate_on_the_command_line(tmp_path: Path, dataset_dir: Path,
                                                  test_catalog_dir: Path, photo: Path) -> None:
    """`pixellab select` writes defaults.toml from a sweep; `pixellab generate` follows it,
    falls back past a model that fails, and says where the output went."""
    home = tmp_path / "home"
    env = {"PIXELLAB_CATALOG": str(test_catalog_dir)}
    workbench = Workbench(home, catalog=pixellab.catalog.load_catalog(test_catalog_dir))
    Sweep(SweepSpec.parse({"name": "pk", "task": "remove_background",
                           "dataset": str(dataset_dir),
                           "models": ["local:cutout", "local:cutout-threshold"]}),
          workbench).run()
    selected = run_cli("select", "pk", "--home", str(home), "--min-products", "2",
                       "--resamples", "200", env=env)
    assert selected.returncode == 0, selected.stderr
    table = load_routes(home / "defaults.toml")
    assert table is not None
    chain = table.routes[pixellab.tasks.Task.REMOVE_BACKGROUND]["kitchen"].chain
    assert set(chain) == {"local:cutout", "local:cutout-threshold"}
    assert "Routing table:" in selected.stdout
    assert "Test: paired sign-flip permutation test over products at 5%" in selected.stdout
    assert "Benjamini-Hochberg" in selected.stdout and "p / q" in selected.stdout
    # put a failing model first, as a provider outage would
    data = tomllib.loads((home / "defaults.toml").read_text())
    data["routes"]["remove_background"]["kitchen"]["chain"].insert(0, "local:broken")
    (home / "defaults.toml").write_text(tomli_w.dumps(data))
    done = run_cli("generate", "--task", "remove_background", "--image", str(photo),
                   "--category", "kitchen", "--home", str(home), env=env)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines() if "attempt " in line]
    assert lines[0].startswith("attempt 1: local:broken failed (ProviderUnavailable")
    assert lines[-1] == f"attempt {len(lines)}: {chain[0]} succeeded"  # after broken's retries
    assert "Output:" in done.stdout and str(home / "store") in done.stdout.replace("\n", "")


def test_select_names_an_unknown_sweep_in_one_line(tmp_path: Path) -> None:
    Workbench(tmp_path / "home")
    done = run_cli("select", "nope", "--home", str(tmp_path / "home"))
    assert done.returncode == 2 and "no sweep 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
