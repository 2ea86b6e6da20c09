"""What every route of the emulator shares: job engine, files, faults, URLs, keys, the log.

Also the request log (:class:`RequestRecord`, filled by :class:`RequestLogMiddleware`), the
opt-in response recorder (:class:`ResponseRecord`), the connection-reset "response"
(:class:`ConnectionReset`) and small helpers the provider modules use to stay short.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixellab.emulator.faults import FaultPlan
from pixellab.emulator.files import FileStore
from pixellab.emulator.jobs import JobEngine
from pixellab.emulator.webhooks import FalSigner, WebhookSender, WebhookSink

__all__ = [
    "CYCLE_KEY",
    "ConnectionReset",
    "Context",
    "RequestLogMiddleware",
    "RequestRecord",
    "ResponseRecord",
    "TransportCapture",
    "iso",
    "set_model",
]

CYCLE_KEY = "pixellab.emulator.cycle"
"""Scope key under which :class:`TransportCapture` keeps uvicorn's request cycle."""


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the emulator received, and the status it answered.

    ``provider`` is ``replicate``, ``fal``, ``openai``, ``files`` (output/upload downloads) or
    ``emu`` (control routes); ``model`` is set by routes that know it; ``time`` is the unix time
    the request arrived.
    """

    provider: str
    method: str
    path: str
    model: str | None
    time: float
    status: int
    duration_s: float

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view, for ``GET /__emu/log``."""
        return {"provider": self.provider, "method": self.method, "path": self.path,
                "model": self.model, "time": self.time, "status": self.status,
                "duration_s": self.duration_s}


@dataclass(frozen=True)
class ResponseRecord:
    """One answer the emulator sent (kept only with ``Emulator(record_bodies=True)``).

    ``route`` is the matched route's path template (e.g.
    ``/replicate/v1/predictions/{id}``), or the path when no route matched; ``headers`` are
    lower-cased; ``status`` 0 means the connection was reset without an answer.
    """

    provider: str
    method: str
    path: str
    route: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not JSON)."""
        return json.loads(self.body)


class ConnectionReset(Response):
    """Not a response: the TCP connection is reset (RST, no HTTP bytes) - over TLS too.

    Needs :class:`TransportCapture` around the app (it finds uvicorn's transport through it).
    ``SO_LINGER`` 0 makes the close an RST rather than a FIN.
    """

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        state["emu_reset"] = True
        log_reset = state.get("emu_log_reset")
        if callable(log_reset):  # logged before the RST, so no client sees it first
            log_reset()
        cycle = scope.get(CYCLE_KEY)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise RuntimeError("ConnectionReset needs the TransportCapture wrapper")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        for _ in range(100):  # let connection_lost run, so uvicorn does not answer a 500
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)


class TransportCapture:
    """Outermost ASGI wrapper: keeps uvicorn's request cycle (whose ``send`` it receives
    unwrapped) in the scope, so :class:`ConnectionReset` can reach the TCP transport."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[CYCLE_KEY] = getattr(send, "__self__", None)
        await self.app(scope, receive, send)


@dataclass
class Context:
    """State shared by the provider modules (one per :class:`~pixellab.emulator.Emulator`)."""

    engine: JobEngine
    files: FileStore
    faults: FaultPlan
    webhook_secret: str
    fal_signer: FalSigner
    sender: WebhookSender
    log: list[RequestRecord]
    http_url: str = ""
    https_url: str = ""
    sinks: dict[str, WebhookSink] = field(default_factory=dict)
    retention_s: float = 3600.0
    file_ttl_s: float = 86400.0

    def file_url(self, file_id: str, ext: str) -> str:
        """Public (HTTPS) URL of a stored file; HTTPS so Replicate wraps it as ``FileOutput``."""
        return f"{self.https_url}/files/{file_id}.{ext}"


def iso(ts: float | None) -> str | None:
    """Unix time -> RFC 3339 with microseconds and ``Z`` (Replicate's timestamp style)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def set_model(request: Request, model: str) -> None:
    """Tag the current request's log record with the model it is about."""
    request.state.emu_model = model


def _provider_of(path: str) -> str:
    for prefix, name in (("/replicate/", "replicate"), ("/fal/", "fal"),
                         ("/openai/", "openai"), ("/files/", "files"), ("/__emu/", "emu")):
        if path.startswith(prefix):
            return name
    return "other"


class RequestLogMiddleware:
    """Pure-ASGI middleware that appends a :class:`RequestRecord` for every HTTP request, and a
    :class:`ResponseRecord` to ``responses`` when that list is given (``record_bodies``)."""

    def __init__(self, app: ASGIApp, log: list[RequestRecord],
                 responses: list[ResponseRecord] | None = None) -> None:
        self.app = app
        self.log = log
        self.responses = responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        logged = recorded = False
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        def append(status: int) -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            state = scope.get("state") or {}
            self.log.append(RequestRecord(
                provider=_provider_of(scope["path"]), method=scope["method"],
                path=scope["path"], model=state.get("emu_model"), time=started, status=status,
                duration_s=round(time.time() - started, 4)))

        def record(status: int) -> None:
            nonlocal recorded
            if self.responses is None or recorded:
                return
            recorded = True
            route = scope.get("route")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in start.get("headers", [])}
            self.responses.append(ResponseRecord(
                provider=_provider_of(scope["path"]), method=scope["method"],
                path=scope["path"], route=str(getattr(route, "path", scope["path"])),
                status=status, headers=headers, body=b"".join(chunks)))

        async def send_wrapper(message: Message) -> None:
            # Logged when the status goes out, so a client never sees a response that the log
            # does not have yet.
            if message["type"] == "http.response.start":
                start.update(message)
                append(int(message["status"]))
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    record(int(start.get("status", 500)))
            await send(message)

        def log_reset() -> None:
            record(0)
            append(0)

        scope.setdefault("state", {})["emu_log_reset"] = log_reset
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            reset = bool((scope.get("state") or {}).get("emu_reset"))
            if reset:
                record(0)
            append(0 if reset else 500)  # reset on purpose, or the app died before answering
