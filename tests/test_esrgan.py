"""Real-ESRGAN on ncnn as a free local upscaler (``local:realesrgan-*``, ``pixellab[upscale]``).

What must hold: tiling does not show (the tiled output equals the untiled one within one grey
level, exactly away from the seams); the same input gives the same bytes; alpha is kept; the
network is a real one (sharper than Lanczos on a detailed photo); bad parameters are refused by
name; without the extra the outcome is a clear ``MissingDependency`` with the install hint,
which is not the model's fault; and a sweep runs it and scores it against the originals.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixellab import evidence
from pixellab.catalog import load_catalog
from pixellab.errors import InvalidRequest, MissingDependency
from pixellab.providers.base import JobState, ProviderRequest
from pixellab.providers.local import LocalProvider, esrgan
from pixellab.scoring import compute
from pixellab.scoring.base import ScoreContext
from pixellab.sweep import Sweep, SweepSpec
from pixellab.validate import decode_image
from pixellab.workbench import Workbench

SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"


def small_photo(size: tuple[int, int] = (150, 110)) -> Image.Image:
    return Image.open(SAMPLE / "images" / "cosmetics-06.jpg").convert("RGB").resize(size)


def test_tiles_do_not_show() -> None:
    image = small_photo()
    tiled = np.asarray(esrgan.upscale(image, tile=48, overlap=16, threads=2)).astype(int)
    whole = np.asarray(esrgan.upscale(image, tile=1024, overlap=16, threads=2)).astype(int)
    assert tiled.shape == whole.shape == (220, 300, 3)
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1
    away = np.ones(diff.shape[:2], bool)  # outside the cross-fade bands around each seam
    for seam in (48, 96, 144):
        away[:, max(0, (seam - 16) * 2):(seam + 16) * 2] = False
        away[max(0, (seam - 16) * 2):(seam + 16) * 2, :] = False
    assert diff[away].max() == 0


def test_the_same_input_gives_the_same_bytes_and_alpha_is_kept() -> None:
    image = small_photo((90, 70))
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    first = esrgan.upscale(image, tile=48, overlap=8, threads=2)
    second = esrgan.upscale(image, tile=48, overlap=8, threads=2)
    assert first.tobytes() == second.tobytes()
    assert first.mode == "RGBA" and first.size == (180, 140)
    expected = image.getchannel("A").resize(first.size, Image.Resampling.LANCZOS)
    assert first.getchannel("A").tobytes() == expected.tobytes()


def test_it_is_a_real_network_sharper_than_lanczos() -> None:
    """On the photo shrunk by two, the network's x2 is closer to the original than Lanczos'."""
    original = Image.open(SAMPLE / "images" / "kitchen-07.jpg").convert("RGB").crop(
        (0, 0, 256, 256))
    small = original.resize((128, 128), Image.Resampling.BICUBIC)
    neural = esrgan.upscale(small, scale=2, threads=2)
    lanczos = small.resize(original.size, Image.Resampling.LANCZOS)

    def sharpness(image: Image.Image) -> float:
        value = compute("sharpness", ScoreContext(task="upscale", output=image)).value
        assert value is not None
        return value

    assert sharpness(neural) > 1.5 * sharpness(lanczos)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "nope"}, "unknown Real-ESRGAN model"),
    ({"model": "realesrgan-x4plus", "scale": 2}, "upscales by 4, not 2"),
    ({"tile": 16}, "tile must be"),
    ({"overlap": 7}, "overlap must be even"),
])
def test_bad_parameters_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        esrgan.upscale(small_photo((40, 40)), **kwargs)  # type: ignore[arg-type]


def test_without_the_extra_the_outcome_names_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(esrgan, "models_dir", lambda: None)  # as on an install without it
    assert esrgan.unavailable_reason() == esrgan.INSTALL_HINT
    with pytest.raises(MissingDependency, match=r"pixellab\[upscale\]"):
        esrgan.upscale(small_photo((40, 40)), model="realesr-animevideov3", scale=3)


async def test_the_x4plus_model_runs_through_the_provider_on_a_small_photo() -> None:
    """The full Real-ESRGAN network (64 MB of weights, seconds per small tile on a CPU) on a
    40×30 photo: x4 only; any other scale is refused before it runs."""
    model = load_catalog().model("local:realesrgan-x4")
    buffer = io.BytesIO()
    small_photo((40, 30)).save(buffer, format="PNG")
    job = await LocalProvider().submit(ProviderRequest("k", model, buffer.getvalue(),
                                                       "image/png", {"scale": 4}))
    assert job.state is JobState.SUCCEEDED and job.output is not None
    assert decode_image(job.output.data).size == (160, 120)
    with pytest.raises(InvalidRequest, match="upscales by 4, not 2"):
        await LocalProvider().submit(ProviderRequest("k", model, buffer.getvalue(),
                                                     "image/png", {"scale": 2}))


def test_an_upscale_sweep_runs_the_network_and_scores_it(tmp_path: Path) -> None:
    workbench = Workbench(tmp_path / "home")
    spec = SweepSpec.parse({"name": "up", "task": "upscale", "dataset": str(SAMPLE),
                            "models": ["local:upscale-lanczos", "local:realesrgan-compact"],
                            "products": ["cosmetics-06", "kitchen-07"], "params": {"scale": 2},
                            "concurrency": 2})
    assert Sweep(spec, workbench).run().succeeded == 4
    frame = evidence.scored_requests(workbench.ledger, ["up"])
    assert set(frame["model_id"]) == {"local:upscale-lanczos", "local:realesrgan-compact"}
    assert frame["psnr"].between(15, 60).all() and frame["ssim"].between(0, 1).all()
    assert frame["score"].notna().all()
