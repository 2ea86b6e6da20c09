"""Every shipped local model, called through the provider interface, yields a valid output."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pixellab.catalog import Model, load_catalog
from pixellab.errors import InvalidRequest, ProviderUnavailable
from pixellab.providers.base import JobState, ProviderRequest
from pixellab.providers.local import LocalProvider
from pixellab.tasks import Task, expected_output_size
from pixellab.validate import check_image_output, decode_image
from tests.conftest import product_photo

LOCAL_MODELS = [m for m in load_catalog().models.values()
                if m.provider == "local" and m.tasks[0].output_kind == "image"]  # image operations
PARAMS = {Task.PACKSHOT: {"size": 1200}, Task.UPSCALE: {"scale": 2}}


def photo_bytes() -> bytes:
    buffer = io.BytesIO()
    product_photo(3, (400, 300))[0].save(buffer, format="PNG")
    return buffer.getvalue()


async def run(model: Model, params: dict[str, object] | None = None) -> bytes:
    job = await LocalProvider().submit(ProviderRequest("k", model, photo_bytes(), "image/png",
                                                       params or {}))
    assert job.state is JobState.SUCCEEDED and job.output is not None
    return job.output.data


def test_every_local_model_promises_to_preserve_size() -> None:
    assert all(m.preserves_size for m in LOCAL_MODELS)


SLOW = {"local:realesrgan-x4"}  # ~seconds per 32 px tile on a CPU: tests/test_esrgan.py runs it


@pytest.mark.parametrize("model", [m for m in LOCAL_MODELS if m.id not in SLOW],
                         ids=lambda m: m.id)
async def test_each_local_model_returns_a_valid_output_of_the_right_size(model: Model) -> None:
    task = model.tasks[0]
    params = PARAMS.get(task, {})
    data = await run(model, params)
    check = check_image_output(data, declared_media_type="image/png",
                               expected_size=expected_output_size(
                                   task, (400, 300), params, preserves_size=True),
                               source=photo_bytes(),
                               require_alpha=task is Task.REMOVE_BACKGROUND)
    assert check.ok, check.message


@pytest.mark.parametrize("model", [m for m in LOCAL_MODELS if Task.PACKSHOT in m.tasks],
                         ids=lambda m: m.id)
async def test_packshots_sit_on_pure_white(model: Model) -> None:
    image = np.asarray(decode_image(await run(model, {"size": 1000})).convert("RGB"))
    band = 20  # the outer 2 %
    border = np.concatenate([image[:band].reshape(-1, 3), image[-band:].reshape(-1, 3),
                             image[:, :band].reshape(-1, 3), image[:, -band:].reshape(-1, 3)])
    assert (border == 255).all()


async def test_the_same_input_gives_byte_identical_output() -> None:
    model = load_catalog().model("local:cutout")
    assert await run(model) == await run(model)


async def test_an_undeclared_operation_argument_is_an_invalid_request() -> None:
    model = load_catalog().model("local:autoenhance").model_copy(
        update={"defaults": {"sharpness": 3}})
    with pytest.raises(InvalidRequest, match="does not take sharpness"):
        await run(model)


async def test_a_model_configured_to_fail_is_unavailable_and_retryable() -> None:
    model = load_catalog().model("local:autoenhance").model_copy(
        update={"endpoint": "fail", "defaults": {}})
    with pytest.raises(ProviderUnavailable) as info:
        await run(model)
    assert info.value.retryable


