"""Fuzz targets: webhook headers, bodies and secrets, as a stranger on the internet sends them.

Every target states: whatever arrives, the outcome is a result or a one-line
:class:`~pixellab.errors.PixellabError` (a :class:`~pixellab.webhooks.WebhookRejected` with a
known reason), never another exception; an accepted delivery carries the id that was signed
(no mutation of a signed delivery is accepted as another one); and a delivery signed correctly,
with any id, timestamp within tolerance, body and key, is accepted (the round trip).

Signatures are made here with ``hmac`` / ``cryptography``, independently of the code under
test. The receiver is driven through its ASGI interface, with raw header bytes: uvicorn's h11
refuses many of these requests before the app sees them, but the app may sit behind another
server, and the raw bytes are exactly what the app must cope with.

Every case a run finds is saved under ``corpus/webhooks/`` (JSON: the target, its input with
bytes as base64, the expected outcome) and replayed by
:func:`test_saved_webhook_cases_end_as_they_should`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from pixellab.errors import PixellabError
from pixellab.webhooks import (
    REJECTION_STATUS,
    JobSignal,
    JwksKeys,
    WebhookReceiver,
    WebhookRejected,
    parse_fal_body,
    parse_replicate_body,
    verify_fal,
    verify_replicate,
)
from tests.fuzz.conftest import corpus_params, result_or_clear_error

NOW = 1_700_000_000
TOLERANCE_S = 300
KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
FAL_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))  # fixed: reproducible
REPLICATE_NAMES = ("webhook-id", "webhook-timestamp", "webhook-signature")
FAL_NAMES = ("x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp",
             "x-fal-webhook-signature")

Headers = dict[str, str | bytes]


# --------------------------------------------------------------------------------------------
# signing (independent of the code under test)
# --------------------------------------------------------------------------------------------


def wire(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def replicate_signature(key: bytes, webhook_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    digest = hmac.new(key, webhook_id + b"." + timestamp + b"." + body, hashlib.sha256).digest()
    return b"v1," + base64.b64encode(digest)


def fal_signature(request_id: bytes, user_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    message = b"\n".join([request_id, user_id, timestamp,
                          hashlib.sha256(body).hexdigest().encode()])
    return FAL_KEY.sign(message).hex().encode()


def _jwks() -> dict[str, Any]:
    raw = FAL_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig",
                      "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}]}


async def _serve_jwks(url: str) -> Any:  # JwksKeys' documented fetch hook: no network here
    return _jwks()


FAL_KEYS = JwksKeys("https://fal.invalid/jwks.json", fetch=_serve_jwks)


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

ODD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e999", "-0", "0", "+12", " 12", "12 ", "0x10",
               "1_000", "١٢٣", "１２３", "²", "\u00a012", "9" * 16, "", " ", "\t", "\x00",
               str(NOW), f" {NOW}\t", f"{NOW}.0", f"-{NOW}"]
#: text a header cannot be on the wire as it is: lone surrogates, UTF-8 read as latin-1
ODD_TEXT = ["\ud800", "msg_\udcff", "msg_ü✓", "msg_ü✓".encode().decode("latin-1"), "\x00",
            "a\r\nb", "\u212a", "\ufeffmsg"]

#: header text of every kind: odd numbers, any code point (lone surrogates included), huge
header_text = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(), max_size=30),
    st.integers(1_000, 100_000).map(lambda n: "9" * n),
    st.integers(1_000, 100_000).map(lambda n: "v1," + "A" * n),
    st.builds(lambda entries: " ".join(entries),
              st.lists(st.sampled_from(["v1,", "v1,AAAA", "v1a,xx", "v1,@@", ",", "v1"]),
                       max_size=4)),
)
#: a value as text or as bytes (UTF-8, surrogates passed through, or any bytes at all)
header_value = st.one_of(header_text,
                         header_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
                         st.binary(max_size=30))


def case_variants(name: str) -> st.SearchStrategy[str]:
    """``name`` with each letter in either case."""
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True)))


def header_names(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known).flatmap(case_variants), st.text(max_size=12))


#: an id as a sender has it: no space or tab at either end (HTTP strips those), not empty
sent_ids = st.one_of(st.binary(min_size=1, max_size=40), st.text(min_size=1, max_size=40)).filter(
    lambda value: wire(value).strip(b" \t") == wire(value))
bodies = st.one_of(st.binary(max_size=200),
                   st.sampled_from([b"", b"{}", b'{"id": "p", "status": "succeeded"}']))


def as_given(draw: Callable[[st.SearchStrategy[bool]], bool],
             value: str | bytes) -> str | bytes:
    """``value`` as bytes, or as the text it encodes when it is UTF-8 and a coin says so."""
    if isinstance(value, bytes) and draw(st.booleans()):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return value


@st.composite
def mutated(draw: st.DrawFn, signed: list[tuple[str, str | bytes]],
            known: tuple[str, ...]) -> Headers:
    """``signed`` headers, each as text or bytes, after a few drops, replacements and
    additions (case variants of a known name included) at any position."""
    pairs = [(name, as_given(draw, value)) for name, value in signed]
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop" and pairs:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        elif action == "replace" and pairs:
            at = draw(st.integers(0, len(pairs) - 1))
            pairs[at] = (pairs[at][0], draw(header_value | st.sampled_from(ODD_TEXT)))
        else:
            pairs.insert(draw(st.integers(0, len(pairs))),
                         (draw(header_names(known)), draw(header_value)))
    return dict(pairs)


def _signed(replicate: bool, body: bytes, first_id: bytes, user_id: bytes,
            timestamp: bytes) -> tuple[Headers, bytes, bytes]:
    if replicate:
        return ({"webhook-id": first_id, "webhook-timestamp": timestamp,
                 "webhook-signature": replicate_signature(KEY, first_id, timestamp, body)},
                body, first_id)
    return ({"x-fal-webhook-request-id": first_id, "x-fal-webhook-user-id": user_id,
             "x-fal-webhook-timestamp": timestamp,
             "x-fal-webhook-signature": fal_signature(first_id, user_id, timestamp, body)},
            body, first_id)


@st.composite
def signed_deliveries(draw: st.DrawFn, replicate: bool,
                      spread_s: int = TOLERANCE_S) -> tuple[Headers, bytes, bytes]:
    """(headers, body, signed id): a Replicate or fal delivery signed as the provider signs
    it, its timestamp up to ``spread_s`` from now (stale beyond ``TOLERANCE_S``)."""
    body, first_id, user_id = draw(bodies), wire(draw(sent_ids)), wire(draw(sent_ids))
    timestamp = str(NOW + draw(st.integers(-spread_s, spread_s))).encode()
    return _signed(replicate, body, first_id, user_id, timestamp)


@st.composite
def mutated_deliveries(draw: st.DrawFn, replicate: bool) -> tuple[Headers, bytes, bytes]:
    """(headers, body, signed id): a signed delivery, fresh or stale, then mutated."""
    headers, body, signed_id = draw(signed_deliveries(replicate, spread_s=2 * TOLERANCE_S))
    names = REPLICATE_NAMES if replicate else FAL_NAMES
    return draw(mutated(list(headers.items()), names)), body, signed_id


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters()),
    _containers, max_leaves=12)


@st.composite
def json_payloads(draw: st.DrawFn) -> bytes:
    """A provider-shaped JSON object with fields of any type, as UTF-8 or not."""
    document = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    for name in ("id", "status", "request_id"):
        if draw(st.booleans()):
            document[name] = draw(st.one_of(st.sampled_from([*ODD_TEXT, "succeeded", "OK"]),
                                            st.text(st.characters(), max_size=300),
                                            json_values))
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8


def _nested(depth: int) -> bytes:
    return b'{"id": ' + b"[" * depth + b"]" * depth + b', "status": "succeeded"}'


payloads = st.one_of(st.binary(max_size=200), json_payloads(),
                     st.integers(0, 100_000).map(_nested))


# --------------------------------------------------------------------------------------------
# the properties, as functions the saved cases replay too
# --------------------------------------------------------------------------------------------


def note(outcome: object) -> None:
    """Count outcomes in ``--hypothesis-show-statistics``: a target that never accepts (or
    never rejects) tests less than it seems to."""
    if currently_in_test_context():
        event(f"rejected: {outcome.reason}" if isinstance(outcome, WebhookRejected)
              else outcome if isinstance(outcome, str) and outcome.startswith("HTTP ")
              else "accepted")


def assert_clear_rejection(outcome: object) -> None:
    assert isinstance(outcome, WebhookRejected), f"{type(outcome).__name__}: {outcome!r}"
    assert outcome.reason in REJECTION_STATUS, outcome.reason


def assert_usable_text(value: object) -> None:
    """A str that encodes as UTF-8, so logs, the ledger and notebooks can take it."""
    assert isinstance(value, str)
    value.encode("utf-8")


def check_replicate(headers: Headers, body: bytes, secret: str = SECRET,
                    signed_id: bytes | None = None) -> str | PixellabError:
    outcome = result_or_clear_error(
        lambda: verify_replicate(headers, body, secret, tolerance_s=TOLERANCE_S, now=NOW))
    note(outcome)
    if isinstance(outcome, PixellabError):
        assert_clear_rejection(outcome)
    else:
        assert_usable_text(outcome)
        if signed_id is not None:  # a mutation that still verifies must keep the signed id
            assert outcome == signed_id.decode("utf-8", "replace")
    return outcome


def check_fal(headers: Headers, body: bytes,
              signed_id: bytes | None = None) -> str | PixellabError:
    outcome = result_or_clear_error(lambda: asyncio.run(
        verify_fal(headers, body, FAL_KEYS, tolerance_s=TOLERANCE_S, now=NOW)))
    note(outcome)
    if isinstance(outcome, PixellabError):
        assert_clear_rejection(outcome)
    else:
        assert_usable_text(outcome)
        if signed_id is not None:
            assert outcome == signed_id.decode("utf-8", "replace")
    return outcome


def check_signal(outcome: JobSignal | PixellabError) -> None:
    note(outcome)
    if isinstance(outcome, PixellabError):
        assert isinstance(outcome, WebhookRejected) and outcome.reason == "bad_body", outcome
        return
    for value in (outcome.job_id, outcome.status):
        assert_usable_text(value)
        assert 0 < len(value) <= 256


def check_replicate_body(body: bytes) -> JobSignal | PixellabError:
    outcome = result_or_clear_error(lambda: parse_replicate_body(body))
    check_signal(outcome)
    return outcome


def check_fal_body(body: bytes, request_id: str) -> JobSignal | PixellabError:
    outcome = result_or_clear_error(lambda: parse_fal_body(body, request_id))
    check_signal(outcome)
    if isinstance(outcome, JobSignal):
        assert outcome.job_id == request_id
    return outcome


RECEIVER = WebhookReceiver(replicate_secret=SECRET, fal_keys=FAL_KEYS, on_signal=lambda s: None,
                           tolerance_s=TOLERANCE_S, clock=lambda: NOW)


async def _asgi_post(path: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> tuple[int, bytes]:
    """POST through the receiver's ASGI interface; an exception in the app propagates."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8787)}
    delivered = False
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await RECEIVER.app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def check_receiver(path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """The receiver answers 200 or a 4xx with a known reason; it never raises or answers 5xx
    (its JWKS is always reachable here)."""
    status, answer = asyncio.run(_asgi_post(path, headers, body))
    document = json.loads(answer)
    note(f"HTTP {status} {document.get('reason', '')}".rstrip())
    if status == 200:
        assert document["ok"] is True
    else:
        assert 400 <= status < 500, (status, document)
        assert REJECTION_STATUS[document["reason"]] == status
    return status


# --------------------------------------------------------------------------------------------
# the targets
# --------------------------------------------------------------------------------------------


@given(mutated_deliveries(replicate=True))
def test_any_replicate_headers_end_in_the_signed_id_or_a_clear_rejection(
        delivery: tuple[Headers, bytes, bytes]) -> None:
    headers, body, signed_id = delivery
    check_replicate(headers, body, signed_id=signed_id)


@given(st.dictionaries(header_names(REPLICATE_NAMES), header_value, max_size=5), bodies)
def test_unsigned_replicate_headers_are_rejected_clearly(headers: Headers, body: bytes) -> None:
    assert isinstance(check_replicate(headers, body), WebhookRejected)


@given(sent_ids, st.integers(-TOLERANCE_S, TOLERANCE_S), bodies,
       st.binary(min_size=1, max_size=64), st.booleans(), st.booleans(),
       st.sampled_from(["", " ", "\t", "\n"]), st.lists(st.sampled_from(
           ["v1,AAAA", "v1a,abc", "v2,xyz", "v1,@@"]), max_size=2))
def test_a_correctly_signed_replicate_delivery_is_accepted(
        webhook_id: str | bytes, offset: int, body: bytes, key: bytes, prefixed: bool,
        padded: bool, around: str, other_entries: list[str]) -> None:
    encoded = base64.b64encode(key).decode()
    secret = around + ("whsec_" if prefixed else "") + (encoded if padded
                                                        else encoded.rstrip("=")) + around
    timestamp = str(NOW + offset)
    signature = replicate_signature(key, wire(webhook_id), timestamp.encode(), body).decode()
    headers: Headers = {"webhook-id": webhook_id, "webhook-timestamp": timestamp,
                        "webhook-signature": " ".join([*other_entries, signature])}
    expected = webhook_id if isinstance(webhook_id, str) else webhook_id.decode("utf-8",
                                                                                "replace")
    assert check_replicate(headers, body, secret) == expected


@given(st.text(st.characters(), max_size=80))
def test_any_secret_decodes_or_is_refused_without_echoing_it(secret: str) -> None:
    timestamp = str(NOW).encode()
    headers: Headers = {"webhook-id": b"msg_1", "webhook-timestamp": timestamp,
                        "webhook-signature": replicate_signature(KEY, b"msg_1", timestamp,
                                                                 b"{}")}
    outcome = check_replicate(headers, b"{}", secret)
    if isinstance(outcome, WebhookRejected) and outcome.reason == "bad_secret":
        assert str(outcome) == "the Replicate webhook secret is not 'whsec_<base64>'"
    elif isinstance(outcome, WebhookRejected):
        assert outcome.reason == "bad_signature"  # a usable key, just not this one


#: half the time one of the odd values, so 200 examples meet each of them a few times
odd_or_any_value = st.booleans().flatmap(
    lambda odd: st.sampled_from(ODD_TEXT + ODD_NUMBERS) if odd else header_value)


@pytest.mark.parametrize("provider", ["replicate", "fal"])
@given(st.data())
def test_one_signed_header_changed_to_anything_is_rejected_or_still_the_same_delivery(
        provider: str, data: st.DataObject) -> None:
    replicate = provider == "replicate"
    signed, body, signed_id = data.draw(signed_deliveries(replicate))
    headers = {key: as_given(data.draw, value) for key, value in signed.items()}
    name = data.draw(st.sampled_from(REPLICATE_NAMES if replicate else FAL_NAMES))
    headers[name] = data.draw(odd_or_any_value)
    if replicate:
        check_replicate(headers, body, signed_id=signed_id)
    else:
        check_fal(headers, body, signed_id=signed_id)


@given(mutated_deliveries(replicate=False))
def test_any_fal_headers_end_in_the_signed_request_id_or_a_clear_rejection(
        delivery: tuple[Headers, bytes, bytes]) -> None:
    headers, body, signed_id = delivery
    check_fal(headers, body, signed_id=signed_id)


@given(sent_ids, sent_ids, st.integers(-TOLERANCE_S, TOLERANCE_S), bodies, st.booleans())
def test_a_correctly_signed_fal_delivery_is_accepted(
        request_id: str | bytes, user_id: str | bytes, offset: int, body: bytes,
        as_text: bool) -> None:
    timestamp = str(NOW + offset).encode()
    signature = fal_signature(wire(request_id), wire(user_id), timestamp, body)
    headers: Headers = {"X-Fal-Webhook-Request-Id": request_id, "X-Fal-Webhook-User-Id": user_id,
                        "X-Fal-Webhook-Timestamp": timestamp.decode() if as_text else timestamp,
                        "X-Fal-Webhook-Signature": signature.decode() if as_text else signature}
    assert check_fal(headers, body) == wire(request_id).decode("utf-8", "replace")


@given(payloads)
def test_any_replicate_body_becomes_a_usable_signal_or_a_bad_body(body: bytes) -> None:
    check_replicate_body(body)


@given(payloads, st.text(min_size=1, max_size=300))
def test_any_fal_body_becomes_a_signal_for_the_signed_id_or_a_bad_body(
        body: bytes, request_id: str) -> None:
    check_fal_body(body, request_id)


raw_names = st.one_of(
    st.sampled_from([b"content-length", b"content-type", *(n.encode() for n in REPLICATE_NAMES),
                     *(n.encode() for n in FAL_NAMES)]),
    st.binary(min_size=1, max_size=12).map(bytes.lower))
raw_values = header_value.map(lambda v: v if isinstance(v, bytes)
                             else v.encode("utf-8", "surrogatepass"))
#: what a Content-Length header may say: the truth, or digits in other scripts, signs, too many
odd_lengths = st.one_of(st.sampled_from([b"\xb2", "١".encode(), b"1" * 5000, b"0" * 5000 + b"1",
                                         b" 0002 ", b"-1", b"+1", b"1e3", b"", b"1, 1"]),
                        st.binary(max_size=8))


@st.composite
def asgi_requests(draw: st.DrawFn) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """(path, raw headers, body): signed deliveries of either provider, with raw header
    bytes mutated, duplicated, dropped, and a Content-Length that may lie or be nonsense."""
    replicate = draw(st.booleans())
    headers, body, _ = draw(mutated_deliveries(replicate))
    raw = [(name.lower().encode("utf-8", "surrogatepass"),
            value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass"))
           for name, value in headers.items()]
    if draw(st.booleans()):
        length = str(len(body)).encode()
        raw.append((b"content-length", draw(st.just(length) | odd_lengths)))
    for _ in range(draw(st.integers(0, 3))):
        raw.insert(draw(st.integers(0, len(raw))), (draw(raw_names), draw(raw_values)))
    return ("/webhooks/replicate" if replicate else "/webhooks/fal"), raw, body


@given(asgi_requests())
def test_the_receiver_answers_any_request_with_200_or_a_4xx_reason(
        request: tuple[str, list[tuple[bytes, bytes]], bytes]) -> None:
    check_receiver(*request)


# --------------------------------------------------------------------------------------------
# saved cases
# --------------------------------------------------------------------------------------------


def _headers(entries: list[dict[str, str]]) -> Headers:
    """``[{"name": ..., "text": ...} | {"name": ..., "base64": ...}]`` as a header mapping."""
    return {entry["name"]: entry["text"] if "text" in entry else base64.b64decode(entry["base64"])
            for entry in entries}


def _replay(case: dict[str, Any]) -> object:
    body = base64.b64decode(case.get("body_base64", ""))
    target = case["target"]
    if target == "verify_replicate":
        return check_replicate(_headers(case["headers"]), body, case.get("secret", SECRET))
    if target == "verify_fal":
        return check_fal(_headers(case["headers"]), body)
    if target == "parse_replicate_body":
        return check_replicate_body(body)
    if target == "parse_fal_body":
        return check_fal_body(body, case["request_id"])
    if target == "receiver":
        raw = [(base64.b64decode(name), base64.b64decode(value))
               for name, value in case["raw_headers_base64"]]
        return check_receiver(case["path"], raw, body)
    raise AssertionError(f"unknown target {target!r}")


@pytest.mark.parametrize("case", corpus_params("webhooks"))
def test_saved_webhook_cases_end_as_they_should(case: Path) -> None:
    saved = json.loads(case.read_text(encoding="utf-8"))
    outcome = _replay(saved)
    expected = saved["expect"]
    if "reason" in expected:
        assert isinstance(outcome, WebhookRejected) and outcome.reason == expected["reason"]
    elif "status" in expected:
        assert outcome == expected["status"]
    else:
        assert outcome == expected["result"]
