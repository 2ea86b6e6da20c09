"""Every Replicate answer of the emulator conforms to Replicate's published shapes.

Source: replicate/replicate-python-beta @ 48e138a15eeb44be36d871ad822b5e86d3852db3
(``src/replicate/types/prediction.py``, ``file_*_response.py``, generated from Replicate's
OpenAPI spec) and replicate/replicate-python @ 0110c2c5639763a44e73d69011eaec28a15334f7
(``tests/cassettes``, recorded real responses); see :mod:`tests.conformance.replicate_schemas`.
The emulator is driven with the real ``replicate`` SDK (1.0.7) and raw httpx, across success,
every fault and every route, and each recorded answer (and webhook body) is validated.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from pixellab.emulator import Emulator, ResponseRecord
from tests.conformance import replicate_schemas as schemas
from tests.conformance.conftest import nonconforming
from tests.conformance.support import Schema, errors

AUTH = {"Authorization": "Bearer r8_conformance"}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, seed=11, record_bodies=True) as emulator:
        yield emulator


@pytest.fixture
def rep(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> replicate.Client:
    monkeypatch.setenv("SSL_CERT_FILE", emu.ca_pem)
    return replicate.Client(api_token="r8_conformance", base_url=emu.replicate_base_url)


def schema_for(record: ResponseRecord) -> Schema | None:
    """The schema a recorded Replicate answer must follow (None: not JSON)."""
    route, method, status = record.route, record.method, record.status
    if status == 0 or route.startswith("/files/") or route.endswith("/download") or (
            status == 204):
        return None
    if not route.startswith("/replicate/"):
        raise LookupError(route)
    if status >= 400:
        return schemas.PROBLEM
    by_route: dict[tuple[str, str], Schema] = {
        ("POST", "/replicate/v1/models/{owner}/{name}/predictions"): schemas.PREDICTION,
        ("POST", "/replicate/v1/deployments/{owner}/{name}/predictions"): schemas.PREDICTION,
        ("POST", "/replicate/v1/predictions"): schemas.PREDICTION,
        ("GET", "/replicate/v1/predictions"): schemas.PREDICTION_LIST,
        ("GET", "/replicate/v1/predictions/{id}"): schemas.PREDICTION,
        ("POST", "/replicate/v1/predictions/{id}/cancel"): schemas.PREDICTION,
        ("GET", "/replicate/v1/models/{owner}/{name}/versions/{version}"): schemas.VERSION,
        ("GET", "/replicate/v1/models/{owner}/{name}"): schemas.MODEL,
        ("POST", "/replicate/v1/files"): schemas.FILE,
        ("GET", "/replicate/v1/files"): schemas.FILE_LIST,
        ("GET", "/replicate/v1/files/{id}"): schemas.FILE,
        ("GET", "/replicate/v1/webhooks/default/secret"): schemas.WEBHOOK_SECRET,
    }
    try:
        return by_route[(method, route)]
    except KeyError:
        raise LookupError(f"{method} {route}") from None


async def exercise(emu: Emulator, rep: replicate.Client, photo_png: bytes) -> list[bytes]:
    """Drive every route, success and fault; returns the webhook bodies received."""
    sink = emu.webhook_sink("conformance-replicate")
    base = f"{emu.replicate_base_url}/v1"
    # success: by model (official) with and without Prefer: wait, by version, files
    await rep.async_run("black-forest-labs/flux-schnell", input={"prompt": "a cube"})
    await rep.async_run("acme/cutout-official", input={"image": io.BytesIO(photo_png)})
    prediction = await rep.predictions.async_create(
        model="acme/packshot", input={"prompt": "x"}, webhook=sink.url,
        webhook_events_filter=["start", "completed"])
    while prediction.status not in ("succeeded", "failed", "canceled"):
        await asyncio.sleep(0.02)
        await prediction.async_reload()
    model = await rep.models.async_get("acme/versioned")
    assert model.latest_version is not None
    await rep.async_run(f"acme/versioned:{model.latest_version.id}", input={"prompt": "x"})
    await rep.deployments.predictions.async_create("acme/deployed", input={"prompt": "x"})
    await rep.predictions.async_list()
    upload = await rep.files.async_create(io.BytesIO(b"hello"), metadata={"k": "v"})
    await rep.files.async_get(upload.id)
    await rep.files.async_list()
    async with httpx.AsyncClient(headers=AUTH) as client:
        assert (await client.get(f"{base}/files/{upload.id}/download")).content == b"hello"
        await client.delete(f"{base}/files/{upload.id}")
        await client.get(f"{base}/webhooks/default/secret")
        # errors: no token, unknown prediction, bad input, bad JSON, no version
        await client.post(f"{base}/models/a/b/predictions", headers={"Authorization": ""},
                          json={"input": {}})
        await client.get(f"{base}/predictions/nope")
        await client.post(f"{base}/models/a/b/predictions", json={"input": [1]})
        await client.post(f"{base}/models/a/b/predictions", content=b"{not json")
        await client.post(f"{base}/predictions", json={"input": {}})
        await client.get(f"{base}/files/nope")
    # every fault
    for action, options in (("rate_limit", {"retry_after": 0}), ("server_error", {}),
                            ("insufficient_quota", {}), ("accept_then_error", {}),
                            ("hang", {"seconds": 0.05})):
        emu.faults.add("replicate", action, **options)
        with pytest.raises(ReplicateError):
            await rep.predictions.async_create(model="a/faulty", input={"prompt": "x"})
    emu.faults.add("replicate", "accept_then_reset")
    with pytest.raises(httpx.TransportError):
        await rep.predictions.async_create(model="a/faulty", input={"prompt": "x"})
    for action in ("job_failure", "content_rejected"):
        emu.faults.add("replicate", action)
        with pytest.raises(ModelError):
            await rep.async_run("a/faulty", input={"prompt": "x"})
    for action in ("corrupt", "blank", "duplicate_webhook", "delay_webhook", "drop_webhook"):
        emu.faults.add("replicate", action, seconds=0.01)
        await rep.async_run("a/faulty", input={"prompt": "x"})
    emu.faults.add("replicate", "accept_then_hang")
    hanging = await rep.predictions.async_create(model="a/faulty", input={"prompt": "x"})
    await rep.predictions.async_cancel(hanging.id)
    deliveries = await asyncio.to_thread(sink.wait, 2)
    return [d.body for d in deliveries]


async def test_every_replicate_answer_and_webhook_matches_the_published_shapes(
        emu: Emulator, rep: replicate.Client, photo_png: bytes) -> None:
    webhooks = await exercise(emu, rep, photo_png)
    assert nonconforming(emu.responses, schema_for) == []
    routes = {(r.method, r.route) for r in emu.responses}
    assert len(routes) >= 15, routes  # every route was exercised
    assert len(webhooks) == 2  # start and completed
    for body in webhooks:
        assert errors(schemas.PREDICTION, json.loads(body)) == []


def test_replicate_errors_are_problem_json(emu: Emulator) -> None:
    failures = [r for r in emu.responses if r.status >= 400 and r.route.startswith("/replicate")]
    assert {r.status for r in failures} >= {400, 401, 402, 404, 422, 429, 500, 504}
    assert {r.headers["content-type"] for r in failures} == {"application/problem+json"}


def test_official_predictions_answer_hidden_versions_and_community_ones_their_version(
        emu: Emulator) -> None:
    created = [r.json() for r in emu.responses
               if r.method == "POST" and r.status == 201 and "predictions" in r.route]
    official = [p for p in created if p["model"] == "acme/packshot"]
    community = [p for p in created if p["model"] == "acme/versioned"]
    assert official and community
    assert {p["version"] for p in official} == {"hidden"}
    assert all(len(p["version"]) == 64 for p in community)
    for answer in created:
        assert answer["urls"]["web"] == f"https://replicate.com/p/{answer['id']}"


def test_a_field_the_real_api_lacks_fails_the_prediction_schema() -> None:
    prediction = {"id": "p", "created_at": "2026-01-01T00:00:00.000Z", "data_removed": False,
                  "input": {}, "model": "a/b", "output": None, "status": "starting",
                  "urls": {"get": "https://x/p", "cancel": "https://x/c",
                           "web": "https://replicate.com/p/p"}, "version": "hidden"}
    assert errors(schemas.PREDICTION, prediction) == []
    assert errors(schemas.PREDICTION, {**prediction, "source": "api"})  # emulator-only field
    no_web = {**prediction, "urls": {"get": "https://x/p", "cancel": "https://x/c"}}
    assert errors(schemas.PREDICTION, no_web)
    file_ = {"id": "f", "name": "a.png", "content_type": "image/png", "size": 1, "etag": "e",
             "checksums": {"sha256": "s"}, "metadata": {},
             "created_at": "2026-01-01T00:00:00Z", "expires_at": None,
             "urls": {"get": "https://x/v1/files/f"}}
    assert errors(schemas.FILE, file_)  # expires_at is a timestamp, never null
