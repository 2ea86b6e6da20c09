"""The provider emulator, driven by the real, unmodified Replicate, fal and OpenAI SDKs.

Each test states one thing the emulator guarantees; together they are its specification. One
emulator serves the whole module (latency 20 ms); faults are cleared after every test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import ssl
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

import fal_client
import fal_client.client as fal_module
import httpx
import numpy as np
import openai
import pytest
import replicate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image
from pydantic import BaseModel, Field
from replicate.exceptions import ModelError, ReplicateError
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from pixellab.emulator import ACTIONS, Emulator, FaultPlan, JobRecord
from pixellab.errors import InvalidImage
from pixellab.validate import decode_image
from tests.emulated import point_fal_at

# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, seed=1) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _no_leftover_faults(emu: Emulator) -> Iterator[None]:
    yield
    emu.faults.clear()




@pytest.fixture
def rep(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> replicate.Client:
    """A Replicate client on the emulator. ``SSL_CERT_FILE`` is set first: the SDK builds its
    httpx client lazily and httpx reads the variable then; ``FileOutput`` downloads need it."""
    monkeypatch.setenv("SSL_CERT_FILE", emu.ca_pem)
    return replicate.Client(api_token="r8_test", base_url=emu.replicate_base_url)


@pytest.fixture
def fal(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> fal_client.AsyncClient:
    """A fal client on the emulator (see :func:`tests.emulated.point_fal_at`)."""
    point_fal_at(emu, monkeypatch)
    return fal_client.AsyncClient(key="key-id:key-secret")


@pytest.fixture
def oai(emu: Emulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-test", max_retries=0)


def tls(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=emu.ca_pem)


async def download(emu: Emulator, url: str) -> bytes:
    async with httpx.AsyncClient(verify=tls(emu)) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def settle(prediction: replicate.prediction.Prediction, timeout: float = 10.0) -> None:
    """Poll a Replicate prediction until it is terminal (the SDK itself has no deadline)."""
    deadline = time.monotonic() + timeout
    while prediction.status not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, "prediction did not finish"
        await asyncio.sleep(0.02)
        await prediction.async_reload()


def billed(emu: Emulator, provider: str) -> int:
    return len(emu.creates(provider))


def is_black(image: Image.Image) -> bool:
    return int(np.asarray(image.convert("RGB")).max()) == 0


# --------------------------------------------------------------------------------------------
# lifecycle and control surface
# --------------------------------------------------------------------------------------------


def test_it_listens_on_loopback_only_and_publishes_the_urls_each_sdk_needs(emu: Emulator) -> None:
    assert emu.http_url.startswith("http://127.0.0.1:")
    assert emu.https_url.startswith("https://127.0.0.1:")
    assert emu.replicate_base_url == f"{emu.http_url}/replicate"
    assert emu.openai_base_url == f"{emu.http_url}/openai/v1"
    assert emu.fal_queue_url == f"{emu.https_url}/fal/queue/"
    assert emu.fal_jwks_url == f"{emu.https_url}/fal/rest/.well-known/jwks.json"
    env = emu.env()
    assert env["SSL_CERT_FILE"] == emu.ca_pem and os.path.isfile(emu.ca_pem)
    assert set(env) == {"REPLICATE_BASE_URL", "OPENAI_BASE_URL", "SSL_CERT_FILE",
                        "PIXELLAB_FAL_QUEUE_URL", "PIXELLAB_FAL_RUN_URL", "PIXELLAB_FAL_REST_URL",
                        "PIXELLAB_FAL_CDN_URL", "PIXELLAB_FAL_JWKS_URL"}


def test_the_https_port_is_trusted_through_the_ca_bundle_only(emu: Emulator) -> None:
    assert httpx.get(f"{emu.https_url}/__emu/log", verify=tls(emu)).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.https_url}/__emu/log", verify=ssl.create_default_context(cafile=None))


def test_fault_plan_rejects_unknown_names_and_matches_model_and_count() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError, match="unknown fault action"):
        plan.add("replicate", "explode")
    with pytest.raises(ValueError, match="unknown provider"):
        plan.add("midjourney", "rate_limit")
    plan.add("fal", "blank", model="fal-ai/flux", times=2, seconds=3)
    assert plan.take("fal", "fal-ai/birefnet") is None
    assert plan.take("replicate", "fal-ai/flux") is None
    first = plan.take("fal", "fal-ai/flux/dev")
    assert first is not None and first.action == "blank" and first.option("seconds", 0) == 3
    assert plan.take("fal", "fal-ai/flux") is not None
    assert plan.take("fal", "fal-ai/flux") is None


def test_faults_can_be_armed_and_the_log_read_over_http(emu: Emulator) -> None:
    armed = httpx.post(f"{emu.http_url}/__emu/faults",
                       json={"provider": "openai", "action": "server_error", "status": 503})
    assert armed.status_code == 200
    assert armed.json() == [{"provider": "openai", "action": "server_error", "model": None,
                             "status": 503, "remaining": 1}]
    assert httpx.post(f"{emu.http_url}/__emu/faults",
                      json={"provider": "openai", "action": "nope"}).status_code == 400
    assert httpx.delete(f"{emu.http_url}/__emu/faults").status_code == 200
    assert emu.faults.pending() == []
    log = httpx.get(f"{emu.http_url}/__emu/log").json()
    assert {"provider": "emu", "method": "POST", "path": "/__emu/faults", "model": None,
            "status": 200}.items() <= log[-3].items()


# --------------------------------------------------------------------------------------------
# Replicate
# --------------------------------------------------------------------------------------------


async def test_replicate_prediction_on_an_uploaded_file_yields_a_real_cutout(
        emu: Emulator, rep: replicate.Client, photo_png: bytes) -> None:
    before = billed(emu, "replicate")
    prediction = await rep.predictions.async_create(
        model="851-labs/background-remover", input={"image": io.BytesIO(photo_png)})
    assert prediction.status == "starting"
    assert prediction.input["image"].startswith(f"{emu.replicate_base_url}/v1/files/")
    await settle(prediction)

    assert prediction.status == "succeeded" and prediction.error is None
    assert prediction.metrics["predict_time"] > 0
    url = prediction.output  # a single-output official model answers one URI, not a list
    assert isinstance(url, str) and url.startswith(f"{emu.https_url}/files/")
    cutout = decode_image(await download(emu, url))
    assert cutout.mode == "RGBA" and cutout.size == Image.open(io.BytesIO(photo_png)).size
    alpha = np.asarray(cutout.getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255  # background removed, product kept

    [job] = emu.creates("replicate")[before:]
    assert (job.model, job.status, job.cost_usd) == ("851-labs/background-remover",
                                                     "succeeded", 0.01)
    paths = [r.path for r in emu.log if r.provider == "replicate"]
    assert "/replicate/v1/files" in paths
    [create] = [r for r in emu.log if r.path.endswith("/background-remover/predictions")]
    assert (create.method, create.model, create.status) == ("POST", job.model, 201)


async def test_replicate_blocking_create_reports_starting_when_the_wait_runs_out(
        emu: Emulator, rep: replicate.Client) -> None:
    # The SDK treats any other status in a ``Prefer: wait`` answer as final (providers.md §1.4).
    emu.faults.add("replicate", "accept_then_hang")
    prediction = await rep.predictions.async_create(model="a/slow", input={"prompt": "x"},
                                                    wait=1)
    assert prediction.status == "starting"
    await prediction.async_cancel()


async def test_replicate_run_waits_and_returns_file_outputs_of_a_prompt_drawing(
        rep: replicate.Client) -> None:
    [first] = await rep.async_run("black-forest-labs/flux-schnell", input={"prompt": "red cube"})
    [again] = await rep.async_run("black-forest-labs/flux-schnell", input={"prompt": "red cube"})
    [other] = await rep.async_run("black-forest-labs/flux-schnell", input={"prompt": "blue orb"})
    assert isinstance(first, replicate.helpers.FileOutput)  # an https: URL, so wrapped
    picture = await first.aread()
    assert decode_image(picture).size == (1024, 1024)
    assert picture == await again.aread()  # deterministic in the prompt
    assert picture != await other.aread()


async def test_replicate_version_references_resolve_to_the_model(
        rep: replicate.Client, photo_png: bytes) -> None:
    model = await rep.models.async_get("acme/packshot-studio")
    assert model.latest_version is not None
    version = model.latest_version.id
    [output] = await rep.async_run(f"acme/packshot-studio:{version}",
                                   input={"image": io.BytesIO(photo_png)})
    packshot = decode_image(await output.aread())
    assert packshot.size == (1024, 1024)
    assert np.asarray(packshot)[:10, :10].min() == 255  # pure white studio background
    [listed, *_] = await rep.predictions.async_list()
    assert listed.version == version and listed.model == "acme/packshot-studio"


def test_replicate_rejects_calls_without_a_token(emu: Emulator) -> None:
    response = httpx.post(f"{emu.replicate_base_url}/v1/models/a/b/predictions",
                          json={"input": {}})
    assert response.status_code == 401
    assert response.json()["status"] == 401


async def test_replicate_rate_limit_is_a_429_with_retry_after_and_costs_nothing(
        emu: Emulator, rep: replicate.Client) -> None:
    before = billed(emu, "replicate")
    emu.faults.add("replicate", "rate_limit", retry_after=7)
    with pytest.raises(ReplicateError) as caught:
        await rep.predictions.async_create(model="a/upscaler", input={"prompt": "x"})
    assert caught.value.status == 429 and "throttled" in str(caught.value.detail)

    emu.faults.add("replicate", "rate_limit", retry_after=7)
    raw = httpx.post(f"{emu.replicate_base_url}/v1/models/a/upscaler/predictions",
                     headers={"Authorization": "Bearer r8"}, json={"input": {}})
    assert raw.headers["Retry-After"] == "7" and raw.json()["retry_after"] == 7
    assert billed(emu, "replicate") == before


async def test_replicate_server_error_is_raised_at_once_and_not_billed(
        emu: Emulator, rep: replicate.Client) -> None:
    before = billed(emu, "replicate")
    emu.faults.add("replicate", "server_error")
    with pytest.raises(ReplicateError) as caught:
        await rep.async_run("a/model", input={"prompt": "x"})
    assert caught.value.status == 500
    assert billed(emu, "replicate") == before


async def test_replicate_hang_holds_the_create_until_the_caller_gives_up_unbilled(
        emu: Emulator, rep: replicate.Client) -> None:
    # replicate 1.0.7 quirk: a create without ``wait=`` passes ``timeout=None`` per request,
    # which disables the client's timeout - against a dead upstream only the caller's own
    # deadline ends the call.
    before = billed(emu, "replicate")
    emu.faults.add("replicate", "hang", seconds=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            rep.predictions.async_create(model="a/model", input={"prompt": "x"}), 0.3)
    assert billed(emu, "replicate") == before


async def test_replicate_job_failure_and_content_rejection_fail_the_prediction_unbilled(
        emu: Emulator, rep: replicate.Client) -> None:
    emu.faults.add("replicate", "job_failure", error="CUDA out of memory")
    with pytest.raises(ModelError, match="CUDA out of memory"):
        await rep.async_run("a/model", input={"prompt": "x"})
    emu.faults.add("replicate", "content_rejected")
    with pytest.raises(ModelError, match="NSFW content detected") as caught:
        await rep.async_run("a/model", input={"prompt": "x"})
    assert caught.value.prediction.status == "failed"
    *_, failure, rejection = emu.creates("replicate")
    assert (failure.status, failure.fault) == ("failed", "job_failure")
    assert (rejection.status, rejection.fault) == ("failed", "content_rejected")
    # an official (per-image) model generated no image: nothing is billed
    assert (failure.cost_usd, failure.billing) == (0.0, "replicate.failed.compute_time")
    assert (rejection.cost_usd, rejection.billing) == (
        0.0, "replicate.content_rejected.compute_time")


async def test_replicate_corrupt_and_blank_outputs_succeed_with_bad_bytes(
        emu: Emulator, rep: replicate.Client, photo_png: bytes) -> None:
    emu.faults.add("replicate", "corrupt")
    corrupt = await rep.async_run("nightmareai/real-esrgan",
                                  input={"image": io.BytesIO(photo_png), "scale": 2})
    assert isinstance(corrupt, replicate.helpers.FileOutput)
    garbage = await corrupt.aread()
    assert garbage.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InvalidImage):
        decode_image(garbage)

    emu.faults.add("replicate", "blank")
    blank = await rep.async_run("nightmareai/real-esrgan",
                                input={"image": io.BytesIO(photo_png), "scale": 2})
    assert isinstance(blank, replicate.helpers.FileOutput)
    black = decode_image(await blank.aread())
    width, height = Image.open(io.BytesIO(photo_png)).size
    assert black.size == (2 * width, 2 * height) and is_black(black)


async def test_replicate_accept_then_hang_stays_processing_until_cancelled(
        emu: Emulator, rep: replicate.Client) -> None:
    emu.faults.add("replicate", "accept_then_hang")
    prediction = await rep.predictions.async_create(model="a/model", input={"prompt": "x"})
    await asyncio.sleep(0.2)
    await prediction.async_reload()
    assert prediction.status == "processing"
    await prediction.async_cancel()
    await prediction.async_reload()
    assert prediction.status == "canceled"
    assert emu.creates("replicate")[-1].status == "canceled"


async def test_replicate_webhook_is_signed_so_the_sdk_validator_accepts_it(
        emu: Emulator, rep: replicate.Client) -> None:
    secret = await rep.webhooks.default.async_secret()
    assert secret.key == emu.webhook_secret
    sink = emu.webhook_sink("replicate-signed")
    prediction = await rep.predictions.async_create(
        model="a/model", input={"prompt": "x"}, webhook=sink.url,
        webhook_events_filter=["completed"])
    [delivery] = await asyncio.to_thread(sink.wait, 1)
    replicate.webhooks.validate(headers=delivery.headers, body=delivery.text, secret=secret,
                                tolerance=60)
    body = json.loads(delivery.text)
    assert (body["id"], body["status"]) == (prediction.id, "succeeded")
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(headers=delivery.headers,
                                    body=delivery.text.replace("succeeded", "failed"),
                                    secret=secret)


async def test_replicate_webhook_faults_duplicate_drop_and_delay_the_delivery(
        emu: Emulator, rep: replicate.Client) -> None:
    secret = WebhookSigningSecret(key=emu.webhook_secret)
    twice, never, late = (emu.webhook_sink(f"replicate-{n}") for n in ("dup", "drop", "late"))
    emu.faults.add("replicate", "duplicate_webhook")
    await rep.predictions.async_create(model="a/m", input={"prompt": "x"}, webhook=twice.url)
    emu.faults.add("replicate", "drop_webhook")
    await rep.predictions.async_create(model="a/m", input={"prompt": "x"}, webhook=never.url)
    emu.faults.add("replicate", "delay_webhook", seconds=0.4)
    created = time.time()
    await rep.predictions.async_create(model="a/m", input={"prompt": "x"}, webhook=late.url)

    first, second = await asyncio.to_thread(twice.wait, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for delivery in (first, second):
        replicate.webhooks.validate(headers=delivery.headers, body=delivery.text, secret=secret)
    [arrived] = await asyncio.to_thread(late.wait, 1)
    assert arrived.time - created >= 0.4
    assert never.deliveries == []


async def test_replicate_webhooks_to_other_hosts_are_refused_not_sent(
        emu: Emulator, rep: replicate.Client) -> None:
    prediction = await rep.predictions.async_create(
        model="a/m", input={"prompt": "x"}, webhook="https://hooks.example.com/replicate")
    await settle(prediction)
    await asyncio.sleep(0.05)
    [attempt] = [a for a in emu.webhook_attempts if a.job_id == prediction.id]
    assert attempt.status is None and attempt.note.startswith("refused")


# --------------------------------------------------------------------------------------------
# fal
# --------------------------------------------------------------------------------------------


async def test_fal_upload_submit_status_get_and_download_a_cutout(
        emu: Emulator, fal: fal_client.AsyncClient, photo_png: bytes) -> None:
    url = await fal.upload(photo_png, "image/png", "product.png")
    assert url.startswith(f"{emu.https_url}/files/") and url.endswith(".png")
    handle = await fal.submit("fal-ai/birefnet/v2", {"image_url": url})
    assert handle.status_url.startswith(f"{emu.fal_queue_url}fal-ai/birefnet/requests/")

    first = await handle.status(with_logs=True)
    assert isinstance(first, fal_client.Queued | fal_client.InProgress)
    result = await handle.get()
    final = await handle.status(with_logs=True)
    assert isinstance(final, fal_client.Completed) and final.error is None and final.logs

    [image] = result["images"]
    cutout = decode_image(await download(emu, image["url"]))
    assert cutout.mode == "RGBA" and cutout.size == (image["width"], image["height"])
    assert result["has_nsfw_concepts"] == [False]
    job = emu.creates("fal")[-1]
    assert (job.model, job.status, job.input["image_url"]) == ("fal-ai/birefnet/v2",
                                                               "succeeded", url)


async def test_fal_storage_upload_fallback_initiate_then_put(
        emu: Emulator, fal: fal_client.AsyncClient, photo_png: bytes) -> None:
    url = await fal.upload(photo_png, "image/png", "product.png", repository="fal")
    assert await download(emu, url) == photo_png
    assert [r.path for r in emu.log if r.provider == "fal"][-2:] == [
        "/fal/rest/storage/upload/initiate", f"/fal/rest/storage/upload/put/{url[-36:-4]}"]


async def test_fal_sync_run_draws_the_prompt(emu: Emulator, fal: fal_client.AsyncClient) -> None:
    result = await fal.run("fal-ai/flux/dev", {"prompt": "a green teapot"})
    [image] = result["images"]
    assert (image["width"], image["height"]) == (1024, 1024)
    assert decode_image(await download(emu, image["url"])).size == (1024, 1024)
    assert emu.creates("fal")[-1].cost_usd == 0.025  # one megapixel at $0.025/MP


async def test_fal_reports_the_queue_position_while_a_cold_model_boots() -> None:
    with Emulator(latency_s=0.05, cold_start_s=0.4) as cold:
        client = httpx.AsyncClient(verify=tls(cold), headers={"Authorization": "Key k"})
        async with client:
            first = (await client.post(f"{cold.fal_queue_url}fal-ai/x", json={})).json()
            second = (await client.post(f"{cold.fal_queue_url}fal-ai/x", json={})).json()
            status = (await client.get(second["status_url"])).json()
            assert first["status"] == "IN_QUEUE" and first["queue_position"] == 0
            assert status == {**status, "status": "IN_QUEUE", "queue_position": 1}


async def test_fal_absorbs_one_rate_limit_itself_but_surfaces_a_persistent_one(
        emu: Emulator, fal: fal_client.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    before = billed(emu, "fal")
    emu.faults.add("fal", "rate_limit", retry_after=5)
    await fal.submit("fal-ai/flux/dev", {"prompt": "x"})  # fal-client retries 429 on POST
    submits = [r.status for r in emu.log if r.path == "/fal/queue/fal-ai/flux/dev"]
    assert submits[-2:] == [429, 200]
    assert billed(emu, "fal") == before + 1

    monkeypatch.setattr(fal_module, "MAX_ATTEMPTS", 1)
    emu.faults.add("fal", "rate_limit", retry_after=5)
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    assert caught.value.status_code == 429
    assert caught.value.response_headers["retry-after"] == "5"
    assert billed(emu, "fal") == before + 1


async def test_fal_server_error_carries_a_request_id_so_it_is_not_retried(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    before = billed(emu, "fal")
    emu.faults.add("fal", "server_error", status=503)
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await fal.run("fal-ai/flux/schnell", {"prompt": "x"})
    assert caught.value.status_code == 503
    assert "x-fal-request-id" in caught.value.response_headers
    assert [r.status for r in emu.log if r.path == "/fal/run/fal-ai/flux/schnell"] == [503]
    assert billed(emu, "fal") == before


async def test_fal_failed_jobs_complete_with_an_error_and_their_result_is_an_http_error(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    sink = emu.webhook_sink("fal-failure")
    emu.faults.add("fal", "job_failure", error="worker crashed")
    failing = await fal.submit("fal-ai/flux/dev", {"prompt": "x"}, webhook_url=sink.url)
    with pytest.raises(fal_client.client.FalClientHTTPError) as failure:
        await failing.get()
    assert (failure.value.status_code, str(failure.value)) == (500, "worker crashed")
    completed = await failing.status()
    assert isinstance(completed, fal_client.Completed) and completed.error == "worker crashed"
    [delivery] = await asyncio.to_thread(sink.wait, 1)
    assert json.loads(delivery.body) == {
        "request_id": failing.request_id, "gateway_request_id": failing.request_id,
        "status": "ERROR", "error": "Invalid status code: 500",
        "payload": {"detail": "worker crashed"}}

    emu.faults.add("fal", "content_rejected")
    rejected = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    with pytest.raises(fal_client.client.FalClientHTTPError) as rejection:
        await rejected.get()
    assert rejection.value.status_code == 422
    [error] = rejection.value.message  # fal's model-error format: a list of typed errors
    assert (error["type"], error["loc"]) == ("content_policy_violation", ["body", "prompt"])
    assert rejection.value.response_headers["x-fal-retryable"] == "false"
    assert [j.status for j in emu.creates("fal")[-2:]] == ["failed", "failed"]
    # a server error is free; a content-policy 422 after processing is billed (fal FAQ)
    assert [j.cost_usd for j in emu.creates("fal")[-2:]] == [0.0, 0.025]


async def test_fal_corrupt_and_blank_outputs(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    emu.faults.add("fal", "corrupt")
    corrupt = await fal.run("fal-ai/flux/dev", {"prompt": "x"})
    with pytest.raises(InvalidImage):
        decode_image(await download(emu, corrupt["images"][0]["url"]))
    emu.faults.add("fal", "blank")
    blank = await fal.run("fal-ai/flux/dev", {"prompt": "x"})
    black = decode_image(await download(emu, blank["images"][0]["url"]))
    assert black.size == (1024, 1024) and is_black(black)
    assert blank["has_nsfw_concepts"] == [True]


async def test_fal_accept_then_hang_stays_in_progress_until_cancelled(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    emu.faults.add("fal", "accept_then_hang")
    handle = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    await asyncio.sleep(0.2)
    assert isinstance(await handle.status(), fal_client.InProgress)
    await handle.cancel()
    assert emu.creates("fal")[-1].status == "canceled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as again:
        await handle.cancel()
    assert again.value.status_code == 400


async def test_fal_webhook_verifies_with_the_jwks_key_and_can_be_duplicated(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    async with httpx.AsyncClient(verify=tls(emu)) as client:
        [jwk] = (await client.get(emu.fal_jwks_url)).json()["keys"]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
    sink = emu.webhook_sink("fal-signed")
    emu.faults.add("fal", "duplicate_webhook")
    handle = await fal.submit("fal-ai/flux/dev", {"prompt": "x"}, webhook_url=sink.url)

    first, second = await asyncio.to_thread(sink.wait, 2)
    for delivery in (first, second):
        h = delivery.headers
        message = "\n".join([h["x-fal-webhook-request-id"], h["x-fal-webhook-user-id"],
                             h["x-fal-webhook-timestamp"],
                             hashlib.sha256(delivery.body).hexdigest()])
        key.verify(bytes.fromhex(h["x-fal-webhook-signature"]), message.encode())
    body = json.loads(first.body)
    assert (body["request_id"], body["status"]) == (handle.request_id, "OK")
    assert body["payload"]["images"][0]["url"].startswith(f"{emu.https_url}/files/")


# --------------------------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------------------------


async def test_openai_image_edit_returns_a_white_background_packshot(
        emu: Emulator, oai: openai.AsyncOpenAI, photo_png: bytes) -> None:
    raw = await oai.images.with_raw_response.edit(
        model="gpt-image-1.5", image=("product.png", photo_png, "image/png"),
        prompt="studio packshot on white")
    # a billed call's request id is its job id, so a client's record maps onto the bill
    assert raw.headers["x-request-id"] == emu.creates("openai")[-1].job_id
    result = raw.parse()
    assert result.data is not None and result.usage is not None
    packshot = decode_image(base64.b64decode(result.data[0].b64_json or ""))
    assert packshot.size == (1024, 1024)
    assert np.asarray(packshot)[:10, :10].min() == 255
    job = emu.creates("openai")[-1]
    usage = result.usage
    assert usage.input_tokens_details is not None
    tokens = (usage.input_tokens_details.text_tokens, usage.input_tokens_details.image_tokens,
              usage.output_tokens)
    assert tokens[1] > 0 and tokens[2] == 1056  # one input image; one medium 1024x1024 image
    expected = tokens[0] * 5e-6 + tokens[1] * 8e-6 + tokens[2] * 32e-6  # gpt-image-1.5
    assert (job.model, job.status) == ("gpt-image-1.5", "succeeded")
    assert job.cost_usd == pytest.approx(expected)


async def test_openai_generation_draws_the_prompt_at_the_requested_size(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    result = await oai.images.generate(prompt="a lamp", size="1536x1024", n=2,
                                       quality="high")
    assert result.data is not None and len(result.data) == 2
    image = decode_image(base64.b64decode(result.data[0].b64_json or ""))
    assert image.size == (1536, 1024)
    assert result.usage is not None and result.usage.output_tokens == 2 * 6208
    job = emu.creates("openai")[-1]
    assert job.model == "gpt-image-2.6-sunburst"  # the default: 1 and 1.5 are retired
    assert job.cost_usd == pytest.approx(result.usage.input_tokens * 5e-6 + 2 * 6208 * 30e-6)


class Verdict(BaseModel):
    label: Literal["good", "bad"]
    confidence: float = Field(ge=0, le=1)
    defects: list[str]
    retouched: bool


class Review(BaseModel):
    verdict: Verdict
    score: int = Field(ge=1, le=10)
    note: str | None


async def test_openai_chat_answers_valid_json_for_the_requested_schema(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    parsed = await oai.chat.completions.parse(
        model="gpt-4o-mini", response_format=Review,
        messages=[{"role": "user", "content": "review this photo"}])
    review = parsed.choices[0].message.parsed
    assert review is not None and review.verdict.label == "good" and 1 <= review.score <= 10

    plain = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "Out", "schema": {
            "type": "object", "properties": {"n": {"type": "number"}, "tag": {"enum": ["x", "y"]},
                                             "ok": {"type": "boolean"}}}}})
    assert json.loads(plain.choices[0].message.content or "") == {"n": 0.5, "tag": "x", "ok": False}
    assert emu.creates("openai")[-1].cost_usd == 0.001


def test_openai_rejects_calls_without_a_key(emu: Emulator) -> None:
    response = httpx.post(f"{emu.openai_base_url}/chat/completions", json={"messages": []})
    assert response.status_code == 401 and "x-request-id" in response.headers
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_openai_rate_limit_sends_both_retry_headers_and_is_not_billed(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    before = billed(emu, "openai")
    emu.faults.add("openai", "rate_limit", retry_after=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                     "content": "x"}])
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "2000"
    assert caught.value.request_id is not None
    assert billed(emu, "openai") == before


async def test_openai_failures_are_errors_and_cost_nothing(
        emu: Emulator, oai: openai.AsyncOpenAI, photo_png: bytes) -> None:
    before, spent = billed(emu, "openai"), emu.bill("openai")
    image = ("product.png", photo_png, "image/png")
    emu.faults.add("openai", "server_error")
    with pytest.raises(openai.InternalServerError):
        await oai.images.edit(model="gpt-image-1", image=image, prompt="x")
    emu.faults.add("openai", "job_failure", error="model crashed")
    with pytest.raises(openai.InternalServerError, match="model crashed"):
        await oai.images.edit(model="gpt-image-1", image=image, prompt="x")
    emu.faults.add("openai", "content_rejected")
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.images.edit(model="gpt-image-1", image=image, prompt="x")
    assert caught.value.code == "moderation_blocked"
    # only the model failure was accepted (and ran); none of the three is billed
    assert [j.fault for j in emu.creates("openai")[before:]] == ["job_failure"]
    assert emu.bill("openai") == spent


async def test_openai_corrupt_and_blank_images_are_passed_through_by_the_sdk(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    emu.faults.add("openai", "corrupt")
    corrupt = await oai.images.generate(model="gpt-image-1", prompt="x")
    assert corrupt.data is not None
    with pytest.raises(InvalidImage):
        decode_image(base64.b64decode(corrupt.data[0].b64_json or ""))
    emu.faults.add("openai", "blank")
    blank = await oai.images.generate(model="gpt-image-1", prompt="x")
    assert blank.data is not None
    assert is_black(decode_image(base64.b64decode(blank.data[0].b64_json or "")))


async def test_openai_hang_outlasts_a_client_timeout(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    emu.faults.add("openai", "hang", seconds=1)
    with pytest.raises(openai.APITimeoutError):
        await oai.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}])


# --------------------------------------------------------------------------------------------
# latency
# --------------------------------------------------------------------------------------------


async def test_each_model_pays_its_cold_start_once() -> None:
    with Emulator(latency_s=0.05, cold_start_s=0.3) as slow:
        client = openai.AsyncOpenAI(base_url=slow.openai_base_url, api_key="k", max_retries=0)
        timings = []
        for _ in range(2):
            started = time.monotonic()
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                            "content": "x"}])
            timings.append(time.monotonic() - started)
        assert timings[0] >= 0.35 > timings[1] >= 0.05


# --------------------------------------------------------------------------------------------
# P7: shapes as the providers publish them
# --------------------------------------------------------------------------------------------

R8 = {"Authorization": "Bearer r8_test"}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_replicate_official_predictions_answer_a_hidden_version_web_url_and_image_count(
        emu: Emulator, rep: replicate.Client) -> None:
    # (replicate 1.0.7 drops ``wait`` from predictions.create(model=...); models.predictions
    # keeps it)
    created = await rep.models.predictions.async_create(model="acme/official-art",
                                                        input={"prompt": "x"}, wait=10)
    async with httpx.AsyncClient(headers=R8) as client:
        official = (await client.get(created.urls["get"])).json()
    assert official["version"] == "hidden"
    assert official["urls"] == {"get": created.urls["get"], "cancel": created.urls["cancel"],
                                "web": f"https://replicate.com/p/{created.id}"}
    assert "source" not in official and official["data_removed"] is False
    assert official["metrics"]["image_count"] == 1
    assert isinstance(official["output"], str)  # a single-output official model

    [listed] = await rep.async_run("black-forest-labs/flux-schnell", input={"prompt": "x"})
    assert isinstance(listed, replicate.helpers.FileOutput)  # a list-output official model

    version = (await rep.models.async_get("acme/community")).latest_version
    assert version is not None
    community = await rep.predictions.async_create(version=version.id, input={"prompt": "x"},
                                                   wait=10)
    assert community.version == version.id and isinstance(community.output, list)
    assert "image_count" not in (community.metrics or {})


async def test_replicate_files_expire_a_day_after_upload_and_resolve_as_prediction_inputs(
        emu: Emulator, rep: replicate.Client, photo_png: bytes) -> None:
    uploaded = await rep.files.async_create(io.BytesIO(photo_png))
    assert uploaded.urls["get"] == f"{emu.replicate_base_url}/v1/files/{uploaded.id}"
    assert uploaded.expires_at is not None
    lifetime = parse_time(uploaded.expires_at) - parse_time(uploaded.created_at)
    assert abs(lifetime.total_seconds() - 86400) < 1
    prediction = await rep.models.predictions.async_create(
        model="acme/background-remover", input={"image": uploaded.urls["get"]}, wait=10)
    assert prediction.status == "succeeded"


async def test_an_expired_replicate_upload_answers_404_and_no_longer_resolves(
        photo_png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(latency_s=0.02, file_ttl_s=0.3) as short:
        monkeypatch.setenv("SSL_CERT_FILE", short.ca_pem)
        client = replicate.Client(api_token="r8_test", base_url=short.replicate_base_url)
        uploaded = await client.files.async_create(io.BytesIO(photo_png))
        await asyncio.sleep(0.4)
        with pytest.raises(ReplicateError) as gone:
            await client.files.async_get(uploaded.id)
        assert gone.value.status == 404
        prediction = await client.models.predictions.async_create(
            model="acme/background-remover", input={"image": uploaded.urls["get"]}, wait=10)
        assert prediction.status == "failed" and "not found" in (prediction.error or "")


async def test_replicate_errors_are_problem_json_that_the_sdk_parses(
        emu: Emulator, rep: replicate.Client) -> None:
    emu.faults.add("replicate", "server_error", error="the backend fell over")
    with pytest.raises(ReplicateError) as caught:
        await rep.predictions.async_create(model="a/model", input={"prompt": "x"})
    assert (caught.value.status, caught.value.title, caught.value.detail) == (
        500, "Internal Server Error", "the backend fell over")
    raw = httpx.get(f"{emu.replicate_base_url}/v1/predictions/nope", headers=R8)
    assert raw.headers["content-type"] == "application/problem+json"
    assert raw.json() == {"title": "Not Found", "detail": "Not found.", "status": 404}


async def test_replicate_removes_prediction_data_and_outputs_after_the_retention_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(latency_s=0.02, retention_s=0.5) as short:
        monkeypatch.setenv("SSL_CERT_FILE", short.ca_pem)
        client = replicate.Client(api_token="r8_test", base_url=short.replicate_base_url)
        prediction = await client.models.predictions.async_create(
            model="acme/art", input={"prompt": "a kettle"}, wait=10)
        assert prediction.status == "succeeded"
        output_url = prediction.output
        assert (await download(short, output_url))[:8] == b"\x89PNG\r\n\x1a\n"
        async with httpx.AsyncClient(headers=R8) as raw:
            assert (await raw.get(prediction.urls["get"])).json()["data_removed"] is False
            await asyncio.sleep(0.6)
            removed = (await raw.get(prediction.urls["get"])).json()
        assert removed["data_removed"] is True
        assert (removed["input"], removed["output"], removed["logs"]) == ({}, None, None)
        assert removed["status"] == "succeeded" and removed["metrics"]["predict_time"] > 0
        await prediction.async_reload()  # the SDK still parses it
        assert prediction.output is None
        async with httpx.AsyncClient(verify=tls(short)) as raw:
            assert (await raw.get(output_url)).status_code == 404


# --------------------------------------------------------------------------------------------
# P7: fal timeouts, redelivery, server-side retries
# --------------------------------------------------------------------------------------------


async def test_fal_ends_a_request_not_started_within_its_request_timeout_with_a_user_504(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(latency_s=0.02, cold_start_s=1.6) as cold:
        point_fal_at(cold, monkeypatch)
        client = fal_client.AsyncClient(key="k:s")
        handle = await client.submit("fal-ai/booting", {"prompt": "x"}, start_timeout=1.05)
        with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
            await handle.get()
        assert caught.value.status_code == 504 and caught.value.error_type == "request_timeout"
        assert caught.value.response_headers["x-fal-request-timeout-type"] == "user"
        completed = await handle.status()
        assert isinstance(completed, fal_client.Completed)
        assert completed.error_type == "request_timeout"
        [job] = cold.creates("fal")
        assert (job.status, job.cost_usd, job.billing) == ("failed", 0.0,
                                                           "fal.timeout.nothing")
        async with httpx.AsyncClient(verify=tls(cold)) as raw:  # a sync run answers the 504
            answer = await raw.post(f"{cold.fal_run_url}fal-ai/booting-too", json={},
                                    headers={"Authorization": "Key k",
                                             "X-Fal-Request-Timeout": "0.2"})
        assert answer.status_code == 504
        assert answer.json() == {"detail": "Request timed out", "error_type": "request_timeout"}


async def test_fal_redelivers_a_failed_webhook_ten_times_over_its_window() -> None:
    with Emulator(latency_s=0.02, fal_webhook_window_s=0.45) as emulator:
        sink = emulator.webhook_sink("down", status=500)
        async with httpx.AsyncClient(verify=tls(emulator)) as raw:
            submitted = (await raw.post(
                f"{emulator.fal_queue_url}fal-ai/flux/dev?fal_webhook={sink.url}", json={},
                headers={"Authorization": "Key k"})).json()
        deliveries = await asyncio.to_thread(sink.wait, 10, 5.0)
        await asyncio.sleep(0.3)
        attempts = [a for a in emulator.webhook_attempts
                    if a.job_id == submitted["request_id"]]
    assert len(deliveries) == len(attempts) == 10
    assert {a.status for a in attempts} == {500}
    span = deliveries[-1].time - deliveries[0].time
    assert 0.35 <= span <= 2.0
    ids = {d.headers["x-fal-webhook-request-id"] for d in deliveries}
    assert ids == {submitted["request_id"]}


async def test_fal_retries_a_dead_runner_itself_unless_the_submit_says_no_retry(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    emu.faults.add("fal", "runner_failure", attempts=2)
    retried = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    result = await retried.get()
    assert result["images"]
    logs = (await retried.status(with_logs=True)).logs or []
    assert sum("runner disconnected" in line["message"] for line in logs) == 2
    assert emu.creates("fal")[-1].cost_usd == 0.025  # billed once, for the output

    emu.faults.add("fal", "runner_failure")
    unretried = await fal.submit("fal-ai/flux/dev", {"prompt": "x"},
                                 headers={"x-fal-no-retry": "1"})
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await unretried.get()
    assert (caught.value.status_code, caught.value.error_type) == (503, "runner_disconnected")
    assert caught.value.response_headers["x-fal-retryable"] == "true"
    assert (emu.creates("fal")[-1].status, emu.creates("fal")[-1].cost_usd) == ("failed", 0.0)


# --------------------------------------------------------------------------------------------
# P7: OpenAI moderation stages and edit limits
# --------------------------------------------------------------------------------------------


async def test_openai_moderation_blocks_at_the_input_stage_by_default_or_at_the_output_stage(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    before = billed(emu, "openai")
    emu.faults.add("openai", "content_rejected")
    with pytest.raises(openai.BadRequestError) as at_input:
        await oai.images.generate(prompt="x")
    assert billed(emu, "openai") == before  # refused before the model ran: no job
    emu.faults.add("openai", "content_rejected", stage="output", categories=["violence"])
    with pytest.raises(openai.BadRequestError) as at_output:
        await oai.images.generate(prompt="x")
    for caught, stage in ((at_input, "input"), (at_output, "output")):
        assert caught.value.code == "moderation_blocked"
        assert caught.value.type == "image_generation_user_error"
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["moderation_details"]["moderation_stage"] == stage
    assert at_output.value.body["moderation_details"]["categories"] == ["violence"]
    [job] = emu.creates("openai")[before:]
    assert (job.status, job.cost_usd, job.billing) == (
        "failed", 0.0, "openai.content_rejected.nothing")


async def test_openai_output_stage_refusals_can_be_billed_on_request(
        emu: Emulator, oai: openai.AsyncOpenAI) -> None:
    emu.faults.add("openai", "content_rejected", stage="output", billed=True)
    with pytest.raises(openai.BadRequestError):
        await oai.images.generate(prompt="x")
    job = emu.creates("openai")[-1]
    assert job.billing == "openai.content_rejected.price_requested"
    assert job.cost_usd >= 1056 * 30e-6  # one medium 1024x1024 image of gpt-image-2.6


async def test_openai_edits_take_at_most_16_images_of_at_most_50_mb(
        emu: Emulator, oai: openai.AsyncOpenAI, photo_png: bytes) -> None:
    before = billed(emu, "openai")
    image = ("p.png", photo_png, "image/png")
    with pytest.raises(openai.BadRequestError) as too_many:
        await oai.images.edit(image=[image] * 17, prompt="x")
    assert too_many.value.param == "image" and "16" in too_many.value.message
    huge = photo_png + b"\0" * (50 * 1024 * 1024)
    raw = httpx.post(f"{emu.openai_base_url}/images/edits", data={"prompt": "x"},
                     files={"image": ("huge.png", huge, "image/png")},
                     headers={"Authorization": "Bearer sk"}, timeout=30)
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "image" and "50 MB" in raw.json()["error"]["message"]
    await oai.images.edit(image=[image] * 16, prompt="sixteen is fine")
    assert billed(emu, "openai") == before + 1


# --------------------------------------------------------------------------------------------
# P7: faults after acceptance, out of credit, the create hook
# --------------------------------------------------------------------------------------------


async def test_accept_then_reset_creates_the_job_then_resets_the_connection(
        emu: Emulator, rep: replicate.Client, oai: openai.AsyncOpenAI,
        fal: fal_client.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: billed(emu, p) for p in ("replicate", "fal", "openai")}
    emu.faults.add("replicate", "accept_then_reset")
    with pytest.raises(httpx.TransportError):
        await rep.predictions.async_create(model="a/model", input={"prompt": "x"})
    emu.faults.add("openai", "accept_then_reset")
    with pytest.raises(openai.APIConnectionError):
        await oai.images.generate(prompt="x")
    monkeypatch.setattr(fal_module, "MAX_ATTEMPTS", 1)
    emu.faults.add("fal", "accept_then_reset")
    with pytest.raises(httpx.TransportError):  # over TLS
        await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    for provider in before:
        [job] = emu.creates(provider)[before[provider]:]
        assert job.fault == "accept_then_reset"
    assert emu.creates("openai")[-1].status == "succeeded"
    assert emu.creates("openai")[-1].cost_usd > 0  # ran to completion and billed
    resets = [r for r in emu.log if r.status == 0]
    assert {r.provider for r in resets[-3:]} == {"replicate", "openai", "fal"}


async def test_fal_client_retries_a_reset_submit_and_pays_for_a_second_job(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    before = billed(emu, "fal")
    emu.faults.add("fal", "accept_then_reset")
    handle = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})  # fal-client retried it
    await handle.get()
    first, second = emu.creates("fal")[before:]
    assert (first.fault, second.fault) == ("accept_then_reset", None)
    assert second.job_id == handle.request_id
    deadline = time.monotonic() + 5
    while emu.creates("fal")[before].status != "succeeded" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert [j.cost_usd for j in emu.creates("fal")[before:]] == [0.025, 0.025]  # paid twice


async def test_accept_then_error_answers_a_5xx_in_the_provider_shape_after_acceptance(
        emu: Emulator, rep: replicate.Client, oai: openai.AsyncOpenAI,
        fal: fal_client.AsyncClient) -> None:
    before = {p: billed(emu, p) for p in ("replicate", "fal", "openai")}
    emu.faults.add("replicate", "accept_then_error")
    with pytest.raises(ReplicateError) as replicate_error:
        await rep.predictions.async_create(model="a/model", input={"prompt": "x"})
    assert replicate_error.value.status == 504
    emu.faults.add("fal", "accept_then_error", status=502)
    with pytest.raises(fal_client.client.FalClientHTTPError) as fal_error:
        await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    assert fal_error.value.status_code == 502  # x-fal-request-id: fal-client did not retry
    emu.faults.add("openai", "accept_then_error")
    with pytest.raises(openai.InternalServerError) as openai_error:
        await oai.images.generate(prompt="x")
    assert openai_error.value.status_code == 504
    assert all(billed(emu, p) == before[p] + 1 for p in before)
    assert emu.creates("openai")[-1].cost_usd > 0


async def test_insufficient_quota_is_refused_in_each_providers_shape_and_costs_nothing(
        emu: Emulator, rep: replicate.Client, oai: openai.AsyncOpenAI,
        fal: fal_client.AsyncClient) -> None:
    before = len(emu.creates())
    emu.faults.add("openai", "insufficient_quota")
    with pytest.raises(openai.RateLimitError) as openai_error:
        await oai.images.generate(prompt="x")
    assert (openai_error.value.code, openai_error.value.type) == ("insufficient_quota",
                                                                  "insufficient_quota")
    emu.faults.add("replicate", "insufficient_quota")
    with pytest.raises(ReplicateError) as replicate_error:
        await rep.predictions.async_create(model="a/model", input={"prompt": "x"})
    assert replicate_error.value.status == 402
    emu.faults.add("fal", "insufficient_quota")
    with pytest.raises(fal_client.client.FalClientHTTPError) as fal_error:
        await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    assert fal_error.value.status_code == 403 and "Exhausted balance" in str(fal_error.value)
    assert len(emu.creates()) == before


async def test_the_create_hook_runs_after_acceptance_and_before_any_response_byte(
        emu: Emulator, rep: replicate.Client, oai: openai.AsyncOpenAI) -> None:
    seen: list[tuple[JobRecord, int]] = []

    def hook(record: JobRecord) -> None:
        answered = sum(1 for r in emu.log if r.model == record.model)
        seen.append((record, answered))

    emu.on_create(hook)
    try:
        await rep.predictions.async_create(model="acme/hooked", input={"prompt": "x"})
        await oai.images.generate(model="gpt-image-hooked", prompt="x")
    finally:
        emu.remove_create_hook(hook)
    (replicate_job, replicate_answered), (openai_job, openai_answered) = seen
    assert (replicate_answered, openai_answered) == (0, 0)  # no status line had gone out
    assert replicate_job.status == "queued" and replicate_job.model == "acme/hooked"
    assert openai_job.status == "succeeded" and openai_job.cost_usd > 0  # OpenAI: run, billed
    assert [r.status for r in emu.log if r.model == "acme/hooked"] == [201]


def test_every_fault_is_documented_in_the_package_docstring() -> None:
    import pixellab.emulator as package

    doc = package.__doc__ or ""
    for action in ACTIONS:
        assert f"``{action}``" in doc, action


# --------------------------------------------------------------------------------------------
# P7: billing by the providers' published rules
# --------------------------------------------------------------------------------------------


async def test_replicate_bills_community_models_by_compute_time_even_when_canceled(
        emu: Emulator, rep: replicate.Client) -> None:
    version = (await rep.models.async_get("stability-ai/sdxl")).latest_version
    assert version is not None
    done = await rep.predictions.async_create(version=version.id, input={"prompt": "x"},
                                              wait=10)
    [record] = [j for j in emu.creates("replicate") if j.job_id == done.id]
    assert done.metrics is not None
    assert record.cost_usd == pytest.approx(done.metrics["predict_time"] * 0.000975, abs=1e-9)
    emu.faults.add("replicate", "accept_then_hang")
    hanging = await rep.predictions.async_create(version=version.id, input={"prompt": "x"})
    await asyncio.sleep(0.1)  # processing by now
    canceled = await rep.predictions.async_cancel(hanging.id)
    [record] = [j for j in emu.creates("replicate") if j.job_id == hanging.id]
    assert canceled.metrics is not None and canceled.metrics["predict_time"] > 0
    assert record.billing == "replicate.canceled.compute_time"
    assert record.cost_usd == pytest.approx(canceled.metrics["predict_time"] * 0.000975,
                                            abs=1e-9)


async def test_a_canceled_fal_request_is_not_billed_and_bill_totals_the_settled_jobs(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    emu.faults.add("fal", "accept_then_hang")
    handle = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    assert emu.creates("fal")[-1].cost_usd == 0.0  # nothing is billed before the end
    await handle.cancel()
    assert (emu.creates("fal")[-1].cost_usd, emu.creates("fal")[-1].billing) == (
        0.0, "fal.canceled.nothing")
    assert emu.bill() == pytest.approx(sum(j.cost_usd for j in emu.creates()))
    assert emu.bill("fal") == pytest.approx(sum(j.cost_usd for j in emu.creates("fal")))
    assert emu.bill() > emu.bill("fal") > 0
