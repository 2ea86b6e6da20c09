"""Webhook receiver: verify a provider's delivery, deduplicate it, signal "job X changed".

Why: polling alone finishes every job (reliability.md §3, W3), but a webhook lets the runner
poll *now* instead of after its poll interval. So webhooks here are **hints**: a delivery is
verified (Replicate: Standard Webhooks HMAC; fal: Ed25519 against a JWKS), deduplicated and
turned into a :class:`JobSignal`; the runner then re-fetches the job from the provider by id
and never trusts the body (providers.md §1.9, §2.5).

Pieces:

* :func:`verify_replicate` / :func:`verify_fal` - pure verifiers, raising
  :class:`WebhookRejected` with a stable ``reason`` code. Constant-time comparison only
  (``hmac.compare_digest`` / the Ed25519 library verify); the Replicate secret never appears in
  an exception message. Signed headers are taken as the bytes the sender sent (a ``str`` value
  is the sender's text, encoded as UTF-8; Starlette's latin-1 ``str`` reading is bypassed), so
  a non-ASCII id verifies; ids come back as text with invalid UTF-8 replaced by U+FFFD.
* :func:`parse_replicate_body` / :func:`parse_fal_body` - a verified body to a :class:`JobSignal`.
* :class:`JwksKeys` - fal's public keys, fetched from a configurable JWKS URL and cached.
* :class:`WebhookReceiver` - a Starlette app: ``POST /webhooks/replicate`` and
  ``POST /webhooks/fal``; verifies **before** parsing JSON; bodies over 1 MiB get 413 before any
  verification work; calls ``on_signal`` once per (provider, job id, status).
* :class:`WebhookServer` - runs a receiver with uvicorn on a loopback port in a thread.
* :class:`JobSignals` - where the runner waits: ``await signals.wait(provider, job_id, t)``
  replaces ``asyncio.sleep(t)`` between polls and returns early when a webhook arrives.

Dedupe here is in memory and bounded (an LRU of ``max_remembered`` keys): it stops duplicate
deliveries from causing duplicate polls, nothing more. Durable, exactly-once application of a
job's terminal state is the ledger's job (the runner applies a job's terminal state once,
whatever the number of signals) - fal retries for 2 h and a process restart forgets this LRU.

Rejection reasons and the HTTP status the receiver answers with:

* ``missing_header`` (400): a required signature header is absent or empty.
* ``bad_body`` (400): the *verified* body is not a JSON object with the job id and status.
* ``bad_signature`` (401): no signature entry verifies (malformed, tampered, wrong key).
* ``stale_timestamp`` (401): the timestamp is not an integer or is over ``tolerance_s`` off.
* ``too_large`` (413): the body is over ``max_body_bytes``; checked before any verification.
* ``bad_secret`` (500): the configured Replicate secret is unusable (raised at set-up).
* ``unknown_key`` (503): the JWKS holds no usable Ed25519 key - our configuration, so the
  provider is asked to retry later.
* ``keys_unavailable`` (503): the JWKS could not be fetched and no keys are cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.datastructures import Headers as StarletteHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pixellab.errors import REJECTION_STATUS, WebhookRejected
from pixellab.settings import current as current_settings

__all__ = [
    "MAX_BODY_BYTES",
    "REJECTION_STATUS",
    "JobSignal",
    "JobSignals",
    "JwksKeys",
    "WebhookReceiver",
    "WebhookRejected",
    "WebhookServer",
    "WebhookStats",
    "parse_fal_body",
    "parse_replicate_body",
    "verify_fal",
    "verify_replicate",
]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Largest webhook body accepted (1 MiB); larger ones get 413 before any verification work."""

_REPLICATE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_FAL_HEADERS = ("x-fal-webhook-request-id", "x-fal-webhook-user-id",
                "x-fal-webhook-timestamp", "x-fal-webhook-signature")
_TIMESTAMP = re.compile(rb"[0-9]{1,15}")
_CONTENT_LENGTH = re.compile(r"[ \t]*([0-9]+)[ \t]*")
_MAX_JWKS_BYTES = 256 * 1024
_MAX_ID_CHARS = 256





# --- verification ----------------------------------------------------------------------------


HeaderValue = str | bytes
"""A header value: ``bytes`` as they were on the wire, or ``str``, the text the sender had."""


def _wire_headers(headers: Mapping[str, HeaderValue]) -> dict[str, HeaderValue]:
    """``headers`` under lower-case names; of a name given twice (in any case) the first wins.

    Starlette's and httpx's ``Headers`` are read from ``.raw``, the bytes as received: their
    ``str`` values are a latin-1 (Starlette) or guessed (httpx) reading of those bytes, and a
    sender signs the bytes it sent - UTF-8 for any text beyond ASCII - so re-encoding such a
    ``str`` would sign other bytes for any non-ASCII id. First wins, as ``Headers.get`` does.
    """
    pairs: Iterable[tuple[str | bytes, HeaderValue]]
    if isinstance(headers, StarletteHeaders | httpx.Headers):
        pairs = headers.raw
    else:
        pairs = headers.items()
    found: dict[str, HeaderValue] = {}
    for name, value in pairs:
        key = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        found.setdefault(key, value)
    return found


def _wire_bytes(name: str, value: HeaderValue) -> bytes:
    """The bytes the sender signed for header ``name``: ``bytes`` as they are, ``str`` encoded
    as UTF-8; HTTP's optional whitespace around a value (space, tab) is not part of it."""
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no sender could have signed this text
            raise WebhookRejected("bad_signature",
                                  f"webhook header {name!r} is not UTF-8 text") from None
    elif not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"webhook header {name!r} must be str or bytes, "
                        f"not {type(value).__name__}")
    return bytes(value).strip(b" \t")


def _required(headers: Mapping[str, HeaderValue], names: tuple[str, ...]) -> list[bytes]:
    found = _wire_headers(headers)
    values = []
    for name in names:
        value = _wire_bytes(name, found.get(name, b""))
        if not value:
            raise WebhookRejected("missing_header", f"webhook header {name!r} is missing")
        values.append(value)
    return values


def _id_text(raw: bytes) -> str:
    """A signed id as text for callers, logs and the ledger: UTF-8, invalid bytes replaced by
    U+FFFD (``errors="replace"``), so it always encodes again and never raises downstream."""
    return raw.decode("utf-8", errors="replace")


def _check_timestamp(raw: bytes, tolerance_s: float, now: float | None) -> None:
    if not _TIMESTAMP.fullmatch(raw):
        raise WebhookRejected("stale_timestamp", "webhook timestamp is not a unix time")
    current = time.time() if now is None else now
    if not abs(current - int(raw)) <= tolerance_s:  # written so that a NaN refuses
        raise WebhookRejected("stale_timestamp",
                              f"webhook timestamp is more than {tolerance_s:g} s from now")


def _decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (prefix optional, padding optional)."""
    encoded = secret.strip()
    if encoded.startswith("whsec_"):
        encoded = encoded[len("whsec_"):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        # Never echo the secret (or any part of it): messages reach logs and notebooks.
        raise WebhookRejected("bad_secret",
                              "the Replicate webhook secret is not 'whsec_<base64>'") from None
    return key


def _verify_replicate_key(headers: Mapping[str, HeaderValue], body: bytes, key: bytes, *,
                          tolerance_s: float, now: float | None) -> bytes:
    """:func:`verify_replicate` with the key decoded; returns the ``webhook-id`` bytes."""
    webhook_id, timestamp, signatures = _required(headers, _REPLICATE_HEADERS)
    _check_timestamp(timestamp, tolerance_s, now)
    expected = hmac.new(key, webhook_id + b"." + timestamp + b"." + bytes(body),
                        hashlib.sha256).digest()
    matched = False
    for entry in signatures.split():
        version, _, encoded = entry.partition(b",")
        if version != b"v1":  # v1a (ed25519) and unknown versions: not ours to check
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched = hmac.compare_digest(candidate, expected) or matched
    if not matched:
        raise WebhookRejected("bad_signature", "no webhook-signature entry matches")
    return webhook_id


def verify_replicate(headers: Mapping[str, HeaderValue], body: bytes, secret: str, *,
                     tolerance_s: float = 300, now: float | None = None) -> str:
    """Verify a Replicate (Standard Webhooks ``v1``) delivery; returns its ``webhook-id``.

    ``headers`` are matched case-insensitively (a name given twice: the first wins). The
    signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` in the bytes the sender sent:
    a ``bytes`` value is used as it is, a ``str`` value is the sender's text and is encoded as
    UTF-8, and Starlette's or httpx's ``Headers`` are read from their raw bytes (their ``str``
    values are a latin-1 reading that would refuse any non-ASCII id). ``body`` is the raw
    request body, exactly as received. ``secret`` is ``whsec_<base64>`` (the prefix may be left
    out). The signature header may list several space-separated ``v1,<base64>`` entries (key
    rotation): any may match. ``now`` (unix seconds) defaults to the wall clock; a timestamp
    more than ``tolerance_s`` in the past *or* the future is refused.

    The id is returned as text: UTF-8, with any invalid byte replaced by U+FFFD.

    Raises:
        WebhookRejected: ``missing_header``, ``stale_timestamp``, ``bad_signature`` or
            ``bad_secret``. The secret never appears in the message.
    """
    return _id_text(_verify_replicate_key(headers, body, _decode_secret(secret),
                                          tolerance_s=tolerance_s, now=now))


def _any_key_verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


async def verify_fal(headers: Mapping[str, HeaderValue], body: bytes, keys: JwksKeys, *,
                     tolerance_s: float = 300, now: float | None = None) -> str:
    """Verify a fal (Ed25519) delivery against the JWKS in ``keys``; returns the request id.

    Signed message: ``"\\n".join([request_id, user_id, timestamp, sha256(body).hexdigest()])``
    in UTF-8, built from the header bytes as received (``headers`` as for
    :func:`verify_replicate`: ``bytes`` as they are, ``str`` encoded as UTF-8, Starlette's and
    httpx's ``Headers`` from their raw bytes). Valid if any JWKS key verifies the hex
    ``X-Fal-Webhook-Signature``. When none does, the keys are refetched once (fal may have
    rotated them; see :meth:`JwksKeys.refresh`) and tried again. The request id is returned
    as text: UTF-8, with any invalid byte replaced by U+FFFD.

    Raises:
        WebhookRejected: ``missing_header``, ``stale_timestamp``, ``bad_signature``,
            ``unknown_key`` (the JWKS has no usable key) or ``keys_unavailable``.
    """
    request_id, user_id, timestamp, signature_hex = _required(headers, _FAL_HEADERS)
    _check_timestamp(timestamp, tolerance_s, now)
    try:
        signature = bytes.fromhex(signature_hex.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one
        raise WebhookRejected("bad_signature", "X-Fal-Webhook-Signature is not hex") from None
    message = b"\n".join([request_id, user_id, timestamp,
                          hashlib.sha256(body).hexdigest().encode()])
    known = await keys.keys()
    if _any_key_verifies(known, signature, message):
        return _id_text(request_id)
    if await keys.refresh():
        known = await keys.keys()
        if _any_key_verifies(known, signature, message):
            return _id_text(request_id)
    if not known:
        raise WebhookRejected("unknown_key", f"the JWKS at {keys.url} holds no Ed25519 key")
    raise WebhookRejected("bad_signature", "no fal webhook key verifies the signature")


# --- fal keys --------------------------------------------------------------------------------

JwksFetch = Callable[[str], Awaitable[Any]]
"""``await fetch(url)`` -> the parsed JWKS document (``{"keys": [...]}``)."""


def _parse_jwks(document: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 (OKP) signing keys of a JWKS document; other keys are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    found = []
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        if (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519") or jwk.get("use", "sig") != "sig":
            continue
        x = jwk.get("x")
        if not isinstance(x, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            found.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            continue
    return found


class JwksKeys:
    """fal's webhook public keys, fetched from ``url`` and cached for ``ttl_s`` (24 h).

    ``verify`` is httpx's TLS setting: ``True`` (system/certifi trust), a CA bundle path (the
    emulator's ``ca_pem``) or an :class:`ssl.SSLContext`. ``fetch`` replaces the HTTP fetch
    (tests); it gets the URL and returns the parsed document. ``clock`` is monotonic seconds.

    Concurrent callers on one event loop share one in-flight fetch. A failed fetch keeps serving
    the previous keys (retrying after ``refresh_cooldown_s``); with nothing cached it raises
    ``WebhookRejected("keys_unavailable")``. :attr:`fetches` counts fetch attempts.
    """

    def __init__(self, url: str, *, ttl_s: float = 86400,
                 verify: ssl.SSLContext | str | bool = True,
                 fetch: JwksFetch | None = None, refresh_cooldown_s: float = 60.0,
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.refresh_cooldown_s = refresh_cooldown_s
        self.fetches = 0
        self._verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=verify)
                                               if isinstance(verify, str) else verify)
        self._timeout_s = timeout_s
        self._fetch: JwksFetch = fetch or self._http_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._forced_at: float | None = None
        self._inflight: dict[asyncio.AbstractEventLoop, asyncio.Task[list[Ed25519PublicKey]]] = {}

    def __repr__(self) -> str:
        return f"JwksKeys({self.url!r}, keys={len(self._keys)}, fetches={self.fetches})"

    async def keys(self) -> list[Ed25519PublicKey]:
        """The cached keys, fetched first when there are none yet or they are older than the TTL."""
        with self._lock:
            if self._fetched_at is not None and self._clock() - self._fetched_at < self.ttl_s:
                return list(self._keys)
        return await self._load()

    async def refresh(self) -> bool:
        """Refetch now (a delivery verified under no cached key: keys may have rotated).

        At most once per ``refresh_cooldown_s``, so forged deliveries cannot turn into a
        stream of JWKS requests. Returns whether a fetch happened.
        """
        with self._lock:
            now = self._clock()
            if self._forced_at is not None and now - self._forced_at < self.refresh_cooldown_s:
                return False
            self._forced_at = now
        await self._load()
        return True

    async def _load(self) -> list[Ed25519PublicKey]:
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._inflight.get(loop)
            if task is None:
                task = loop.create_task(self._fetch_once())
                self._inflight[loop] = task

                def forget(_: object, loop: asyncio.AbstractEventLoop = loop) -> None:
                    with self._lock:
                        self._inflight.pop(loop, None)

                task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def _fetch_once(self) -> list[Ed25519PublicKey]:
        with self._lock:
            self.fetches += 1
        try:
            keys = _parse_jwks(await self._fetch(self.url))
        except Exception as exc:  # network, TLS, HTTP status, JSON, shape: all "no keys now"
            logger.warning("fal JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
            with self._lock:
                if self._fetched_at is not None:  # serve stale keys; try again after cooldown
                    self._fetched_at = (self._clock() - self.ttl_s
                                        + min(self.refresh_cooldown_s, self.ttl_s))
                    return list(self._keys)
            raise WebhookRejected("keys_unavailable",
                                  f"could not load fal webhook keys from {self.url} "
                                  f"({type(exc).__name__})") from None
        with self._lock:
            self._keys, self._fetched_at = keys, self._clock()
        if not keys:
            logger.warning("the JWKS at %s holds no Ed25519 key", self.url)
        return list(keys)

    async def _http_fetch(self, url: str) -> Any:
        async with httpx.AsyncClient(verify=self._verify, timeout=self._timeout_s,
                                     follow_redirects=False) as client:
            async with client.stream("GET", url, headers={"Accept": "application/json"}) as resp:
                resp.raise_for_status()
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > _MAX_JWKS_BYTES:
                        raise ValueError("JWKS document too large")
        return json.loads(bytes(data))


# --- receiver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSignal:
    """"Job ``job_id`` of ``provider`` changed". ``status`` is what the (verified) body says,
    terminal or not; it is used for dedupe and logs only - the runner re-fetches the job."""

    provider: str
    job_id: str
    status: str


@dataclass
class WebhookStats:
    """Counters of one receiver: signalled, acknowledged duplicates, rejections by reason."""

    accepted: int = 0
    duplicate: int = 0
    signal_errors: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicate": self.duplicate,
                "signal_errors": self.signal_errors, "rejected": dict(self.rejected)}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WebhookRejected("bad_body", "the webhook body is not JSON") from None
    if not isinstance(document, dict):
        raise WebhookRejected("bad_body", "the webhook body is not a JSON object")
    return document


def _text_field(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if (not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS
            or not _encodable(value)):
        raise WebhookRejected("bad_body", f"the webhook body has no usable {name!r}")
    return value


def _encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: JSON's ``"\\ud800"`` escapes decode to lone
    surrogates, which would raise in whatever logs or stores the id later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_replicate_body(body: bytes) -> JobSignal:
    """The signal in a *verified* Replicate body: its prediction ``id`` and ``status``.

    Only the two fields are read, each a non-empty string of at most 256 characters that
    encodes as UTF-8; the rest of the body is not trusted (the runner re-fetches the job).

    Raises:
        WebhookRejected: ``bad_body`` - not JSON, not an object, or no usable id or status.
    """
    document = _json_object(body)
    return JobSignal("replicate", _text_field(document, "id"), _text_field(document, "status"))


def parse_fal_body(body: bytes, request_id: str) -> JobSignal:
    """The signal in a *verified* fal body for the signed ``request_id`` (the header's).

    The body's ``request_id``, when present, must be the signed one: a body replayed under
    another delivery's headers signals nothing. ``status`` is read as for
    :func:`parse_replicate_body`.

    Raises:
        WebhookRejected: ``bad_body`` - not JSON, not an object, no usable status, a request
            id over 256 characters, or a body ``request_id`` other than the signed one.
    """
    document = _json_object(body)
    status = _text_field(document, "status")
    if document.get("request_id", request_id) != request_id or len(request_id) > _MAX_ID_CHARS:
        raise WebhookRejected("bad_body", "body request_id differs from the signed one")
    return JobSignal("fal", request_id, status)


class WebhookReceiver:
    """ASGI app (:attr:`app`, Starlette): ``POST /webhooks/replicate`` and ``POST /webhooks/fal``.

    A provider whose secret/keys are None has no route (404). Each delivery is size-checked
    (413 over ``max_body_bytes``, from ``Content-Length`` before reading, else while reading),
    then verified, and only then parsed as JSON. Bad deliveries get a 4xx (see
    :data:`REJECTION_STATUS`) and change nothing. Valid ones get 200 at once and
    ``on_signal(JobSignal)`` is called **once** per (provider, job id, status); a redelivery (same
    Replicate ``webhook-id``) or a duplicate (same job and status) gets 200 too but no signal.

    ``on_signal`` runs on the receiver's event loop and must be quick and thread-safe
    (:meth:`JobSignals.signal` is). If it raises, the delivery is answered 500 and forgotten, so
    the provider's retry can signal again.

    Dedupe memory is an LRU of ``max_remembered`` keys: it only saves duplicate polls. Durable
    dedupe is the ledger's job - the runner applies a job's terminal state once. ``clock`` (unix
    seconds) is what timestamps are checked against.
    """

    def __init__(self, *, replicate_secret: str | None, fal_keys: JwksKeys | None,
                 on_signal: Callable[[JobSignal], None], tolerance_s: float = 300,
                 max_body_bytes: int = MAX_BODY_BYTES, max_remembered: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        if not (tolerance_s > 0 and max_body_bytes > 0 and max_remembered > 0):  # NaN too
            raise ValueError("tolerance_s, max_body_bytes and max_remembered must be > 0")
        self._replicate_key = (_decode_secret(replicate_secret)
                               if replicate_secret is not None else None)
        self._fal_keys = fal_keys
        self._on_signal = on_signal
        self.tolerance_s = tolerance_s
        self.max_body_bytes = max_body_bytes
        self.max_remembered = max_remembered
        self._clock = clock
        self._seen: OrderedDict[tuple[str | bytes, ...], None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.stats = WebhookStats()
        routes = []
        if self._replicate_key is not None:
            routes.append(Route("/webhooks/replicate", self._replicate, methods=["POST"]))
        if fal_keys is not None:
            routes.append(Route("/webhooks/fal", self._fal, methods=["POST"]))
        self.app = Starlette(routes=routes)

    @property
    def remembered(self) -> int:
        """How many dedupe keys are held (at most ``max_remembered``)."""
        with self._seen_lock:
            return len(self._seen)

    def __repr__(self) -> str:  # no secret in reprs either
        return (f"WebhookReceiver(replicate={self._replicate_key is not None}, "
                f"fal={self._fal_keys!r}, stats={self.stats.as_dict()})")

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            # ASCII digits only: str.isdigit() takes "²" (a latin-1 byte), which int() refuses
            match = _CONTENT_LENGTH.fullmatch(declared)
            if match is None:
                raise WebhookRejected("bad_body", "Content-Length is not a number")
            digits = match.group(1).lstrip("0") or "0"  # by length first: int() refuses 4,301+
            if len(digits) > len(str(self.max_body_bytes)) or int(digits) > self.max_body_bytes:
                raise WebhookRejected("too_large", f"body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise WebhookRejected("too_large", f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _replicate(self, request: Request) -> Response:
        assert self._replicate_key is not None
        try:
            body = await self._read_body(request)
            # request.headers is read from its raw bytes (see _wire_headers), not as latin-1
            webhook_id = _verify_replicate_key(request.headers, body, self._replicate_key,
                                               tolerance_s=self.tolerance_s, now=self._clock())
            signal = parse_replicate_body(body)
        except WebhookRejected as rejected:
            return self._reject("replicate", rejected)
        return self._accept(signal, delivery_id=webhook_id)

    async def _fal(self, request: Request) -> Response:
        assert self._fal_keys is not None
        try:
            body = await self._read_body(request)
            request_id = await verify_fal(request.headers, body, self._fal_keys,
                                          tolerance_s=self.tolerance_s, now=self._clock())
            signal = parse_fal_body(body, request_id)
        except WebhookRejected as rejected:
            return self._reject("fal", rejected)
        return self._accept(signal, delivery_id=None)

    def _reject(self, provider: str, rejected: WebhookRejected) -> Response:
        with self._seen_lock:
            counts = self.stats.rejected
            counts[rejected.reason] = counts.get(rejected.reason, 0) + 1
        logger.info("%s webhook rejected: %s (%s)", provider, rejected.reason, rejected)
        return JSONResponse({"ok": False, "reason": rejected.reason},
                            status_code=rejected.http_status)

    def _remember(self, key: tuple[str | bytes, ...]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)

    def _accept(self, signal: JobSignal, *, delivery_id: bytes | None) -> Response:
        # the delivery id as signed (bytes): ids that differ only in invalid UTF-8 would read
        # alike as text, and one would be dropped as the other's redelivery
        keys: list[tuple[str | bytes, ...]] = [("job", signal.provider, signal.job_id,
                                                 signal.status)]
        if delivery_id is not None:
            keys.append(("delivery", signal.provider, delivery_id))
        with self._seen_lock:
            duplicate = any(key in self._seen for key in keys)
            for key in keys:
                self._remember(key)
            if duplicate:
                self.stats.duplicate += 1
        if duplicate:
            return JSONResponse({"ok": True, "duplicate": True})
        try:
            self._on_signal(signal)
        except Exception:
            logger.exception("on_signal failed for %s", signal)
            with self._seen_lock:
                for key in keys:
                    self._seen.pop(key, None)
                self.stats.signal_errors += 1
            return JSONResponse({"ok": False}, status_code=500)
        with self._seen_lock:
            self.stats.accepted += 1
        return JSONResponse({"ok": True})


class WebhookServer:
    """Serves a :class:`WebhookReceiver` with uvicorn from a background thread.

    Binds ``host`` (loopback by default; put a TLS-terminating proxy or tunnel in front for
    real providers) on ``port`` (0: any free port). Use as a context manager or
    :meth:`start` / :meth:`stop`; :attr:`url` is ``http://host:port``.
    """

    def __init__(self, receiver: WebhookReceiver, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.receiver = receiver
        self.host = host
        self._port = port
        self.url = ""
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def replicate_url(self) -> str:
        """The URL to give Replicate as ``webhook``."""
        return f"{self.url}/webhooks/replicate"

    @property
    def fal_url(self) -> str:
        """The URL to give fal as ``webhook_url``."""
        return f"{self.url}/webhooks/fal"

    def start(self) -> WebhookServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.url = f"http://{self.host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.receiver.app, log_config=None, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._serve, name="pixellab-webhooks",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"webhook server failed to start: {error!r}")
        return self

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        server, sock = self._server, self._sock
        assert server is not None and sock is not None
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        self._ready.set()
        await task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._server = self._sock = None

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --- where the runner waits ------------------------------------------------------------------


class JobSignals:
    """Signals from the receiver, awaited by the runner between polls.

    ``signal`` may be called from any thread (the receiver's); ``wait`` is awaited on the
    runner's loop and returns True as soon as a signal for that job arrives, False on timeout.
    A signal that arrives while nobody waits is kept (at most ``max_pending``, oldest dropped)
    so the next ``wait`` for that job returns at once - a webhook landing during a poll is not
    lost. Waiters are removed when ``wait`` returns, so memory does not grow with jobs.
    """

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str],
                            list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._pending: OrderedDict[tuple[str, str], JobSignal] = OrderedDict()

    def signal(self, signal: JobSignal) -> None:
        """Wake every waiter of ``signal``'s job (or remember it for the next ``wait``)."""
        key = (signal.provider, signal.job_id)
        with self._lock:
            waiters = self._waiters.pop(key, [])
            if not waiters:
                self._pending[key] = signal
                self._pending.move_to_end(key)
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its waiter is gone anyway
                pass

    __call__ = signal

    async def wait(self, provider: str, job_id: str, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True early if a signal for this job arrives (or arrived)."""
        key = (provider, job_id)
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            if self._pending.pop(key, None) is not None:
                return True
            self._waiters.setdefault(key, []).append(entry)
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None and entry in waiters:
                    waiters.remove(entry)
                    if not waiters:
                        del self._waiters[key]

    def forget(self, provider: str, job_id: str) -> None:
        """Drop a remembered signal of a job the runner is done with."""
        with self._lock:
            self._pending.pop((provider, job_id), None)

    def __len__(self) -> int:
        """Jobs with a remembered signal or a waiter (for leak checks)."""
        with self._lock:
            return len(self._pending) + len(self._waiters)


DEFAULT_FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
"""fal's keys live under its REST host, the one fal-client itself talks to (``REST_URL`` in
fal-ai/fal ``projects/fal_client/src/fal_client/client.py``); ``rest.alpha.fal.ai`` is an older
name some integrations still use (set ``PIXELLAB_FAL_JWKS_URL`` for it)."""


@dataclass(frozen=True)
class WebhookSettings:
    """Where providers can reach this machine, from the environment.

    ``PIXELLAB_WEBHOOK_URL`` is the public base URL (a tunnel or proxy in front of the receiver);
    ``PIXELLAB_WEBHOOK_PORT`` (default 8787) and ``PIXELLAB_WEBHOOK_HOST`` (default 127.0.0.1)
    are where the receiver listens. Without a public URL webhooks stay off: polling alone
    finishes every job.
    """

    public_url: str
    host: str = "127.0.0.1"
    port: int = 8787

    @classmethod
    def from_env(cls) -> WebhookSettings | None:
        settings = current_settings()
        if not settings.webhook_url:
            return None
        return cls(public_url=settings.webhook_url, host=settings.webhook_host,
                   port=settings.webhook_port)


async def replicate_signing_secret(provider: Any) -> str | None:
    """``REPLICATE_WEBHOOK_SECRET``, else the account's default secret fetched through the SDK."""
    configured = os.environ.get("REPLICATE_WEBHOOK_SECRET")
    if configured:
        return configured
    if provider is None or provider.missing_credentials():
        return None
    secret = await provider.client.webhooks.default.async_secret()
    return str(secret.key)


@contextlib.asynccontextmanager
async def webhooks_for(providers: Mapping[str, Any],
                       settings: WebhookSettings | None) -> AsyncIterator[JobSignals | None]:
    """Run a receiver for the duration of a sweep and point the adapters' webhooks at it.

    Yields the :class:`JobSignals` the runner waits on, or ``None`` when webhooks are off. The
    adapters' ``webhook_url`` is restored afterwards.
    """
    if settings is None:
        yield None
        return
    signals = JobSignals()
    replicate, fal = providers.get("replicate"), providers.get("fal")
    jwks_url = current_settings().fal_jwks_url or DEFAULT_FAL_JWKS_URL
    receiver = WebhookReceiver(
        replicate_secret=await replicate_signing_secret(replicate),
        fal_keys=JwksKeys(jwks_url, verify=os.environ.get("SSL_CERT_FILE") or True),
        on_signal=signals)
    previous = {name: getattr(p, "webhook_url", None) for name, p in providers.items()}
    server = WebhookServer(receiver, host=settings.host, port=settings.port)
    await asyncio.to_thread(server.start)
    try:
        if replicate is not None:
            replicate.webhook_url = f"{settings.public_url}/webhooks/replicate"
        if fal is not None:
            fal.webhook_url = f"{settings.public_url}/webhooks/fal"
        yield signals
    finally:
        for name, provider in providers.items():
            if hasattr(provider, "webhook_url"):
                provider.webhook_url = previous[name]
        await asyncio.to_thread(server.stop)
