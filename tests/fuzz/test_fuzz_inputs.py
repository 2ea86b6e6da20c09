"""Fuzz targets for what a team's files feed us: image bytes (provider outputs and dataset
photos), dataset manifests, sweep files, catalog TOML and prompt templates. Each ends in a result
or a one-line :class:`~pixellab.errors.PixellabError`, never another exception."""

from __future__ import annotations

import io
import json
import math
import string
from pathlib import Path

import pytest
import tomli_w
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from pixellab.catalog import load_catalog
from pixellab.datasets import load_dataset
from pixellab.errors import InvalidImage, PixellabError
from pixellab.prompts import load_prompt
from pixellab.sweep import SweepSpec
from pixellab.validate import check_image_output, decode_image, probe_input_image
from tests.fuzz.conftest import corpus_params, result_or_clear_error


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, (200, 120, 40) if mode == "RGB" else None)
    image.putpixel((3, 4), (10, 20, 30) if mode == "RGB" else 0)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [_encoded("PNG"), _encoded("JPEG"), _encoded("WEBP"), _encoded("PNG", "RGBA"),
         _encoded("PNG", "L"), _encoded("GIF", "P"), _encoded("BMP")]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real PNG/JPEG/WEBP/GIF/BMP file, then bytes flipped, cut, spliced or its header
    rewritten: what a broken CDN, a truncated download or a crafted file looks like."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "splice", "header", "repeat"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "splice":
            data[at:at] = draw(st.binary(max_size=64))
        elif action == "header":
            data[16:24] = draw(st.binary(min_size=8, max_size=8))  # PNG IHDR width/height
        else:
            data[at:at] = data[at:at + 32] * draw(st.integers(1, 50))
    return bytes(data)


image_bytes = st.one_of(mutated_images(), st.binary(max_size=512))


@given(image_bytes)
@example(b"")
@example(b"\x89PNG\r\n\x1a\n")
@example(b"RIFF\x00\x00\x00\x00WEBP")
def test_decoding_image_bytes_ends_in_an_image_or_invalid_image(data: bytes) -> None:
    result = result_or_clear_error(lambda: decode_image(data))
    if isinstance(result, PixellabError):
        assert isinstance(result, InvalidImage) and result.reason
    else:
        assert result.format in ("PNG", "JPEG", "WEBP") and result.width * result.height > 0


@given(image_bytes, st.sampled_from([None, "image/png", "text/html", "image/jpg", ""]),
       st.booleans())
def test_checking_an_output_never_raises(data: bytes, media_type: str | None,
                                         alpha: bool) -> None:
    check = check_image_output(data, declared_media_type=media_type, require_alpha=alpha,
                               expected_size=(24, 16), source=SEEDS[0])
    assert check.ok == (check.reason is None)


@given(image_bytes)
def test_probing_a_dataset_image_ends_in_a_size_or_a_clear_error(tmp_path_factory: pytest.
                                                                 TempPathFactory,
                                                                 data: bytes) -> None:
    path = tmp_path_factory.mktemp("probe") / "photo.png"
    path.write_bytes(data)
    result = result_or_clear_error(lambda: probe_input_image(path))
    if not isinstance(result, PixellabError):
        assert result[0] > 0 and result[1] > 0


# -- dataset manifests --------------------------------------------------------------------------

cells = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", "../x.png", "/etc/passwd", "images/a.png", "nan", "NULL", "=cmd|' /C calc'!A0",
     "a\nb", '"', "\x00", "[red]x", "images/../images/a.png", "images"]))


@given(st.lists(st.sampled_from(["id", "title", "description", "category", "image", "mask",
                                 "reference", "extra", "id"]), min_size=1, max_size=9),
       st.lists(st.lists(cells, min_size=0, max_size=10), max_size=6),
       st.sampled_from([",", ";", "\t"]))
def test_loading_a_manifest_ends_in_a_dataset_or_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory, header: list[str], rows: list[list[str]],
        delimiter: str) -> None:
    import csv

    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    (root / "images" / "a.png").write_bytes(SEEDS[0])
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    result = result_or_clear_error(lambda: load_dataset(root))
    if not isinstance(result, PixellabError):
        for product in result.products:
            if product.refusal is None:
                assert product.image.resolve().is_relative_to(root.resolve())


# -- sweep files ----------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
spec_keys = st.sampled_from(["name", "task", "dataset", "categories", "products", "limit",
                             "models", "chain", "prompts", "seeds", "params", "budget_usd",
                             "concurrency", "degrade", "unknown"])
known_values = {
    "name": st.sampled_from(["ok", "../x", "", "a" * 100, "[red]"]),
    "task": st.sampled_from(["enhance", "upscale", "packshot", "nope", ""]),
    "params": st.dictionaries(st.sampled_from(["scale", "size", "seed", "fps", "x"]), values,
                              max_size=3),
    "budget_usd": st.one_of(st.floats(), st.integers(-10, 10**40), st.text(max_size=6)),
}


@st.composite
def sweep_documents(draw: st.DrawFn) -> dict[str, object]:
    keys = draw(st.lists(spec_keys, max_size=8, unique=True))
    return {k: draw(known_values.get(k, values)) for k in keys}


@given(sweep_documents(), st.sampled_from(["yaml", "json-as-yaml", "toml", "raw"]),
       st.text(max_size=200))
def test_reading_a_sweep_file_ends_in_a_spec_or_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory, document: dict[str, object], form: str,
        raw: str) -> None:
    import yaml

    folder = tmp_path_factory.mktemp("spec")
    if form == "toml":
        path = folder / "s.toml"
        try:
            path.write_text(tomli_w.dumps(document))
        except (TypeError, ValueError):
            path.write_text(raw)
    elif form == "raw":
        path = folder / "s.yaml"
        path.write_text(raw)
    else:
        path = folder / "s.yaml"
        path.write_text(yaml.safe_dump(document) if form == "yaml"
                        else json.dumps(document, default=str))
    result = result_or_clear_error(lambda: SweepSpec.from_file(path))
    if isinstance(result, SweepSpec) and result.budget_usd is not None:
        assert math.isfinite(result.budget_usd)


# -- catalog TOML ---------------------------------------------------------------------------------

model_fields = st.fixed_dictionaries({}, optional={
    "tasks": st.one_of(st.lists(st.sampled_from(["enhance", "upscale", "x"]), max_size=3),
                       values),
    "endpoint": st.one_of(st.text(max_size=10), values),
    "pricing": st.one_of(st.fixed_dictionaries({}, optional={
        "unit": st.sampled_from(["image", "token", "second", "nope"]),
        "usd_per_unit": st.one_of(st.floats(), st.integers(-5, 10**30)),
        "token_prices": values}), values),
    "timeout_s": st.one_of(st.floats(), st.integers(-1, 10**12)),
    "max_concurrency": st.one_of(st.integers(-1, 10**12), values),
    "billing": values, "inputs": values, "defaults": values, "extra": values})


@given(st.dictionaries(st.sampled_from(["local:a", "fal:b", "nope", "replicate:c/d"]),
                       model_fields, max_size=3),
       st.one_of(st.none(), st.dictionaries(st.sampled_from(["enhance", "x"]), values,
                                            max_size=2)),
       st.one_of(st.none(), values), st.text(max_size=120))
def test_loading_a_catalog_file_ends_in_a_catalog_or_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory, models: dict[str, object],
        chains: object, providers: object, raw: str) -> None:
    folder = tmp_path_factory.mktemp("catalog")
    document: dict[str, object] = {"models": models}
    if chains is not None:
        document["chains"] = chains
    if providers is not None:
        document["providers"] = providers
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        text = raw
    (folder / "mine.toml").write_text(text)
    result = result_or_clear_error(lambda: load_catalog(folder, include_defaults=False))
    if not isinstance(result, PixellabError):
        for model in result.models.values():
            assert math.isfinite(model.pricing.usd_per_unit) and math.isfinite(model.timeout_s)


# -- prompt templates -----------------------------------------------------------------------------

jinja_bits = st.sampled_from(
    ["{{ title }}", "{{ analysis.category }}", "{% if analysis %}", "{% endif %}", "{{", "}}",
     "{% for x in range(10**9) %}", "{% for y in range(99999) %}", "{% endfor %}",
     "{{ ''.__class__ }}", "{{ title * 9999999 }}",
     "{{ 2 ** 9999 }}", "{{ 1/0 }}", "{{ title|replace('a', 'b') }}", "{{ self }}",
     "{{ lipsum(1000000) }}", "{% set x = [1] %}{{ x.append(2) }}", "{{ title[::-1] }}",
     "{{ cycler }}", "{{ namespace() }}", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
     "{{ '%s' % title }}", "{{ title.format(1) }}", "{{ undefined_name }}", "{#", "#}"])


@given(st.lists(st.one_of(jinja_bits, st.text(string.printable, max_size=10)), max_size=6),
       st.dictionaries(st.sampled_from(["title", "description", "category", "brand"]),
                       st.text(max_size=20), max_size=4),
       st.one_of(st.none(), st.fixed_dictionaries({"category": st.text(max_size=8)})))
def test_rendering_a_template_ends_in_text_or_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory, parts: list[str], fields: dict[str, str],
        analysis: dict[str, str] | None) -> None:
    folder = tmp_path_factory.mktemp("prompts")
    (folder / "fuzz@1.j2").write_text("".join(parts))
    result = result_or_clear_error(
        lambda: load_prompt("fuzz@1", folder).render(fields, analysis))
    if isinstance(result, str):
        assert len(result) <= 20_000


# -- the corpus: every case found so far, replayed ----------------------------------------------


@pytest.mark.parametrize("case", corpus_params("images"))
def test_saved_image_cases_end_in_an_image_or_invalid_image(case: Path) -> None:
    result = result_or_clear_error(lambda: decode_image(case.read_bytes()))
    assert isinstance(result, InvalidImage | Image.Image)
    check_image_output(case.read_bytes())


@pytest.mark.parametrize("case", corpus_params("sweep-files"))
def test_saved_sweep_files_end_in_a_spec_or_a_clear_error(case: Path) -> None:
    result_or_clear_error(lambda: SweepSpec.from_file(case))


@pytest.mark.parametrize("case", corpus_params("templates"))
def test_saved_templates_end_in_text_or_a_clear_error(case: Path, tmp_path: Path) -> None:
    (tmp_path / "saved@1.j2").write_bytes(case.read_bytes())
    result_or_clear_error(
        lambda: load_prompt("saved@1", tmp_path).render({"title": "mug"}, None))


@pytest.mark.parametrize("case", corpus_params("catalogs"))
def test_saved_catalog_files_end_in_a_catalog_or_a_clear_error(case: Path, tmp_path: Path
                                                               ) -> None:
    (tmp_path / "saved.toml").write_bytes(case.read_bytes())
    result_or_clear_error(lambda: load_catalog(tmp_path, include_defaults=False))
