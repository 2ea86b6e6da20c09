"""Every fal answer of the emulator conforms to what fal-client parses and fal documents.

Source: fal-ai/fal @ c6f0afaaceec981d2461474a81467552adb0b084
(``projects/fal_client/src/fal_client/client.py``) and fal's documentation pages on model
errors, request errors and webhooks; see :mod:`tests.conformance.fal_schemas`. The emulator is
driven with the real ``fal-client`` (1.0.3, over TLS) and raw httpx across success, every fault
and every route; each recorded answer and webhook body is validated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import fal_client
import fal_client.client as fal_module
import httpx
import pytest

from pixellab.emulator import Emulator, ResponseRecord
from tests.conformance import fal_schemas as schemas
from tests.conformance.conftest import nonconforming, tls
from tests.conformance.support import Schema, errors
from tests.emulated import point_fal_at

FalError = fal_client.client.FalClientHTTPError


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, cold_start_s=0.3, seed=12, record_bodies=True,
                  fal_webhook_window_s=0.2) as emulator:
        yield emulator


@pytest.fixture
def fal(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> fal_client.AsyncClient:
    point_fal_at(emu, monkeypatch)
    monkeypatch.setattr(fal_module, "MAX_ATTEMPTS", 1)  # see each answer once
    return fal_client.AsyncClient(key="conformance:key")


def schema_for(record: ResponseRecord) -> Schema | None:
    """The schema a recorded fal answer must follow (None: not JSON)."""
    route, method, status, body = record.route, record.method, record.status, record.body
    if status == 0 or route.startswith("/files/") or route.endswith("/upload/put/{id}"):
        return None
    if not route.startswith("/fal/"):
        raise LookupError(route)
    if record.headers.get("content-type", "").startswith("text/html"):
        return None  # the ingress (nginx) page of accept_then_error(ingress=True)
    if route == "/fal/queue/{rest:path}" and method == "PUT":
        return schemas.CANCEL_ACCEPTED if status == 202 else schemas.CANCEL_REFUSED
    if status >= 400:
        parsed = json.loads(body)
        if isinstance(parsed.get("detail"), list):
            return schemas.MODEL_ERROR
        return schemas.REQUEST_ERROR if "error_type" in parsed else schemas.PLAIN_ERROR
    if route == "/fal/queue/{rest:path}":
        if method == "POST":
            return schemas.SUBMIT
        if record.path.endswith("/status"):
            return schemas.STATUS
        return schemas.IMAGE_RESULT
    by_route: dict[tuple[str, str], Schema] = {
        ("POST", "/fal/run/{app:path}"): schemas.IMAGE_RESULT,
        ("POST", "/fal/rest/storage/auth/token"): schemas.CDN_TOKEN,
        ("POST", "/fal/rest/storage/upload/initiate"): schemas.UPLOAD_INITIATE,
        ("GET", "/fal/rest/.well-known/jwks.json"): schemas.JWKS,
        ("POST", "/fal/cdn/files/upload"): schemas.CDN_UPLOAD,
    }
    try:
        return by_route[(method, route)]
    except KeyError:
        raise LookupError(f"{method} {route}") from None


async def exercise(emu: Emulator, fal: fal_client.AsyncClient, photo_png: bytes
                   ) -> list[bytes]:
    """Drive every route, success and fault; returns the webhook bodies received."""
    sink = emu.webhook_sink("conformance-fal")
    failing = emu.webhook_sink("conformance-fal-500", status=500)
    url = await fal.upload(photo_png, "image/png", "p.png")
    await fal.upload(photo_png, "image/png", "p.png", repository="fal")
    handle = await fal.submit("fal-ai/birefnet/v2", {"image_url": url}, webhook_url=sink.url)
    await handle.status(with_logs=True)  # IN_QUEUE: the model is booting
    await handle.get()
    await handle.status(with_logs=True)
    await fal.run("fal-ai/flux/dev", {"prompt": "a lamp"})
    emu.faults.add("fal", "accept_then_hang")
    hanging = await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    await asyncio.sleep(0.1)
    await hanging.status(with_logs=True)  # IN_PROGRESS
    await hanging.cancel()
    with pytest.raises(FalError):
        await hanging.cancel()  # ALREADY_COMPLETED
    with pytest.raises(FalError):
        await hanging.get()  # the canceled job's result
    # failures reported through the result
    for action, options in (("job_failure", {}), ("content_rejected", {}),
                            ("runner_failure", {})):
        emu.faults.add("fal", action, **options)
        failed = await fal.submit("fal-ai/flux/dev", {"prompt": "x"}, webhook_url=sink.url,
                                  headers={"x-fal-no-retry": "1"})
        with pytest.raises(FalError):
            await failed.get()
    # refusals and broken answers of the create
    for action, options in (("rate_limit", {}), ("server_error", {}),
                            ("insufficient_quota", {}), ("hang", {"seconds": 0.05}),
                            ("accept_then_error", {}), ("accept_then_error", {"ingress": True})):
        emu.faults.add("fal", action, **options)
        with pytest.raises(FalError):
            await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    emu.faults.add("fal", "accept_then_reset")
    with pytest.raises(httpx.TransportError):
        await fal.submit("fal-ai/flux/dev", {"prompt": "x"})
    for action in ("corrupt", "blank", "duplicate_webhook", "delay_webhook", "drop_webhook"):
        emu.faults.add("fal", action, seconds=0.01)
        await (await fal.submit("fal-ai/flux/dev", {"prompt": "x"},
                                webhook_url=failing.url)).get()
    async with httpx.AsyncClient(verify=tls(emu)) as client:
        await client.get(emu.fal_jwks_url)
        key = {"Authorization": "Key k"}
        await client.post(f"{emu.fal_queue_url}fal-ai/flux/dev", json={})  # no key: 401
        await client.get(f"{emu.fal_queue_url}fal-ai/flux/requests/nope/status", headers=key)
        await client.post(f"{emu.fal_queue_url}fal-ai/flux/dev", content=b"{", headers=key)
        still = (await client.post(f"{emu.fal_queue_url}fal-ai/slower-boot", json={},
                                   headers=key)).json()
        await client.get(still["response_url"], headers=key)  # still in progress: 400
        # a request still queued when its X-Fal-Request-Timeout passes (the model boots)
        late = (await client.post(f"{emu.fal_queue_url}fal-ai/slow-boot", json={},
                                  headers={**key, "X-Fal-Request-Timeout": "0.1"})).json()
        while (await client.get(late["status_url"], headers=key)).json()["status"] != (
                "COMPLETED"):
            await asyncio.sleep(0.02)
        await client.get(late["response_url"], headers=key)  # 504 request_timeout
    deliveries = await asyncio.to_thread(sink.wait, 4)
    return [d.body for d in deliveries + failing.deliveries]


async def test_every_fal_answer_and_webhook_matches_what_fal_publishes(
        emu: Emulator, fal: fal_client.AsyncClient, photo_png: bytes) -> None:
    webhooks = await exercise(emu, fal, photo_png)
    assert nonconforming(emu.responses, schema_for) == []
    statuses = {r.json()["status"] for r in emu.responses
                if r.path.endswith("/status") and r.status in (200, 202)}
    assert statuses == {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert {json.loads(b)["status"] for b in webhooks} == {"OK", "ERROR"}
    for body in webhooks:
        assert errors(schemas.WEBHOOK, json.loads(body)) == []


def test_fal_errors_use_the_documented_formats(emu: Emulator) -> None:
    failures = {r.status: r for r in emu.responses
                if r.status >= 400 and r.route.startswith("/fal/")}
    assert set(failures) >= {400, 401, 403, 404, 422, 429, 500, 503, 504}
    content = [r for r in emu.responses if r.status == 422 and b"content_policy" in r.body]
    [rejection] = content
    [error] = rejection.json()["detail"]
    assert error["type"] == "content_policy_violation"
    assert rejection.headers["x-fal-retryable"] == "false"
    timeout = [r for r in emu.responses if r.status == 504 and b"request_timeout" in r.body]
    assert timeout and timeout[0].headers["x-fal-request-timeout-type"] == "user"
    assert timeout[0].headers["x-fal-error-type"] == "request_timeout"


def test_the_model_error_schema_is_closed() -> None:
    good = {"detail": [{"loc": ["body", "prompt"], "msg": "m",
                        "type": "content_policy_violation"}]}
    assert errors(schemas.MODEL_ERROR, good) == []
    assert errors(schemas.MODEL_ERROR, {"detail": [{**good["detail"][0], "extra": 1}]})
    assert errors(schemas.MODEL_ERROR, {"detail": "a string", "error_type": "x"})
