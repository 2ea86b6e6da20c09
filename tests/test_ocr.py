"""Label text preserved (``label_text``, scoring/ocr.py): real OCR on the sample's printed labels.

The OCR tests run RapidOCR for real (PP-OCRv4 models from the wheel, offline); they are skipped,
saying why, only where the ``ocr`` extra is not installed. What happens without it is tested
everywhere, by making the module's own import of rapidocr fail.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pixellab.datasets import Product, load_dataset
from pixellab.scoring import SCORERS, ScoreContext, compute, ocr, scorer_version
from tests.conftest import REPO, run_process

SAMPLE = REPO / "datasets" / "sample"
HAVE_OCR = importlib.util.find_spec("rapidocr_onnxruntime") is not None
needs_ocr = pytest.mark.skipif(
    not HAVE_OCR, reason="rapidocr-onnxruntime is not installed (pip install 'pixellab[ocr]')")
LABELLED = sorted(p.id for p in load_dataset(SAMPLE).products if p.attributes.get("label_text"))


def _product(product_id: str) -> Product:
    return next(p for p in load_dataset(SAMPLE).products if p.id == product_id)


def _photo(product: Product) -> tuple[Image.Image, Image.Image | None]:
    photo = Image.open(product.image).convert("RGB")
    mask = Image.open(product.mask).convert("L") if product.mask is not None else None
    return photo, mask


def _context(product_id: str, output: Image.Image, task: str = "enhance",
             with_truth: bool = True) -> ScoreContext:
    product = _product(product_id)
    photo, mask = _photo(product)
    truth = product.attributes.get("label_text") or None
    return ScoreContext(task=task, output=output, source=photo, mask=mask,
                        label_text=truth if with_truth else None)


def _generator() -> ModuleType:
    """datasets/sample/generate.py, to re-render a product with other words on its label."""
    spec = importlib.util.spec_from_file_location("_sample_generate", SAMPLE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


# -- without OCR: no import, missing with the hint ---------------------------------------------


def test_the_metric_is_registered_and_importing_scoring_does_not_load_ocr() -> None:
    assert SCORERS["label_text"][1] == ocr.SCORER_VERSION == scorer_version("label_text")
    probe = ("import sys, pixellab.scoring; print(sorted(m for m in "
             "('rapidocr_onnxruntime', 'onnxruntime') if m in sys.modules))")
    result = run_process([sys.executable, "-c", probe], cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def without_rapidocr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rapidocr as if the extra were not installed: the module's own import of it fails."""
    def missing() -> ModuleType:
        raise ModuleNotFoundError("No module named 'rapidocr_onnxruntime'",
                                  name="rapidocr_onnxruntime")

    monkeypatch.setattr(ocr, "_import_rapidocr", missing)
    ocr.reset_engine()
    yield
    ocr.reset_engine()  # the next test loads the real engine again


def test_without_the_extra_the_score_is_missing_with_the_install_hint(
        without_rapidocr: None) -> None:
    image = Image.new("RGB", (64, 64), "white")
    ctx = ScoreContext(task="enhance", output=image, source=image, label_text="AQUAVIVE")
    score = compute("label_text", ctx)
    assert score.value is None
    assert score.missing_reason == ocr.INSTALL_HINT == "no OCR: pip install 'pixellab[ocr]'"
    assert ocr.unavailable_reason() == ocr.INSTALL_HINT
    with pytest.raises(ocr.OcrUnavailable, match="pixellab\\[ocr\\]"):
        ocr.read_text(image)


def test_a_source_is_needed() -> None:
    image = Image.new("RGB", (64, 64), "white")
    score = ocr.score_label_text(ScoreContext(task="packshot", output=image, label_text="X5"))
    assert score.value is None
    assert score.missing_reason in ("no source image", ocr.INSTALL_HINT)


# -- comparing strings ---------------------------------------------------------------------------


def test_normalising_ignores_case_punctuation_and_spacing() -> None:
    assert ocr.normalise("  AQUAVIVE\tSerum,  30ml! ") == "aquavive serum 30ml"
    assert ocr.normalise("Cedar & Vanilla") == "cedar vanilla"
    assert ocr.cer("oat crunch", "OATCRUNCH") == 0.0  # OCR merges words: not an error
    assert ocr.levenshtein("kitten", "sitting") == 3


def test_word_recall_and_added_words() -> None:
    result = ocr.compare("AQUAVIVE Serum 30ml", "AQUAVIVA Toner 30 ml")
    assert result["missing"] == ["aquavive", "serum"] and result["added"] == ["aquaviva", "toner"]
    assert result["word_recall"] == pytest.approx(1 / 3)
    assert result["cer"] == pytest.approx(6 / 17)  # e->a, serum->toner; the space is free
    assert ocr.compare("NOVA X5", "")["cer"] == 1.0


# -- reading the sample's labels ---------------------------------------------------------------


@needs_ocr
@pytest.mark.parametrize("product_id", LABELLED)
def test_ocr_reads_each_sample_label(product_id: str) -> None:
    product = _product(product_id)
    photo, mask = _photo(product)
    truth = product.attributes["label_text"]
    read = ocr.read_text(photo, mask=mask)
    error = ocr.cer(ocr.normalise(truth), ocr.normalise(read.text))
    assert error <= 0.1, f"{product_id}: read {read.text!r} for {truth!r} (CER {error:.2f})"
    assert all(line.confidence >= ocr.MIN_CONFIDENCE for line in read.lines)
    assert read.region is not None
    left, top, right, bottom = read.region
    for line in read.lines:  # boxes are in the photo's pixels, inside the region read
        xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
        assert left - 1 <= min(xs) and max(xs) <= right + 1
        assert top - 1 <= min(ys) and max(ys) <= bottom + 1


@needs_ocr
def test_an_array_and_a_box_are_read_like_an_image_and_a_mask() -> None:
    photo, mask = _photo(_product("jewelry-06"))
    assert mask is not None
    box = mask.getbbox()
    assert box is not None
    read = ocr.read_text(np.asarray(photo), box=box)
    assert read.region == box
    assert ocr.cer("AURELIA Fine Jewellery", read.text) <= 0.1, read.text
    first = read.lines[0]
    assert first.text == "AURELIA" and box[1] <= min(y for _, y in first.box)
    assert ocr.read_text(photo, mask=Image.new("L", photo.size, 0)).lines == ()  # no product


def test_the_sample_labels_cover_several_categories() -> None:
    categories = {_product(p).category for p in LABELLED}
    assert len(LABELLED) >= 8 and len(categories) >= 5


# -- the metric ------------------------------------------------------------------------------------


@needs_ocr
def test_a_copy_of_the_photo_keeps_its_label() -> None:
    photo, _ = _photo(_product("cosmetics-06"))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=80)  # a copy, re-encoded: other pixels, same label
    score = compute("label_text", _context("cosmetics-06", Image.open(buffer)))
    assert score.value is not None and score.value >= 0.95, score.details
    details = score.details
    assert details["reference"] == "aquavive serum 30ml"
    assert details["reference_from"] == "label_text" and details["method"] == "source_mask"
    assert details["changed"] is False and details["added"] == [] and details["missing"] == []
    assert details["word_recall"] == 1.0 and details["source_cer"] <= 0.1
    assert details["source_confidence"] >= ocr.MIN_CONFIDENCE
    assert score.version == ocr.SCORER_VERSION


@needs_ocr
def test_a_label_reprinted_with_other_words_drops_the_value_and_names_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    generate = _generator()
    monkeypatch.setattr(generate, "SERUM_LABEL", ("AQUAVIVA", "Toner", "30ml"))
    product = next(p for p in generate.CATALOG if p.id == "cosmetics-06")
    reprinted = Image.fromarray(generate.render_scene(product).clean)
    score = compute("label_text", _context("cosmetics-06", reprinted))
    assert score.value is not None and score.value <= 0.8, score.details
    assert score.details["changed"] is True
    assert "toner" in score.details["added"] and "serum" in score.details["missing"]
    assert "aquavive" in score.details["missing"]
    assert score.details["word_recall"] <= 0.5


@needs_ocr
def test_a_label_painted_over_scores_zero() -> None:
    product = _product("cosmetics-07")
    photo, mask = _photo(product)
    lines = ocr.read_text(photo, mask=mask).lines
    assert lines
    erased = np.asarray(photo).copy()
    for line in lines:
        xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
        grow = 0.3 * (max(ys) - min(ys))
        x0, x1 = int(min(xs) - grow), int(max(xs) + grow) + 1
        y0, y1 = int(min(ys) - grow), int(max(ys) + grow) + 1
        patch = erased[y0:y1, x0:x1]
        patch[...] = np.median(patch.reshape(-1, 3), axis=0).astype(np.uint8)  # the jar's colour
    score = compute("label_text", _context("cosmetics-07", Image.fromarray(erased)))
    assert score.value == 0.0, score.details
    assert score.details["lost"] is True and score.details["changed"] is True
    assert score.details["output_text"] == ""


@needs_ocr
def test_no_text_on_the_source_and_no_ground_truth_is_missing_not_zero() -> None:
    photo, _ = _photo(_product("cosmetics-04"))  # a nail polish bottle: no label
    score = compute("label_text", _context("cosmetics-04", photo))
    assert score.value is None and score.missing_reason == "no label text on the source"


@needs_ocr
def test_without_ground_truth_the_source_reading_is_the_reference() -> None:
    photo, _ = _photo(_product("kitchen-07"))
    score = compute("label_text", _context("kitchen-07", photo, with_truth=False))
    assert score.value == 1.0, score.details
    assert score.details["reference_from"] == "source_ocr"
    assert score.details["reference"].replace(" ", "") == "oatcrunchhoneyalmond500g"
    assert "source_cer" not in score.details


@needs_ocr
def test_a_cut_out_is_read_inside_its_alpha() -> None:
    photo, mask = _photo(_product("furniture-06"))
    assert mask is not None
    cutout = photo.convert("RGBA")
    cutout.putalpha(mask)
    score = compute("label_text", _context("furniture-06", cutout, task="remove_background"))
    assert score.value is not None and score.value >= 0.95, score.details
    assert score.details["method"] == "alpha"


@needs_ocr
def test_a_packshot_with_other_framing_is_read_where_the_product_is() -> None:
    """The product moved and scaled onto a white square, as a packshot model returns it."""
    photo, mask = _photo(_product("electronics-07"))
    assert mask is not None
    box = mask.getbbox()
    assert box is not None
    product = photo.crop(box)
    canvas = Image.new("RGB", (1200, 1200), "white")
    scaled = product.resize((round(product.width * 1.5), round(product.height * 1.5)))
    canvas.paste(scaled, (1200 - scaled.width - 60, 90))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, 40, 40), fill=(250, 250, 250))  # a faint corner: not text
    score = compute("label_text", _context("electronics-07", canvas, task="packshot"))
    assert score.value is not None and score.value >= 0.95, score.details
    assert score.details["method"] in ("whole", "located")


@needs_ocr
def test_a_lifestyle_scene_is_read_on_the_product_not_on_its_backdrop() -> None:
    """The product on a new scene with a shop sign: where the product can be located
    (scoring/identity.py), the sign is not read as part of its label; where it cannot, the
    whole scene is read and the sign's words show up as added."""
    photo, mask = _photo(_product("cosmetics-07"))
    assert mask is not None
    box = mask.getbbox()
    assert box is not None
    product, silhouette = photo.crop(box), mask.crop(box)
    size = (round(product.width * 0.9), round(product.height * 0.9))
    scene = Image.new("RGB", (1024, 1024), (200, 180, 150))
    ImageDraw.Draw(scene).text((40, 40), "SALE 50%", fill=(20, 20, 20),
                               font=ImageFont.load_default(size=60))
    scene.paste(product.resize(size), (300, 450), silhouette.resize(size))
    score = compute("label_text", _context("cosmetics-07", scene, task="lifestyle"))
    assert score.value is not None, score.missing_reason
    if score.details["method"] == "located":
        assert score.value >= 0.95 and score.details["added"] == [], score.details
    else:
        assert score.details["method"] == "whole" and "sale" in score.details["added"]
