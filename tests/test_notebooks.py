"""The notebooks are the interface: each runs headless under papermill with small parameters on
the free local provider and raises nothing; a scheduled run keeps the executed notebook and its
HTML; the report's HTML is one self-contained page that a real browser shows without errors.

The sweep notebooks run once into one shared ledger (module fixture), in the order a user would
run them, and the report is executed over what they left, as ``pixellab demo`` does.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat import NotebookNode

from pixellab import notebook
from pixellab.ledger import Ledger
from tests.conftest import CHROMIUM_ARGS, REPO, run_process

NOTEBOOKS = REPO / "notebooks"
SAMPLE = str(REPO / "datasets" / "sample")


def execute(notebook_name: str, folder: Path, **parameters: Any) -> NotebookNode:
    out = notebook.execute(NOTEBOOKS / notebook_name, folder / notebook_name, parameters,
                           cwd=REPO)
    return nbformat.read(out, as_version=4)


def outputs(nb: NotebookNode, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
            if kind is None or o.output_type == kind]


def text_of(nb: NotebookNode) -> str:
    parts = []
    for output in outputs(nb):
        data = output.get("data", {})
        parts.append(str(data.get("text/markdown", "")) + str(data.get("text/html", ""))
                     + str(data.get("text/plain", "")) + str(output.get("text", "")))
    return "\n".join(parts)


class Run:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.paths = {"ledger_path": str(self.home / "ledger.duckdb"),
                      "store_path": str(self.home / "store")}
        self.executed: dict[str, NotebookNode] = {}

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.home / "ledger.duckdb", read_only=True)


REPORTED = ("quickstart", "nb-packshot", "nb-prompts", "nb-video")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = Run(tmp_path_factory.mktemp("notebooks"))
    run.executed["01"] = execute("01_quickstart.ipynb", run.root, dataset=SAMPLE, limit=2,
                                 **run.paths)
    run.executed["10"] = execute(
        "10_model_sweep.ipynb", run.root, name="nb-packshot", task="packshot", dataset=SAMPLE,
        categories=["jewelry", "kitchen"], limit=4,
        models=["local:packshot", "local:packshot-threshold"], params={"size": 1000},
        budget_usd=0.5, concurrency=2, **run.paths)
    run.executed["20"] = execute(
        "20_prompt_sweep.ipynb", run.root, name="nb-prompts", dataset=SAMPLE, limit=2,
        params={"size": 800}, concurrency=2, **run.paths)
    run.executed["10v"] = execute(
        "10_model_sweep.ipynb", run.root, name="nb-video", task="image_to_video",
        dataset=SAMPLE, categories=["kitchen"], limit=2,
        models=["local:kenburns", "local:parallax"],
        params={"duration_s": 1.5, "fps": 8, "aspect_ratio": "9:16", "resolution": "360p"},
        budget_usd=0.5, concurrency=2, **run.paths)
    run.executed["90"] = execute(
        "90_report.ipynb", run.root, title="notebook test report", max_products=2,
        sweep_ids=list(REPORTED), min_products=2, resamples=200,
        routes_path=str(run.root / "none.toml"), **run.paths)
    return run


# -- the notebooks as committed ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_a_committed_notebook_has_no_outputs_and_a_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code)
    assert notebook.declared_parameters(path), "papermill finds no parameters"


def test_every_notebook_is_tested() -> None:
    tested = {"01_quickstart", "10_model_sweep", "20_prompt_sweep", "90_report",
              "30_review"}  # 30_review: tests/test_review.py drives its keyboard rating
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == tested


# -- each notebook, executed ---------------------------------------------------------------------


def test_no_notebook_cell_raises_or_warns_on_stderr(run: Run) -> None:
    for name, nb in run.executed.items():
        assert not outputs(nb, "error"), name
        stderr = [o["text"] for o in outputs(nb, "stream") if o["name"] == "stderr"]
        assert not stderr, (name, stderr)


def test_quickstart_runs_a_tiny_sweep_and_shows_its_outputs(run: Run) -> None:
    done = run.ledger.query("""select r.status, count(*) n from requests r
                               join sweep_requests s using (request_key)
                               where s.sweep_id = 'quickstart' group by all""")
    assert dict(zip(done["status"], done["n"], strict=True)) == {"succeeded": 4}
    assert text_of(run.executed["01"]).count("class='plx-zoom'") >= 6  # 2 inputs + 4 outputs


def test_model_sweep_shows_the_estimate_before_it_runs_then_the_results(run: Run) -> None:
    nb = run.executed["10"]
    text = text_of(nb)
    assert "8 requests planned, 8 to run" in text
    assert text.index("requests planned") < text.index("Done: 8 new outputs")
    assert "local:packshot-threshold" in text and "pass_rate" in text
    scored = run.ledger.scalar("""select count(distinct sc.output_sha256) from scores sc
                                  join requests r on r.output_sha256 = sc.output_sha256
                                  join sweep_requests s using (request_key)
                                  where s.sweep_id = 'nb-packshot'""")
    assert scored >= 1


def test_model_sweep_over_budget_stops_before_spending(run: Run, tmp_path: Path) -> None:
    with pytest.raises(notebook.NotebookError) as raised:
        execute("10_model_sweep.ipynb", tmp_path, name="too-dear", task="remove_background",
                dataset=SAMPLE, models=["fal:fal-ai/birefnet/v2"], budget_usd=0.001,
                **run.paths)
    assert raised.value.ename == "BudgetExceeded"
    assert "exceeds budget_usd" in str(raised.value)
    ledger = run.ledger
    assert ledger.scalar("select count(*) from attempts where sweep_id = 'too-dear'") == 0
    assert ledger.scalar("select count(*) from costs where sweep_id = 'too-dear'") == 0


def test_prompt_sweep_compares_versions_and_says_when_the_model_ignores_them(run: Run) -> None:
    used = run.ledger.query("""select distinct r.prompt_id from requests r
                               join sweep_requests s using (request_key)
                               where s.sweep_id = 'nb-prompts' order by 1""")
    assert list(used["prompt_id"]) == ["packshot-studio@1", "packshot-studio@2"]
    text = text_of(run.executed["20"])
    assert "returned identical images for every prompt version" in text
    assert "pure white (#FFFFFF)" in text  # the rendered words of version 2 are shown


def test_report_shows_the_decision_its_evidence_and_the_money(run: Run) -> None:
    nb = run.executed["90"]
    text = text_of(nb)
    for heading in ("Recommended default chain", "Quality against cost", "Leaderboard",
                    "Failures by model and reason", "Cost"):
        assert any(heading in "".join(c.source) for c in nb.cells if c.cell_type == "markdown")
    assert "local:packshot →" in text or "local:packshot-threshold →" in text
    assert [o for o in outputs(nb) if "image/png" in o.get("data", {})], "no static figure"
    assert "By model" in text or "Nothing was billed" in text


def test_report_shows_the_same_decision_as_pixellab_select(run: Run) -> None:
    from pixellab.catalog import load_catalog
    from pixellab.routing import current_defaults
    from pixellab.selection import SelectionPolicy, select

    selection = select(run.ledger, list(REPORTED),
                       policy=SelectionPolicy(min_products=2, resamples=200),
                       current=current_defaults(None, load_catalog()))
    shown = next(o["data"]["text/html"] for o in outputs(run.executed["90"])
                 if "verdict" in str(o.get("data", {}).get("text/html", "")))
    cells: dict[int, list[str]] = {}
    for row, _, value in re.findall(r'<td[^>]*class="data row(\d+) col(\d+)"[^>]*>(.*?)</td>',
                                    shown, flags=re.S):
        cells.setdefault(int(row), []).append(html.unescape(value).strip())
    shown_rows = [values[:4] for _, values in sorted(cells.items())]
    expected = selection.table()[["task", "category", "chain", "verdict"]].values.tolist()
    assert shown_rows == expected
    assert any(row[3] in ("clear winner", "no clear winner") for row in shown_rows)


# -- HTML: self-contained, in a real browser -----------------------------------------------------


@pytest.fixture(scope="module")
def report_html(run: Run) -> Path:
    return notebook.export_html(run.root / "90_report.ipynb", run.root / "report.html")


def test_report_html_fetches_nothing_and_hides_the_code(report_html: Path) -> None:
    page = report_html.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:)?//", page)
    assert "evidence.scored_requests" not in page  # code cells are hidden
    assert "name=\"viewport\"" in page


def browser_problems(page_path: Path, chromium: str, *, zoom: bool = True) -> list[str]:
    """Open ``page_path`` at desktop and phone widths; every console error or warning, page
    error, request beyond the file itself, image that did not load, sideways scroll, or
    thumbnail that does not enlarge on click, in words."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            viewports: list[Any] = [{"width": 1280, "height": 900}, {"width": 390, "height": 844}]
            for viewport in viewports:
                page = browser.new_page(viewport=viewport)
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("request", lambda r: problems.append(f"request: {r.url[:80]}")
                        if not r.url.startswith(("file:", "data:")) else None)
                page.goto(page_path.as_uri(), wait_until="load")
                images = page.evaluate("""() => [...document.images].map(i => ({
                    ok: i.complete && i.naturalWidth > 0, src: i.src.slice(0, 40)}))""")
                problems.extend([f"image did not load: {i['src']}" for i in images if not i["ok"]])
                width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
                if width[0] > width[1]:
                    problems.append(f"the page scrolls sideways at {viewport['width']} px")
                if zoom and viewport["width"] == 1280:
                    problems.extend(_zoom_problems(page))
                page.close()
        finally:
            browser.close()
    return problems


def _zoom_problems(page: Any) -> list[str]:
    thumb = page.locator("details.plx-zoom > summary").nth(1)
    thumb.scroll_into_view_if_needed()
    small = thumb.locator("img").first.bounding_box()
    thumb.click()
    full = thumb.locator(".plx-full img")
    large = full.bounding_box() if full.is_visible() else None
    if not (small and large and large["width"] > 2 * small["width"]):
        return [f"a click on a thumbnail did not show it enlarged ({small} → {large})"]
    thumb.click()
    return ["a second click did not close the enlarged image"] if full.is_visible() else []


def test_report_opens_in_chromium_without_errors_and_every_image_loads(
        report_html: Path, chromium: str) -> None:
    page = report_html.read_text()
    assert page.count("<img") >= 20
    assert browser_problems(report_html, chromium) == []


def test_report_clips_show_an_animated_preview_and_play_in_chromium(
        report_html: Path, chromium: str) -> None:
    """Every clip in the report has its animated preview loaded; a click opens the player
    below it, and the clip plays (its time advances) in a real browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report_html.as_uri(), wait_until="load")
            previews = page.evaluate("""() => [...document.querySelectorAll(
                'img.plx-video-preview')].map(i => i.complete && i.naturalWidth > 0)""")
            assert len(previews) >= 4 and all(previews)
            clip = page.locator("details.plx-video").first
            clip.scroll_into_view_if_needed()
            clip.locator("summary").click()
            player = clip.locator("video")
            assert player.is_visible()
            played = player.evaluate("""v => v.play().then(() => new Promise(done =>
                setTimeout(() => done([v.currentTime, v.videoWidth, v.error]), 800)))""")
            assert played[0] > 0 and played[1] > 0 and played[2] is None, played
        finally:
            browser.close()


def test_the_browser_check_sees_broken_images_errors_and_network(tmp_path: Path,
                                                                  chromium: str) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><img src='data:image/png;base64,AAAA'>"
                      "<img src='http://127.0.0.1:9/x.png'><script>undefined_call()</script>"
                      "<div style='width:3000px'>wide</div></body></html>")
    problems = "\n".join(browser_problems(broken, chromium, zoom=False))
    assert "image did not load: data:image/png" in problems
    assert "request: http://127.0.0.1:9/x.png" in problems
    assert "undefined_call" in problems
    assert "scrolls sideways" in problems


# -- scheduled runs ------------------------------------------------------------------------------


def pixellab(*args: str) -> subprocess.CompletedProcess[str]:
    return run_process([sys.executable, "-m", "pixellab.cli", *args], cwd=REPO, timeout=600)


def test_sweep_run_with_a_notebook_keeps_the_executed_notebook_and_html(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"name: nightly-cutout\ntask: remove_background\ndataset: {SAMPLE}\n"
                      "categories: [jewelry]\nlimit: 2\nbudget_usd: 0.5\n")
    result = pixellab("sweep", "run", str(params), "--notebook",
                      "notebooks/10_model_sweep.ipynb", "--reports", str(tmp_path / "reports"),
                      "--home", str(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    [folder] = (tmp_path / "reports" / "nightly-cutout").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z", folder.name)
    assert {p.name for p in folder.iterdir()} == {"10_model_sweep.ipynb", "10_model_sweep.html"}
    executed = nbformat.read(folder / "10_model_sweep.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters["name"] == "nightly-cutout"
    assert "Done: 4 new outputs" in text_of(executed)
    assert Ledger(tmp_path / "home" / "ledger.duckdb").scalar(
        "select count(*) from sweep_requests where sweep_id = 'nightly-cutout'") == 4


def test_a_scheduled_run_over_budget_exits_3_and_still_leaves_its_report(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"name: dear\ntask: remove_background\ndataset: {SAMPLE}\n"
                      "models: ['fal:fal-ai/birefnet/v2']\nbudget_usd: 0.001\n")
    result = pixellab("sweep", "run", str(params), "--notebook",
                      "notebooks/10_model_sweep.ipynb", "--reports", str(tmp_path / "r"),
                      "--home", str(tmp_path / "home"))
    assert result.returncode == 3, result.stderr
    assert "BudgetExceeded" in result.stderr
    [folder] = (tmp_path / "r" / "dear").iterdir()
    assert "exceeds budget_usd" in (folder / "10_model_sweep.html").read_text()


def test_a_parameter_the_notebook_does_not_declare_is_refused(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("name: typo\ntask: remove_background\nbudget: 5\n")
    result = pixellab("sweep", "run", str(params), "--notebook",
                      "notebooks/10_model_sweep.ipynb", "--reports", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "no parameter 'budget'" in result.stderr and "budget_usd" in result.stderr
    assert not (tmp_path / "r").exists()
