"""What every route of the emulator shares: job engine, files, faults, URLs, keys, the log.

Also the request log (:class:`RequestRecord`, filled by :class:`RequestLogMiddleware`) and small
helpers the provider modules use to stay short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixellab.emulator.faults import FaultPlan
from pixellab.emulator.files import FileStore
from pixellab.emulator.jobs import JobEngine
from pixellab.emulator.webhooks import FalSigner, WebhookSender, WebhookSink

__all__ = ["Context", "RequestLogMiddleware", "RequestRecord", "iso", "set_model"]


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
    """Pure-ASGI middleware that appends a :class:`RequestRecord` for every HTTP request."""

    def __init__(self, app: ASGIApp, log: list[RequestRecord]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        logged = False

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

        async def send_wrapper(message: Message) -> None:
            # Logged when the status goes out, so a client never sees a response that the log
            # does not have yet.
            if message["type"] == "http.response.start":
                append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            append(500)  # the app died before answering
