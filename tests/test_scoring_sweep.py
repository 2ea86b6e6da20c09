"""Scoring a sweep: the task's metrics land in the ledger once, missing ones say why, upscale is
measured against the original, CLIP scores are retried once CLIP can run."""

from __future__ import annotations

import math
from pathlib import Path

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
                        "clip_text", "clip_fidelity", "identity", "identity_ssim",
                        "identity_delta_e"}
    assert result.scores_written == 4 * 11
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
    assert packshot.score(clip=ClipScorer(settings)) == 8  # clip_text + clip_fidelity × 4
    got = scores(workbench)
    assert len(got["clip_fidelity"]) == 4
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
