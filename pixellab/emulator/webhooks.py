"""Webhook signing and delivery, plus a built-in receiver for tests (:class:`WebhookSink`).

Two signature schemes (``/work/shared/research/providers.md`` §1.9 and §2.5):

* Replicate - Standard Webhooks: headers ``webhook-id`` (kept on redelivery),
  ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<b64 HMAC-SHA256>`` over
  ``f"{id}.{timestamp}.{body}"``, keyed with the base64-decoded part of ``whsec_<b64>``.
  ``replicate.webhooks.validate`` accepts it.
* fal - Ed25519: headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` and
  ``-Signature`` (hex) over ``"\\n".join([request_id, user_id, timestamp, sha256(body).hex()])``;
  the public key is published as an OKP JWK (:meth:`FalSigner.jwks`).

Delivery is loopback-only: a webhook URL whose host is not 127.0.0.1/localhost/::1 is refused
(recorded, never contacted), so the emulator cannot reach off the machine whatever a client asks.

Redelivery of a failed terminal webhook (non-2xx or unreachable) follows a per-provider
schedule (:class:`WebhookSender`): fal delivers up to 10 times over 2 hours
(https://docs.fal.ai/model-endpoints/webhooks), reproduced as 10 deliveries spread
exponentially over a compressed window (:func:`fal_redelivery_schedule`); Replicate retries the
final webhook "with exponential backoff" without publishing a count, kept at 3 quick tries.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pixellab.emulator.files import LOOPBACK_HOSTS

__all__ = [
    "FAL_WEBHOOK_DELIVERIES",
    "FAL_WEBHOOK_WINDOW_S",
    "FalSigner",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSender",
    "WebhookSink",
    "new_replicate_secret",
    "sign_replicate",
]


HeaderFactory = Callable[[], dict[str, str]]
"""Builds the (signed) headers of one delivery attempt."""

FAL_WEBHOOK_DELIVERIES = 10
"""fal delivers a webhook at most this many times (docs.fal.ai/model-endpoints/webhooks)."""

FAL_WEBHOOK_WINDOW_S = 7200.0
"""... spread over two hours on the real service."""


def fal_redelivery_schedule(window_s: float = FAL_WEBHOOK_WINDOW_S) -> tuple[float, ...]:
    """The pauses between fal's 10 deliveries: doubling, summing to ``window_s``."""
    gaps = FAL_WEBHOOK_DELIVERIES - 1
    base = window_s / (2 ** gaps - 1)
    return tuple(base * 2 ** i for i in range(gaps))


REPLICATE_REDELIVERY: tuple[float, ...] = (0.2, 0.4)
"""Pauses between Replicate's (3) deliveries of a failed final webhook in the emulator."""


def new_replicate_secret() -> str:
    """A fresh Replicate-style signing secret, ``whsec_<base64 of 32 random bytes>``."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_replicate(secret: str, webhook_id: str, timestamp: str, body: str) -> str:
    """The ``webhook-signature`` header value for a Replicate (Standard Webhooks) delivery."""
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FalSigner:
    """The Ed25519 key pair fal webhooks are signed with (fresh per emulator)."""

    def __init__(self, user_id: str = "emulator-user") -> None:
        self.user_id = user_id
        self._key = Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key_raw: bytes = raw
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document served at ``/fal/rest/.well-known/jwks.json``."""
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_key_raw),
                          "kid": self.kid, "use": "sig", "alg": "EdDSA"}]}

    def headers(self, request_id: str, body: bytes, timestamp: str | None = None
                ) -> dict[str, str]:
        """Signed fal webhook headers for ``body``."""
        ts = timestamp or str(int(time.time()))
        message = "\n".join([request_id, self.user_id, ts, hashlib.sha256(body).hexdigest()])
        signature = self._key.sign(message.encode()).hex()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": signature,
        }


@dataclass(frozen=True)
class WebhookAttempt:
    """One delivery attempt the emulator made (or refused): for debugging and assertions."""

    provider: str
    url: str
    job_id: str
    status: int | None  # HTTP status from the receiver; None when refused or unreachable
    time: float
    note: str = ""


class WebhookSender:
    """POSTs webhook bodies to loopback URLs, redelivering a failed one on a schedule.

    ``schedules`` maps a provider to the pauses between its deliveries (so ``len + 1``
    deliveries at most); by default Replicate gets :data:`REPLICATE_REDELIVERY` and fal
    :func:`fal_redelivery_schedule` over ``fal_window_s`` (2 s: the real 2 h, compressed).
    """

    def __init__(self, *, schedules: dict[str, tuple[float, ...]] | None = None,
                 fal_window_s: float = 2.0, timeout_s: float = 5.0) -> None:
        self.schedules: dict[str, tuple[float, ...]] = {
            "replicate": REPLICATE_REDELIVERY, "fal": fal_redelivery_schedule(fal_window_s),
            **(schedules or {})}
        self.timeout_s = timeout_s
        self.history: list[WebhookAttempt] = []

    async def post(self, provider: str, job_id: str, url: str, body: bytes,
                   make_headers: HeaderFactory) -> bool:
        """Deliver ``body``; ``make_headers()`` is called per attempt (fresh timestamps).

        Returns whether the receiver answered 2xx.
        """
        host = urlsplit(url).hostname
        if host not in LOOPBACK_HOSTS:
            self.history.append(WebhookAttempt(provider, url, job_id, None, time.time(),
                                               "refused: not a loopback URL"))
            return False
        pauses = self.schedules.get(provider, REPLICATE_REDELIVERY)
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            for attempt in range(len(pauses) + 1):
                headers = {"Content-Type": "application/json", **make_headers()}
                try:
                    response = await client.post(url, content=body, headers=headers)
                    status: int | None = response.status_code
                    note = ""
                except httpx.HTTPError as exc:
                    status, note = None, f"error: {exc!r}"
                self.history.append(WebhookAttempt(provider, url, job_id, status, time.time(),
                                                   note))
                if status is not None and 200 <= status < 300:
                    return True
                if attempt < len(pauses):
                    await asyncio.sleep(pauses[attempt])
        return False


@dataclass(frozen=True)
class WebhookDelivery:
    """One request a :class:`WebhookSink` received: lower-cased headers and the raw body."""

    headers: dict[str, str]
    body: bytes
    time: float

    @property
    def text(self) -> str:
        """The body as UTF-8 text (what ``replicate.webhooks.validate`` wants)."""
        return self.body.decode("utf-8")


@dataclass
class WebhookSink:
    """A webhook receiver hosted by the emulator itself, at ``/__emu/sink/<name>``.

    Tests point a provider's webhook at :attr:`url` and read :attr:`deliveries`; ``status`` is
    what the sink answers (set it to 500 to watch redelivery).
    """

    name: str
    url: str
    status: int = 200
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def record(self, headers: dict[str, str], body: bytes) -> None:
        """Store one received request (called by the emulator's route)."""
        with self._cond:
            self.deliveries.append(WebhookDelivery(headers, body, time.time()))
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Block until at least ``count`` deliveries arrived (or ``timeout``); returns them all.

        From async code, call it through ``asyncio.to_thread``.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.deliveries)
