"""Scoring a sweep: the task's metrics land in the ledger once, missing ones say why, upscale is
measured against the original, CLIP scores are retried once CLIP can run."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd

from pixellab import evidence
from pixellab.scoring.clip import ClipScorer, ClipSettings
from pixellab.sweep import Sweep, SweepSpec
from pixellab.validate import decode_image
from pixellab.workbench import Workbench
from tests.conftest import register_tiny_clip
from tests.test_cli import pixellab


def sweep(workbench: Workbench, dataset: Path, task: str, models: list[str],
          **fields: object) -> Sweep:
    return Sweep(SweepSpec.parse({"name": f"s-{task}", "task": task, "dataset": str(dataset),
                                  "models": models, **fields}), workbench)


def scores(workbench: Workbench) -> dict[str, list[tuple[float | None, str | None]]]:
    frame = workbench.ledger.query("select metric, value, missing_reason from scores")
    result: dict[str, list[tuple[float | None, str | None]]] = {}
    for metric, value, reason in frame.itertuples(index=False):
        result.setdefault(metric, []).append(
            (None if value is None or (isinstance(value, float) and math.isnan(value))
             else value, reason))
    return result


def test_enhance_outputs_get_every_metric_of_the_task_or_a_reason(
        workbench: Workbench, dataset_dir: Path) -> None:
    result = sweep(workbench, dataset_dir, "enhance", ["local:autoenhance"]).run()
    got = scores(workbench)
    assert set(got) == {"blank", "psnr", "ssim", "delta_e", "sharpness", "exposure_clipping",
                        "clip_text", "clip_fidelity", "clip_identity", "identity",
                        "identity_ssim", "identity_delta_e", "label_text"}
    assert result.scores_written == 4 * 13
    assert all(v in (0.0, 1.0) for v, _ in got["identity"])  # measured, a verdict each
    assert all(0 < v <= 1 for v, _ in got["ssim"] if v is not None)
    assert all(v is not None and v >= 0 for v, _ in got["delta_e"])
    # no CLIP weights on this machine: recorded missing with the reason, never zero
    assert all(v is None and "no weights" in (r or "") for v, r in got["clip_text"])


def test_upscale_is_fed_a_downscaled_photo_and_scored_against_the_original(
        workbench: Workbench, dataset_dir: Path) -> None:
    upscale = sweep(workbench, dataset_dir, "upscale", ["local:upscale-lanczos"],
                    params={"scale": 2})
    result = upscale.run()
    assert result.succeeded == 4
    product = upscale.products()[0]
    original = decode_image(product.image.read_bytes())
    sent = decode_image(upscale.input_path(product).read_bytes())
    assert sent.size == (original.width // 2, original.height // 2)
    got = scores(workbench)
    psnrs = [v for v, _ in got["psnr"]]
    assert len(psnrs) == 4 and all(v is not None and 15 < v < 60 for v in psnrs)
    assert all(v is not None and 0 < v < 1 for v, _ in got["ssim"])


def test_upscale_without_degrading_has_no_reference_and_says_so(
        workbench: Workbench, dataset_dir: Path) -> None:
    sweep(workbench, dataset_dir, "upscale", ["local:upscale-lanczos"], degrade=False).run()
    assert all(v is None and r == "no clean reference" for v, r in scores(workbench)["psnr"])


def test_remove_background_gets_boundary_f_and_colour_fidelity(
        workbench: Workbench, dataset_dir: Path) -> None:
    sweep(workbench, dataset_dir, "remove_background", ["local:cutout"]).run()
    got = scores(workbench)
    assert all(v is not None and 0 < v <= 1 for v, _ in got["boundary_f"])
    assert all(v is not None for v, _ in got["delta_e"])


def test_missing_clip_scores_are_filled_once_clip_can_run(
        workbench: Workbench, dataset_dir: Path, tmp_path: Path) -> None:
    import open_clip
    import torch
    register_tiny_clip(tmp_path, "pixellab-tiny-sweep")
    checkpoint = tmp_path / "tiny.pt"
    settings = ClipSettings(backbone="pixellab-tiny-sweep", checkpoint=checkpoint)
    packshot = sweep(workbench, dataset_dir, "packshot", ["local:packshot"])
    packshot.run(score=False)
    assert packshot.score(clip=ClipScorer(settings)) > 0  # no checkpoint yet: missing
    assert all(v is None for v, _ in scores(workbench)["clip_fidelity"])

    model = open_clip.create_model("pixellab-tiny-sweep")
    torch.save(model.state_dict(), checkpoint)
    assert packshot.score(clip=ClipScorer(settings)) == 12  # text, fidelity, identity × 4
    got = scores(workbench)
    assert len(got["clip_fidelity"]) == 4
    # the masked product in source and output: computed where identity found the product
    measured = [v for v, _ in got["clip_identity"] if v is not None]
    assert measured and all(-1 <= v <= 1 for v in measured)
    assert all("not found" in (r or "") for v, r in got["clip_identity"] if v is None)
    assert all(v is not None and -1 <= v <= 1 for v, _ in got["clip_fidelity"])
    assert all(v is not None and 0 <= v <= 100 for v, _ in got["clip_text"])
    assert packshot.score(clip=ClipScorer(settings)) == 0  # now unchanged: a no-op


def test_score_from_the_cli_with_chosen_metrics(workbench: Workbench, dataset_dir: Path) -> None:
    spec = {"name": "cli-score", "task": "enhance", "dataset": str(dataset_dir),
            "models": ["local:autoenhance"]}
    Sweep(SweepSpec.parse(spec), workbench).run(score=False)
    result = pixellab("score", "cli-score", "--metrics", "ssim,psnr",
                      "--home", str(workbench.home))
    assert result.returncode == 0, result.stderr
    assert "8 score row(s) written" in result.stdout
    assert set(scores(workbench)) == {"ssim", "psnr"}
    again = pixellab("score", "cli-score", "--metrics", "ssim", "--home", str(workbench.home))
    assert "0 score row(s) written" in again.stdout


def test_an_unknown_metric_is_a_clear_error(workbench: Workbench, dataset_dir: Path) -> None:
    spec = {"name": "bad-metric", "task": "enhance", "dataset": str(dataset_dir),
            "models": ["local:autoenhance"]}
    Sweep(SweepSpec.parse(spec), workbench).run(score=False)
    result = pixellab("score", "bad-metric", "--metrics", "beauty", "--home", str(workbench.home))
    assert result.returncode == 2
    assert "unknown metric 'beauty'" in result.stderr and "Traceback" not in result.stderr


SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"
REAL = SAMPLE.parent / "real"


def test_a_compliant_packshot_that_lost_the_product_fails_the_packshot_gate(
        workbench: Workbench) -> None:
    """kitchen-01: the threshold cut-out keeps the busy backdrop and drops the mug, and the
    white packshot made from it is Amazon-compliant. The identity gate fails it: composite 0."""
    sweep(workbench, SAMPLE, "packshot", ["local:packshot"], products=["kitchen-01", "kitchen-02"],
          params={"cutout_method": "threshold"}).run()
    frame = evidence.scored_requests(workbench.ledger).set_index("product_id")
    lost, kept = frame.loc["kitchen-01"], frame.loc["kitchen-02"]
    assert lost["compliance_amazon_main"] == 1.0  # compliance alone would accept it
    assert lost["identity"] == 0.0 and not bool(lost["passed"]) and lost["score"] == 0.0
    assert kept["identity"] == 1.0 and bool(kept["passed"]) and kept["score"] > 0


def test_a_real_photos_fragment_cutout_fails_the_gate_without_ground_truth(
        workbench: Workbench, tmp_path: Path) -> None:
    """The real slice with its masks removed from the manifest: the local cut-out of the
    espresso cup keeps its rim and crema only; with no ground truth it still scores 0."""
    dataset = tmp_path / "real"
    shutil.copytree(REAL, dataset)
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.assign(mask="").to_csv(dataset / "manifest.csv", index=False)
    sweep(workbench, dataset, "remove_background", ["local:cutout"],
          products=["real-kitchen-01"]).run()
    row = evidence.scored_requests(workbench.ledger).iloc[0]
    assert math.isnan(row["mask_iou"])  # no ground truth
    assert row["identity"] == 0.0 and row["score"] == 0.0


def test_enhance_reads_label_text_only_where_the_manifest_states_it(
        workbench: Workbench) -> None:
    """``truth_only``: OCR runs for the serum whose manifest row says "AQUAVIVE Serum 30ml";
    the lipstick without a stated label is recorded missing with the reason, at no cost."""
    sweep(workbench, SAMPLE, "enhance", ["local:autoenhance"],
          products=["cosmetics-06", "cosmetics-01"]).run()
    scored = evidence.scored_requests(workbench.ledger).set_index("product_id")
    frame = workbench.ledger.query(
        "select output_sha256, value, missing_reason, details from scores "
        "where metric = 'label_text'").set_index("output_sha256")
    labelled = frame.loc[scored.loc["cosmetics-06", "output_sha256"]]
    unlabelled = frame.loc[scored.loc["cosmetics-01", "output_sha256"]]
    assert labelled["value"] > 0.9 and "aquavive" in labelled["details"]
    assert pd.isna(unlabelled["value"])
    assert "manifest states no label_text" in unlabelled["missing_reason"]
    scored = evidence.scored_requests(workbench.ledger).set_index("product_id")
    assert scored.loc["cosmetics-06", "score"] > 0 and scored.loc["cosmetics-01", "score"] > 0
