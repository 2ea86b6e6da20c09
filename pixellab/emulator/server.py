"""The emulator's life cycle: ports, TLS, the background thread, and the public :class:`Emulator`.

One Starlette app is served by uvicorn on two loopback ports from a thread with its own event
loop: plain HTTP (Replicate, OpenAI) and HTTPS (fal, whose client forces ``https://``). Both ports
serve every route, so either URL works for anything; the public URL attributes pick the port each
SDK needs. The HTTPS certificate comes from a throwaway ``trustme`` CA made at start-up, valid for
``127.0.0.1`` and ``localhost``; its PEM (:attr:`Emulator.ca_pem`) is what ``SSL_CERT_FILE`` must
name for httpx-based SDKs to trust it (httpx 0.28 reads ``SSL_CERT_FILE`` when a client is built,
see providers.md §0).

Nothing ever listens beyond 127.0.0.1, and the emulator makes no outbound request except webhook
deliveries to loopback URLs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pixellab.emulator import fal_api, openai_api, replicate_api
from pixellab.emulator.context import (
    Context,
    RequestLogMiddleware,
    RequestRecord,
    ResponseRecord,
    TransportCapture,
)
from pixellab.emulator.faults import FaultPlan
from pixellab.emulator.files import FileStore
from pixellab.emulator.jobs import CreateHook, JobEngine, JobRecord
from pixellab.emulator.judge import JudgeDesk, JudgeTruth
from pixellab.emulator.webhooks import (
    FalSigner,
    WebhookAttempt,
    WebhookSender,
    WebhookSink,
    new_replicate_secret,
)

__all__ = ["Emulator"]

_HOST = "127.0.0.1"


def _bind(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((_HOST, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _check_secret(secret: str) -> str:
    """Reject a webhook secret ``replicate.webhooks.validate`` could not use."""
    prefix, _, key = secret.partition("_")
    try:
        ok = prefix == "whsec" and "_" not in key and bool(base64.b64decode(key, validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError("webhook_secret must look like 'whsec_<base64>'")
    return secret


class Emulator:
    """A loopback server the real Replicate, fal and OpenAI SDKs can run against unmodified.

    Use it as a context manager (or :meth:`start` / :meth:`stop`). Each job takes ``latency_s``
    plus uniform(0, ``jitter_s``), plus ``cold_start_s`` the first time a model is used; ``seed``
    fixes ids, jitter and corrupt bytes. ``webhook_secret`` is the Replicate-style
    ``whsec_<base64>`` key Replicate webhooks are signed with (a fresh one if None).
    ``http_port``/``https_port`` pin the ports (0: any free port), for people who want stable
    URLs from ``python -m pixellab.emulator``.

    Provider behaviour over time: ``retention_s`` (3600) after completion a Replicate
    prediction's data is removed (``data_removed: true``, outputs 404); ``file_ttl_s`` (86400)
    after upload a Replicate file expires; fal redelivers a failed webhook 10 times spread over
    ``fal_webhook_window_s`` (2 s standing for the real 2 h); ``webhook_schedules`` overrides
    the pauses between deliveries per provider. ``record_bodies`` keeps every answer in
    :attr:`responses` (for conformance tests).

    Video jobs (:mod:`pixellab.emulator.video`) take ``video_latency_s`` (0.3 s standing for
    the real minutes) instead of ``latency_s``; ``video_fps`` and ``video_max_side`` lower the
    frame rate and cap the size of the clips rendered (None: the model's own, e.g. 24 fps at
    1280x720), which keeps tests fast while duration, aspect ratio and bill stay as asked.
    OpenAI video assets expire ``retention_s`` after completion too (``expires_at``).

    :meth:`judge` makes OpenAI chat calls of pixellab's judge schema answer from a known truth
    (:mod:`pixellab.emulator.judge`), so judging can be tested against what it should find.
    """

    http_url: str
    https_url: str
    ca_pem: str

    def __init__(self, *, latency_s: float = 0.05, jitter_s: float = 0.0,
                 cold_start_s: float = 0.0, seed: int = 0, webhook_secret: str | None = None,
                 http_port: int = 0, https_port: int = 0, retention_s: float = 3600.0,
                 file_ttl_s: float = 86400.0, fal_webhook_window_s: float = 2.0,
                 webhook_schedules: dict[str, tuple[float, ...]] | None = None,
                 record_bodies: bool = False, video_latency_s: float = 0.3,
                 video_fps: float | None = None, video_max_side: int | None = None) -> None:
        if min(latency_s, jitter_s, cold_start_s, video_latency_s) < 0:
            raise ValueError("latency_s, jitter_s, cold_start_s and video_latency_s must be "
                             ">= 0")
        if (video_fps is not None and video_fps <= 0) or (
                video_max_side is not None and video_max_side < 16):
            raise ValueError("video_fps must be > 0 and video_max_side at least 16")
        if min(retention_s, file_ttl_s, fal_webhook_window_s) <= 0:
            raise ValueError("retention_s, file_ttl_s and fal_webhook_window_s must be > 0")
        self.webhook_secret: str = _check_secret(webhook_secret or new_replicate_secret())
        self.faults: FaultPlan = FaultPlan()
        self.log: list[RequestRecord] = []
        self.responses: list[ResponseRecord] = []
        self._record_bodies = record_bodies
        self._ports = (http_port, https_port)
        self._files = FileStore()
        self._engine = JobEngine(self._files, latency_s=latency_s, jitter_s=jitter_s,
                                 cold_start_s=cold_start_s, seed=seed,
                                 output_ttl_s={"replicate": retention_s, "openai": retention_s},
                                 video_latency_s=video_latency_s, video_fps=video_fps,
                                 video_max_side=video_max_side)
        sender = WebhookSender(schedules=webhook_schedules, fal_window_s=fal_webhook_window_s)
        self._judge = JudgeDesk()
        self._ctx = Context(engine=self._engine, files=self._files, faults=self.faults,
                            webhook_secret=self.webhook_secret, fal_signer=FalSigner(),
                            sender=sender, log=self.log, retention_s=retention_s,
                            file_ttl_s=file_ttl_s)
        self.http_url = self.https_url = self.ca_pem = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tmpdir: str | None = None
        self._sockets: list[socket.socket] = []

    # --- URLs the SDKs are pointed at ----------------------------------------------------------

    @property
    def replicate_base_url(self) -> str:
        """``replicate.Client(base_url=...)`` / ``REPLICATE_BASE_URL`` (the SDK adds ``/v1``)."""
        return f"{self.http_url}/replicate"

    @property
    def openai_base_url(self) -> str:
        """``OpenAI(base_url=...)`` / ``OPENAI_BASE_URL`` (includes ``/v1``, as the SDK wants)."""
        return f"{self.http_url}/openai/v1"

    @property
    def fal_queue_url(self) -> str:
        """Value for ``fal_client.client.QUEUE_URL_FORMAT`` (HTTPS: fal-client forces it)."""
        return f"{self.https_url}/fal/queue/"

    @property
    def fal_run_url(self) -> str:
        """Value for ``fal_client.client.RUN_URL_FORMAT``."""
        return f"{self.https_url}/fal/run/"

    @property
    def fal_rest_url(self) -> str:
        """Value for ``fal_client.client.REST_URL`` (storage token and upload fallback)."""
        return f"{self.https_url}/fal/rest"

    @property
    def fal_cdn_url(self) -> str:
        """Value for ``fal_client.client.CDN_URL`` (raw-bytes uploads)."""
        return f"{self.https_url}/fal/cdn"

    @property
    def fal_jwks_url(self) -> str:
        """JWKS with the Ed25519 public key fal webhooks are signed with."""
        return f"{self.fal_rest_url}/.well-known/jwks.json"

    def env(self) -> dict[str, str]:
        """Environment variables that point SDKs (and pixellab's fal adapter) at this emulator.

        fal-client itself reads no URL from the environment after import; the ``PIXELLAB_FAL_*``
        variables are for pixellab's adapter, which patches ``fal_client.client`` from them.
        """
        return {
            "REPLICATE_BASE_URL": self.replicate_base_url,
            "OPENAI_BASE_URL": self.openai_base_url,
            "SSL_CERT_FILE": self.ca_pem,
            "PIXELLAB_FAL_QUEUE_URL": self.fal_queue_url,
            "PIXELLAB_FAL_RUN_URL": self.fal_run_url,
            "PIXELLAB_FAL_REST_URL": self.fal_rest_url,
            "PIXELLAB_FAL_CDN_URL": self.fal_cdn_url,
            "PIXELLAB_FAL_JWKS_URL": self.fal_jwks_url,
        }

    # --- what happened ----------------------------------------------------------------------------

    def creates(self, provider: str | None = None) -> list[JobRecord]:
        """Job-creating calls that were accepted (of one provider), oldest first.

        Each record's ``cost_usd`` is the job's final bill once it is terminal (0 when its
        outcome is not billed, see :mod:`pixellab.emulator.billing`). Refused calls
        (``rate_limit``, ``server_error``, ``hang``, ``insufficient_quota``, an input-stage
        OpenAI ``content_rejected``) created no job and are not here.
        """
        return self._engine.records(provider)

    def bill(self, provider: str | None = None) -> float:
        """Total USD billed so far (by one provider): the sum of the settled jobs' bills."""
        return round(sum(r.cost_usd for r in self.creates(provider)), 9)

    def on_create(self, callback: CreateHook) -> CreateHook:
        """Call ``callback(record)`` for every accepted job-creating call, on the emulator's
        loop thread, synchronously, before the call's response is sent (OpenAI and fal sync
        runs: once the job has run and been billed; Replicate and fal queue submits: right
        after the job is created). A callback that raises makes that call answer 500.
        Returns ``callback`` (usable as a decorator); :meth:`remove_create_hook` undoes it.
        """
        self._engine.create_hooks.append(callback)
        return callback

    def remove_create_hook(self, callback: CreateHook) -> None:
        """Stop calling a callback registered with :meth:`on_create`."""
        if callback in self._engine.create_hooks:
            self._engine.create_hooks.remove(callback)

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        """Every webhook delivery attempt the emulator made or refused, oldest first."""
        return list(self._ctx.sender.history)

    def webhook_sink(self, name: str = "default", *, status: int = 200) -> WebhookSink:
        """A webhook receiver served by the emulator at ``{http_url}/__emu/sink/<name>``.

        Returns the same sink for the same name; ``status`` is what it answers.
        """
        sink = self._ctx.sinks.get(name)
        if sink is None:
            sink = WebhookSink(name=name, url=f"{self.http_url}/__emu/sink/{name}")
            self._ctx.sinks[name] = sink
        sink.status = status
        return sink

    # --- the emulated judge ----------------------------------------------------------------------

    def judge(self, quality: Mapping[str, float], *, noise: float = 0.0,
              position_bias: float = 0.0, tie_margin: float = 0.0, seed: int = 0) -> None:
        """Answer pixellab's judge calls (chat completions whose ``json_schema`` is named
        ``pixellab_judge``) from a known truth instead of a schema filler.

        ``quality`` maps the sha256 hex of an image's bytes (as sent in its ``data:`` URL) to a
        latent quality (unlisted images: 0.0). With probability ``position_bias`` "A" wins
        outright; otherwise ``d = q(A) - q(B) + gauss(0, noise)`` decides: "A" above
        ``tie_margin``, "B" below ``-tie_margin``, else "tie" (:func:`pixellab.emulator.judge.
        verdict`). Draws are seeded by ``seed`` and the call's number since this call, so a test
        is reproducible. Replaces any earlier truth; also ``POST /__emu/judge``.
        """
        self._judge.set(JudgeTruth(quality=dict(quality), noise=noise,
                                   position_bias=position_bias, tie_margin=tie_margin,
                                   seed=seed))

    def clear_judge(self) -> None:
        """Stop judging: judge calls get the plain schema filler again (``DELETE /__emu/judge``)."""
        self._judge.set(None)

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind both ports, make the TLS certificate, and serve from a background thread."""
        if self._thread is not None:
            return self
        self._tmpdir = tempfile.mkdtemp(prefix="pixellab-emulator-")
        ca = trustme.CA()
        cert = ca.issue_cert(_HOST, "localhost")
        ca_path = Path(self._tmpdir) / "ca.pem"
        cert_path = Path(self._tmpdir) / "server.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
        self.ca_pem = str(ca_path)

        http_sock, https_sock = _bind(self._ports[0]), _bind(self._ports[1])
        self._sockets = [http_sock, https_sock]
        self.http_url = f"http://{_HOST}:{http_sock.getsockname()[1]}"
        self.https_url = f"https://{_HOST}:{https_sock.getsockname()[1]}"
        self._ctx.http_url, self._ctx.https_url = self.http_url, self.https_url
        for sink in self._ctx.sinks.values():
            sink.url = f"{self.http_url}/__emu/sink/{sink.name}"

        app = self._build_app()
        common: dict[str, Any] = {"log_config": None, "log_level": "warning",
                                  "access_log": False, "lifespan": "off",
                                  "timeout_graceful_shutdown": 2}
        configs = [uvicorn.Config(app, **common),
                   uvicorn.Config(app, ssl_certfile=str(cert_path), **common)]
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, args=(configs,),
                                        name="pixellab-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            self.stop()
            raise RuntimeError(f"emulator failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop serving, cancel running jobs, and delete the certificate files."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is not None and loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # loop already closed
                pass
            thread.join(15)
        self._thread = self._loop = self._stopping = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _serve(self, configs: list[uvicorn.Config]) -> None:
        try:
            asyncio.run(self._main(configs))
        except BaseException as exc:  # surfaced by start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self, configs: list[uvicorn.Config]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._engine.stopping = self._stopping
        servers = [uvicorn.Server(config) for config in configs]
        tasks = [asyncio.create_task(server.serve(sockets=[sock]))
                 for server, sock in zip(servers, self._sockets, strict=True)]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError("uvicorn failed") from task.exception()
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.005)
        self._ready.set()
        await self._stopping.wait()
        await self._engine.shutdown()
        for server in servers:
            # force_exit: do not wait for clients' idle keep-alive (TLS) connections to close;
            # hung requests were already released by ``stopping``.
            server.should_exit = server.force_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the app ----------------------------------------------------------------------------------

    def _build_app(self) -> TransportCapture:
        ctx = self._ctx
        routes = [
            *replicate_api.routes(ctx),
            *fal_api.routes(ctx),
            *openai_api.routes(ctx, self._judge),
            Route("/files/{name}", self._serve_file, methods=["GET", "HEAD"]),
            Route("/__emu/log", self._get_log, methods=["GET"]),
            Route("/__emu/jobs", self._get_jobs, methods=["GET"]),
            Route("/__emu/faults", self._faults_route, methods=["GET", "POST", "DELETE"]),
            Route("/__emu/judge", self._judge_route, methods=["GET", "POST", "DELETE"]),
            Route("/__emu/sink/{name}", self._sink_route, methods=["GET", "POST"]),
        ]
        return TransportCapture(Starlette(
            routes=routes, middleware=[Middleware(
                RequestLogMiddleware, log=self.log,
                responses=self.responses if self._record_bodies else None)]))

    async def _serve_file(self, request: Request) -> Response:
        """Outputs and uploads, at ``/files/<id>.<ext>`` (no auth, like a CDN)."""
        stored = self._files.get(request.path_params["name"].split(".", 1)[0])
        if stored is None:
            return JSONResponse({"detail": "Not found"}, status_code=404)
        return Response(stored.data, media_type=stored.content_type)

    async def _get_log(self, request: Request) -> Response:
        return JSONResponse([record.as_json() for record in list(self.log)])

    async def _get_jobs(self, request: Request) -> Response:
        return JSONResponse([record.__dict__ for record in self.creates()])


    async def _faults_route(self, request: Request) -> Response:
        """``GET`` lists armed faults, ``DELETE`` clears them, ``POST`` arms one from JSON:
        ``{"provider", "action", "model"?, "times"?, ...options}`` (options may also be nested
        under ``"options"``)."""
        if request.method == "DELETE":
            self.faults.clear()
            return JSONResponse({"cleared": True})
        if request.method == "POST":
            try:
                body = await request.json()
                spec = dict(body)
                options = dict(spec.pop("options", None) or {})
                provider, action = spec.pop("provider"), spec.pop("action")
                model, times = spec.pop("model", None), int(spec.pop("times", 1))
                self.faults.add(provider, action, model=model, times=times, **spec, **options)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"detail": f"bad fault: {exc}"}, status_code=400)
        return JSONResponse([{**fault.as_json(), "remaining": left}
                             for fault, left in self.faults.pending()])

    async def _judge_route(self, request: Request) -> Response:
        """``GET`` shows the judge truth (null: none), ``DELETE`` clears it, ``POST`` sets it from
        JSON with :meth:`judge`'s fields: ``{"quality": {sha256: q}, "noise"?,
        "position_bias"?, "tie_margin"?, "seed"?}``."""
        if request.method == "DELETE":
            self.clear_judge()
            return JSONResponse({"cleared": True})
        if request.method == "POST":
            try:
                body = await request.json()
                spec = dict(body)
                quality = spec.pop("quality")
                if not isinstance(quality, dict):
                    raise TypeError("quality must be an object of sha256 -> number")
                unknown = set(spec) - {"noise", "position_bias", "tie_margin", "seed"}
                if unknown:
                    raise KeyError(f"unknown fields {sorted(unknown)}")
                self.judge(quality, noise=float(spec.get("noise", 0.0)),
                           position_bias=float(spec.get("position_bias", 0.0)),
                           tie_margin=float(spec.get("tie_margin", 0.0)),
                           seed=int(spec.get("seed", 0)))
            except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                return JSONResponse({"detail": f"bad judge: {exc}"}, status_code=400)
        truth = self._judge.truth
        return JSONResponse(truth.as_json() if truth is not None else None)

    async def _sink_route(self, request: Request) -> Response:
        name = request.path_params["name"]
        sink = self._ctx.sinks.get(name) or self.webhook_sink(name)
        if request.method == "GET":
            return JSONResponse([{"headers": d.headers, "body": d.text, "time": d.time}
                                 for d in sink.deliveries])
        sink.record({k.lower(): v for k, v in request.headers.items()}, await request.body())
        return JSONResponse({"received": True}, status_code=sink.status)
