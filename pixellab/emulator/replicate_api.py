"""Replicate HTTP API (``replicate==1.0.7`` wire protocol), mounted under ``/replicate``.

Point the SDK here with ``replicate.Client(base_url=emu.replicate_base_url)`` or
``REPLICATE_BASE_URL``; the SDK appends ``/v1/...`` itself (providers.md §1.1-1.2).

Protocol quirks reproduced on purpose (providers.md §1.3-1.9, §5; the shapes follow
replicate/replicate-python-beta ``src/replicate/types/prediction.py`` and
``file_create_response.py`` at 48e138a1, generated from Replicate's OpenAPI spec, and the
recorded responses in replicate/replicate-python ``tests/cassettes`` at 0110c2c5):

* A prediction carries exactly the spec's fields: ``id, model, version, status, input,
  output, error, logs, metrics, data_removed, created_at, started_at, completed_at, urls``
  (``deployment`` for deployment predictions); ``urls`` has ``get``, ``cancel`` and ``web``
  (``https://replicate.com/p/<id>``). No ``urls.stream``: the emulator serves no SSE stream, and
  the real API only advertises one for models that stream.
* Official models (model-addressed creates, ``POST /v1/models/{owner}/{name}/predictions``)
  answer ``version: "hidden"`` and, for image models, ``metrics.image_count``. Output rule: an
  official model answers a single URI string unless it is one of the known list-output models
  (:data:`LIST_OUTPUT_MODELS`, whose schema has ``num_outputs``) or the request sends
  ``num_outputs``; a version-addressed (community) prediction answers what its version's
  declared ``Output`` schema says - the emulator declares an array of URIs - and an official
  model's version declares a single URI. pixellab's adapter reads either.
* Data retention (https://replicate.com/docs/topics/predictions/data-retention: "all input
  parameters, output values, output files, and logs are automatically removed after an hour"):
  ``retention_s`` after completion a prediction answers ``data_removed: true`` with
  ``input: {}``, ``output: null`` and ``logs: null``, and its output files answer 404.
* ``Prefer: wait[=n]`` holds the create for up to n s (bare ``wait``: 60 s). A job still running
  then is reported as ``"starting"``: the SDK treats *any* other status in a blocking create's
  answer as final and would return ``None`` instead of polling.
* Outputs are ``https://`` URLs: ``transform_output`` wraps only ``https:``/``data:`` strings in
  ``FileOutput``. Their bytes are what the job's fault dictates (corrupt, blank or real).
* Errors are ``application/problem+json`` ``{"title", "detail", "status"}`` (the cassette
  ``run__invalid-token.yaml``; a 429 also carries ``retry_after``, nodetool-ai/nodetool#5196),
  which ``ReplicateError`` parses; a 429 on a POST is never retried by the SDK, so rate
  limits on create surface at once. Out of credit is a 402 (reported in
  replicate/scribble-diffusion#88 and replicate/replicate-javascript#234).
* Video models (:mod:`pixellab.emulator.video`: ``kwaivgi/kling-v1.6-standard``,
  ``google/veo-3.1``) answer one ``.mp4`` URI, and a succeeded prediction's ``metrics`` carry
  ``video_output_duration_seconds``, the billed seconds: official models report their billing
  metrics in ``metrics`` (replicate/cog ``docs/metrics.md`` @ f77c205f: custom metrics are
  ignored on Replicate, "Official Replicate-published models are the only exception"; the
  metric name is the one Replicate's billing metrics use, seen in real Veo and Seedance
  predictions read by public clients). An input the model refuses (a Kling ``duration`` of 7)
  is a 422 ``Input validation failed`` problem, and no prediction is made.
* Uploaded files (``POST /v1/files``, field ``content``) answer ``urls.get`` =
  ``<api>/v1/files/<id>`` and ``expires_at`` = creation + 24 h (``file_ttl_s``); that URL is
  resolved locally when a prediction's input points at it, and an expired file is gone.
"""

from __future__ import annotations

import hashlib
import http
import json
import mimetypes
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pixellab.emulator.context import ConnectionReset, Context, iso, set_model
from pixellab.emulator.faults import REFUSING_ACTIONS, Fault
from pixellab.emulator.files import content_hash
from pixellab.emulator.imaging import choose_operation
from pixellab.emulator.jobs import Job, Listener
from pixellab.emulator.video import VideoInputError, plan_for
from pixellab.emulator.webhooks import sign_replicate

__all__ = ["LIST_OUTPUT_MODELS", "PROBLEM_JSON", "problem", "routes"]

PROBLEM_JSON = "application/problem+json"

LIST_OUTPUT_MODELS: frozenset[str] = frozenset({
    "black-forest-labs/flux-schnell",
    "black-forest-labs/flux-dev",
})
"""Official models whose output schema is an array (they take ``num_outputs``)."""

_IMAGE_OPERATIONS = frozenset({"cutout", "upscale", "packshot", "enhance", "generate"})

_STATUS = {"queued": "starting", "processing": "processing", "succeeded": "succeeded",
           "failed": "failed", "canceled": "canceled"}
_MAX_UPLOAD = 100 * 1024 * 1024


def problem(status: int, detail: str, *, title: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An RFC 7807 ``application/problem+json`` error, which
    ``replicate.exceptions.ReplicateError`` parses (``title`` defaults to the reason phrase)."""
    body = {"title": title or http.HTTPStatus(status).phrase, "detail": detail,
            "status": status, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def version_id_for(model: str) -> str:
    """The emulator's (stable) version id of a model: 64 hex characters, like Replicate's."""
    return hashlib.sha256(f"pixellab-emulator:{model}".encode()).hexdigest()


def parse_prefer_wait(header: str | None) -> float | None:
    """``Prefer: wait`` -> 60, ``wait=5`` -> 5 (clamped to 1..60), absent/other -> None."""
    if not header:
        return None
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "wait":
            try:
                return min(max(float(value), 1.0), 60.0) if value else 60.0
            except ValueError:
                return 60.0
    return None


def routes(ctx: Context) -> list[Route]:
    """The Replicate routes, bound to one emulator's shared state."""
    engine = ctx.engine
    versions: dict[str, str] = {}  # version id -> model
    file_meta: dict[str, dict[str, Any]] = {}  # uploaded file id -> its metadata

    def base() -> str:
        return f"{ctx.http_url}/replicate"

    def authorized(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and bool(token.strip())

    def unauthorized() -> JSONResponse:
        return problem(401, "You did not pass a valid authentication token",
                       title="Unauthenticated")

    def data_removed(job: Job) -> bool:
        return job.completed_at is not None and (
            time.time() >= job.completed_at + ctx.retention_s)

    def output_of(job: Job) -> Any:
        if job.status != "succeeded":
            return None
        urls = [ctx.file_url(f.id, f.ext) for f in job.outputs]
        as_list = (not job.official or job.model in LIST_OUTPUT_MODELS
                   or "num_outputs" in job.params or len(urls) != 1)
        return urls if as_list else urls[0]

    def prediction_json(job: Job) -> dict[str, Any]:
        done = job.completed_at
        removed = data_removed(job)
        metrics: dict[str, Any] = {}
        if job.predict_time is not None:
            metrics["predict_time"] = job.predict_time
        if done is not None:
            metrics["total_time"] = round(done - job.created_at, 4)
        if job.official and job.status == "succeeded" and job.operation in _IMAGE_OPERATIONS:
            metrics["image_count"] = len(job.outputs)
        if job.status == "succeeded" and job.video is not None:
            metrics["video_output_duration_seconds"] = job.video.seconds
        answer: dict[str, Any] = {
            "id": job.id,
            "model": job.model,
            "version": "hidden" if job.official else (
                job.extra.get("version") or version_id_for(job.model)),
            "status": _STATUS[job.status],
            "input": {} if removed else job.params,
            "output": None if removed else output_of(job),
            "error": job.error if job.status == "failed" else None,
            "logs": None if removed else "\n".join(job.logs),
            "metrics": metrics,
            "data_removed": removed,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "completed_at": iso(done),
            "urls": {"get": f"{base()}/v1/predictions/{job.id}",
                     "cancel": f"{base()}/v1/predictions/{job.id}/cancel",
                     "web": f"https://replicate.com/p/{job.id}"},
        }
        if job.extra.get("deployment"):
            answer["deployment"] = job.extra["deployment"]
        return answer

    async def deliver(job: Job, url: str, body: str, webhook_id: str) -> None:
        def headers() -> dict[str, str]:
            ts = str(int(time.time()))
            return {"webhook-id": webhook_id, "webhook-timestamp": ts,
                    "webhook-signature": sign_replicate(ctx.webhook_secret, webhook_id, ts, body)}

        await ctx.sender.post("replicate", job.id, url, body.encode(), headers)

    def completed_listener(urls: list[str]) -> Listener:
        async def on_terminal(job: Job) -> None:
            if not await engine.webhook_due(job):
                return
            action = job.action
            body = json.dumps(prediction_json(job))
            webhook_id = "msg_" + job.id + "_completed"
            for _ in range(2 if action == "duplicate_webhook" else 1):
                for url in urls:
                    await deliver(job, url, body, webhook_id)
        return on_terminal

    async def refuse(fault: Fault) -> Response:
        if fault.action == "rate_limit":
            wait = int(fault.option("retry_after", 0))
            return problem(429, f"Request was throttled. Your rate limit resets in ~{wait}s.",
                           retry_after=wait, headers={"Retry-After": str(wait)})
        if fault.action == "hang":
            await engine.pause(float(fault.option("seconds", 30.0)))
            return problem(500, "upstream did not answer (emulated hang)")
        if fault.action == "insufficient_quota":
            return problem(402, "You have insufficient credit to run this model: add credit at "
                           "replicate.com/account/billing and retry (emulated).")
        status = int(fault.option("status", 500))
        return problem(status, str(fault.option("error", "Internal server error (emulated)")))

    async def create(request: Request, model: str, version: str | None, *,
                     official: bool = False, deployment: str | None = None) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return problem(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("input", {}), dict):
            return problem(422, "input: must be an object", title="Invalid input")
        set_model(request, model)
        params: dict[str, Any] = body.get("input") or {}
        video = None
        if choose_operation(model, True) == "video":
            try:
                video = plan_for("replicate", model, params)
            except VideoInputError as exc:
                return problem(422, f"- input.{exc}", title="Input validation failed")
        fault = ctx.faults.take("replicate", model)
        if fault is not None and fault.action in REFUSING_ACTIONS:
            return await refuse(fault)
        job = engine.create("replicate", model, params, fault=fault,
                            job_id=engine.new_id()[:26], start=False, official=official,
                            video=video)
        job.extra["version"] = version or version_id_for(model)
        job.extra["deployment"] = deployment
        events = body.get("webhook_events_filter")
        targets = []
        if isinstance(body.get("webhook"), str) and (not events or "completed" in events):
            targets.append(body["webhook"])
        if isinstance(body.get("webhook_completed"), str):
            targets.append(body["webhook_completed"])
        if targets:
            job.listeners.append(completed_listener(targets))
        if isinstance(body.get("webhook"), str) and events and "start" in events:
            start_body = json.dumps(prediction_json(job))
            engine.spawn(deliver(job, body["webhook"], start_body, f"msg_{job.id}_start"))
        engine.start(job)  # only now: the listeners above must be in place first
        engine.accepted(job)
        if fault is not None and fault.action == "accept_then_reset":
            return ConnectionReset()
        if fault is not None and fault.action == "accept_then_error":
            status = int(fault.option("status", 504))
            return problem(status, str(fault.option(
                "error", "The upstream server timed out (emulated)")))
        wait = parse_prefer_wait(request.headers.get("prefer"))
        if wait is not None:
            done = await engine.wait_done(job, wait)
            answer = prediction_json(job)
            if not done:
                answer["status"] = "starting"
            return JSONResponse(answer, status_code=201)
        return JSONResponse(prediction_json(job), status_code=201)

    async def create_for_model(request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        versions.setdefault(version_id_for(model), model)
        return await create(request, model, None, official=True)

    async def create_for_deployment(request: Request) -> Response:
        name = f"{request.path_params['owner']}/{request.path_params['name']}"
        versions.setdefault(version_id_for(name), name)
        return await create(request, name, None, deployment=name)

    async def create_for_version(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return problem(400, "request body is not valid JSON")
        version = str(body.get("version") or "") if isinstance(body, dict) else ""
        if not version:
            return problem(422, "version: this field is required", title="Invalid input")
        if ":" in version:  # "owner/name:version" is accepted as a convenience
            model, _, version = version.partition(":")
        else:
            model = versions.get(version, "replicate/unknown-version")
        return await create(request, model, version)

    async def get_prediction(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        job = engine.by_id.get(request.path_params["id"])
        if job is None or job.provider != "replicate":
            return problem(404, "Not found.")
        set_model(request, job.model)
        return JSONResponse(prediction_json(job))

    async def cancel_prediction(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        job = engine.by_id.get(request.path_params["id"])
        if job is None or job.provider != "replicate":
            return problem(404, "Not found.")
        set_model(request, job.model)
        engine.cancel(job)
        return JSONResponse(prediction_json(job))

    async def list_predictions(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        jobs = [j for j in list(engine.jobs) if j.provider == "replicate"]
        return JSONResponse({"next": None, "previous": None,
                             "results": [prediction_json(j) for j in reversed(jobs)]})

    def version_json(model: str, version: str, *, official: bool = False) -> dict[str, Any]:
        versions.setdefault(version, model)
        uri = {"type": "string", "format": "uri"}
        output = uri if official and model not in LIST_OUTPUT_MODELS else {
            "type": "array", "items": uri}
        return {"id": version, "created_at": iso(0.0), "cog_version": "0.9.0",
                "openapi_schema": {"openapi": "3.0.2", "components": {"schemas": {
                    "Output": output}}}}

    async def get_version(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        set_model(request, model)
        return JSONResponse(version_json(model, request.path_params["version"]))

    async def get_model(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        owner, name = request.path_params["owner"], request.path_params["name"]
        model = f"{owner}/{name}"
        set_model(request, model)
        return JSONResponse({
            "url": f"{base()}/v1/models/{model}", "owner": owner, "name": name,
            "description": "Emulated by pixellab", "visibility": "public", "github_url": None,
            "paper_url": None, "license_url": None, "run_count": 0, "cover_image_url": None,
            "default_example": None,
            "latest_version": version_json(model, version_id_for(model), official=True),
        })

    def file_json(file_id: str) -> dict[str, Any] | None:
        stored = ctx.files.get(file_id)
        if stored is None:
            return None
        meta = file_meta.get(file_id, {})
        return {
            "id": stored.id, "name": stored.name, "content_type": stored.content_type,
            "size": len(stored.data), "etag": content_hash(stored.data),
            "checksums": {"sha256": hashlib.sha256(stored.data).hexdigest(),
                          "md5": content_hash(stored.data)},
            "metadata": meta, "created_at": iso(stored.created_at),
            "expires_at": iso(stored.expires_at),
            "urls": {"get": f"{base()}/v1/files/{stored.id}"},
        }

    async def create_file(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        # Closed when answered: its parts are spooled temporary files.
        async with request.form(max_part_size=_MAX_UPLOAD) as form:
            upload = form.get("content")
            if upload is None or isinstance(upload, str):
                return problem(400, "multipart field 'content' (a file) is required")
            data = await upload.read()
            name = upload.filename or "upload.bin"
            content_type = (upload.content_type if upload.content_type not in (None, "")
                            else mimetypes.guess_type(name)[0]) or "application/octet-stream"
            stored = ctx.files.put(data, content_type, name, ttl_s=ctx.file_ttl_s)
            raw_meta = form.get("metadata")
            try:
                metadata = json.loads(raw_meta) if isinstance(raw_meta, str) else {}
            except json.JSONDecodeError:
                metadata = {}
            file_meta[stored.id] = metadata if isinstance(metadata, dict) else {}
            return JSONResponse(file_json(stored.id), status_code=201)

    async def get_file(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        found = file_json(request.path_params["id"])
        return JSONResponse(found) if found else problem(404, "Not found.")

    async def download_file(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        stored = ctx.files.get(request.path_params["id"])
        if stored is None:
            return problem(404, "Not found.")
        return Response(stored.data, media_type=stored.content_type)

    async def delete_file(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        if ctx.files.delete(request.path_params["id"]):
            return Response(status_code=204)
        return problem(404, "Not found.")

    async def list_files(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        found = [file_json(f.id) for f in reversed(ctx.files.all()) if f.id in file_meta]
        return JSONResponse({"next": None, "previous": None,
                             "results": [f for f in found if f is not None]})

    async def webhook_secret(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return JSONResponse({"key": ctx.webhook_secret})

    p = "/replicate/v1"
    return [
        Route(f"{p}/models/{{owner}}/{{name}}/predictions", create_for_model, methods=["POST"]),
        Route(f"{p}/deployments/{{owner}}/{{name}}/predictions", create_for_deployment,
              methods=["POST"]),
        Route(f"{p}/models/{{owner}}/{{name}}/versions/{{version}}", get_version,
              methods=["GET"]),
        Route(f"{p}/models/{{owner}}/{{name}}", get_model, methods=["GET"]),
        Route(f"{p}/predictions", create_for_version, methods=["POST"]),
        Route(f"{p}/predictions", list_predictions, methods=["GET"]),
        Route(f"{p}/predictions/{{id}}", get_prediction, methods=["GET"]),
        Route(f"{p}/predictions/{{id}}/cancel", cancel_prediction, methods=["POST"]),
        Route(f"{p}/files", create_file, methods=["POST"]),
        Route(f"{p}/files", list_files, methods=["GET"]),
        Route(f"{p}/files/{{id}}", get_file, methods=["GET"]),
        Route(f"{p}/files/{{id}}", delete_file, methods=["DELETE"]),
        Route(f"{p}/files/{{id}}/download", download_file, methods=["GET"]),
        Route(f"{p}/webhooks/default/secret", webhook_secret, methods=["GET"]),
    ]
