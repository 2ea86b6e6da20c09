"""Hostile inputs (P8): files a team does not fully control end in a clear per-item outcome or a
one-line error, never in code execution, a read outside their folder, a traceback or a paid call.
The whole hostile dataset through every command is in ``test_hostile_dataset.py``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pixellab.catalog import load_catalog
from pixellab.errors import ConfigError, InvalidImage
from pixellab.prompts import load_prompt
from pixellab.sweep import Sweep, SweepSpec
from pixellab.validate import decode_image
from pixellab.workbench import Workbench
from tests.conftest import REPO, product_photo, run_process, write_dataset

SECRET = "root:x:0:0:SENTINEL-never-echo"


def pixellab(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return run_process([sys.executable, "-m", "pixellab.cli", *args], cwd=cwd,
                       env={**os.environ, **(env or {})}, timeout=600)


def requests_of(workbench: Workbench, sweep_id: str) -> dict[str, dict[str, object]]:
    frame = workbench.ledger.query(
        """select r.product_id, r.status, r.error_reason, r.error_message, r.prompt_text,
                  (select count(*) from attempts a where a.request_key = r.request_key)
                  as attempts
           from requests r join sweep_requests s using (request_key) where s.sweep_id = ?""",
        [sweep_id])
    return {str(row["product_id"]): row for row in frame.to_dict("records")}


def ledger_text(workbench: Workbench) -> str:
    """Every text cell of the ledger's request and attempt tables, joined."""
    frame = workbench.ledger.query(
        "select coalesce(error_message, '') || ' ' || coalesce(prompt_text, '') as t "
        "from requests union all select coalesce(error_message, '') from attempts")
    return "\n".join(frame["t"])


def add_rows(dataset: Path, rows: list[dict[str, str]]) -> None:
    manifest = dataset / "manifest.csv"
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, existing = list(reader.fieldnames or []), list(reader)
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(existing + [{f: row.get(f, "") for f in fields} for row in rows])


def row(pid: str, image: str, **extra: str) -> dict[str, str]:
    return {"id": pid, "title": pid, "description": "", "category": "kitchen", "image": image,
            **extra}


# -- 1. prompt templates are sandboxed --------------------------------------------------------


def write_prompt(folder: Path, prompt_id: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prompt_id}.j2"
    path.write_text(text)
    return folder


def test_a_template_cannot_walk_to_python_internals(tmp_path: Path) -> None:
    folder = write_prompt(tmp_path / "prompts", "evil@1",
                          "Photo of {{ title }}\n{{ ''.__class__.__mro__ }}\n")
    with pytest.raises(ConfigError) as caught:
        load_prompt("evil@1", folder).render({"title": "mug"})
    message = str(caught.value)
    assert "evil@1.j2" in message and "line 2" in message and "\n" not in message


def test_a_template_cannot_run_a_shell_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = write_prompt(
        tmp_path / "prompts", "shell@1",
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}")
    with pytest.raises(ConfigError, match="shell@1.j2: line 1"):
        load_prompt("shell@1", folder).render({"title": "mug"})
    assert not marker.exists()


def test_a_template_sees_product_and_analysis_fields_only(tmp_path: Path) -> None:
    folder = write_prompt(tmp_path / "prompts", "env@1", "{{ os.environ }}")
    with pytest.raises(ConfigError, match="'os' is undefined"):
        load_prompt("env@1", folder).render({"title": "mug"})
    folder = write_prompt(tmp_path / "prompts", "ok@1",
                          "{{ title }} for {{ analysis.audience if analysis else 'everyone' }}")
    prompt = load_prompt("ok@1", folder)
    assert prompt.render({"title": "mug"}, {"audience": "cooks"}) == "mug for cooks"
    assert prompt.render({"title": "mug"}) == "mug for everyone"


def test_a_template_cannot_build_a_huge_string(tmp_path: Path) -> None:
    folder = write_prompt(tmp_path / "prompts", "big@1", "{{ 'x' * 1000000000 }}")
    with pytest.raises(ConfigError, match="big@1.j2: line 1"):
        load_prompt("big@1", folder).render({})


def test_a_key_in_product_text_never_reaches_the_ledger(
        tmp_path: Path, workbench: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-proj-" + "Zq9" * 12
    monkeypatch.setenv("OPENAI_API_KEY", key)
    prompts = write_prompt(tmp_path / "prompts", "describe@1", "{{ title }}: {{ description }}")
    monkeypatch.setenv("PIXELLAB_PROMPTS", str(prompts))
    dataset = write_dataset(tmp_path / "dataset", n=1)
    add_rows(dataset, [row("leaky", "images/p00.png", description=f"pasted {key} here")])
    spec = SweepSpec.parse({"name": "leak", "task": "enhance", "dataset": str(dataset),
                            "models": ["local:autoenhance"], "prompts": ["describe@1"]})
    Sweep(spec, workbench).run(score=False)
    text = requests_of(workbench, "leak")["leaky"]["prompt_text"]
    assert isinstance(text, str) and "pasted [REDACTED] here" in text
    assert key not in ledger_text(workbench)


# -- 2. paths stay inside their folders -------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files beside, not inside, the dataset folder: a fake passwd and a real photo."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_text(SECRET + "\n")
    product_photo(7)[0].save(folder / "photo.png")
    return folder


def test_manifest_paths_outside_the_dataset_fail_their_product_only(
        tmp_path: Path, workbench: Workbench, outside: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset", n=2)
    (dataset / "images" / "link.png").symlink_to(outside / "photo.png")
    product_photo(9)[0].save(dataset / "images" / "inner.png")
    add_rows(dataset, [
        row("dotdot", "../outside/passwd"),
        row("absolute", str(outside / "passwd")),
        row("symlink", "images/link.png"),
        row("mask-out", "images/p00.png", mask="../outside/photo.png"),
        row("inside-dotdot", "images/../images/inner.png"),
    ])
    spec = SweepSpec.parse({"name": "paths", "task": "enhance", "dataset": str(dataset),
                            "models": ["local:autoenhance"]})
    Sweep(spec, workbench).run()
    outcomes = requests_of(workbench, "paths")
    for pid in ("dotdot", "absolute", "symlink", "mask-out"):
        assert outcomes[pid]["status"] == "failed", pid
        assert outcomes[pid]["error_reason"] == "outside_dataset", pid
        assert outcomes[pid]["attempts"] == 0, pid
        message = str(outcomes[pid]["error_message"])
        assert "manifest.csv row" in message and "outside the dataset folder" in message
    assert {outcomes[p]["status"] for p in ("p00", "p01", "inside-dotdot")} == {"succeeded"}
    assert "SENTINEL" not in ledger_text(workbench)


def test_decoder_errors_never_quote_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage) as caught:
        decode_image(SECRET.encode())
    assert "root" not in str(caught.value) and caught.value.reason == "unsupported_format"
    png = bytearray((REPO / "docs" / "report.png").read_bytes()[:4096])
    png[40:44] = b"root"  # inside IDAT: the decoder names what it choked on
    with pytest.raises(InvalidImage) as caught:
        decode_image(bytes(png))
    assert "root" not in str(caught.value)


@pytest.mark.parametrize("prompt_id", ["../outside@1", "a/b@1", "/etc/passwd@1", "x@../1"])
def test_a_prompt_id_is_never_a_path(tmp_path: Path, prompt_id: str) -> None:
    folder = tmp_path / "prompts"
    write_prompt(tmp_path, "outside@1", "Outside {{ title }}")
    folder.mkdir()
    with pytest.raises(ConfigError, match="must look like name@version"):
        load_prompt(prompt_id, folder)


def test_a_prompt_linked_from_outside_its_folder_is_refused(tmp_path: Path) -> None:
    write_prompt(tmp_path, "outside@1", "Outside {{ title }}")
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "inside@1.j2").symlink_to(tmp_path / "outside@1.j2")
    with pytest.raises(ConfigError, match="outside"):
        load_prompt("inside@1", folder)


def test_a_catalog_file_linked_from_outside_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text("")
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "mine.toml").symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(ConfigError, match="outside the catalog folder"):
        load_catalog(folder)


# -- 3, 4. one bad item is that item's failure; blank inputs are never sent --------------------


def bad_images(dataset: Path) -> None:
    """A text file named .png, a GIF, a 1×8 photo, and blank photos, added to the manifest."""
    images = dataset / "images"
    (images / "text.png").write_text(SECRET)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(images / "anim.gif")
    sliver = Image.new("RGB", (1, 8))
    sliver.putdata([(30 * i, 200, 30) for i in range(8)])
    sliver.save(images / "dot.png")  # 1 pixel wide: nothing left to shrink for an upscale
    Image.new("RGB", (64, 64), (255, 255, 255)).save(images / "white.png")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(images / "black.png")
    Image.new("RGBA", (64, 64), (120, 80, 40, 0)).save(images / "clear.png")
    add_rows(dataset, [row("text", "images/text.png"), row("gif", "images/anim.gif"),
                       row("dot", "images/dot.png"), row("white", "images/white.png"),
                       row("black", "images/black.png"), row("clear", "images/clear.png")])


def test_one_bad_image_fails_only_its_product_in_an_upscale_sweep(
        tmp_path: Path, workbench: Workbench) -> None:
    dataset = write_dataset(tmp_path / "dataset", n=2)
    bad_images(dataset)
    spec = SweepSpec.parse({"name": "up", "task": "upscale", "dataset": str(dataset),
                            "models": ["local:upscale-lanczos"], "params": {"scale": 2}})
    Sweep(spec, workbench).run()
    outcomes = requests_of(workbench, "up")
    assert outcomes["p00"]["status"] == outcomes["p01"]["status"] == "succeeded"
    expected = {"text": "unsupported_format", "gif": "unsupported_format", "dot": "too_small",
                "white": "blank_input", "black": "blank_input", "clear": "blank_input"}
    assert {pid: outcomes[pid]["error_reason"] for pid in expected} == expected
    assert "anim.gif" in str(outcomes["gif"]["error_message"])


@pytest.mark.parametrize("task, model", [("packshot", "local:packshot"),
                                         ("remove_background", "local:cutout"),
                                         ("enhance", "local:autoenhance")])
def test_a_blank_input_is_refused_before_any_model_is_called(
        tmp_path: Path, workbench: Workbench, task: str, model: str) -> None:
    dataset = write_dataset(tmp_path / "dataset", n=1)
    bad_images(dataset)
    spec = SweepSpec.parse({"name": "blank", "task": task, "dataset": str(dataset),
                            "models": [model]})
    Sweep(spec, workbench).run()
    outcomes = requests_of(workbench, "blank")
    for pid in ("white", "black", "clear"):
        assert outcomes[pid]["error_reason"] == "blank_input", pid
        assert outcomes[pid]["attempts"] == 0, pid
    assert outcomes["p00"]["status"] == "succeeded"


def test_estimate_prices_a_dataset_with_undecodable_images(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset", n=2)
    bad_images(dataset)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: est\ntask: enhance\ndataset: {dataset}\n"
                    "models: [fal:fal-ai/flux-pro/kontext]\n")
    result = pixellab("sweep", "estimate", str(spec), "--home", str(tmp_path / "h"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 product(s) cannot be sent" in result.stdout
    assert "unsupported_format ×2" in result.stdout


def test_an_estimate_prices_nothing_for_inputs_refused_by_their_header(
        tmp_path: Path, outside: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset", n=2)
    bad_images(dataset)
    add_rows(dataset, [row("escape", "../outside/photo.png")])
    spec = SweepSpec.parse({"name": "est", "task": "enhance", "dataset": str(dataset),
                            "models": ["fal:fal-ai/flux-pro/kontext"]})
    sweep = Sweep(spec, Workbench(tmp_path / "home"))
    estimate = sweep.estimate()
    assert estimate.unusable == {"text": "unsupported_format", "gif": "unsupported_format",
                                 "escape": "outside_dataset"}
    price = sweep.workbench.catalog.model("fal:fal-ai/flux-pro/kontext").estimate_usd()
    assert estimate.usd == pytest.approx(6 * price)  # 2 good, 1×8 and 3 blank: an upper bound


# -- 5. numbers in configs are finite and bounded ---------------------------------------------


@pytest.mark.parametrize("line, key", [
    ("budget_usd: .inf", "budget_usd"), ("budget_usd: 1e30", "budget_usd"),
    ("budget_usd: .nan", "budget_usd"), ("concurrency: 100000", "concurrency"),
    ("params: {size: 1000000000}", "params"), ("params: {scale: .inf}", "params"),
    ("seeds: [-1]", "seeds"), ("limit: 0", "limit")])
def test_a_number_out_of_bounds_is_a_one_line_error(tmp_path: Path, line: str, key: str
                                                    ) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: n\ntask: packshot\nmodels: [local:packshot]\n{line}\n")
    result = pixellab("sweep", "estimate", str(spec), "--home", str(tmp_path / "h"))
    assert result.returncode == 2, result.stderr
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {spec}: {key}"), result.stderr


def test_a_yaml_error_never_quotes_the_file(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: [x\n{SECRET}\n")
    result = pixellab("sweep", "estimate", str(spec), "--home", str(tmp_path / "h"))
    assert result.returncode == 2 and "SENTINEL" not in result.stderr
    assert "not valid YAML" in result.stderr and "line" in result.stderr


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for name, previous in zip("bcdefg", "abcdef", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 10) + "]")
    spec = tmp_path / "s.yaml"
    spec.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases expanded"):
        SweepSpec.from_file(spec)


# -- 6, 8. the command line prints what it is given, and usage errors exit 2 -------------------


@pytest.mark.parametrize("name", ["[/bold]x", "[red]shop", "[fd00::1]"])
def test_messages_print_markup_characters_as_written(tmp_path: Path, name: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: n\ntask: packshot\nmodels: [local:packshot]\ndataset: '{name}'\n")
    result = pixellab("sweep", "estimate", str(spec), "--home", str(tmp_path / "h"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"dataset '{name}' not found" in result.stderr


@pytest.mark.parametrize("args", [["score", "A", "B"], ["score"], ["no-such-command"],
                                  ["sweep", "run", "--no-such-option", "x"]])
def test_a_usage_error_exits_2(args: list[str]) -> None:
    result = pixellab(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Error" in result.stderr


def test_a_template_that_loops_too_long_stops_with_a_clear_error(tmp_path: Path) -> None:
    folder = write_prompt(tmp_path / "prompts", "loops@1",
                          "{% for x in range(99999) %}{% for y in range(99999) %}{% endfor %}"
                          "{% endfor %}")
    with pytest.raises(ConfigError, match="runs over 100000 steps"):
        load_prompt("loops@1", folder).render({})
    folder = write_prompt(tmp_path / "prompts", "lorem@1", "{{ lipsum(1000000) }}")
    with pytest.raises(ConfigError, match="'lipsum' is undefined"):
        load_prompt("lorem@1", folder).render({})


# -- the report prints what a dataset wrote, never as markup ------------------------------------


def test_report_text_from_a_dataset_is_escaped() -> None:
    import pandas as pd

    from pixellab import report

    hostile = "kitchen<img src=x onerror=alert(1)>[x](javascript:alert(1))"
    assert "<img" not in report.md(hostile) and "](" not in report.md(hostile)
    html = report.styled(pd.DataFrame({"category": [hostile], "n": [1]})).to_html()
    assert "<img" not in html and "&lt;img" in html


def test_an_empty_selection_has_the_evidence_columns(workbench: Workbench) -> None:
    from pixellab.selection import select

    workbench.ledger.write([])
    table = select(workbench.ledger, ["no-such-sweep"]).evidence_table()
    assert table.empty and "task" in table.columns


def test_a_16_bit_photo_is_scaled_not_clipped_to_white(tmp_path: Path,
                                                       workbench: Workbench) -> None:
    import numpy as np

    dataset = write_dataset(tmp_path / "dataset", n=1)
    gray = (np.asarray(product_photo(4)[0].convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray).save(dataset / "images" / "deep.png")  # mode I;16
    add_rows(dataset, [row("deep", "images/deep.png")])
    spec = SweepSpec.parse({"name": "deep", "task": "enhance", "dataset": str(dataset),
                            "models": ["local:autoenhance"]})
    Sweep(spec, workbench).run(score=False)
    assert requests_of(workbench, "deep")["deep"]["status"] == "succeeded"
