"""The ``lifestyle`` task end to end: the free local scene baselines, the lifestyle scores, a
sweep over real sample photos, and a remote lifestyle model through the loopback emulator.

Real photos from ``datasets/sample`` (shrunk where the pixels do not matter, so the suite stays
quick on two busy cores); no mocks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pixellab.catalog import load_catalog
from pixellab.emulator import Emulator
from pixellab.emulator.imaging import is_lifestyle_prompt, render
from pixellab.errors import InvalidRequest
from pixellab.providers.base import JobState, ProviderRequest
from pixellab.providers.local import OPERATIONS, LocalProvider
from pixellab.providers.local.ops import cutout
from pixellab.providers.local.scene import (
    STYLES,
    backdrop,
    output_size,
    pick_kind,
    pick_style,
    render_backdrop,
    render_scene,
    scene,
)
from pixellab.scoring import compute, load_task_scoring
from pixellab.scoring.base import ScoreContext
from pixellab.scoring.lifestyle import (
    score_product_placement,
    score_scene_change,
)
from pixellab.sweep import Sweep, SweepSpec
from pixellab.tasks import Task
from pixellab.validate import check_image_output, decode_image
from pixellab.workbench import Workbench
from tests.conftest import REPO
from tests.emulated import emulated_providers, point_sdks_at, remote_models

SAMPLE = REPO / "datasets" / "sample"


def photo(product: str, longer: int | None = 480) -> tuple[Image.Image, Image.Image]:
    """A sample product photo and its ground-truth mask, shrunk so the longer side is
    ``longer`` (None: as stored)."""
    with Image.open(SAMPLE / "images" / f"{product}.jpg") as im:
        image = im.convert("RGB")
    with Image.open(SAMPLE / "masks" / f"{product}.png") as m:
        mask = m.convert("L")
    if longer is not None:
        k = longer / max(image.size)
        size = (round(image.width * k), round(image.height * k))
        image = image.resize(size, Image.Resampling.LANCZOS)
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return image, mask


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def perfume() -> tuple[Image.Image, Image.Image]:
    return photo("cosmetics-02")


@pytest.fixture(scope="module")
def perfume_cut(perfume: tuple[Image.Image, Image.Image]) -> Image.Image:
    """The perfume cut out once (RGBA): the operations take a cut-out as it is, which keeps the
    tests that are about the scene quick."""
    return cutout(perfume[0])


@pytest.fixture(scope="module")
def pan() -> Image.Image:
    return photo("kitchen-02", 360)[0]


@pytest.fixture(scope="module")
def pan_cut(pan: Image.Image) -> Image.Image:
    return cutout(pan)


@pytest.fixture(scope="module")
def perfume_scene(perfume: tuple[Image.Image, Image.Image]):  # type: ignore[no-untyped-def]
    return render_scene(perfume[0], prompt="Eau de parfum with a warm look", seed=0, size=512)


# -- the local operations -----------------------------------------------------------------------


@pytest.mark.parametrize("operation", [scene, backdrop], ids=["scene", "backdrop"])
@pytest.mark.parametrize(("size", "aspect", "expected"), [
    (320, "1:1", (320, 320)), (400, "4:5", (320, 400)), (400, "16:9", (400, 225)),
    (300, "source", (300, 225)),  # kitchen-02 is 960x720
])
def test_each_operation_returns_a_valid_image_of_the_requested_size(
        operation, size: int, aspect: str, expected: tuple[int, int], pan: Image.Image,
        pan_cut: Image.Image) -> None:  # type: ignore[no-untyped-def]
    source = pan if aspect == "1:1" else pan_cut  # the photo is cut out, a cut-out used as is
    out = operation(source, prompt="a pan in a rustic kitchen", size=size, aspect_ratio=aspect)
    assert out.mode == "RGB" and out.size == expected
    check = check_image_output(png(out), declared_media_type="image/png", source=png(pan))
    assert check.ok, check.message


def test_the_same_inputs_give_the_same_bytes_and_the_seed_varies_them(
        perfume: tuple[Image.Image, Image.Image], perfume_cut: Image.Image) -> None:
    first = scene(perfume[0], prompt="minimal", seed=3, size=256)
    again = scene(perfume[0].copy(), prompt="minimal", seed=3, size=256)
    assert png(first) == png(again)
    other = np.asarray(scene(perfume_cut, prompt="minimal", seed=4, size=256), np.int16)
    assert np.abs(other - np.asarray(first, np.int16)).mean() > 2
    assert png(backdrop(perfume_cut, seed=1, size=256)) == png(backdrop(perfume_cut, seed=1,
                                                                        size=256))


def test_different_aesthetics_give_different_scenes(perfume_cut: Image.Image) -> None:
    looks = {word: render_scene(perfume_cut, prompt=f"Eau de parfum with a {word} look",
                                size=256)
             for word in ("minimal", "luxury", "playful", "outdoor")}
    assert {word: r.layout.style for word, r in looks.items()} == {
        "minimal": "minimal", "luxury": "luxury", "playful": "playful", "outdoor": "outdoor"}
    images = [np.asarray(r.image, np.int16) for r in looks.values()]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 10
    # the dark luxury room is darker than the minimal one
    assert images[1].mean() < images[0].mean() - 40


def test_the_style_comes_from_the_look_then_words_then_category_then_seed() -> None:
    assert pick_style("Gold ring in a realistic jewelry lifestyle setting that speaks to luxury "
                      "buyers, with a minimal look, natural light")[0] == "minimal"
    assert pick_style("Walnut stool in a cosy loft")[0] == "warm"  # 'walnut' before 'loft'
    # every lifestyle prompt says "natural light": not a reason for the outdoor style
    kitchen = ("Enamel mug in a realistic kitchen lifestyle setting, natural light, shallow "
               "depth of field, the product unchanged and clearly visible.")
    assert pick_style(kitchen) == ("outdoor", "category 'kitchen'")  # kitchen's aesthetic: natural
    assert pick_style("Lipstick in a cosmetics lifestyle setting")[0] == "luxury"
    assert pick_style("", seed=5) == (sorted(STYLES)[5], "seed 5")
    assert pick_kind("Walnut bar stool, minimal look", "minimal")[0] == "floor"
    assert pick_kind("A chair", "luxury")[0] == "floor"
    assert pick_kind("Eau de parfum", "classic") == ("shelf", "style 'classic'")
    stool = cutout(photo("furniture-03", 200)[0])
    assert render_scene(stool, prompt="Counter-height bar stool", size=128).layout.kind == "floor"


def test_invalid_parameters_are_refused_by_name(pan_cut: Image.Image) -> None:
    source = pan_cut
    for kwargs, word in (({"size": 10}, "size"), ({"aspect_ratio": "wide"}, "aspect_ratio"),
                         ({"style": "gothic"}, "style"), ({"scene": "moon"}, "scene"),
                         ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
                         ({"cutout_method": "magic"}, "cutout_method")):
        with pytest.raises(ValueError, match=f"^{word}"):
            scene(source, **kwargs)  # type: ignore[arg-type]
    assert output_size((800, 600), 1536, "1536:1024") == (1536, 1024)


def test_the_product_rests_wholly_inside_the_frame_with_its_own_pixels(
        perfume: tuple[Image.Image, Image.Image], perfume_scene) -> None:  # type: ignore[no-untyped-def]
    result = perfume_scene
    layout = result.layout
    x0, y0, x1, y1 = layout.box
    w, h = layout.width, layout.height
    margin = 0.04 * min(w, h)
    assert margin <= x0 < x1 <= w - margin and margin <= y0 < y1 < h
    assert y1 == layout.contact_y > 0.6 * h  # standing on the surface, in the lower part
    assert 0.2 <= layout.occupancy <= 0.45
    # the product layer is the cut-out, scaled: same silhouette...
    cut = np.asarray(cutout(perfume[0]), np.float32) / 255.0
    ys, xs = np.nonzero(cut[..., 3] >= 0.1)
    crop = cut[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    premult = np.dstack([crop[..., :3] * crop[..., 3:], crop[..., 3]])
    expected = cv2.resize(premult, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    placed = result.alpha[y0:y1, x0:x1] > 0.5
    want = expected[..., 3] > 0.5
    assert (placed & want).sum() / (placed | want).sum() > 0.97
    assert result.alpha[:y0].max() == 0 and result.alpha[y1:].max() == 0  # nothing outside
    # ...and its opaque pixels are the photo's, untouched by the scene's light and shadows
    inner = cv2.erode((expected[..., 3] > 0.999).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    out = np.asarray(result.image, np.float32)[y0:y1, x0:x1] / 255.0
    diff = np.abs(out[inner] - expected[..., :3][inner])
    assert inner.sum() > 1000 and diff.mean() < 1.5 / 255 and diff.max() < 6 / 255


def test_a_glossy_surface_reflects_the_product_and_the_backdrop_stands_it_on_a_sweep(
        perfume_cut: Image.Image) -> None:
    source = perfume_cut
    glossy = render_scene(source, style="luxury", scene="tabletop", size=256)
    matte = render_scene(source, style="minimal", scene="tabletop", size=256)
    assert STYLES["luxury"].gloss > 0 == STYLES["minimal"].gloss
    below = slice(glossy.layout.contact_y + 2, glossy.layout.contact_y + 12)
    x0, _, x1, _ = glossy.layout.box
    band = np.asarray(glossy.image, np.float32)[below, x0:x1].mean()
    side = np.asarray(glossy.image, np.float32)[below, :max(1, x0 - 20)].mean()
    assert band > side + 3  # the bright bottle mirrored in the dark marble
    assert matte.layout.kind == glossy.layout.kind == "tabletop"
    sweep = render_backdrop(source, prompt="playful", size=256)
    assert sweep.layout.kind == "backdrop" and sweep.layout.style == "playful"


async def test_the_local_provider_maps_the_prompt_seed_size_and_aspect() -> None:
    catalog = load_catalog()
    source, _ = photo("kitchen-02", 240)
    params = {"prompt": "a pan, luxury look", "seed": 2, "size": 256, "aspect_ratio": "4:5",
              "scale": 9}  # a param the model does not declare is dropped

    async def run(model_id: str, **extra: object) -> bytes:
        request = ProviderRequest("k", catalog.model(model_id), png(source), "image/png",
                                  {**params, **extra})
        job = await LocalProvider().submit(request)
        assert job.state is JobState.SUCCEEDED and job.output is not None
        assert job.output.media_type == "image/png"
        return job.output.data

    for model_id, operation in (("local:scene", scene), ("local:backdrop", backdrop)):
        out = decode_image(await run(model_id))
        assert out.size == (205, 256)
        direct = operation(source, prompt="a pan, luxury look", seed=2, size=256,
                           aspect_ratio="4:5")
        assert np.array_equal(np.asarray(out), np.asarray(direct))
    with pytest.raises(InvalidRequest, match="aspect_ratio"):
        await run("local:scene", aspect_ratio="huge")
    assert {"scene", "backdrop"} <= set(OPERATIONS)
    assert [m.id for m in catalog.models.values() if Task.LIFESTYLE in m.tasks
            and m.provider == "local"] == ["local:scene", "local:backdrop"]


# -- the lifestyle scores -----------------------------------------------------------------------


def test_scene_change_is_high_for_a_new_scene_and_nil_for_the_source_itself(
        perfume: tuple[Image.Image, Image.Image], perfume_scene) -> None:  # type: ignore[no-untyped-def]
    source, mask = perfume
    new = score_scene_change(ScoreContext("lifestyle", perfume_scene.image, source, mask))
    assert new.value is not None and new.value > 0.8, new
    assert new.version == "lifestyle-2"
    assert new.details["product_located"] in {"features", "template", "object_box"}
    same = score_scene_change(ScoreContext("lifestyle", source.copy(), source, mask))
    assert same.value is not None and same.value < 0.03, same
    # without a mask one is estimated from the photo's border
    estimated = score_scene_change(ScoreContext("lifestyle", perfume_scene.image, source))
    assert estimated.value is not None and estimated.value > 0.8
    assert estimated.details["mask"] == "estimated"


def test_product_placement_finds_the_product_and_flags_one_cut_off_by_the_frame(
        perfume: tuple[Image.Image, Image.Image], perfume_scene) -> None:  # type: ignore[no-untyped-def]
    source, mask = perfume
    whole = score_product_placement(ScoreContext("lifestyle", perfume_scene.image, source, mask))
    assert whole.value == 1.0, whole
    assert whole.details["cut_off"] is False and whole.details["touches_edge"] == []
    box = whole.details["box"]
    x0, y0, x1, y1 = perfume_scene.layout.box
    assert all(abs(a - b) <= 6 for a, b in zip(box, (x0, y0, x1, y1), strict=True))
    assert abs(whole.details["occupancy"] - perfume_scene.layout.occupancy) < 0.03
    # the frame cuts a third of the product away
    cut_at = x0 + (x1 - x0) // 3
    cropped = perfume_scene.image.crop((cut_at, 0, perfume_scene.image.width,
                                        perfume_scene.image.height))
    cut = score_product_placement(ScoreContext("lifestyle", cropped, source, mask))
    assert cut.value is not None and cut.value < 0.5, cut
    assert cut.details["cut_off"] is True and "left" in cut.details["touches_edge"]
    assert 0.5 < cut.details["visible"] < 0.8
    # a product shrunk to a speck earns little for its size
    small = Image.new("RGB", (640, 640), (200, 190, 180))
    small.paste(source.resize((source.width // 3, source.height // 3)), (300, 420))
    tiny = score_product_placement(ScoreContext("lifestyle", small, source, mask))
    assert tiny.value is not None and tiny.value < 0.3 and tiny.details["extent"] < 0.25
    assert tiny.details["occupancy"] < 0.05


def test_what_cannot_be_measured_is_missing_with_a_reason_never_zero(
        perfume: tuple[Image.Image, Image.Image], perfume_scene) -> None:  # type: ignore[no-untyped-def]
    source, mask = perfume
    for metric in ("scene_change", "product_placement"):
        alone = compute(metric, ScoreContext("lifestyle", perfume_scene.image))
        assert alone.value is None and alone.missing_reason == "no source photo"
    other, _ = photo("kitchen-02", 480)
    elsewhere = score_product_placement(ScoreContext("lifestyle", other, source, mask))
    assert elsewhere.value is None and "not found" in (elsewhere.missing_reason or "")


def test_the_lifestyle_task_scores_the_new_metrics() -> None:
    lifestyle = load_task_scoring()["lifestyle"]
    assert {"blank", "scene_change", "product_placement", "sharpness", "clip_text",
            "clip_fidelity", "identity"} <= set(lifestyle.metrics)
    assert lifestyle.gates == {"blank": 0.0, "identity": 1.0}  # a different product fails
    assert lifestyle.composite is not None and "scene_change" in lifestyle.composite.terms


# -- sweeps -------------------------------------------------------------------------------------


def lifestyle_scores(workbench: Workbench) -> dict[tuple[str, str], dict[str, float | None]]:
    frame = workbench.ledger.query(
        """select r.model_id, r.product_id, s.metric, s.value from scores s
           join requests r on r.output_sha256 = s.output_sha256""")
    result: dict[tuple[str, str], dict[str, float | None]] = {}
    for model_id, product_id, metric, value in frame.itertuples(index=False):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        result.setdefault((model_id, product_id), {})[metric] = None if missing else value
    return result


def test_a_lifestyle_sweep_over_sample_products_runs_and_scores(tmp_path: Path) -> None:
    workbench = Workbench(tmp_path / "home")
    spec = SweepSpec.parse({
        "name": "life", "task": "lifestyle", "dataset": str(SAMPLE),
        "products": ["cosmetics-04", "kitchen-02"], "models": ["local:scene", "local:backdrop"],
        "prompts": ["lifestyle-scene@2"], "params": {"size": 256}})
    result = Sweep(spec, workbench).run()
    assert result.succeeded == 4 and result.failed == 0
    got = lifestyle_scores(workbench)
    assert set(got) == {(m, p) for m in ("local:scene", "local:backdrop")
                        for p in ("cosmetics-04", "kitchen-02")}
    for key, metrics in got.items():
        assert metrics["blank"] == 0.0, key
        assert metrics["scene_change"] is not None and metrics["scene_change"] > 0.3, key
        assert metrics["product_placement"] is not None and metrics["product_placement"] > 0.5
        assert metrics["sharpness"] is not None
    for key in (("local:scene", "cosmetics-04"), ("local:scene", "kitchen-02")):
        assert got[key]["scene_change"] > 0.7  # type: ignore[operator]
    sizes = workbench.ledger.query("select distinct width, height from outputs")
    assert sizes.values.tolist() == [[256, 256]]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02) as emu:
        yield emu


def test_an_emulated_edit_model_asked_for_a_scene_draws_one() -> None:
    source, _ = photo("cosmetics-02", 320)
    assert is_lifestyle_prompt("Eau de parfum in a realistic cosmetics lifestyle setting")
    assert not is_lifestyle_prompt("Catalogue main image of Eau de parfum on pure white")
    lifestyle = render("packshot", png(source), {"prompt": "perfume lifestyle scene, luxury",
                                                 "seed": 1, "size": "512x384"})
    assert lifestyle.size == (512, 384)
    assert np.asarray(lifestyle)[:8].mean() < 200  # a dark room, not a white studio
    studio = render("packshot", png(source), {"prompt": "packshot on pure white"})
    assert (np.asarray(studio)[:8] == 255).all()


def test_a_remote_lifestyle_model_through_the_emulator_yields_a_scene_and_scores(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.faults.clear()
    point_sdks_at(emulator, monkeypatch)
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "emu.toml").write_text(
        remote_models("emu/kontext-edit", "gpt-image-emu", usd_per_image=0.04, timeout_s=20)
        .replace('tasks = ["enhance"]', 'tasks = ["lifestyle"]'))
    workbench = Workbench(tmp_path / "home", catalog=load_catalog(folder),
                          providers=emulated_providers(emulator))
    models = ["replicate:emu/kontext-edit", "openai:gpt-image-emu"]
    spec = SweepSpec.parse({"name": "emu-life", "task": "lifestyle", "dataset": str(SAMPLE),
                            "products": ["cosmetics-04"], "models": models,
                            "prompts": ["lifestyle-scene@2"]})
    result = Sweep(spec, workbench).run()
    assert result.succeeded == 2, result.outcomes
    got = lifestyle_scores(workbench)
    for model_id in models:
        metrics = got[(model_id, "cosmetics-04")]
        assert metrics["blank"] == 0.0
        assert metrics["scene_change"] is not None and metrics["scene_change"] > 0.7, model_id
        assert metrics["product_placement"] is not None and metrics["product_placement"] > 0.5
    digest, media = workbench.ledger.query(
        "select sha256, media_type from outputs limit 1").iloc[0]
    assert media == "image/png" and workbench.store.exists(digest, media)
