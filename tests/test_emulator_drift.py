"""The emulator's ``identity_drift`` fault: a job that succeeds with a valid picture of a
*different* product - recoloured, mirrored in place, its label redrawn - at the normal size and
framing.

What must hold:
- through the real SDKs (Replicate unfaulted, fal faulted, the same model and input), both
  requests of a sweep succeed and pass pixellab's output validation, with no error recorded;
- yet the faulted output differs from the unfaulted one where identity lives: the product's
  mean hue moved by about the fault's ``hue`` (150 degrees by default), and its brightness
  pattern matches the unfaulted one mirrored left-right far better than unmirrored;
- on a cutout (RGBA) the mirrored alpha travels with the product; a grey product gets a tint;
- the fault is an ordinary action: armed, consumed once, named on the job record.

- and the product-identity gate does catch it: scored in the sweep, the faulted output's
  ``identity`` is 0 (another product, or this one recoloured or mirrored), its composite is 0
  and it is not accepted, while the unfaulted one passes with a composite above 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pixellab import evidence
from pixellab.catalog import load_catalog
from pixellab.emulator import ACTIONS, Emulator, FaultPlan
from pixellab.emulator.drift import drift
from pixellab.runner import RetryPolicy
from pixellab.sweep import Sweep, SweepSpec
from pixellab.validate import check_image_output
from pixellab.workbench import Workbench
from tests.emulated import emulated_providers, point_sdks_at, remote_models, settled

CATALOG = remote_models("emu/kontext-edit", "gpt-image-emu", usd_per_image=0.04, timeout_s=10)
REPLICATE = "replicate:emu/kontext-edit"  # an edit model: the emulator answers a packshot
FAL = "fal:emu/kontext-edit"
FAST = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.05, poll_interval_s=0.02)


def backdrop(size: tuple[int, int] = (480, 360)) -> np.ndarray:
    """The bottle photo's grey gradient, float HxWx3."""
    w, h = size
    shade = 1.0 - 0.15 * np.linspace(0.0, 1.0, h)[:, None, None]
    return np.broadcast_to(np.array([205.0, 200.0, 195.0]) * shade, (h, w, 3))


def bottle_photo(size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A red bottle with its handle on the right and a printed label, on a grey gradient: a
    product whose colour, handedness and label all say which product it is."""
    photo = Image.fromarray(backdrop(size).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(photo)
    draw.rounded_rectangle((150, 70, 290, 300), radius=28, fill=(200, 40, 40))
    draw.ellipse((270, 120, 350, 230), outline=(200, 40, 40), width=16)
    draw.rectangle((195, 40, 245, 75), fill=(60, 60, 60))
    draw.rectangle((165, 150, 275, 220), fill=(245, 240, 225))
    font = ImageFont.load_default(size=22)
    draw.text((175, 160), "ACME", fill=(20, 20, 20), font=font)
    draw.text((175, 188), "cola 1L", fill=(20, 20, 20), font=font)
    return photo


def silhouette(image: Image.Image) -> np.ndarray:
    """Where the bottle photo (or its drift) is not its grey backdrop."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.abs(rgb - backdrop(image.size)).max(axis=-1) > 40


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def hsv(image: Image.Image) -> np.ndarray:
    """Float HxWx3: hue in degrees, saturation and value in [0, 1]."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)


def mean_hue(image: Image.Image, where: np.ndarray) -> float:
    """Circular mean hue (degrees) over ``where``."""
    angles = np.radians(hsv(image)[..., 0][where])
    return float(np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360)


def hue_distance(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def saturated(image: Image.Image) -> np.ndarray:
    """The strongly coloured pixels (the bottle's body and handle, not its label or backdrop)."""
    planes = hsv(image)
    return (planes[..., 1] > 0.3) & (planes[..., 2] > 0.2)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def mirror_scores(normal: Image.Image, drifted: Image.Image) -> tuple[float, float]:
    """Correlation of the drifted output's brightness (HSV value: a hue rotation keeps it) with
    the normal output's, mirrored and as is, over the normal product's bounding box."""
    value_n, value_d = hsv(normal)[..., 2], hsv(drifted)[..., 2]
    ys, xs = np.nonzero(np.asarray(normal.convert("L")) < 235)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return (correlation(value_d[box], value_n[box][:, ::-1]),
            correlation(value_d[box], value_n[box]))


def test_identity_drift_is_an_ordinary_fault() -> None:
    assert "identity_drift" in ACTIONS
    plan = FaultPlan()
    plan.add("fal", "identity_drift", hue=90)
    fault = plan.take("fal", "any/model")
    assert fault is not None and fault.action == "identity_drift" and fault.option("hue", 0) == 90
    assert plan.take("fal", "any/model") is None


def test_drift_recolours_mirrors_and_relabels_a_photo_and_stays_valid() -> None:
    photo = bottle_photo()
    out = drift(photo, seed=1)
    assert out.size == photo.size and out.mode == "RGB"
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    source = io.BytesIO()
    photo.save(source, format="PNG")
    check = check_image_output(buffer.getvalue(), declared_media_type="image/png",
                               expected_size=photo.size, source=source.getvalue())
    assert check.ok, check
    body = saturated(photo)
    assert hue_distance(mean_hue(photo, body), mean_hue(out, saturated(out))) > 120
    # the bottle is mirrored where it stood (its handle now on the left): its outline is the
    # original's flipped inside the product's box, not the original's
    before, after = silhouette(photo), silhouette(out)
    ys, xs = np.nonzero(before)
    x0, x1 = xs.min(), xs.max() + 1
    flipped = before.copy()
    flipped[:, x0:x1] = before[:, x0:x1][:, ::-1]
    assert iou(after, flipped) > 0.95 and iou(after, before) < 0.8, (
        iou(after, flipped), iou(after, before))
    # brightness (HSV value: the recolouring keeps it) is the original's, mirrored, everywhere
    # on the bottle except on its label, which was blurred and redrawn
    value_before, value_after = hsv(photo)[..., 2], hsv(out)[..., 2]
    label = np.zeros(before.shape, bool)
    label[150:220, 165:275] = True
    for plane in (value_before, label, before):
        plane[:, x0:x1] = plane[:, x0:x1][:, ::-1].copy()
    rest = before & ~label
    assert correlation(value_after[rest], value_before[rest]) > 0.98
    assert correlation(value_after[label], value_before[label]) < 0.5


def test_drift_of_a_cutout_mirrors_its_alpha_and_tints_a_grey_product() -> None:
    w, h = 200, 160
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[40:130, 50:110] = (128, 128, 128, 255)  # a grey box
    rgba[60:90, 110:150] = (128, 128, 128, 255)  # with a spout on its right
    cut = Image.fromarray(rgba, "RGBA")
    out = drift(cut, seed=0)
    assert out.mode == "RGBA" and out.size == cut.size
    alpha_in = rgba[..., 3]
    alpha_out = np.asarray(out.getchannel("A"))
    x0, x1 = 50, 150  # the product's box: mirrored inside it, untouched outside
    assert np.array_equal(alpha_out[:, x0:x1], alpha_in[:, x0:x1][:, ::-1])
    assert alpha_out[:, :x0].max() == 0 and alpha_out[:, x1:].max() == 0
    planes = hsv(out)
    assert planes[..., 1][alpha_out > 0].mean() >= 0.39  # grey came back coloured
    assert np.allclose(planes[..., 2][alpha_out > 0], 128 / 255, atol=0.02)  # shading kept


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02) as emu:
        yield emu


def one_product_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    bottle_photo().save(root / "images" / "bottle.png")
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "title", "description", "category",
                                                    "image"])
        writer.writeheader()
        writer.writerow({"id": "bottle", "title": "ACME cola bottle, 1 L",
                         "description": "Red bottle with a side handle.", "category": "kitchen",
                         "image": "images/bottle.png"})
    return root


def drifting_fal(emulator: Emulator, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Workbench, Path]:
    """A workbench on the emulator whose next fal job drifts (Replicate answers normally),
    and the one-bottle dataset."""
    emulator.faults.clear()
    point_sdks_at(emulator, monkeypatch)
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "emu.toml").write_text(CATALOG)
    workbench = Workbench(tmp_path / "home", catalog=load_catalog(folder),
                          providers=emulated_providers(emulator))
    emulator.faults.add("fal", "identity_drift")
    return workbench, one_product_dataset(tmp_path / "dataset")


def test_a_drifted_output_succeeds_validates_and_only_identity_tells_it_apart(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workbench, dataset = drifting_fal(emulator, tmp_path, monkeypatch)
    before = {p: len(emulator.creates(p)) for p in ("replicate", "fal")}
    result = Sweep(SweepSpec.parse({
        "name": "drift", "task": "enhance", "dataset": str(dataset), "models": [REPLICATE, FAL],
        "prompts": [], "concurrency": 1}), workbench).run(retry=FAST, score=False)
    settled(emulator)

    assert result.succeeded == 2 and not emulator.faults.pending()
    assert [j.fault for j in emulator.creates("fal")[before["fal"]:]] == ["identity_drift"]
    assert [j.fault for j in emulator.creates("replicate")[before["replicate"]:]] == [None]
    rows = workbench.ledger.query(
        """select a.model_id, a.status, a.error_class, a.output_sha256, o.media_type
           from attempts a join outputs o on o.sha256 = a.output_sha256""")
    assert sorted(rows["model_id"]) == sorted([REPLICATE, FAL])
    assert set(rows["status"]) == {"succeeded"} and rows["error_class"].isna().all()
    outputs = {}
    for model_id, _, _, digest, media_type in rows.itertuples(index=False, name=None):
        data = workbench.store.get(digest, media_type)
        check = check_image_output(data, declared_media_type=media_type)
        assert check.ok, (model_id, check)  # every validity check passes, the drift included
        outputs[model_id] = Image.open(io.BytesIO(data))
    normal, drifted = outputs[REPLICATE], outputs[FAL]
    assert drifted.size == normal.size and drifted.mode == normal.mode  # same size and framing

    shift = hue_distance(mean_hue(normal, saturated(normal)), mean_hue(drifted, saturated(drifted)))
    assert 120 < shift < 180, shift  # 150 degrees by default
    mirrored, as_is = mirror_scores(normal, drifted)
    assert mirrored > 0.6 and mirrored > as_is + 0.5, (mirrored, as_is)


def test_the_identity_gate_catches_the_drift_in_a_scored_sweep(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workbench, dataset = drifting_fal(emulator, tmp_path, monkeypatch)  # no mask: estimated
    result = Sweep(SweepSpec.parse({
        "name": "drift-scored", "task": "enhance", "dataset": str(dataset),
        "models": [REPLICATE, FAL], "prompts": [], "concurrency": 1}), workbench).run(retry=FAST)
    settled(emulator)
    assert result.succeeded == 2 and not emulator.faults.pending()

    frame = evidence.scored_requests(workbench.ledger, ["drift-scored"]).set_index("model_id")
    normal, drifted = frame.loc[REPLICATE], frame.loc[FAL]
    assert normal["identity"] == 1.0 and bool(normal["passed"]) and normal["score"] > 0
    assert drifted["identity"] == 0.0 and not bool(drifted["passed"])
    assert drifted["score"] == 0.0  # a measured gate failure: nothing usable
    scores = workbench.ledger.query(
        """select s.details from scores s join attempts a on a.output_sha256 = s.output_sha256
           where s.metric = 'identity' and a.model_id = ?""", [FAL])
    details = json.loads(scores["details"].iloc[0])
    # recoloured by 150 degrees and mirrored, the bottle's gray structure no longer matches
    # well enough to call it this bottle recoloured: it is another product
    assert details["reason"] in {"product_not_found", "recoloured", "mirrored"}
