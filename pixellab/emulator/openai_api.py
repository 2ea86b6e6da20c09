"""OpenAI images, chat-completions and videos APIs (``openai==3.57.0``+ wire protocol), under
``/openai/v1``.

Point the SDK here with ``AsyncOpenAI(base_url=emu.openai_base_url)`` or ``OPENAI_BASE_URL``
(the value includes ``/v1``; providers.md §3.1). Shapes follow openai/openai-openapi
``openapi.yaml`` at f85dbe22 (``ImagesResponse``, ``ImageGenUsage``,
``CreateChatCompletionResponse``, ``ErrorResponse``).

Protocol quirks reproduced on purpose (providers.md §3.2-3.4, §5):

* Calls are synchronous: the response arrives after the simulated latency; nothing to poll.
  The default image model is ``gpt-image-2.6-sunburst``: ``gpt-image-1`` was retired on
  2026-10-23 and ``gpt-image-1.5`` shuts down on 2026-12-01, with ``gpt-image-2.6-sunburst``
  or ``-flare`` as the replacement (https://developers.openai.com/api/docs/deprecations).
* ``images/edits`` is multipart: the image arrives as ``image`` (one file) or ``image[]`` (a
  list), plus optional ``mask``; scalar fields are text parts. At most 16 images of at most
  50 MB each (the spec's ``CreateImageEditRequest``); more is a 400. GPT image models answer
  ``b64_json`` only, with ``usage`` split into text and image input tokens and image output
  tokens (:func:`pixellab.emulator.billing.image_output_tokens`); DALL-E models answer just
  ``created`` and ``data`` (``response_format=url`` gets an emulator file URL).
* Errors are ``{"error": {"message", "type", "param", "code"}}`` and every response carries
  ``x-request-id`` (``e.request_id`` in the SDK). A 429 also sends ``retry-after`` and
  ``retry-after-ms``, which the SDK's retry honours; tests use ``max_retries=0``.
  ``insufficient_quota`` is a 429 with ``type``/``code`` ``insufficient_quota`` (a billing state,
  not a rate limit). ``moderation_blocked`` (400, type ``image_generation_user_error``) carries
  ``moderation_details: {moderation_stage, categories}`` in the error object; the ``stage``
  option of ``content_rejected`` picks ``input`` (default: refused before the model runs, no
  job) or ``output`` (the image is made, then withheld).
* Billing (:mod:`pixellab.emulator.billing`): only a successful answer is billed, by the usage
  it reports (per token class) or per image; failures and refusals cost nothing.
* Videos (Sora; openai/openai-openapi ``openapi.yaml`` @ f85dbe22 paths ``/videos``,
  ``/videos/{video_id}``, ``/videos/{video_id}/content``; components ``VideoResource``,
  ``CreateVideoMultipartBody``, ``DeletedVideoResource``, ``VideoListResource``) are
  asynchronous: ``POST /videos`` (multipart: ``prompt``, ``model``, ``seconds`` "4"/"8"/"12",
  ``size``, an ``input_reference`` file, which must have the video's size) answers the job
  ``queued`` with ``progress`` 0; ``GET /videos/{id}`` reports ``in_progress`` with a rising
  ``progress``, then ``completed`` (``expires_at`` = completion + ``retention_s``) or
  ``failed`` with ``error: {code, message}``; ``GET .../content?variant=video`` streams the
  ``video/mp4`` (``thumbnail``/``spritesheet``: ``image/webp``); ``DELETE`` removes a finished
  video (there is no cancel endpoint: a queued or running Sora job cannot be stopped). The
  spec marks every video path ``deprecated``: the Sora API shut down on 2026-09-24
  (developers.openai.com/api/docs/guides/video-generation). Refusals: a bad ``seconds`` or
  ``size`` is a 400 ``invalid_value`` ("Invalid value: '10'. Supported values are: '4', '8',
  and '12'.", the message developers report), an ``input_reference`` of another size a 400
  "Inpaint image must match the requested width and height". A content refusal is a 400
  ``moderation_blocked`` at create (``stage=input``) or, at the output stage, a ``failed`` job
  with ``error.code`` ``moderation_blocked``; a model failure a ``failed`` job with
  ``internal_error``; ``accept_then_hang`` keeps the job ``in_progress`` for ``seconds`` (30),
  then fails it. Error codes of failed jobs are the emulator's reading (the spec types
  ``code`` as a string and lists none). Billing: a completed video bills its ``seconds`` at
  the model's per-second price; a failed one nothing.
* ``chat/completions`` with a ``json_schema`` response format returns a JSON object valid for
  that schema (:func:`instance_for_schema`), so ``chat.completions.parse`` works end to end;
  the ``reply`` fault answers a given text instead (a model that broke out of the schema).
  When a judge truth is set (:meth:`pixellab.emulator.Emulator.judge`), a ``json_schema``
  named ``pixellab_judge`` is answered by the emulated judge instead
  (:mod:`pixellab.emulator.judge`); the faults that change content still apply to it.
* Chat usage counts images as OpenAI does (:func:`prompt_tokens`), not their base64 as text.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pixellab.emulator.billing import image_output_tokens
from pixellab.emulator.context import ConnectionReset, Context, set_model
from pixellab.emulator.faults import Fault
from pixellab.emulator.imaging import choose_operation
from pixellab.emulator.jobs import Job
from pixellab.emulator.judge import (
    JUDGE_SCHEMA_NAME,
    JudgeDesk,
    data_url_bytes,
    verdict,
)
from pixellab.emulator.video import VideoInputError, sora_plan, thumbnail
from pixellab.validate import decode_image

__all__ = ["DEFAULT_IMAGE_MODEL", "image_tokens", "instance_for_schema", "oai_error",
           "prompt_tokens", "routes"]

DEFAULT_IMAGE_MODEL = "gpt-image-2.6-sunburst"
MAX_EDIT_IMAGES = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024
_MAX_PART = 64 * 1024 * 1024  # parts up to this size are read, so an over-50 MB one gets the 400
_INPUT_IMAGE_TOKENS = 323  # per input image: an undocumented, plausible figure
_SIZES = ("1024x1024", "1024x1536", "1536x1024")


def oai_error(status: int, message: str, *, type_: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None,
              **extra: Any) -> JSONResponse:
    """OpenAI's error envelope (the SDK maps the status to its exception class); ``extra``
    adds fields to the error object (``moderation_details``)."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code, **extra}}, status_code=status, headers=headers)


def moderation_blocked(fault: Fault | None, stage: str) -> JSONResponse:
    """The 400 a GPT image model answers when moderation blocks the input or the output."""
    categories = list(fault.option("categories", ["sexual"])) if fault else ["sexual"]
    message = str(fault.option("error", "Your request was rejected by the safety system.")
                  if fault else "Your request was rejected by the safety system.")
    return oai_error(400, message, type_="image_generation_user_error",
                     code="moderation_blocked",
                     moderation_details={"moderation_stage": stage, "categories": categories})


# Vision input cost of GPT-4o class models, from OpenAI's docs "Images and vision" ->
# "Calculating costs" (https://platform.openai.com/docs/guides/images-vision#calculating-costs):
# detail "low" is a flat 85 tokens; "high" (and "auto", the default) scales the image to fit in
# 2048x2048, then so its shortest side is 768 px, and charges 85 + 170 per 512 px tile.
_IMAGE_BASE_TOKENS = 85
_IMAGE_TILE_TOKENS = 170
_IMAGE_FIT = 2048
_IMAGE_SHORT_SIDE = 768
_IMAGE_TILE = 512


def image_tokens(width: int, height: int, detail: str | None = "auto") -> int:
    """Prompt tokens one input image costs (see the docs cited above); both scalings only
    shrink, and a scaled side is truncated to whole pixels, as OpenAI's worked examples do."""
    if detail == "low":
        return _IMAGE_BASE_TOKENS
    w, h = float(max(1, width)), float(max(1, height))
    if max(w, h) > _IMAGE_FIT:
        scale = _IMAGE_FIT / max(w, h)
        w, h = float(int(w * scale)), float(int(h * scale))
    if min(w, h) > _IMAGE_SHORT_SIDE:
        scale = _IMAGE_SHORT_SIDE / min(w, h)
        w, h = float(int(w * scale)), float(int(h * scale))
    tiles = math.ceil(w / _IMAGE_TILE) * math.ceil(h / _IMAGE_TILE)
    return _IMAGE_BASE_TOKENS + _IMAGE_TILE_TOKENS * tiles


def _image_part_tokens(image: Any) -> int:
    """Tokens of one ``image_url`` part; an image that cannot be read (not a ``data:`` URL, or
    not an image) costs the base 85, as nothing better is known about it."""
    if isinstance(image, str):
        image = {"url": image}
    if not isinstance(image, dict):
        return _IMAGE_BASE_TOKENS
    detail = image.get("detail")
    if detail == "low":
        return _IMAGE_BASE_TOKENS
    data = data_url_bytes(str(image.get("url") or ""))
    if data is None:
        return _IMAGE_BASE_TOKENS
    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            width, height = opened.size
    except Exception:  # any decoder error (or a decompression bomb) means "unreadable"
        return _IMAGE_BASE_TOKENS
    return image_tokens(width, height, str(detail) if detail is not None else "auto")


def prompt_tokens(messages: Any) -> int:
    """``usage.prompt_tokens`` of a chat call: text at 4 characters a token, images by
    :func:`image_tokens`.

    Text is each message's fields other than ``content`` (role, name, tool calls) as JSON, its
    string content, and its ``text`` parts; other non-image parts count as their JSON. Counting
    the whole body as text would charge an image's base64 as thousands of tokens.
    """
    if not isinstance(messages, list):
        return max(1, len(json.dumps(messages)) // 4)
    chars = images = 0
    for message in messages:
        if not isinstance(message, dict):
            chars += len(json.dumps(message))
            continue
        chars += len(json.dumps({k: v for k, v in message.items() if k != "content"}))
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    images += _image_part_tokens(part.get("image_url"))
                elif isinstance(part, dict) and part.get("type") == "text":
                    chars += len(str(part.get("text") or ""))
                else:
                    chars += len(json.dumps(part))
        elif content is not None:
            chars += len(json.dumps(content))
    return max(1, chars // 4 + images)


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def instance_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None,
                        depth: int = 0) -> Any:
    """A small value valid for a JSON schema (the subset structured outputs allow).

    Enums take their first value, strings a short text (or a date/URI for those formats),
    numbers 0.5 and integers 1 (both clamped to ``minimum``/``maximum``), booleans false, arrays
    ``max(1, minItems)`` elements, objects every property. ``$ref`` into ``$defs`` (what pydantic
    emits for nested models), ``anyOf``/``oneOf`` (first non-null branch) and ``type`` lists are
    handled.
    """
    root = schema if root is None else root
    if depth > 32:
        return None
    if "$ref" in schema:
        return instance_for_schema(_resolve_ref(str(schema["$ref"]), root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
            return instance_for_schema((usable or branches)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: instance_for_schema(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, dict) else {}
        count = max(1, int(schema.get("minItems", 1)))
        return [instance_for_schema(items, root, depth + 1) for _ in range(count)]
    if kind in ("number", "integer"):
        value: float = 0.5 if kind == "number" else 1
        for bound in ("minimum", "exclusiveMinimum"):
            if isinstance(schema.get(bound), int | float) and value <= schema[bound]:
                value = schema[bound] + (0 if bound == "minimum" else (1 if kind == "integer"
                                                                      else 0.5))
        for bound in ("maximum", "exclusiveMaximum"):
            if isinstance(schema.get(bound), int | float) and value >= schema[bound]:
                value = schema[bound] - (0 if bound == "maximum" else (1 if kind == "integer"
                                                                      else 0.5))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = {"date": "2025-01-01", "date-time": "2025-01-01T00:00:00Z", "time": "00:00:00",
            "uri": "https://example.com/", "email": "user@example.com",
            "uuid": "00000000-0000-4000-8000-000000000000"}.get(str(schema.get("format")),
                                                                 "emulated")
    min_length = int(schema.get("minLength", 0))
    return text + "x" * max(0, min_length - len(text))


def _criteria_names(schema: dict[str, Any]) -> list[str]:
    """The criterion names of a judge schema: the properties of its ``criteria`` object."""
    props = schema.get("properties")
    node = props.get("criteria") if isinstance(props, dict) else None
    if isinstance(node, dict) and "$ref" in node:
        node = _resolve_ref(str(node["$ref"]), schema)
    names = node.get("properties") if isinstance(node, dict) else None
    return [str(name) for name in names] if isinstance(names, dict) else []


def routes(ctx: Context, judge: JudgeDesk | None = None) -> list[Route]:
    """The OpenAI routes, bound to one emulator's shared state (``judge``: its judge truth)."""
    engine = ctx.engine
    judge = judge if judge is not None else JudgeDesk()

    def with_request_id(handler: Callable[[Request], Awaitable[Response]]
                        ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            response = await handler(request)
            # A billed call answers with its job id, so a client's record maps to the bill.
            response.headers.setdefault("x-request-id", "req_" + uuid.uuid4().hex)
            return response
        return wrapped

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(key.strip())

    def unauthorized() -> JSONResponse:
        return oai_error(401, "You didn't provide an API key.", type_="invalid_request_error",
                         code="invalid_api_key")

    async def refuse(fault: Fault) -> Response | None:
        """The error a refusing fault turns this call into (no job), or None."""
        action = fault.action
        if action == "rate_limit":
            wait = float(fault.option("retry_after", 0))
            return oai_error(429, "Rate limit reached (emulated).", type_="requests",
                             code="rate_limit_exceeded",
                             headers={"retry-after": f"{wait:g}",
                                      "retry-after-ms": str(int(wait * 1000))})
        if action == "insufficient_quota":
            return oai_error(429, "You exceeded your current quota, please check your plan and "
                             "billing details (emulated).", type_="insufficient_quota",
                             code="insufficient_quota")
        if action == "server_error":
            return oai_error(int(fault.option("status", 500)),
                             str(fault.option("error", "The server had an error while "
                                              "processing your request (emulated).")),
                             type_="server_error")
        if action == "hang":
            await engine.pause(float(fault.option("seconds", 30.0)))
            return oai_error(500, "upstream did not answer (emulated hang)", type_="server_error")
        if action == "content_rejected" and fault.option("stage", "input") == "input":
            return moderation_blocked(fault, "input")
        return None

    def abandon(job: Job) -> None:
        """End a job the call gave up on (``accept_then_hang``): failed, not billed."""
        task = job.extra.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
        engine.finish(job, "failed", error="upstream timed out", kind="timeout")

    def broken_answer(job: Job) -> Response | None:
        """``accept_then_reset`` / ``accept_then_error`` once the job has run (and billed)."""
        if job.action == "accept_then_reset":
            return ConnectionReset()
        if job.action == "accept_then_error" and job.fault is not None:
            status = int(job.fault.option("status", 504))
            return oai_error(status, str(job.fault.option(
                "error", "The server had an error while processing your request (emulated).")),
                type_="server_error")
        return None

    async def run_job(job: Job, fault: Fault | None) -> Response | None:
        """Wait for a synchronous job; its error response if it did not succeed."""
        hang_s = float(fault.option("seconds", 30.0)) if fault else 30.0
        limit = hang_s if job.action == "accept_then_hang" else None
        if not await engine.wait_done(job, limit):
            abandon(job)
            return oai_error(504, "upstream timed out (emulated)", type_="server_error")
        engine.accepted(job)
        if (broken := broken_answer(job)) is not None:
            return broken
        if job.status == "succeeded":
            return None
        if job.error_kind == "content":
            return moderation_blocked(fault, "output")
        if job.action == "job_failure":
            return oai_error(500, job.error or "model failure", type_="server_error")
        return oai_error(400, job.error or "invalid request", type_="invalid_request_error",
                         code="invalid_image")

    def image_usage(n_input_images: int, quality: str) -> Callable[[Job], dict[str, float]]:
        def usage(job: Job) -> dict[str, float]:
            return {"text_input": max(1, len(str(job.params.get("prompt") or "")) // 4),
                    "image_input": _INPUT_IMAGE_TOKENS * n_input_images,
                    "image_output": sum(image_output_tokens(quality, size)
                                        for size in job.sizes)}
        return usage

    def images_body(job: Job, quality: str) -> dict[str, Any]:
        fmt = job.output_format
        if job.params.get("response_format") == "url":
            data: list[dict[str, Any]] = [{"url": ctx.file_url(f.id, f.ext),
                                           "revised_prompt": job.params.get("prompt")}
                                          for f in job.outputs]
        else:
            data = [{"b64_json": base64.b64encode(f.data).decode()} for f in job.outputs]
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if job.model.startswith("dall-e"):
            return body
        width, height = job.sizes[0] if job.sizes else (1024, 1024)
        size = f"{width}x{height}"
        text, image = job.usage.get("text_input", 0), job.usage.get("image_input", 0)
        output = job.usage.get("image_output", 0)
        body.update({"background": "opaque", "output_format": fmt, "quality": quality,
                     "usage": {"input_tokens": text + image,
                               "input_tokens_details": {"text_tokens": text,
                                                        "image_tokens": image},
                               "output_tokens": output,
                               "total_tokens": text + image + output}})
        if size in _SIZES:
            body["size"] = size
        return body

    async def images(request: Request, params: dict[str, Any], source: bytes | None,
                     n_input_images: int = 0) -> Response:
        model = str(params.get("model") or DEFAULT_IMAGE_MODEL)
        set_model(request, model)
        try:
            n = max(1, min(int(params.get("n") or 1), 10))
        except (TypeError, ValueError):
            return oai_error(400, "n must be an integer", type_="invalid_request_error",
                             param="n")
        fault = ctx.faults.take("openai", model)
        if fault is not None and (refused := await refuse(fault)) is not None:
            return refused
        operation = choose_operation(model, True) if source is not None else "generate"
        fmt = str(params.get("output_format") or "png")
        quality = str(params.get("quality") or "auto")
        quality = "medium" if quality not in ("low", "medium", "high") else quality
        job = engine.create("openai", model, params, fault=fault, operation=operation,
                            n_outputs=n, output_format=fmt, source=source, start=False)
        job.usage_fn = image_usage(n_input_images, quality)
        engine.start(job)
        if (failed := await run_job(job, fault)) is not None:
            failed.headers.setdefault("x-request-id", job.id)  # the request that made the job
            return failed
        return JSONResponse(images_body(job, quality), headers={"x-request-id": job.id})

    async def edits(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            form = await request.form(max_part_size=_MAX_PART)
        except Exception:  # a part over the multipart limit: far over the 50 MB rule too
            return oai_error(400, f"Image file too large: each image must be smaller than "
                             f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB.",
                             type_="invalid_request_error", param="image")
        try:
            params: dict[str, Any] = {}
            source: bytes | None = None
            images_seen = 0
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    if key in ("image", "image[]"):
                        images_seen += 1
                        if len(data) > MAX_IMAGE_BYTES:
                            return oai_error(
                                400, f"Image file too large: each image must be smaller than "
                                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB.",
                                type_="invalid_request_error", param="image")
                        if source is None:
                            source = data
                    params.setdefault(key, f"<file {value.filename!r}, {len(data)} bytes>")
                else:
                    params[key] = value
            if source is None:
                return oai_error(400, "Missing required parameter: 'image'.",
                                 type_="invalid_request_error", param="image")
            if images_seen > MAX_EDIT_IMAGES:
                return oai_error(400, f"Too many images: {images_seen} were given, at most "
                                 f"{MAX_EDIT_IMAGES} are allowed.",
                                 type_="invalid_request_error", param="image")
            return await images(request, params, source, images_seen)
        finally:
            await form.close()  # its parts are spooled temporary files

    async def generations(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            params = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return oai_error(400, "We could not parse the JSON body of your request.",
                             type_="invalid_request_error")
        if not isinstance(params, dict) or not params.get("prompt"):
            return oai_error(400, "Missing required parameter: 'prompt'.",
                             type_="invalid_request_error", param="prompt")
        return await images(request, params, None)

    def chat_content(body: dict[str, Any], job: Job) -> str:
        action = job.action
        if action == "reply" and job.fault is not None:
            return str(job.fault.option("content", ""))
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") or {}
            answer = instance_for_schema(schema)
            drawn = judge.draw() if spec.get("name") == JUDGE_SCHEMA_NAME else None
            if drawn is not None and isinstance(answer, dict):
                truth, rng = drawn
                answer.update(verdict(body["messages"], truth, rng, _criteria_names(schema)))
            content = json.dumps(answer)
        elif response_format.get("type") == "json_object":
            content = "{}"
        else:
            content = "This is an emulated response."
        if action == "corrupt":
            return content[: max(1, len(content) // 2)]
        if action == "blank":
            return ""
        return content

    async def chat(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return oai_error(400, "We could not parse the JSON body of your request.",
                             type_="invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return oai_error(400, "Missing required parameter: 'messages'.",
                             type_="invalid_request_error", param="messages")
        model = str(body.get("model") or "gpt-4o")
        set_model(request, model)
        fault = ctx.faults.take("openai", model)
        if fault is not None and (refused := await refuse(fault)) is not None:
            return refused
        job = engine.create("openai", model, body, fault=fault, operation="chat", start=False)
        job.status, job.started_at = "processing", time.time()
        if fault is not None and fault.action == "accept_then_hang":
            await engine.pause(float(fault.option("seconds", 30.0)))
            abandon(job)
            return oai_error(504, "upstream timed out (emulated)", type_="server_error")
        await engine.pause(job.queue_s + job.run_s)
        if fault is not None and fault.action in ("job_failure", "content_rejected"):
            rejected = fault.action == "content_rejected"
            engine.finish(job, "failed", error=str(fault.option("error", "model failure")),
                          kind="content" if rejected else "failure")
            engine.accepted(job)
            answer = (moderation_blocked(fault, "output") if rejected
                      else oai_error(500, job.error or "model failure", type_="server_error"))
            answer.headers["x-request-id"] = job.id
            return answer
        content = chat_content(body, job)
        prompt_count = prompt_tokens(body["messages"])
        completion_tokens = max(1, len(content) // 4)
        job.usage = {"text_input": prompt_count, "text_output": completion_tokens}
        engine.finish(job, "succeeded")
        engine.accepted(job)
        if (broken := broken_answer(job)) is not None:
            return broken
        return JSONResponse({
            "id": "chatcmpl-" + job.id[:24], "object": "chat.completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_emulator",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None,
                                     "annotations": []}}],
            "usage": {"prompt_tokens": prompt_count, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_count + completion_tokens},
        }, headers={"x-request-id": job.id})

    # --- videos (Sora) ------------------------------------------------------------------------

    videos: dict[str, Job] = {}

    def video_not_found(video_id: str) -> JSONResponse:
        return oai_error(404, f"Video with id '{video_id}' not found.",
                         type_="invalid_request_error", param="video_id", code="not_found")

    def video_json(job: Job) -> dict[str, Any]:
        assert job.video is not None and job.video.size is not None
        status = {"queued": "queued", "processing": "in_progress",
                  "succeeded": "completed"}.get(job.status, "failed")
        error = None
        if status == "failed":
            if job.error_kind == "content":
                error = {"code": "moderation_blocked", "message": job.error or
                         "Your request was blocked by our moderation system."}
            else:
                code = job.fault.option("code", "internal_error") if job.fault else (
                    "internal_error")
                error = {"code": str(code), "message": job.error or "Video generation failed."}
        done = job.completed_at if status in ("completed", "failed") else None
        width, height = job.video.size
        return {"id": job.id, "object": "video", "model": job.model, "status": status,
                "progress": job.progress, "created_at": int(job.created_at),
                "completed_at": int(done) if done is not None else None,
                "expires_at": (int(done + ctx.retention_s)
                               if done is not None and status == "completed" else None),
                "prompt": job.params.get("prompt"), "size": f"{width}x{height}",
                "seconds": job.params.get("seconds"), "remixed_from_video_id": None,
                "error": error}

    def bad_video_value(exc: VideoInputError) -> JSONResponse:
        supported = [str(a) for a in exc.allowed]
        listed = ", ".join(f"'{a}'" for a in supported[:-1]) + (
            f", and '{supported[-1]}'" if len(supported) > 1 else f"'{supported[0]}'")
        return oai_error(400, f"Invalid value: '{exc.value}'. Supported values are: {listed}.",
                         type_="invalid_request_error", param=exc.field, code="invalid_value")

    async def video_form(request: Request) -> dict[str, Any] | Response:
        """The create's fields (multipart, or the spec's JSON body), the reference image as
        bytes under ``input_reference``."""
        fields: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if not isinstance(body, dict):
                return oai_error(400, "We could not parse the JSON body of your request.",
                                 type_="invalid_request_error")
            fields.update(body)
        else:
            try:
                form = await request.form(max_part_size=_MAX_PART)
            except Exception:
                return oai_error(400, "input_reference is too large.",
                                 type_="invalid_request_error", param="input_reference")
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    fields[key] = await value.read()
                elif key.startswith("input_reference[") and key.endswith("]"):
                    fields.setdefault("input_reference", {})[key[16:-1]] = value
                else:
                    fields[key] = value
        reference = fields.get("input_reference")
        if isinstance(reference, dict):
            url = reference.get("image_url")
            if not isinstance(url, str):
                return oai_error(400, "input_reference: provide image_url (file_id is not "
                                 "emulated).", type_="invalid_request_error",
                                 param="input_reference")
            try:
                fields["input_reference"] = ctx.files.resolve(url)
            except Exception as exc:
                return oai_error(400, f"input_reference: {exc}", type_="invalid_request_error",
                                 param="input_reference")
        return fields

    async def abandon_later(job: Job, seconds: float) -> None:
        await engine.pause(seconds)
        if not job.terminal:
            abandon(job)

    async def create_video(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        fields = await video_form(request)
        if isinstance(fields, Response):
            return fields
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 32000:
            return oai_error(400, "Missing required parameter: 'prompt'.",
                             type_="invalid_request_error", param="prompt")
        model = str(fields.get("model") or "sora-2")
        set_model(request, model)
        try:
            plan = sora_plan(model, fields.get("seconds"), fields.get("size"))
        except VideoInputError as exc:
            return bad_video_value(exc)
        reference = fields.get("input_reference")
        source = reference if isinstance(reference, bytes) else None
        if source is not None:
            try:
                reference_size = decode_image(source).size
            except Exception:
                return oai_error(400, "input_reference: the image could not be read.",
                                 type_="invalid_request_error", param="input_reference",
                                 code="invalid_image")
            if reference_size != plan.size:
                return oai_error(400, "Inpaint image must match the requested width and "
                                 "height", type_="invalid_request_error",
                                 param="input_reference")
        fault = ctx.faults.take("openai", model)
        if fault is not None and (refused := await refuse(fault)) is not None:
            return refused
        assert plan.size is not None
        params: dict[str, Any] = {
            "prompt": prompt, "model": model, "seconds": str(int(plan.seconds)),
            "size": f"{plan.size[0]}x{plan.size[1]}"}
        if source is not None:
            params["input_reference"] = f"<image, {len(source)} bytes>"
        job = engine.create("openai", model, params, fault=fault, source=source, start=False,
                            video=plan, job_id="video_" + engine.new_id())
        videos[job.id] = job
        engine.start(job)
        if fault is not None and fault.action == "accept_then_hang":
            engine.spawn(abandon_later(job, float(fault.option("seconds", 30.0))))
        engine.accepted(job)
        if (broken := broken_answer(job)) is not None:
            return broken
        return JSONResponse(video_json(job), headers={"x-request-id": job.id})

    def find_video(request: Request) -> Job | None:
        job = videos.get(request.path_params["video_id"])
        if job is None or job.extra.get("deleted"):
            return None
        set_model(request, job.model)
        return job

    async def get_video(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        job = find_video(request)
        if job is None:
            return video_not_found(request.path_params["video_id"])
        return JSONResponse(video_json(job))

    async def video_content(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        job = find_video(request)
        if job is None:
            return video_not_found(request.path_params["video_id"])
        variant = request.query_params.get("variant", "video")
        if variant not in ("video", "thumbnail", "spritesheet"):
            return oai_error(400, f"Invalid value: '{variant}'. Supported values are: "
                             "'video', 'thumbnail', and 'spritesheet'.",
                             type_="invalid_request_error", param="variant",
                             code="invalid_value")
        if job.status != "succeeded":
            return oai_error(400, f"Video '{job.id}' is not completed (status "
                             f"{video_json(job)['status']}).", type_="invalid_request_error",
                             param="video_id")
        clip = ctx.files.get(job.outputs[0].id) if job.outputs else None
        if clip is None:  # expired with the job's assets
            return oai_error(404, f"The assets of video '{job.id}' have expired.",
                             type_="invalid_request_error", param="video_id",
                             code="not_found")
        if variant == "video":
            return Response(clip.data, media_type="video/mp4")
        still = await asyncio.to_thread(thumbnail, job.extra.get("source"), job.params,
                                        job.sizes[0] if job.sizes else (1280, 720))
        return Response(still, media_type="image/webp")

    async def delete_video(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        job = find_video(request)
        if job is None:
            return video_not_found(request.path_params["video_id"])
        if not job.terminal:
            return oai_error(400, f"Video '{job.id}' cannot be deleted while it is "
                             f"{video_json(job)['status']}.", type_="invalid_request_error",
                             param="video_id")
        job.extra["deleted"] = True
        for stored in job.outputs:
            ctx.files.delete(stored.id)
        return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})

    async def list_videos(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            limit = max(1, min(int(request.query_params.get("limit", "20")), 100))
        except ValueError:
            return oai_error(400, "limit must be an integer", type_="invalid_request_error",
                             param="limit")
        listed = [j for j in videos.values() if not j.extra.get("deleted")]
        listed.sort(key=lambda j: j.created_at,
                    reverse=request.query_params.get("order", "desc") != "asc")
        after = request.query_params.get("after")
        if after:
            ids = [j.id for j in listed]
            listed = listed[ids.index(after) + 1:] if after in ids else []
        page = listed[:limit]
        return JSONResponse({"object": "list", "data": [video_json(j) for j in page],
                             "first_id": page[0].id if page else None,
                             "last_id": page[-1].id if page else None,
                             "has_more": len(listed) > limit})

    p = "/openai/v1"
    return [
        Route(f"{p}/images/edits", with_request_id(edits), methods=["POST"]),
        Route(f"{p}/images/generations", with_request_id(generations), methods=["POST"]),
        Route(f"{p}/chat/completions", with_request_id(chat), methods=["POST"]),
        Route(f"{p}/videos", with_request_id(create_video), methods=["POST"]),
        Route(f"{p}/videos", with_request_id(list_videos), methods=["GET"]),
        Route(f"{p}/videos/{{video_id}}", with_request_id(get_video), methods=["GET"]),
        Route(f"{p}/videos/{{video_id}}", with_request_id(delete_video), methods=["DELETE"]),
        Route(f"{p}/videos/{{video_id}}/content", with_request_id(video_content),
              methods=["GET"]),
    ]
