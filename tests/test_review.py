"""Human review: which pairs a rater sees, how votes are stored, and the notebook end to end.

One real sweep (two local cut-out models over 12 sample products) feeds every test; each test
rates under its own rater name, so they do not see each other's votes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat import NotebookNode
from PIL import Image

from pixellab import evidence, ratings, review
from pixellab.errors import ConfigError
from pixellab.ledger import Ledger
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "30_review.ipynb"
ARMS = ("local:cutout", "local:cutout-threshold")


@pytest.fixture(scope="module")
def workbench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    workbench = Workbench(tmp_path_factory.mktemp("review") / "home")
    spec = SweepSpec.parse({"name": "rev", "task": "remove_background",
                            "dataset": str(REPO / "datasets" / "sample"), "models": list(ARMS),
                            "limit": 12, "concurrency": 2})
    result = Sweep(spec, workbench).run()
    assert result.succeeded == 24
    return workbench


@pytest.fixture(scope="module")
def frame(workbench: Workbench) -> pd.DataFrame:
    return evidence.scored_requests(workbench.ledger, ["rev"])


# --- which pairs ---------------------------------------------------------------------------


def test_a_pair_is_one_product_and_task_seen_by_two_different_arms(frame: pd.DataFrame) -> None:
    pairs = ratings.pairs_to_rate(frame, rater="ann")
    assert len(pairs) == 12  # 12 products, two arms: one pair each
    assert len({p.product_id for p in pairs}) == 12
    succeeded = {(r.product_id, r.task, r.arm): r.output_sha256
                 for r in frame.itertuples() if r.status == "succeeded"}
    for pair in pairs:
        assert {pair.left.arm, pair.right.arm} == set(ARMS)
        assert pair.left.output_sha256 != pair.right.output_sha256
        for side in (pair.left, pair.right):
            assert succeeded[(pair.product_id, pair.task, side.arm)] == side.output_sha256


def test_a_failed_output_is_never_offered(frame: pd.DataFrame) -> None:
    broken = frame.copy()
    broken.loc[broken["product_id"] == "apparel-01", "status"] = "failed"
    offered = {p.product_id for p in ratings.pairs_to_rate(broken, rater="ann")}
    assert "apparel-01" not in offered and len(offered) == 11


def test_two_identical_outputs_are_not_worth_a_vote(frame: pd.DataFrame) -> None:
    same = frame.copy()
    rows = same["product_id"] == "cosmetics-02"
    same.loc[rows, "output_sha256"] = same.loc[rows, "output_sha256"].iloc[0]
    offered = {p.product_id for p in ratings.pairs_to_rate(same, rater="ann")}
    assert "cosmetics-02" not in offered and len(offered) == 11


def test_sides_and_order_are_shuffled_but_the_same_for_the_same_seed(frame: pd.DataFrame) -> None:
    first = ratings.pairs_to_rate(frame, rater="ann", seed=7)
    assert ratings.pairs_to_rate(frame, rater="ann", seed=7) == first
    assert {p.left.arm for p in first} == set(ARMS)  # no arm always gets the left side
    other = ratings.pairs_to_rate(frame, rater="ann", seed=8)
    assert [p.product_id for p in other] != [p.product_id for p in first]
    assert {p.outputs for p in other} == {p.outputs for p in first}


def test_task_and_category_narrow_the_pairs(frame: pd.DataFrame) -> None:
    apparel = ratings.pairs_to_rate(frame, rater="ann", category="apparel")
    assert {p.category for p in apparel} == {"apparel"} and len(apparel) == 5
    assert ratings.pairs_to_rate(frame, rater="ann", task="packshot") == []


def test_a_pair_already_rated_is_not_offered_again_in_either_order(
        workbench: Workbench, frame: pd.DataFrame) -> None:
    ledger = workbench.ledger
    before = ratings.pairs_to_rate(frame, rater="bea", ledger=ledger)
    flipped = ratings.Pair(**{**before[0].__dict__, "left": before[0].right,
                              "right": before[0].left})
    ratings.record(ledger, flipped, "tie", "bea")
    ratings.record(ledger, before[1], "a", "bea")
    after = ratings.pairs_to_rate(frame, rater="bea", ledger=ledger)
    assert after == before[2:]  # the rest keep their sides and order: a rater can resume
    assert len(ratings.pairs_to_rate(frame, rater="cem", ledger=ledger)) == 12


# --- storing votes -------------------------------------------------------------------------


def test_a_vote_is_a_b_or_tie_by_a_named_rater(workbench: Workbench,
                                               frame: pd.DataFrame) -> None:
    pair = ratings.pairs_to_rate(frame, rater="dan")[0]
    for winner in ("left", "A", "", "draw"):
        with pytest.raises(ConfigError, match="winner"):
            ratings.record(workbench.ledger, pair, winner, "dan")
    for rater in ("", "   "):
        with pytest.raises(ConfigError, match="rater"):
            ratings.record(workbench.ledger, pair, "a", rater)
    assert ratings.count(workbench.ledger, "dan") == 0


def test_a_vote_stores_what_was_shown_where_and_undo_deletes_it(workbench: Workbench,
                                                                frame: pd.DataFrame) -> None:
    ledger = workbench.ledger
    pair = ratings.pairs_to_rate(frame, rater="eve")[0]
    rating_id = ratings.record(ledger, pair, "b", "eve", comment="cleaner edge")
    stored = ratings.ratings_table(ledger, ["rev"], rater="eve").iloc[0]
    assert stored["rating_id"] == rating_id
    assert (stored["output_a"], stored["arm_a"]) == (pair.left.output_sha256, pair.left.arm)
    assert (stored["output_b"], stored["arm_b"]) == (pair.right.output_sha256, pair.right.arm)
    assert stored["preferred"] == pair.right.arm and stored["comment"] == "cleaner edge"
    ratings.delete(ledger, rating_id)
    assert ratings.ratings_table(ledger, rater="eve").empty


# --- the widgets, without a browser --------------------------------------------------------


def test_the_rater_handles_every_key_and_never_raises(workbench: Workbench,
                                                      frame: pd.DataFrame) -> None:
    ledger = workbench.ledger
    pairs = ratings.pairs_to_rate(frame, rater="fay", ledger=ledger)[:3]
    rater = review.PairRater(ledger, workbench.store, pairs, rater="fay")
    assert rater.progress() == "pair 1 of 3"
    assert not any(arm in rater.view.value for arm in ARMS)  # blind before the vote
    assert "not a key" in rater.press("x") and rater.index == 0
    message = rater.press("1")
    assert pairs[0].left.arm in message and pairs[0].right.arm in message  # revealed after
    assert "nothing stored" in rater.press("s") and rater.rated_count == 1
    assert rater.progress() == "pair 3 of 3"
    assert "deleted" in rater.press("u") and rater.rated_count == 0
    assert rater.progress() == "pair 1 of 3"
    assert "Nothing to undo" in rater.press("u")
    for key in "=2B":
        rater.press(key)
    assert rater.progress() == "all 3 pairs done" and "done" in rater.press("a")
    winners = ratings.ratings_table(ledger, rater="fay")["winner"].tolist()
    assert winners == ["tie", "b", "b"]


def test_the_grid_filters_and_says_how_many_it_shows(workbench: Workbench,
                                                     frame: pd.DataFrame) -> None:
    grid = review.OutputGrid(frame, workbench.store, max_items=5)
    assert "showing 5 of 24" in grid.output.value
    grid.model.value = "local:cutout"
    grid.category.value = "apparel"
    assert "showing 5 of 5" in grid.output.value
    assert grid.output.value.count("<img") == 5 and "apparel-03 · local:cutout" in grid.html()
    grid.result.value = "failed"
    lost = frame[(frame["arm"] == "local:cutout") & (frame["category"] == "apparel")
                 & ~frame["passed"]]  # the identity gate fails a cut-out that lost the product
    assert f"showing {len(lost)} of {len(lost)}" in grid.output.value


def test_before_after_puts_the_photo_left_of_the_divider(workbench: Workbench,
                                                         frame: pd.DataFrame) -> None:
    images = evidence.product_images(workbench.ledger, ["rev"])
    view = review.BeforeAfter(frame, workbench.store, images)
    assert bytes(view.image.value).startswith(b"\x89PNG")
    view.slider.value = 100
    all_photo = view.compose()
    view.slider.value = 0
    all_output = view.compose()
    assert all_photo is not None and all_output is not None
    assert all_photo.size == all_output.size and max(all_photo.size) == 512
    photo = Image.open(images[view.product.value]).convert("RGB")
    photo.thumbnail(all_photo.size)
    corner = (3, 3)
    assert _close(all_photo.getpixel(corner), photo.getpixel(corner))
    assert not _close(all_output.getpixel(corner), photo.getpixel(corner))  # cut away


def _close(a: object, b: object) -> bool:
    assert isinstance(a, tuple) and isinstance(b, tuple)
    return all(abs(x - y) <= 12 for x, y in zip(a, b, strict=True))


# --- the notebook --------------------------------------------------------------------------


def test_the_committed_notebook_has_no_outputs_and_takes_parameters() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "rater = " in "".join(code[0]["source"])


@contextmanager
def review_notebook(parameters: dict[str, object]) -> Iterator[Callable[[str], NotebookNode]]:
    """Execute the review notebook in a real kernel, with papermill's parameter injection, and
    yield a function that runs one more cell in that kernel, as a person at the notebook would.
    No cell may raise."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), parameters)
    client = NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(REPO)}})

    def run(source: str) -> NotebookNode:
        cell = nbformat.v4.new_code_cell(source)
        nb.cells.append(cell)
        return client.execute_cell(cell, len(nb.cells) - 1)

    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        yield run
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert "Traceback" not in json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])


def test_a_person_rates_ten_pairs_with_the_keyboard_alone(workbench: Workbench,
                                                          frame: pd.DataFrame) -> None:
    """Typing ``ab12t=abab`` into the notebook's rating field stores ten votes at once, with
    left and right as they were shown; ``u`` then takes the last one back."""
    ledger = workbench.ledger
    shown = ratings.pairs_to_rate(frame, rater="kim", ledger=ledger, seed=3)
    with review_notebook({"ledger_path": str(ledger.path), "store_path": workbench.store.root,
                          "sweep_ids": ["rev"], "rater": "kim", "seed": 3}) as run:
        typed = run('for end in range(1, 11):  # the browser sends the text after each key\n'
                    '    pair_rater.keys.value = "ab12t=abab"[:end]\n'
                    'print(pair_rater.progress())')
        assert typed.outputs[0]["text"].strip() == "pair 11 of 12"

        stored = ratings.ratings_table(ledger, rater="kim")  # read while the kernel lives
        assert len(stored) == 10
        assert stored["rated_at"].notna().all()
        assert (stored["output_a"] != stored["output_b"]).all()
        outputs = set(ledger.query("select sha256 from outputs")["sha256"])
        assert set(stored["output_a"]) | set(stored["output_b"]) <= outputs
        assert stored["winner"].tolist() == ["a", "b", "a", "b", "tie", "tie", "a", "b", "a",
                                             "b"]
        assert stored["output_a"].tolist() == [p.left.output_sha256 for p in shown[:10]]
        assert stored["output_b"].tolist() == [p.right.output_sha256 for p in shown[:10]]
        assert stored["arm_a"].tolist() == [p.left.arm for p in shown[:10]]
        assert (stored["sweep_id"] == "rev").all()

        undone = run('pair_rater.keys.value = "ab12t=ababu"\n'
                     'print(pair_rater.rated_count, pair_rater.progress())')
        assert undone.outputs[0]["text"].strip() == "9 pair 10 of 12"
        after = ratings.ratings_table(ledger, rater="kim")
        assert after["rating_id"].tolist() == stored["rating_id"].tolist()[:9]


def test_each_key_counts_once_and_deleting_counts_nothing(
        workbench: Workbench, frame: pd.DataFrame) -> None:
    """The browser sends the whole text with every key (``a``, ``ab``, ``ab1``…): only the new
    character is a vote; a backspace or emptying the field is none; retyping after that is."""
    ledger = workbench.ledger
    with review_notebook({"ledger_path": str(ledger.path), "store_path": workbench.store.root,
                          "sweep_ids": ["rev"], "rater": "ana", "seed": 3}) as run:
        run('for text in ["a", "ab", "ab1", "ab", "ab2", "", "a", "aa"]:\n'
            '    pair_rater.keys.value = text')
    stored = ratings.ratings_table(ledger, rater="ana")
    assert stored["winner"].tolist() == ["a", "b", "a", "b", "a", "a"]


def test_the_notebook_says_so_when_there_is_nothing_to_rate(tmp_path: Path) -> None:
    empty = Ledger(tmp_path / "ledger.duckdb")
    with review_notebook({"ledger_path": str(empty.path),
                          "store_path": str(tmp_path / "store"), "rater": "lou"}) as run:
        said = run('pair_rater.press("a")')
    assert "Nothing to rate" in json.dumps(said.outputs)


# -- in a real JupyterLab, typed by a real keyboard ---------------------------------------------


@contextmanager
def jupyterlab(root: Path, env: dict[str, str]) -> Iterator[str]:
    """A JupyterLab server on a free loopback port over ``root``; yields its URL."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import started

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = root / ".jupyter-state"
    env = {**os.environ, **env, "JUPYTER_CONFIG_DIR": str(state / "config"),
           "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(state / "settings")}
    state.mkdir(parents=True, exist_ok=True)
    log = state / "server.log"  # a file, not a pipe nobody reads: a full pipe stalls the server
    url = f"http://127.0.0.1:{port}"
    # grace_s: SIGTERM lets the server shut down its kernels, which run in sessions of their own
    with log.open("w") as output, started(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             f"--port={port}", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
             "--ServerApp.password=", f"--ServerApp.root_dir={root}",
             "--ServerApp.disable_check_xsrf=True"],
            env=env, stdout=subprocess.DEVNULL, stderr=output, grace_s=20) as server:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url


def test_in_jupyterlab_ten_keystrokes_store_ten_ratings(workbench: Workbench, tmp_path: Path,
                                                        chromium: str) -> None:
    """The acceptance test as a person does it: open 30_review.ipynb in JupyterLab, Run All,
    click the rating field once, type ten keys; the ten votes are in the ledger."""
    import getpass

    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM_ARGS

    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / NOTEBOOK.name).write_bytes(NOTEBOOK.read_bytes())  # autosave stays here
    rater = getpass.getuser()
    before = ratings.count(workbench.ledger, rater)
    with jupyterlab(root, {"PIXELLAB_HOME": str(workbench.home)}) as url, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/lab/tree/notebooks/{NOTEBOOK.name}")
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            # Run All before the kernel is up runs nothing: wait for the status bar's "Idle"
            page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=90_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=30_000)
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=30_000)
            field = page.locator("input[placeholder*='type a, b']")
            field.wait_for(timeout=120_000)
            field.click()
            for key in "ab12t=abab":
                count = ratings.count(workbench.ledger, rater)
                page.keyboard.type(key)
                deadline = page.evaluate("Date.now()") + 15_000
                while ratings.count(workbench.ledger, rater) == count:  # one vote per key
                    assert page.evaluate("Date.now()") < deadline, f"key {key!r} stored nothing"
                    page.wait_for_timeout(100)
            assert field.input_value() == "ab12t=abab"  # the field keeps the keys typed
            field.scroll_into_view_if_needed()  # JupyterLab renders only cells in view
            page.wait_for_timeout(500)
            assert "pair 11 of 12" in page.inner_text(".jp-Notebook")
            assert not errors, errors
        finally:
            browser.close()
    stored = ratings.ratings_table(workbench.ledger, rater=rater)
    assert len(stored) - before == 10
    new = stored.tail(10)
    assert new["winner"].tolist() == ["a", "b", "a", "b", "tie", "tie", "a", "b", "a", "b"]
    assert (new["output_a"] != new["output_b"]).all() and new["rated_at"].notna().all()


def test_two_clips_are_rated_side_by_side_each_playing_and_the_grid_shows_first_frames(
        tmp_path: Path) -> None:
    """A video sweep's pair shows both clips as players (looping, muted), not as pictures;
    the output grid shows each clip's first frame."""
    bench = Workbench(tmp_path / "home")
    spec = SweepSpec.parse({"name": "clips", "task": "image_to_video",
                            "dataset": str(REPO / "datasets" / "sample"),
                            "models": ["local:kenburns", "local:parallax"], "limit": 1,
                            "params": {"duration_s": 1, "fps": 8, "resolution": "360p"}})
    assert Sweep(spec, bench).run().succeeded == 2
    clips = evidence.scored_requests(bench.ledger, ["clips"])
    pairs = ratings.pairs_to_rate(clips, rater="vic", ledger=bench.ledger)
    rater = review.PairRater(bench.ledger, bench.store, pairs, rater="vic")
    assert rater.view.value.count("<video autoplay muted loop") == 2
    assert rater.view.value.count("data:video/mp4;base64,") == 2
    grid = review.OutputGrid(clips, bench.store)
    assert grid.output.value.count("<img") == 2 and "cannot show" not in grid.output.value
