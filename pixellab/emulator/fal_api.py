"""fal queue, sync-run and storage APIs (``fal-client==1.0.3`` wire protocol), under ``/fal``.

fal-client has no base-URL argument and forces ``https://``: point it here by setting the module
constants ``fal_client.client.QUEUE_URL_FORMAT`` / ``RUN_URL_FORMAT`` / ``REST_URL`` /
``CDN_URL`` to ``emu.fal_queue_url`` / ``fal_run_url`` / ``fal_rest_url`` / ``fal_cdn_url`` and
``SSL_CERT_FILE`` to ``emu.ca_pem`` before the fal client makes its first request
(providers.md §0 "B", §2).

Protocol quirks reproduced on purpose (providers.md §2.2-2.5):

* Submit answers ``request_id`` plus ``response_url``/``status_url``/``cancel_url`` (the SDK
  raises KeyError without them) built on ``owner/alias`` only - a ``/dev`` sub-path is dropped,
  as on the real queue.
* Status is ``IN_QUEUE`` (with the required ``queue_position``), ``IN_PROGRESS`` (with the
  required ``logs`` key) or ``COMPLETED`` (``logs``, ``metrics``, and ``error``/``error_type``
  when the job failed); ``?logs=`` accepts ``true``/``1``.
* A failed job still reaches ``COMPLETED`` (with ``error``/``error_type``); its result GET
  answers the error. Two formats, as fal documents them:
  - model errors (https://docs.fal.ai/documentation/model-apis/errors): ``{"detail": [{loc,
    msg, type, url?, ctx?, input?}]}`` with an ``X-Fal-Retryable`` header - a content-policy
    refusal is a 422 whose ``detail[].type`` is ``content_policy_violation``;
  - request errors (https://docs.fal.ai/documentation/model-apis/request-errors): ``{"detail":
    "<text>", "error_type": "<type>"}`` plus ``X-Fal-Error-Type`` - ``request_timeout`` (504),
    ``runner_disconnected`` (503).
  A plain model failure answers 500 ``{"detail": "<text>"}``. Every error from the "app"
  carries ``x-fal-request-id``, which stops the SDK from retrying 502-504 as ingress errors.
* ``X-Fal-Request-Timeout`` (fal-client's ``start_timeout``) bounds the time before
  processing starts (fal-ai/fal ``projects/fal_client/src/fal_client/client.py`` at c6f0afaa:
  "Limits total time spent waiting before processing starts"): a request still queued then is
  ended - ``COMPLETED`` with ``error_type: request_timeout``, result 504 ``request_timeout``
  with ``X-Fal-Request-Timeout-Type: user`` (which fal-client never retries; fal-ai/fal
  ``projects/fal/tests/e2e/test_apps.py::test_start_timeout_queue_blocking``); a sync run
  answers that 504 itself. Not billed (never processed).
* Server-side retries (https://docs.fal.ai/model-apis/model-endpoints/reliability): a queued
  request whose runner fails (the ``runner_failure`` fault) is retried on a new runner up to
  10 attempts, invisibly but for the status logs, unless the submit sent ``x-fal-no-retry``
  (``1``, ``true`` or ``yes``); a sync run is never retried.
* fal-client retries 408/409/429 up to 10 times on every method, POST included, and ignores
  ``Retry-After``: one armed ``rate_limit`` is absorbed by the SDK's own retry.
* Out of credit is a 403 ``{"detail": "User is locked. Reason: Exhausted balance. ..."}``
  (reported in fal-ai/fal issues #1147, #1112).
* Video apps (:mod:`pixellab.emulator.video`: Kling 1.6, Veo 3.1 image-to-video) answer
  ``{"video": {url, content_type, file_name, file_size}}`` (fal's ``File``, as the apps'
  output schemas publish it) with an ``.mp4``; an input the app refuses (a Veo ``duration`` of
  "5s") is a 422 ``detail`` list at submit (``type: literal_error``), and no request is made.
  While queued a request reports its ``queue_position`` (the requests of the app ahead of it).
* Storage: ``POST /storage/auth/token`` returns a tz-aware ``expires_at`` (a naive one breaks
  the SDK's token cache), the CDN takes raw bytes (not multipart) with ``X-Fal-File-Name``, and
  the GCS-style fallback (``/storage/upload/initiate`` + ``PUT upload_url``) works too.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pixellab.emulator.context import ConnectionReset, Context, iso, set_model
from pixellab.emulator.faults import REFUSING_ACTIONS, Fault
from pixellab.emulator.imaging import choose_operation
from pixellab.emulator.jobs import Job, Listener
from pixellab.emulator.video import VideoInputError, VideoPlan, plan_for

__all__ = ["fal_error", "model_error", "routes"]

_REQUEST_PATH = re.compile(
    r"^(?P<app>.+?)/requests/(?P<id>[0-9A-Za-z-]+)(?P<op>/status|/cancel)?/?$")
_CONTENT_TYPE = "content_policy_violation"
_ERROR_TYPES = {"content": _CONTENT_TYPE, "canceled": "request_cancelled",
                "timeout": "request_timeout", "runner": "runner_disconnected"}
_TRUE = ("1", "true", "yes")


def fal_error(status: int, detail: Any, *, request_id: str | None = None,
              error_type: str | None = None, headers: dict[str, str] | None = None
              ) -> JSONResponse:
    """A fal-shaped error ``{"detail": ...}`` (``FalClientHTTPError`` reads ``detail`` and
    ``error_type``)."""
    body: dict[str, Any] = {"detail": detail}
    all_headers = dict(headers or {})
    if error_type:
        body["error_type"] = error_type
        all_headers["x-fal-error-type"] = error_type
    if request_id:
        all_headers["x-fal-request-id"] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers)


def model_error(status: int, errors: list[dict[str, Any]], *, request_id: str | None,
                retryable: bool = False) -> JSONResponse:
    """fal's model-error format: ``detail`` is a list of typed error objects, and the
    ``X-Fal-Retryable`` header says whether sending it again can help."""
    headers = {"X-Fal-Retryable": "true" if retryable else "false"}
    if request_id:
        headers["x-fal-request-id"] = request_id
    return JSONResponse({"detail": errors}, status_code=status, headers=headers)


def app_base(app_path: str) -> str | None:
    """``owner/alias`` (with a ``workflows/``/``comfy/`` namespace kept) of an app path."""
    parts = [p for p in app_path.split("/") if p]
    keep = 3 if parts and parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep]) if len(parts) >= keep else None


def routes(ctx: Context) -> list[Route]:
    """The fal routes, bound to one emulator's shared state."""
    engine = ctx.engine
    cdn_tokens: set[str] = set()
    pending_uploads: dict[str, tuple[str, str]] = {}  # id -> (file name, content type)

    def queue_url() -> str:
        return f"{ctx.https_url}/fal/queue/"

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "key" and bool(key.strip())

    def unauthorized() -> JSONResponse:
        return fal_error(401, "Authentication is required to access this resource.")

    def urls(job: Job) -> dict[str, str]:
        base = f"{queue_url()}{job.extra['fal_app']}/requests/{job.id}"
        return {"response_url": base, "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel"}

    def result_json(job: Job) -> dict[str, Any]:
        if job.video is not None:
            clip = job.outputs[0]
            return {"video": {"url": ctx.file_url(clip.id, clip.ext),
                              "content_type": clip.content_type, "file_name": clip.name,
                              "file_size": len(clip.data)}}
        images = [{"url": ctx.file_url(f.id, f.ext), "width": w, "height": h,
                   "content_type": f.content_type, "file_name": f.name,
                   "file_size": len(f.data)}
                  for f, (w, h) in zip(job.outputs, job.sizes, strict=True)]
        seed = job.params.get("seed")
        if not isinstance(seed, int):
            seed = int(job.id.replace("-", "")[:8], 16)
        return {"images": images, "seed": seed,
                "has_nsfw_concepts": [job.action == "blank"] * len(images),
                "prompt": str(job.params.get("prompt") or ""),
                "timings": {"inference": job.predict_time or 0.0}}

    def failure(job: Job) -> JSONResponse:
        """The result endpoint's answer for a job that did not succeed."""
        if job.error_kind == "content":
            prompt = job.params.get("prompt")
            error: dict[str, Any] = {
                "loc": ["body", "prompt"], "msg": job.error or "content policy violation",
                "type": _CONTENT_TYPE, "url": "https://docs.fal.ai/errors#content_policy_violation"}
            if isinstance(prompt, str):
                error["input"] = prompt
            return model_error(422, [error], request_id=job.id)
        if job.error_kind == "timeout":
            return fal_error(504, "Request timed out", request_id=job.id,
                             error_type="request_timeout",
                             headers={"X-Fal-Request-Timeout-Type": "user"})
        if job.error_kind == "runner":
            return fal_error(503, job.error or "Runner disconnected", request_id=job.id,
                             error_type="runner_disconnected",
                             headers={"X-Fal-Retryable": "true"})
        if job.status == "canceled":
            return fal_error(400, "Request was cancelled", request_id=job.id,
                             error_type="request_cancelled")
        return fal_error(500, job.error or "Internal error", request_id=job.id)

    def status_json(job: Job, with_logs: bool) -> tuple[dict[str, Any], int]:
        common = {"request_id": job.id, **urls(job)}
        logs = [{"message": line, "level": "INFO", "source": "user",
                 "timestamp": iso(job.started_at or job.created_at)} for line in job.logs]
        if job.status == "queued":
            ahead = sum(1 for j in engine.jobs if j.provider == "fal" and j.model == job.model
                        and j.status == "queued" and j.created_at < job.created_at)
            return {"status": "IN_QUEUE", "queue_position": ahead, **common}, 202
        if job.status == "processing":
            return {"status": "IN_PROGRESS", "logs": logs if with_logs else None, **common}, 202
        body: dict[str, Any] = {"status": "COMPLETED", "logs": logs if with_logs else None,
                                "metrics": {"inference_time": job.predict_time}, **common}
        if job.status != "succeeded":
            body["error"] = job.error or "Request was cancelled"
            body["error_type"] = _ERROR_TYPES.get(job.error_kind or "", "internal_error")
        return body, 200

    def webhook_listener(url: str) -> Listener:
        async def on_terminal(job: Job) -> None:
            if not await engine.webhook_due(job):
                return
            action = job.action
            message: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
            if job.status == "succeeded":
                message.update(status="OK", payload=result_json(job))
            else:
                answer = failure(job)
                message.update(status="ERROR", error=f"Invalid status code: {answer.status_code}",
                               payload=json.loads(bytes(answer.body)))
            body = json.dumps(message).encode()
            for _ in range(2 if action == "duplicate_webhook" else 1):
                await ctx.sender.post("fal", job.id, url, body,
                                      lambda: ctx.fal_signer.headers(job.id, body))
        return on_terminal

    async def refuse(fault: Fault) -> Response:
        if fault.action == "rate_limit":
            wait = int(fault.option("retry_after", 0))
            return fal_error(429, "Rate limit exceeded (emulated)",
                             headers={"Retry-After": str(wait)})
        request_id = str(uuid.uuid4())
        if fault.action == "insufficient_quota":
            return fal_error(403, "User is locked. Reason: Exhausted balance. Top up your "
                             "balance at fal.ai/dashboard/billing.")
        if fault.action == "hang":
            await engine.pause(float(fault.option("seconds", 30.0)))
            return fal_error(500, "upstream did not answer (emulated hang)", request_id=request_id)
        return fal_error(int(fault.option("status", 500)),
                         str(fault.option("error", "Internal server error (emulated)")),
                         request_id=request_id)

    async def accept(request: Request, app_path: str) -> Job | Response:
        """Shared by submit and run: auth, body, faults, job creation (not started)."""
        if not authorized(request):
            return unauthorized()
        fal_app = app_base(app_path)
        if fal_app is None:
            return fal_error(404, f"Application {app_path!r} not found")
        try:
            args = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return fal_error(422, [{"loc": ["body"], "msg": "invalid JSON",
                                    "type": "value_error.jsondecode"}])
        if not isinstance(args, dict):
            return fal_error(422, [{"loc": ["body"], "msg": "must be an object",
                                    "type": "type_error.dict"}])
        set_model(request, app_path)
        video: VideoPlan | None = None
        if choose_operation(app_path, True) == "video":
            try:
                video = plan_for("fal", app_path, args)
            except VideoInputError as exc:
                expected = " or ".join(repr(a) for a in exc.allowed)
                return model_error(422, [{"loc": ["body", exc.field],
                                          "msg": f"Input should be {expected}",
                                          "type": "literal_error", "input": exc.value,
                                          "ctx": {"expected": expected}}], request_id=None)
        start_timeout: float | None = None
        raw_timeout = request.headers.get("x-fal-request-timeout")
        if raw_timeout is not None:
            try:
                start_timeout = float(raw_timeout)
            except ValueError:
                return fal_error(422, [{"loc": ["header", "X-Fal-Request-Timeout"],
                                        "msg": "must be a number of seconds",
                                        "type": "value_error"}])
        fault = ctx.faults.take("fal", app_path)
        if fault is not None and fault.action in REFUSING_ACTIONS:
            return await refuse(fault)
        n = args.get("num_images", 1)
        job = engine.create("fal", app_path, args, fault=fault, start=False,
                            n_outputs=n if isinstance(n, int) and 0 < n <= 8 else 1,
                            job_id=str(uuid.UUID(int=engine.rng.getrandbits(128), version=4)),
                            start_timeout=start_timeout, video=video)
        job.extra["fal_app"] = fal_app
        job.extra["no_retry"] = request.headers.get("x-fal-no-retry", "").lower() in _TRUE
        return job

    def broken_answer(job: Job) -> Response | None:
        """``accept_then_reset`` / ``accept_then_error``: the answer after acceptance."""
        action = job.action
        if action == "accept_then_reset":
            return ConnectionReset()
        if action == "accept_then_error" and job.fault is not None:
            status = int(job.fault.option("status", 504))
            if job.fault.option("ingress", False):  # an nginx page: fal-client retries it
                return Response(f"<html><body><center><h1>{status} Gateway Time-out</h1>"
                                "</center><hr><center>nginx</center></body></html>",
                                status_code=status, media_type="text/html")
            return fal_error(status, str(job.fault.option(
                "error", "Upstream request timed out (emulated)")), request_id=job.id)
        return None

    async def submit(request: Request, app_path: str) -> Response:
        accepted = await accept(request, app_path)
        if not isinstance(accepted, Job):
            return accepted
        job = accepted
        webhook = request.query_params.get("fal_webhook")
        if webhook:
            job.listeners.append(webhook_listener(webhook))
        engine.start(job)
        engine.accepted(job)
        if (broken := broken_answer(job)) is not None:
            return broken
        status, _ = status_json(job, False)
        return JSONResponse({**status, "gateway_request_id": job.id},
                            headers={"x-fal-request-id": job.id})

    async def run(request: Request) -> Response:
        accepted = await accept(request, request.path_params["app"])
        if not isinstance(accepted, Job):
            return accepted
        job = accepted
        job.extra["no_retry"] = True  # "Direct calls via run() ... are never retried"
        engine.start(job)
        if not await engine.wait_done(job, None):
            return fal_error(500, "emulator stopping", request_id=job.id)
        engine.accepted(job)
        if (broken := broken_answer(job)) is not None:
            return broken
        if job.status != "succeeded":
            return failure(job)
        return JSONResponse(result_json(job), headers={"x-fal-request-id": job.id})

    async def queue(request: Request) -> Response:
        rest = request.path_params["rest"]
        match = _REQUEST_PATH.match(rest)
        if match is None:
            if request.method != "POST":
                return fal_error(405, "Method not allowed")
            return await submit(request, rest)
        if not authorized(request):
            return unauthorized()
        job = engine.by_id.get(match["id"])
        if job is None or job.provider != "fal":
            return fal_error(404, "Request not found")
        set_model(request, job.model)
        op = match["op"]
        if op == "/status" and request.method == "GET":
            with_logs = request.query_params.get("logs", "false").lower() in ("1", "true")
            body, code = status_json(job, with_logs)
            return JSONResponse(body, status_code=code)
        if op == "/cancel" and request.method == "PUT":
            if engine.cancel(job):
                return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        if op is None and request.method == "GET":
            if not job.terminal:
                return fal_error(400, "Request is still in progress")
            if job.status != "succeeded":
                return failure(job)
            return JSONResponse(result_json(job), headers={"x-fal-request-id": job.id})
        return fal_error(405, "Method not allowed")

    async def storage_token(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        token = secrets.token_urlsafe(24)
        cdn_tokens.add(token)
        return JSONResponse({"token": token, "token_type": "Bearer",
                             "base_url": f"{ctx.https_url}/fal/cdn",
                             "expires_at": "2099-01-01T00:00:00+00:00"})

    def stored_url(data: bytes, content_type: str, name: str | None,
                   file_id: str | None = None) -> str:
        ext = (name.rsplit(".", 1)[-1] if name and "." in name
               else (mimetypes.guess_extension(content_type) or ".bin").lstrip("."))
        file_id = file_id or uuid.uuid4().hex
        stored = ctx.files.put(data, content_type, f"{file_id}.{ext}", file_id=file_id)
        return ctx.file_url(stored.id, stored.ext)

    async def cdn_upload(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in cdn_tokens:
            return fal_error(401, "invalid or missing CDN token")
        content_type = request.headers.get("content-type", "application/octet-stream")
        name = request.headers.get("x-fal-file-name")
        url = stored_url(await request.body(), content_type, name)
        return JSONResponse({"access_url": url, "content_type": content_type, "file_name": name})

    async def upload_initiate(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            body = {}
        name = str(body.get("file_name") or "upload.bin")
        content_type = str(body.get("content_type") or "application/octet-stream")
        file_id = uuid.uuid4().hex
        pending_uploads[file_id] = (name, content_type)
        ext = name.rsplit(".", 1)[-1] if "." in name else "bin"
        return JSONResponse({"upload_url": f"{ctx.https_url}/fal/rest/storage/upload/put/{file_id}",
                             "file_url": ctx.file_url(file_id, ext)})

    async def upload_put(request: Request) -> Response:
        file_id = request.path_params["id"]
        if file_id not in pending_uploads:
            return fal_error(404, "unknown upload")
        name, content_type = pending_uploads.pop(file_id)
        stored_url(await request.body(), request.headers.get("content-type", content_type),
                   name, file_id=file_id)
        return Response(status_code=200)

    async def jwks(request: Request) -> Response:
        return JSONResponse(ctx.fal_signer.jwks())

    return [
        Route("/fal/queue/{rest:path}", queue, methods=["GET", "POST", "PUT"]),
        Route("/fal/run/{app:path}", run, methods=["POST"]),
        Route("/fal/rest/storage/auth/token", storage_token, methods=["POST"]),
        Route("/fal/rest/storage/upload/initiate", upload_initiate, methods=["POST"]),
        Route("/fal/rest/storage/upload/put/{id}", upload_put, methods=["PUT"]),
        Route("/fal/rest/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/fal/cdn/files/upload", cdn_upload, methods=["POST"]),
    ]
