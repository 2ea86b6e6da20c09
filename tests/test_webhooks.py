"""Webhook verification, dedupe and signalling (reliability.md §3, W1-W3).

Each test states one thing :mod:`pixellab.webhooks` guarantees. Signatures are built here with
``hmac`` / ``cryptography`` directly, independently of the code under test. Every server is a
real one on 127.0.0.1 (a JWKS server, the receiver, the provider emulator); nothing else is
contacted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fal_client
import httpx
import pytest
import replicate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.datastructures import Headers as StarletteHeaders

from pixellab.emulator import Emulator
from pixellab.errors import PixellabError
from pixellab.webhooks import (
    MAX_BODY_BYTES,
    JobSignal,
    JobSignals,
    JwksKeys,
    WebhookReceiver,
    WebhookRejected,
    WebhookServer,
    verify_fal,
    verify_replicate,
)
from tests.emulated import point_fal_at

NOW = 1_700_000_000
KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
NEW_KEY = bytes(range(100, 132))
NEW_SECRET = "whsec_" + base64.b64encode(NEW_KEY).decode()
BODY = json.dumps({"id": "pred_1", "status": "succeeded", "output": ["https://x/y.png"]}).encode()


# --------------------------------------------------------------------------------------------
# signing helpers (independent of the code under test)
# --------------------------------------------------------------------------------------------


def replicate_sig(key: bytes, msg_id: str | bytes, ts: int | str, body: bytes) -> str:
    """A ``v1`` entry; a ``str`` id is signed as its UTF-8 bytes, as senders do."""
    raw_id = msg_id if isinstance(msg_id, bytes) else msg_id.encode()
    digest = hmac.new(key, raw_id + f".{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def replicate_headers(body: bytes = BODY, *, key: bytes = KEY, msg_id: str = "msg_1",
                      ts: int = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": replicate_sig(key, msg_id, ts, body)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(private: Ed25519PrivateKey) -> dict[str, str]:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "use": "sig", "kid": raw.hex()[:8]}


def fal_headers(private: Ed25519PrivateKey, body: bytes, *, request_id: str = "req-1",
                user_id: str = "user-1", ts: int = NOW) -> dict[str, str]:
    message = "\n".join([request_id, user_id, str(ts), hashlib.sha256(body).hexdigest()])
    return {"X-Fal-Webhook-Request-Id": request_id, "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": str(ts),
            "X-Fal-Webhook-Signature": private.sign(message.encode()).hex()}


FAL_KEY = Ed25519PrivateKey.generate()
OTHER_FAL_KEY = Ed25519PrivateKey.generate()
FAL_BODY = json.dumps({"request_id": "req-1", "gateway_request_id": "req-1", "status": "OK",
                       "payload": {"images": []}}).encode()


def rejected_reason(call: Callable[[], Any]) -> str:
    with pytest.raises(WebhookRejected) as caught:
        call()
    return caught.value.reason


# --------------------------------------------------------------------------------------------
# a loopback JWKS server (plain http.server, so the default httpx fetch is exercised)
# --------------------------------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    document: dict[str, Any]
    hits: list[float] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer(url="", document={"keys": [jwk(FAL_KEY)]})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.hits.append(time.time())
            data = json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------------
# W1: Replicate (Standard Webhooks v1) verification matrix
# --------------------------------------------------------------------------------------------


def _flip_byte(body: bytes) -> bytes:
    data = bytearray(body)
    data[10] ^= 0x01
    return bytes(data)


def _drop(name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda h: {k: v for k, v in h.items() if k != name}


REPLICATE_CASES: dict[str, tuple[Callable[[], tuple[dict[str, str], bytes, str]], str | None]] = {
    "valid": (lambda: (replicate_headers(), BODY, SECRET), None),
    "body byte flipped": (lambda: (replicate_headers(), _flip_byte(BODY), SECRET),
                          "bad_signature"),
    "body re-serialised as JSON": (
        lambda: (replicate_headers(), json.dumps(json.loads(BODY), indent=1).encode(), SECRET),
        "bad_signature"),
    "webhook-id missing": (lambda: (_drop("webhook-id")(replicate_headers()), BODY, SECRET),
                           "missing_header"),
    "webhook-timestamp missing": (
        lambda: (_drop("webhook-timestamp")(replicate_headers()), BODY, SECRET),
        "missing_header"),
    "webhook-signature missing": (
        lambda: (_drop("webhook-signature")(replicate_headers()), BODY, SECRET),
        "missing_header"),
    "header names in other cases": (
        lambda: ({k.upper() if i % 2 else k.title(): v
                  for i, (k, v) in enumerate(replicate_headers().items())}, BODY, SECRET),
        None),
    "timestamp 301 s in the future": (
        lambda: (replicate_headers(ts=NOW + 301), BODY, SECRET), "stale_timestamp"),
    "timestamp 301 s in the past": (
        lambda: (replicate_headers(ts=NOW - 301), BODY, SECRET), "stale_timestamp"),
    "timestamp 299 s in the past": (lambda: (replicate_headers(ts=NOW - 299), BODY, SECRET),
                                    None),
    "timestamp not an integer": (
        lambda: ({**replicate_headers(), "webhook-timestamp": "17e8"}, BODY, SECRET),
        "stale_timestamp"),
    "signed with another secret": (lambda: (replicate_headers(key=NEW_KEY), BODY, SECRET),
                                   "bad_signature"),
    "rotated secret only as the 2nd signature entry": (
        lambda: ({**replicate_headers(), "webhook-signature":
                  replicate_sig(KEY, "msg_1", NOW, BODY) + " "
                  + replicate_sig(NEW_KEY, "msg_1", NOW, BODY)}, BODY, NEW_SECRET),
        None),
    "only a non-v1 entry (right digest, v2 label)": (
        lambda: ({**replicate_headers(), "webhook-signature":
                  "v2," + replicate_sig(KEY, "msg_1", NOW, BODY)[3:]}, BODY, SECRET),
        "bad_signature"),
    "v1a entry only": (
        lambda: ({**replicate_headers(), "webhook-signature": "v1a,AAAA"}, BODY, SECRET),
        "bad_signature"),
    "garbage entry before the valid one": (
        lambda: ({**replicate_headers(), "webhook-signature":
                  "v1,@@not-base64@@ " + replicate_sig(KEY, "msg_1", NOW, BODY)}, BODY, SECRET),
        None),
    "secret without the whsec_ prefix": (
        lambda: (replicate_headers(), BODY, SECRET.removeprefix("whsec_")), None),
    "secret without base64 padding": (
        lambda: (replicate_headers(key=b"k" * 31), BODY,
                 "whsec_" + base64.b64encode(b"k" * 31).decode().rstrip("=")), None),
    "signature made for another webhook-id": (
        lambda: ({**replicate_headers(), "webhook-id": "msg_2"}, BODY, SECRET), "bad_signature"),
    "secret that is not base64": (lambda: (replicate_headers(), BODY, "whsec_***"), "bad_secret"),
}


@pytest.mark.parametrize("case", list(REPLICATE_CASES))
def test_replicate_verification_matrix(case: str) -> None:
    build, expected = REPLICATE_CASES[case]
    headers, body, secret = build()
    if expected is None:
        assert verify_replicate(headers, body, secret, now=NOW) == "msg_1"
    else:
        assert rejected_reason(lambda: verify_replicate(headers, body, secret, now=NOW)) == expected


def test_replicate_rejections_are_pixellab_errors_and_the_default_clock_is_the_wall_clock() -> None:
    ts = int(time.time())
    assert verify_replicate(replicate_headers(ts=ts), BODY, SECRET) == "msg_1"
    with pytest.raises(PixellabError):
        verify_replicate(replicate_headers(ts=ts - 3600), BODY, SECRET)


def test_a_nan_tolerance_accepts_no_timestamp_and_no_receiver_takes_one() -> None:
    nan = float("nan")
    stale = replicate_headers(ts=NOW - 3600)
    assert rejected_reason(lambda: verify_replicate(stale, BODY, SECRET, tolerance_s=nan,
                                                    now=NOW)) == "stale_timestamp"
    with pytest.raises(ValueError):
        WebhookReceiver(replicate_secret=SECRET, fal_keys=None, on_signal=lambda s: None,
                        tolerance_s=nan)


def test_no_replicate_rejection_reveals_the_secret() -> None:
    secrets_ = [SECRET, "whsec_c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LXZhbGlk!", "whsec_" + "A" * 5]
    seen = 0
    for secret in secrets_:
        bare = secret.removeprefix("whsec_")
        for build, _expected in REPLICATE_CASES.values():
            headers, body, _ = build()
            try:
                verify_replicate(headers, body, secret, now=NOW)
            except WebhookRejected as exc:
                seen += 1
                text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
                assert bare not in text and secret not in text
    assert seen >= 2 * len(REPLICATE_CASES)
    with pytest.raises(WebhookRejected) as bad:
        WebhookReceiver(replicate_secret="whsec_" + "x" * 5, fal_keys=None,
                        on_signal=lambda s: None)
    assert "xxxxx" not in str(bad.value) and bad.value.reason == "bad_secret"
    receiver = WebhookReceiver(replicate_secret=SECRET, fal_keys=None, on_signal=lambda s: None)
    assert SECRET.removeprefix("whsec_") not in repr(receiver)


# --------------------------------------------------------------------------------------------
# W1: ids beyond ASCII are verified over the bytes the sender signed
# --------------------------------------------------------------------------------------------

UTF8_ID = "msg_ü✓"
UTF8_ID_BYTES = UTF8_ID.encode()  # what a sender signs and puts on the wire
LATIN1_READING = UTF8_ID_BYTES.decode("latin-1")  # what Starlette's request.headers shows


def utf8_replicate_headers(signed_id: str | bytes = UTF8_ID_BYTES, *, ts: int = NOW,
                           body: bytes = BODY) -> dict[str, bytes]:
    """Headers as raw bytes on the wire: the UTF-8 id, signed over ``signed_id``."""
    return {"webhook-id": UTF8_ID_BYTES, "webhook-timestamp": str(ts).encode(),
            "webhook-signature": replicate_sig(KEY, signed_id, ts, body).encode()}


def on_the_wire(headers: dict[str, bytes]) -> dict[bytes, bytes]:
    """For httpx, which sends ``str`` values as ASCII and ``bytes`` as they are."""
    return {name.encode(): value for name, value in headers.items()}


@pytest.mark.parametrize("given", ["bytes", "str"])
def test_a_utf8_webhook_id_signed_over_its_utf8_bytes_verifies_given_as_bytes_or_text(
        given: str) -> None:
    headers: dict[str, str | bytes] = {
        name: value.decode() if given == "str" else value
        for name, value in utf8_replicate_headers().items()}
    assert verify_replicate(headers, BODY, SECRET, now=NOW) == UTF8_ID


def test_a_latin1_reading_of_a_utf8_webhook_id_is_refused() -> None:
    headers = {name: value.decode() for name, value in utf8_replicate_headers().items()}
    headers["webhook-id"] = LATIN1_READING
    assert rejected_reason(lambda: verify_replicate(headers, BODY, SECRET, now=NOW)) == (
        "bad_signature")


def test_starlette_headers_are_verified_from_their_raw_bytes_not_their_latin1_text() -> None:
    raw = [(name.encode(), value) for name, value in utf8_replicate_headers().items()]
    headers = StarletteHeaders(raw=raw)
    assert headers["webhook-id"] == LATIN1_READING  # Starlette's reading: not what was signed
    assert verify_replicate(headers, BODY, SECRET, now=NOW) == UTF8_ID


def test_an_id_that_is_not_utf8_is_returned_with_replacement_characters() -> None:
    raw_id = b"msg_\xff\xfe"
    headers = {**utf8_replicate_headers(raw_id), "webhook-id": raw_id}
    returned = verify_replicate(headers, BODY, SECRET, now=NOW)
    assert returned == "msg_\ufffd\ufffd"  # valid text: it encodes again wherever it goes


def test_a_text_header_that_utf8_cannot_encode_is_refused_not_raised() -> None:
    headers: dict[str, str | bytes] = {**utf8_replicate_headers(), "webhook-id": "msg_\ud800"}
    assert rejected_reason(lambda: verify_replicate(headers, BODY, SECRET, now=NOW)) == (
        "bad_signature")


# --------------------------------------------------------------------------------------------
# W1: fal (Ed25519 + JWKS) verification matrix
# --------------------------------------------------------------------------------------------


def _fal_without(name: str) -> Callable[[], tuple[dict[str, str], bytes]]:
    return lambda: (_drop(name)(fal_headers(FAL_KEY, FAL_BODY)), FAL_BODY)


FAL_CASES: dict[str, tuple[Callable[[], tuple[dict[str, str], bytes]], str | None]] = {
    "valid": (lambda: (fal_headers(FAL_KEY, FAL_BODY), FAL_BODY), None),
    "header names in lower case": (
        lambda: ({k.lower(): v for k, v in fal_headers(FAL_KEY, FAL_BODY).items()}, FAL_BODY),
        None),
    "signed for another request id": (
        lambda: ({**fal_headers(FAL_KEY, FAL_BODY, request_id="req-2"),
                  "X-Fal-Webhook-Request-Id": "req-1"}, FAL_BODY), "bad_signature"),
    "signed for another user id": (
        lambda: ({**fal_headers(FAL_KEY, FAL_BODY, user_id="someone-else"),
                  "X-Fal-Webhook-User-Id": "user-1"}, FAL_BODY), "bad_signature"),
    "body changed": (lambda: (fal_headers(FAL_KEY, FAL_BODY), FAL_BODY.replace(b"OK", b"KO")),
                     "bad_signature"),
    "body replaced by {}": (lambda: (fal_headers(FAL_KEY, FAL_BODY), b"{}"), "bad_signature"),
    "timestamp 400 s in the future": (
        lambda: (fal_headers(FAL_KEY, FAL_BODY, ts=NOW + 400), FAL_BODY), "stale_timestamp"),
    "timestamp 301 s in the past": (
        lambda: (fal_headers(FAL_KEY, FAL_BODY, ts=NOW - 301), FAL_BODY), "stale_timestamp"),
    "unknown key pair": (lambda: (fal_headers(OTHER_FAL_KEY, FAL_BODY), FAL_BODY),
                         "bad_signature"),
    "signature hex garbage": (
        lambda: ({**fal_headers(FAL_KEY, FAL_BODY), "X-Fal-Webhook-Signature": "zz-not-hex"},
                 FAL_BODY), "bad_signature"),
    "signature too short": (
        lambda: ({**fal_headers(FAL_KEY, FAL_BODY), "X-Fal-Webhook-Signature": "abcd"},
                 FAL_BODY), "bad_signature"),
    **{f"{name} missing": (_fal_without(name), "missing_header")
       for name in ("X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id",
                    "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature")},
}


@pytest.mark.parametrize("case", list(FAL_CASES))
async def test_fal_verification_matrix(case: str, jwks_server: JwksServer) -> None:
    build, expected = FAL_CASES[case]
    headers, body = build()
    keys = JwksKeys(jwks_server.url)
    if expected is None:
        assert await verify_fal(headers, body, keys, now=NOW) == "req-1"
    else:
        with pytest.raises(WebhookRejected) as caught:
            await verify_fal(headers, body, keys, now=NOW)
        assert caught.value.reason == expected


async def test_fal_keys_are_cached_so_a_second_verification_does_not_refetch(
        jwks_server: JwksServer) -> None:
    keys = JwksKeys(jwks_server.url)
    for request_id in ("req-a", "req-b", "req-c"):
        headers = fal_headers(FAL_KEY, FAL_BODY, request_id=request_id)
        assert await verify_fal(headers, FAL_BODY, keys, now=NOW) == request_id
    assert len(jwks_server.hits) == 1 and keys.fetches == 1


async def test_concurrent_first_verifications_share_one_jwks_fetch(
        jwks_server: JwksServer) -> None:
    keys = JwksKeys(jwks_server.url)
    results = await asyncio.gather(*[
        verify_fal(fal_headers(FAL_KEY, FAL_BODY, request_id=f"r{i}"), FAL_BODY, keys, now=NOW)
        for i in range(20)])
    assert results == [f"r{i}" for i in range(20)] and len(jwks_server.hits) == 1


async def test_an_unknown_key_triggers_one_refetch_which_picks_up_a_rotated_key(
        jwks_server: JwksServer) -> None:
    keys = JwksKeys(jwks_server.url)
    assert await verify_fal(fal_headers(FAL_KEY, FAL_BODY), FAL_BODY, keys, now=NOW)
    jwks_server.document = {"keys": [jwk(FAL_KEY), jwk(OTHER_FAL_KEY)]}  # fal rotates
    rotated = fal_headers(OTHER_FAL_KEY, FAL_BODY)
    assert await verify_fal(rotated, FAL_BODY, keys, now=NOW) == "req-1"
    assert len(jwks_server.hits) == 2
    # a stream of forged deliveries costs at most one more fetch per cool-down
    forged = fal_headers(Ed25519PrivateKey.generate(), FAL_BODY)
    for _ in range(5):
        with pytest.raises(WebhookRejected) as caught:
            await verify_fal(forged, FAL_BODY, keys, now=NOW)
        assert caught.value.reason == "bad_signature"
    assert len(jwks_server.hits) == 2


async def test_jwks_ttl_expiry_refetches_and_fetch_failures_serve_the_cached_keys() -> None:
    clock = [0.0]
    documents: list[Any] = [{"keys": [jwk(FAL_KEY)]}]
    calls: list[str] = []

    async def fetch(url: str) -> Any:
        calls.append(url)
        document = documents[0]
        if isinstance(document, Exception):
            raise document
        return document

    keys = JwksKeys("https://fal.invalid/jwks.json", ttl_s=100, fetch=fetch,
                    clock=lambda: clock[0])
    assert len(await keys.keys()) == 1 and len(calls) == 1
    clock[0] = 99.0
    await keys.keys()
    assert len(calls) == 1
    clock[0] = 101.0
    documents[0] = {"keys": [jwk(FAL_KEY), jwk(OTHER_FAL_KEY), {"kty": "RSA", "n": "x"}]}
    assert len(await keys.keys()) == 2 and len(calls) == 2
    clock[0] = 250.0
    documents[0] = httpx.ConnectError("down")
    assert len(await keys.keys()) == 2 and len(calls) == 3  # stale keys still verify
    await keys.keys()
    assert len(calls) == 3  # and the failed fetch is not retried on every delivery


async def test_jwks_unreachable_or_empty_is_a_503_class_rejection(
        jwks_server: JwksServer) -> None:
    headers = fal_headers(FAL_KEY, FAL_BODY)
    jwks_server.status = 500
    with pytest.raises(WebhookRejected) as down:
        await verify_fal(headers, FAL_BODY, JwksKeys(jwks_server.url), now=NOW)
    assert down.value.reason == "keys_unavailable" and down.value.http_status == 503
    jwks_server.status, jwks_server.document = 200, {"keys": []}
    with pytest.raises(WebhookRejected) as empty:
        await verify_fal(headers, FAL_BODY, JwksKeys(jwks_server.url), now=NOW)
    assert empty.value.reason == "unknown_key" and empty.value.http_status == 503


# --------------------------------------------------------------------------------------------
# the receiver over HTTP (a real server on 127.0.0.1)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def signals_seen() -> list[JobSignal]:
    return []


def _server(signals: list[JobSignal], **kwargs: Any) -> WebhookServer:
    receiver = WebhookReceiver(on_signal=signals.append, clock=lambda: NOW,
                               **{"replicate_secret": SECRET, "fal_keys": None, **kwargs})
    return WebhookServer(receiver)


def test_receiver_accepts_good_and_rejects_bad_replicate_deliveries_with_4xx(
        signals_seen: list[JobSignal]) -> None:
    with _server(signals_seen) as server, httpx.Client(timeout=5) as http:
        for case, (build, expected) in REPLICATE_CASES.items():
            headers, body, secret = build()
            if secret != SECRET:
                continue
            before = len(signals_seen)
            reply = http.post(server.replicate_url, content=body, headers=headers)
            if expected is None:
                assert reply.status_code == 200, case
            else:
                assert 400 <= reply.status_code < 500, case
                assert reply.json()["reason"] == expected, case
                assert len(signals_seen) == before, case
        stats = server.receiver.stats
    assert signals_seen == [JobSignal("replicate", "pred_1", "succeeded")]
    assert stats.accepted == 1 and stats.duplicate >= 1
    assert stats.rejected["missing_header"] == 3 and stats.rejected["bad_signature"] >= 5


def test_receiver_verifies_before_it_parses_json(signals_seen: list[JobSignal]) -> None:
    not_json = b"<html>definitely not json"
    with _server(signals_seen) as server, httpx.Client(timeout=5) as http:
        forged = http.post(server.replicate_url, content=not_json,
                           headers=replicate_headers(BODY))  # signature for another body
        signed = http.post(server.replicate_url, content=not_json,
                           headers=replicate_headers(not_json, msg_id="msg_x"))
        no_id = http.post(server.replicate_url, content=b'{"status": "succeeded"}',
                          headers=replicate_headers(b'{"status": "succeeded"}', msg_id="m"))
    assert (forged.status_code, forged.json()["reason"]) == (401, "bad_signature")
    assert (signed.status_code, signed.json()["reason"]) == (400, "bad_body")
    assert (no_id.status_code, no_id.json()["reason"]) == (400, "bad_body")
    assert signals_seen == []


def test_bodies_over_1_mib_get_413_before_any_verification_work(
        signals_seen: list[JobSignal]) -> None:
    fetches: list[str] = []

    async def fetch(url: str) -> Any:
        fetches.append(url)
        return {"keys": [jwk(FAL_KEY)]}

    big = b'{"id": "pred_1", "status": "succeeded", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    keys = JwksKeys("https://fal.invalid/jwks.json", fetch=fetch)

    def chunks() -> Iterator[bytes]:  # no Content-Length: checked while reading
        for _ in range(20):
            yield b"x" * 65536

    with _server(signals_seen, fal_keys=keys) as server, httpx.Client(timeout=5) as http:
        signed_but_big = http.post(server.replicate_url, content=big,
                                   headers=replicate_headers(big))
        fal_big = http.post(server.fal_url, content=big, headers=fal_headers(FAL_KEY, big))
        chunked = http.post(server.replicate_url, content=chunks(),
                            headers=replicate_headers(b""))
        just_fits = b"x" * MAX_BODY_BYTES
        at_limit = http.post(server.replicate_url, content=just_fits,
                             headers=replicate_headers(just_fits))
        stats = server.receiver.stats
    assert signed_but_big.status_code == fal_big.status_code == chunked.status_code == 413
    assert at_limit.status_code == 400  # verified, then not JSON: the limit is inclusive
    assert fetches == [] and signals_seen == []
    assert stats.rejected["too_large"] == 3


def test_a_declared_oversize_body_is_refused_without_waiting_for_it(
        signals_seen: list[JobSignal]) -> None:
    with _server(signals_seen) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"POST /webhooks/replicate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\n"
                         + f"Content-Length: {50 * MAX_BODY_BYTES}\r\n\r\n".encode())
            head = conn.recv(65536)  # no body sent at all: the answer must not wait for it
    assert head.startswith(b"HTTP/1.1 413")
    assert server.receiver.stats.rejected == {"too_large": 1} and signals_seen == []


async def test_ten_concurrent_copies_and_a_late_redelivery_signal_once(
        signals_seen: list[JobSignal]) -> None:
    clock = [float(NOW)]
    receiver = WebhookReceiver(replicate_secret=SECRET, fal_keys=None,
                               on_signal=signals_seen.append, clock=lambda: clock[0])
    with WebhookServer(receiver) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            replies = await asyncio.gather(*[
                http.post(server.replicate_url, content=BODY, headers=replicate_headers())
                for _ in range(10)])
            # a retry hours later carries the same webhook-id but a fresh timestamp
            clock[0] = NOW + 7200.0
            late = await http.post(server.replicate_url, content=BODY,
                                   headers=replicate_headers(ts=NOW + 7200))
            # the same job and status under another webhook-id is a duplicate too
            other_id = await http.post(server.replicate_url, content=BODY,
                                       headers=replicate_headers(msg_id="msg_other", ts=NOW + 7200))
            # a new status of the same job is news
            failed = BODY.replace(b"succeeded", b"failed")
            news = await http.post(server.replicate_url, content=failed,
                                   headers=replicate_headers(failed, msg_id="msg_f", ts=NOW + 7200))
        stats = server.receiver.stats
    assert [r.status_code for r in [*replies, late, other_id, news]] == [200] * 13
    assert signals_seen == [JobSignal("replicate", "pred_1", "succeeded"),
                            JobSignal("replicate", "pred_1", "failed")]
    assert (stats.accepted, stats.duplicate) == (2, 11)


def test_a_failing_on_signal_answers_500_so_the_providers_retry_can_signal_again() -> None:
    calls: list[JobSignal] = []

    def flaky(signal: JobSignal) -> None:
        calls.append(signal)
        if len(calls) == 1:
            raise RuntimeError("queue full")

    receiver = WebhookReceiver(replicate_secret=SECRET, fal_keys=None, on_signal=flaky,
                               clock=lambda: NOW)
    with WebhookServer(receiver) as server, httpx.Client(timeout=5) as http:
        first = http.post(server.replicate_url, content=BODY, headers=replicate_headers())
        retry = http.post(server.replicate_url, content=BODY, headers=replicate_headers())
    assert (first.status_code, retry.status_code) == (500, 200)
    assert len(calls) == 2 and receiver.stats.signal_errors == 1


def test_dedupe_memory_is_bounded(signals_seen: list[JobSignal]) -> None:
    receiver = WebhookReceiver(replicate_secret=SECRET, fal_keys=None, max_remembered=4,
                               on_signal=signals_seen.append, clock=lambda: NOW)
    with WebhookServer(receiver) as server, httpx.Client(timeout=5) as http:
        for i in [0, 1, 2, 3, 0]:  # each delivery remembers 2 keys: id and (job, status)
            body = json.dumps({"id": f"p{i}", "status": "succeeded"}).encode()
            http.post(server.replicate_url, content=body,
                      headers=replicate_headers(body, msg_id=f"m{i}"))
        assert receiver.remembered == 4
    # p0 was evicted by p2 and p3, so its redelivery signals again (the ledger dedupes it)
    assert [s.job_id for s in signals_seen] == ["p0", "p1", "p2", "p3", "p0"]


def test_unconfigured_providers_have_no_route(signals_seen: list[JobSignal]) -> None:
    with _server(signals_seen) as server, httpx.Client(timeout=5) as http:
        assert http.post(server.fal_url, content=FAL_BODY).status_code == 404
        assert http.get(server.replicate_url).status_code == 405
        assert server.url.startswith("http://127.0.0.1:")


async def test_fal_deliveries_over_http_bind_the_signed_request_id_to_the_body(
        jwks_server: JwksServer, signals_seen: list[JobSignal]) -> None:
    keys = JwksKeys(jwks_server.url)
    other = json.dumps({"request_id": "req-other", "status": "OK"}).encode()
    with _server(signals_seen, replicate_secret=None, fal_keys=keys) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            good = await http.post(server.fal_url, content=FAL_BODY,
                                   headers=fal_headers(FAL_KEY, FAL_BODY))
            again = await http.post(server.fal_url, content=FAL_BODY,
                                    headers=fal_headers(FAL_KEY, FAL_BODY))
            mismatch = await http.post(server.fal_url, content=other,
                                       headers=fal_headers(FAL_KEY, other))
            forged = await http.post(server.fal_url, content=FAL_BODY,
                                     headers=fal_headers(OTHER_FAL_KEY, FAL_BODY))
    assert (good.status_code, again.status_code) == (200, 200)
    assert (mismatch.status_code, mismatch.json()["reason"]) == (400, "bad_body")
    assert (forged.status_code, forged.json()["reason"]) == (401, "bad_signature")
    assert signals_seen == [JobSignal("fal", "req-1", "OK")]


def test_the_receiver_verifies_a_utf8_webhook_id_from_the_raw_header_bytes(
        signals_seen: list[JobSignal]) -> None:
    with _server(signals_seen) as server, httpx.Client(timeout=5) as http:
        signed_over_latin1_reading = http.post(
            server.replicate_url, content=BODY,
            headers=on_the_wire(utf8_replicate_headers(LATIN1_READING)))
        signed_over_utf8 = http.post(server.replicate_url, content=BODY,
                                     headers=on_the_wire(utf8_replicate_headers()))
    assert (signed_over_latin1_reading.status_code, signed_over_utf8.status_code) == (401, 200)
    assert signals_seen == [JobSignal("replicate", "pred_1", "succeeded")]


def test_the_receiver_verifies_a_utf8_fal_request_id_from_the_raw_header_bytes(
        jwks_server: JwksServer, signals_seen: list[JobSignal]) -> None:
    request_id = "req-ü✓"
    body = json.dumps({"request_id": request_id, "status": "OK"}).encode()
    signed = fal_headers(FAL_KEY, body, request_id=request_id)  # signed over UTF-8 text
    wire = on_the_wire({name: value.encode() for name, value in signed.items()})
    with _server(signals_seen, replicate_secret=None, fal_keys=JwksKeys(jwks_server.url)
                 ) as server, httpx.Client(timeout=5) as http:
        reply = http.post(server.fal_url, content=body, headers=wire)
    assert reply.status_code == 200
    assert signals_seen == [JobSignal("fal", request_id, "OK")]


# --------------------------------------------------------------------------------------------
# JobSignals: what the runner waits on between polls
# --------------------------------------------------------------------------------------------


async def test_job_signals_wait_returns_true_soon_after_a_signal_from_another_thread() -> None:
    signals = JobSignals()
    threading.Timer(0.05, signals.signal, [JobSignal("fal", "j1", "OK")]).start()
    started = time.monotonic()
    assert await signals.wait("fal", "j1", timeout=5) is True
    assert time.monotonic() - started < 1.0
    assert len(signals) == 0


async def test_job_signals_wait_returns_false_on_timeout_and_ignores_other_jobs() -> None:
    signals = JobSignals()
    signals.signal(JobSignal("fal", "other", "OK"))
    signals.signal(JobSignal("replicate", "j1", "succeeded"))  # same id, other provider
    started = time.monotonic()
    assert await signals.wait("fal", "j1", timeout=0.1) is False
    assert 0.09 <= time.monotonic() - started < 1.0
    signals.forget("fal", "other")
    signals.forget("replicate", "j1")
    assert len(signals) == 0


async def test_a_signal_that_lands_between_polls_makes_the_next_wait_immediate() -> None:
    signals = JobSignals(max_pending=2)
    signals.signal(JobSignal("replicate", "a", "succeeded"))
    assert await signals.wait("replicate", "a", timeout=5) is True
    assert await signals.wait("replicate", "a", timeout=0) is False  # consumed once
    for job in "xyz":
        signals.signal(JobSignal("replicate", job, "succeeded"))
    assert len(signals) == 2  # bounded: "x" was dropped
    waiters = [asyncio.create_task(signals.wait("fal", "b", timeout=5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    signals.signal(JobSignal("fal", "b", "OK"))
    assert await asyncio.gather(*waiters) == [True, True, True]


# --------------------------------------------------------------------------------------------
# end to end with the provider emulator and the real SDKs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, seed=7) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").faults.clear()


@pytest.fixture
def rep(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> replicate.Client:
    monkeypatch.setenv("SSL_CERT_FILE", emu.ca_pem)
    return replicate.Client(api_token="r8_test", base_url=emu.replicate_base_url)


@pytest.fixture
def fal(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> fal_client.AsyncClient:
    """A fal client on the emulator (see :func:`tests.emulated.point_fal_at`)."""
    point_fal_at(emu, monkeypatch)
    return fal_client.AsyncClient(key="key-id:key-secret")


def _attempts(emu: Emulator, job_id: str, count: int, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [a for a in emu.webhook_attempts if a.job_id == job_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


async def test_replicate_end_to_end_signal_duplicate_drop_and_tamper(
        emu: Emulator, rep: replicate.Client) -> None:
    secret = rep.webhooks.default.secret().key  # what a user configures, fetched via the SDK
    signals = JobSignals()
    seen: list[JobSignal] = []

    def on_signal(signal: JobSignal) -> None:
        seen.append(signal)
        signals.signal(signal)

    receiver = WebhookReceiver(replicate_secret=secret, fal_keys=None, on_signal=on_signal)
    with WebhookServer(receiver) as server:
        def create() -> Any:
            return rep.predictions.create(model="emu/enhance", input={"prompt": "a red mug"},
                                          webhook=server.url + "/webhooks/replicate",
                                          webhook_events_filter=["completed"])

        # one delivery -> one signal; the runner's wait returns early and its poll sees the end
        plain = await asyncio.to_thread(create)
        assert await signals.wait("replicate", plain.id, timeout=5) is True
        await plain.async_reload()
        assert plain.status == "succeeded"
        assert seen == [JobSignal("replicate", plain.id, "succeeded")]

        emu.faults.add("replicate", "duplicate_webhook")
        twice = await asyncio.to_thread(create)
        attempts = await asyncio.to_thread(_attempts, emu, twice.id, 2)
        assert [a.status for a in attempts] == [200, 200]
        assert [s for s in seen if s.job_id == twice.id] == [
            JobSignal("replicate", twice.id, "succeeded")]
        assert receiver.stats.duplicate == 1

        emu.faults.add("replicate", "drop_webhook")
        dropped = await asyncio.to_thread(create)
        assert await signals.wait("replicate", dropped.id, timeout=0.3) is False
        deadline = time.monotonic() + 5
        while dropped.status != "succeeded" and time.monotonic() < deadline:
            await dropped.async_reload()  # polling alone finishes it
        assert dropped.status == "succeeded"
        assert not [s for s in seen if s.job_id == dropped.id]
        assert not [a for a in emu.webhook_attempts if a.job_id == dropped.id]

        # a tampered delivery of a real prediction body: 4xx, no signal
        async with httpx.AsyncClient(timeout=5) as http:
            body = (await http.get(f"{emu.replicate_base_url}/v1/predictions/{dropped.id}",
                                   headers={"Authorization": "Bearer r8_test"})).content
            ts = int(time.time())
            good = replicate_sig(base64.b64decode(secret.removeprefix("whsec_")), "msg_t", ts,
                                 body)
            digest = bytearray(base64.b64decode(good.removeprefix("v1,")))
            digest[0] ^= 0x01
            tampered = "v1," + base64.b64encode(bytes(digest)).decode()
            reply = await http.post(server.replicate_url, content=body, headers={
                "webhook-id": "msg_t", "webhook-timestamp": str(ts),
                "webhook-signature": tampered})
        assert reply.status_code == 401
        assert not [s for s in seen if s.job_id == dropped.id]
    assert receiver.stats.accepted == 2 and receiver.stats.rejected == {"bad_signature": 1}
    assert len(seen) == 2


async def test_fal_end_to_end_signal_duplicate_drop_and_tamper(
        emu: Emulator, fal: fal_client.AsyncClient) -> None:
    signals = JobSignals()
    seen: list[JobSignal] = []

    def on_signal(signal: JobSignal) -> None:
        seen.append(signal)
        signals.signal(signal)

    keys = JwksKeys(emu.fal_jwks_url, verify=emu.ca_pem)
    receiver = WebhookReceiver(replicate_secret=None, fal_keys=keys, on_signal=on_signal)
    with WebhookServer(receiver) as server:
        async def submit() -> fal_client.AsyncRequestHandle:
            return await fal.submit("fal-ai/flux/dev", {"prompt": "a red mug"},
                                    webhook_url=server.url + "/webhooks/fal")

        plain = (await submit()).request_id
        assert await signals.wait("fal", plain, timeout=5) is True
        assert seen == [JobSignal("fal", plain, "OK")]

        emu.faults.add("fal", "duplicate_webhook")
        twice = (await submit()).request_id
        attempts = await asyncio.to_thread(_attempts, emu, twice, 2)
        assert [a.status for a in attempts] == [200, 200]
        assert [s for s in seen if s.job_id == twice] == [JobSignal("fal", twice, "OK")]
        assert receiver.stats.duplicate == 1

        emu.faults.add("fal", "drop_webhook")
        handle = await submit()
        dropped = handle.request_id
        assert await signals.wait("fal", dropped, timeout=0.3) is False
        deadline = time.monotonic() + 5
        while not isinstance(await handle.status(), fal_client.Completed):  # polling finishes it
            assert time.monotonic() < deadline
        assert not [s for s in seen if s.job_id == dropped]
        assert not [a for a in emu.webhook_attempts if a.job_id == dropped]

        body = json.dumps({"request_id": dropped, "status": "OK", "payload": {}}).encode()
        async with httpx.AsyncClient(timeout=5) as http:
            forged = await http.post(server.fal_url, content=body, headers=fal_headers(
                OTHER_FAL_KEY, body, request_id=dropped, ts=int(time.time())))
        assert forged.status_code == 401
    assert keys.fetches == 2  # first delivery, then one refetch for the forged one
    assert receiver.stats.accepted == 2 and receiver.stats.rejected == {"bad_signature": 1}
    assert len(seen) == 2


# --------------------------------------------------------------------------------------------
# static check: signatures are compared in constant time only
# --------------------------------------------------------------------------------------------

_SECRET_NAMES = r"\w*(?:sig|signature|digest|mac|expected|candidate)\w*"
_EQUALITY_ON_SECRETS = re.compile(
    rf"\b{_SECRET_NAMES}\s*(?:==|!=)|(?:==|!=)\s*{_SECRET_NAMES}\b", re.IGNORECASE)


def test_no_equality_operator_touches_a_signature_or_digest() -> None:
    assert _EQUALITY_ON_SECRETS.search("if sig == expected:")
    assert _EQUALITY_ON_SECRETS.search("ok = computed_digest != header_signature")
    assert _EQUALITY_ON_SECRETS.search("return expected==candidate")
    source = Path(__file__).resolve().parent.parent.joinpath("pixellab", "webhooks.py")
    code = source.read_text()
    offending = [line for line in code.splitlines() if _EQUALITY_ON_SECRETS.search(line)]
    assert offending == []
    assert "hmac.compare_digest(" in code and ".verify(signature, message)" in code


def test_the_default_fal_jwks_url_is_on_the_rest_host_fal_client_uses() -> None:
    import ast
    from pathlib import Path

    import fal_client.client

    from pixellab.webhooks import DEFAULT_FAL_JWKS_URL

    # read from fal-client's source: tests patch the module's constant at run time
    tree = ast.parse(Path(fal_client.client.__file__).read_text(encoding="utf-8"))
    [shipped] = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "REST_URL" for t in node.targets)
                 and isinstance(node.value, ast.Constant)]
    assert DEFAULT_FAL_JWKS_URL == f"{shipped}/.well-known/jwks.json"
