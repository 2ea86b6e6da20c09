"""Every OpenAI answer of the emulator conforms to OpenAI's OpenAPI spec.

Source: openai/openai-openapi @ f85dbe223d40e1a31cba812ab2d755c7e98a92a3, ``openapi.yaml``
(``ImagesResponse``, ``ImageGenUsage``, ``CreateChatCompletionResponse``, ``ErrorResponse``);
see :mod:`tests.conformance.openai_schemas`. The emulator is driven with the real ``openai``
SDK (3.57.0, ``max_retries=0``) and raw httpx across success, every fault and every route.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from pixellab.emulator import Emulator, ResponseRecord
from tests.conformance import openai_schemas as schemas
from tests.conformance.conftest import nonconforming
from tests.conformance.support import Schema, errors


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, seed=13, record_bodies=True) as emulator:
        yield emulator


@pytest.fixture
def oai(emu: Emulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-conf", max_retries=0)


def schema_for(record: ResponseRecord) -> Schema | None:
    """The schema a recorded OpenAI answer must follow."""
    route, status = record.route, record.status
    if status == 0 or route.startswith("/files/"):
        return None
    if not route.startswith("/openai/"):
        raise LookupError(route)
    if status >= 400:
        return schemas.ERROR_RESPONSE
    if route in ("/openai/v1/images/generations", "/openai/v1/images/edits"):
        body = record.json()
        return schemas.IMAGES_RESPONSE if "usage" not in body else schemas.GPT_IMAGE_RESPONSE
    if route == "/openai/v1/chat/completions":
        return schemas.CHAT_COMPLETION
    raise LookupError(route)


class Label(BaseModel):
    label: str
    score: float


async def exercise(emu: Emulator, oai: openai.AsyncOpenAI, photo_png: bytes) -> None:
    image = ("p.png", photo_png, "image/png")
    await oai.images.generate(prompt="a lamp")
    await oai.images.generate(model="gpt-image-1.5", prompt="a lamp", size="1024x1536",
                              quality="low", n=2)
    await oai.images.generate(model="dall-e-3", prompt="a lamp", response_format="url")
    await oai.images.edit(model="gpt-image-1.5", image=image, prompt="packshot")
    await oai.images.edit(model="gpt-image-1.5", image=[image, image], prompt="packshot")
    await oai.chat.completions.parse(model="gpt-4o", response_format=Label,
                                     messages=[{"role": "user", "content": "label it"}])
    await oai.chat.completions.create(model="gpt-4o",
                                      messages=[{"role": "user", "content": "hi"}])
    for action, options in (("rate_limit", {}), ("insufficient_quota", {}),
                            ("server_error", {}), ("hang", {"seconds": 0.05}),
                            ("job_failure", {}), ("content_rejected", {}),
                            ("content_rejected", {"stage": "output"}),
                            ("accept_then_error", {}), ("accept_then_hang", {"seconds": 0.05})):
        emu.faults.add("openai", action, **options)
        with pytest.raises(openai.APIStatusError):
            await oai.images.edit(image=image, prompt="x")
    emu.faults.add("openai", "accept_then_reset")
    with pytest.raises(openai.APIConnectionError):
        await oai.images.generate(prompt="x")
    for action in ("corrupt", "blank"):
        emu.faults.add("openai", action)
        await oai.images.generate(prompt="x")
    for action, options in (("reply", {"content": "free text"}), ("corrupt", {}),
                            ("blank", {})):
        emu.faults.add("openai", action, **options)
        await oai.chat.completions.create(model="gpt-4o",
                                          messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        await oai.images.edit(image=[image] * 17, prompt="too many")
    async with httpx.AsyncClient() as client:
        base = emu.openai_base_url
        await client.post(f"{base}/chat/completions", json={"messages": []})  # no key
        auth = {"Authorization": "Bearer sk-conf"}
        await client.post(f"{base}/images/generations", json={}, headers=auth)
        await client.post(f"{base}/images/generations", content=b"{", headers=auth)
        await client.post(f"{base}/chat/completions", json={"model": "gpt-4o"}, headers=auth)
        await client.post(f"{base}/images/edits", data={"prompt": "no image"}, headers=auth)


async def test_every_openai_answer_matches_the_openapi_spec(
        emu: Emulator, oai: openai.AsyncOpenAI, photo_png: bytes) -> None:
    await exercise(emu, oai, photo_png)
    assert nonconforming(emu.responses, schema_for) == []
    routes = {r.route for r in emu.responses if r.status == 200}
    assert routes == {"/openai/v1/images/generations", "/openai/v1/images/edits",
                      "/openai/v1/chat/completions"}


def test_gpt_image_usage_splits_text_and_image_input_tokens(emu: Emulator) -> None:
    edits = [r.json() for r in emu.responses
             if r.route == "/openai/v1/images/edits" and r.status == 200]
    assert edits
    for body in edits:
        details = body["usage"]["input_tokens_details"]
        assert details["image_tokens"] > 0 and details["text_tokens"] > 0
        assert body["usage"]["input_tokens"] == details["image_tokens"] + details["text_tokens"]
        assert body["usage"]["total_tokens"] == (body["usage"]["input_tokens"]
                                                 + body["usage"]["output_tokens"])


def test_openai_refusals_carry_the_documented_codes(emu: Emulator) -> None:
    bodies = [r.json()["error"] for r in emu.responses if r.status >= 400]
    codes = {(b["type"], b["code"]) for b in bodies}
    assert ("insufficient_quota", "insufficient_quota") in codes
    assert ("image_generation_user_error", "moderation_blocked") in codes
    stages = {b["moderation_details"]["moderation_stage"] for b in bodies
              if b["code"] == "moderation_blocked"}
    assert stages == {"input", "output"}


def test_the_images_schema_is_closed() -> None:
    good = {"created": 1, "data": [{"b64_json": "AA=="}]}
    assert errors(schemas.IMAGES_RESPONSE, good) == []
    assert errors(schemas.IMAGES_RESPONSE, {**good, "quality": "auto"})  # not an answer value
    assert errors(schemas.IMAGES_RESPONSE, {**good, "cost": 0.04})
