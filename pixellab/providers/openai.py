"""OpenAI adapter on the official ``openai`` SDK (async client: images, chat and videos APIs).

Wire facts that shape it (shared/research/providers.md §3, §5; the error and usage shapes are
``ErrorResponse`` and ``ImagesResponse.usage`` in openai/openai-openapi):
- The SDK retries every POST twice by default (timeouts, 429, 5xx) and sends no idempotency key,
  so the client is built with ``max_retries=0``: pixellab's runner is the only retry loop.
- Image calls are synchronous: the job is complete when :meth:`submit` returns, so any 5xx or a
  connection cut after the request left may follow work OpenAI did and bills:
  :class:`~pixellab.errors.OutcomeUnknown`, never a silent retry. A refused connection never
  left, so it is retried.
- Errors are typed by ``code``: ``insufficient_quota`` (a 429) is a billing state, not a rate
  limit (:class:`~pixellab.errors.QuotaExhausted`); ``moderation_blocked`` is a content refusal,
  at the input stage before any work or at the output stage after the image was made.
- GPT image models price text input, image input and image output tokens differently; the
  response's ``usage`` is reported by class (:class:`~pixellab.billing.Usage`), and the catalog
  prices each class.
- Edits take at most 16 images of at most 50 MB each; a larger input is refused here, before a
  call.
- Rate limits carry ``retry-after-ms`` / ``retry-after``; both are passed on as ``retry_after``.

Videos (Sora, the SDK's ``videos`` resource; openai/openai-openapi ``openapi.yaml`` @ f85dbe22,
``/videos`` paths, ``VideoResource``, ``CreateVideoMultipartBody``) are asynchronous:
- :meth:`submit` creates the job (``POST /videos``, multipart: ``prompt``, ``model``,
  ``seconds``, ``size``, ``input_reference``) and returns it queued; :meth:`poll` retrieves it
  (``queued`` → ``in_progress`` with ``progress`` → ``completed`` or ``failed`` with
  ``error.code``); on ``completed`` the MP4 is streamed from ``GET /videos/{id}/content``
  (``variant=video``) with a video's limits (500 MiB, 5 minutes), and its ``seconds`` are
  reported as usage (``Usage.video_seconds``: Sora bills per second of video).
- ``seconds`` is a string enum, "4", "8" or "12"; ``size`` one of 720x1280, 1280x720 (and, for
  ``sora-2-pro``, 1024x1792, 1792x1024). A normalized ``duration_s`` must be one of those
  durations and ``aspect_ratio`` (16:9, 9:16; default: the photo's orientation) with
  ``resolution`` (720p, or 1024p for the larger sizes) must name a size, else the request is
  refused here (:class:`~pixellab.errors.InvalidRequest`), free, before any call.
- The reference image "must match the target video size" (the video generation guide): the
  photo is fitted into the size on a white canvas before it is sent.
- A content refusal is a 400 ``moderation_blocked`` at create (nothing made, free) or a
  ``failed`` job whose ``error.code`` says so (made, then withheld: counted as rejected); any
  other failure is retryable. There is no cancel endpoint (``DELETE`` only removes a finished
  video), so :meth:`cancel` cannot stop a Sora job: the runner then charges it as finished.
  Nothing tags a video with the attempt, so a create cut off mid-answer stays
  :class:`~pixellab.errors.OutcomeUnknown` (the list has no key to match it by).
- The SDK marks every video method deprecated: OpenAI shut the Sora API down on 2026-09-24
  (developers.openai.com/api/docs/guides/video-generation); this works against the emulator,
  or an OpenAI-compatible server at ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
from typing import Any

import openai
from PIL import ImageOps

from pixellab.billing import Usage
from pixellab.errors import (
    ContentRejected,
    DataRemoved,
    InvalidOutput,
    InvalidRequest,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
)
from pixellab.intel.taxonomy import analysis_messages, load_taxonomy
from pixellab.providers.base import (
    Job,
    JobState,
    KeyedProvider,
    LoopBound,
    Output,
    ProviderRequest,
    error_for_status,
    transport_error,
)
from pixellab.providers.download import limits
from pixellab.tasks import Task
from pixellab.validate import decode_image
from pixellab.verdicts import judge_messages, response_format

_CONTENT_CODES = ("moderation_blocked", "content_policy_violation")
_QUOTA_CODES = ("insufficient_quota",)
_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MAX_EDIT_IMAGE_BYTES = 50 * 1024 * 1024
SORA_SECONDS = ("4", "8", "12")
SORA_SIZES: dict[tuple[str, str], str] = {
    ("16:9", "720p"): "1280x720", ("9:16", "720p"): "720x1280",
    ("16:9", "1024p"): "1792x1024", ("9:16", "1024p"): "1024x1792",
}
"""Sora's sizes by normalized (aspect_ratio, resolution): the SDK's ``VideoSize``."""
_VIDEO_STATES = {"queued": JobState.QUEUED, "in_progress": JobState.RUNNING,
                 "completed": JobState.SUCCEEDED, "failed": JobState.FAILED}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None


def _find(body: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a JSON body (error details nest differently)."""
    if isinstance(body, dict):
        if key in body:
            return body[key]
        values: Any = body.values()
    elif isinstance(body, list):
        values = body
    else:
        return None
    for value in values:
        found = _find(value, key)
        if found is not None:
            return found
    return None


def map_error(exc: BaseException, model_id: str | None = None, *,
              creating: bool = False) -> ProviderError:
    """Translate an SDK exception into the pixellab hierarchy (``creating``: the call that
    makes and bills the image, where a 5xx or a cut connection leaves the outcome unknown)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        if creating:
            return OutcomeUnknown(f"{model_id}: openai did not answer in time after the request "
                                  "was sent: the job may have run and bill", model_id=model_id)
        return transport_error(exc.__cause__ or exc, f"{model_id}: openai timed out",
                               model_id=model_id)
    if isinstance(exc, openai.APIConnectionError):
        return transport_error(exc.__cause__ or exc, f"{model_id}: openai unreachable",
                               model_id=model_id, creating=creating)
    if isinstance(exc, openai.APIStatusError):
        detail = getattr(exc, "message", exc)
        code = getattr(exc, "code", None) or _find(exc.body, "code")
        message = f"{model_id}: openai {exc.status_code}{f' {code}' if code else ''}: {detail}"
        if code in _QUOTA_CODES:
            return QuotaExhausted(f"{message} (the account is out of credit: add credit or "
                                  "raise the limit at platform.openai.com)", model_id=model_id)
        if code in _CONTENT_CODES:
            stage = _find(exc.body, "moderation_stage")
            made = stage == "output"  # the image was made, then refused: x-request-id names it
            return ContentRejected(message, model_id=model_id,
                                   stage=str(stage) if stage else None,
                                   outcome="rejected" if made else None,
                                   provider_job_id=getattr(exc, "request_id", None) if made
                                   else None)
        return error_for_status(exc.status_code, message, model_id=model_id,
                                retry_after=_retry_after(exc), creating=creating)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def _count(value: Any, name: str) -> int:
    found = getattr(value, name, None) if value is not None else None
    return found if isinstance(found, int) else 0


def image_usage(response: Any, *, edited: bool) -> Usage | None:
    """Billed tokens of an images response by class (``usage.input_tokens_details`` splits text
    from image input; ``output_tokens_details``, when present, image from text output). Input
    with no split is counted as image input on an edit (the dearer class), text otherwise;
    output with no split as image output."""
    usage = getattr(response, "usage", None)
    if usage is None or not isinstance(getattr(usage, "input_tokens", None), int):
        return None
    inputs = getattr(usage, "input_tokens_details", None)
    outputs = getattr(usage, "output_tokens_details", None)
    if inputs is not None:
        text_in, image_in = _count(inputs, "text_tokens"), _count(inputs, "image_tokens")
    elif edited:
        text_in, image_in = 0, usage.input_tokens
    else:
        text_in, image_in = usage.input_tokens, 0
    if outputs is not None:
        text_out, image_out = _count(outputs, "text_tokens"), _count(outputs, "image_tokens")
    else:
        text_out, image_out = 0, _count(usage, "output_tokens")
    return Usage(text_input_tokens=text_in, image_input_tokens=image_in,
                 text_output_tokens=text_out, image_output_tokens=image_out)


def chat_usage(response: Any) -> Usage | None:
    """Billed tokens of a chat completion: prompt (less its cached part), cached prompt, and
    completion tokens."""
    usage = getattr(response, "usage", None)
    if usage is None or not isinstance(getattr(usage, "prompt_tokens", None), int):
        return None
    cached = _count(getattr(usage, "prompt_tokens_details", None), "cached_tokens")
    return Usage(text_input_tokens=usage.prompt_tokens - cached, cached_text_input_tokens=cached,
                 text_output_tokens=_count(usage, "completion_tokens"))


async def _close_client(client: openai.AsyncOpenAI) -> None:
    await client.close()


class OpenAIProvider(KeyedProvider):
    """OpenAI image edits (with an input image) and generations (prompt only)."""

    name = "openai"
    credential_env = "OPENAI_API_KEY"

    def __init__(self, *, key: str | None = None, base_url: str | None = None) -> None:
        super().__init__(key=key)
        self._base_url = base_url
        self._clients = LoopBound(self._make_client, _close_client)
        self._ids = itertools.count(1)

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self.key(), base_url=self._base_url, max_retries=0,
                                  timeout=120.0)

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def submit(self, request: ProviderRequest) -> Job:
        if request.task is Task.ANALYZE:
            return await self._analyze(request)
        if request.task is Task.JUDGE:
            return await self._judge(request)
        if is_video(request):
            return await self._create_video(request)
        model = request.model
        arguments: dict[str, Any] = {"model": model.endpoint,
                                     **model.provider_inputs(request.params)}
        arguments.setdefault("prompt", request.params.get("prompt") or "Improve this photo.")
        if request.image is not None and len(request.image) > MAX_EDIT_IMAGE_BYTES:
            raise InvalidRequest(f"{model.id}: the image is {len(request.image)} bytes; OpenAI "
                                 f"edits take at most {MAX_EDIT_IMAGE_BYTES} per image",
                                 model_id=model.id)
        try:
            if request.image is not None:
                extension = "png" if request.image_media_type == "image/png" else "jpg"
                raw = await self.client.images.with_raw_response.edit(
                    image=(f"input.{extension}", request.image,
                           request.image_media_type or "image/png"),
                    timeout=model.timeout_s, **arguments)
            else:
                raw = await self.client.images.with_raw_response.generate(
                    timeout=model.timeout_s, **arguments)
            response = raw.parse()
        except Exception as exc:
            raise map_error(exc, model.id, creating=True) from None
        job_id = raw.headers.get("x-request-id") or f"openai-{next(self._ids)}"
        usage = image_usage(response, edited=request.image is not None)
        if not response.data or not response.data[0].b64_json:
            return Job(job_id, JobState.FAILED, usage=usage, error=InvalidOutput(
                "no_output", f"{model.id}: response carried no image", model_id=model.id,
                outcome="succeeded"))
        try:
            data = base64.b64decode(response.data[0].b64_json, validate=True)
        except ValueError:
            return Job(job_id, JobState.FAILED, usage=usage, error=InvalidOutput(
                "undecodable", f"{model.id}: b64_json is not base64", model_id=model.id,
                outcome="succeeded"))
        media_type = _FORMATS.get(getattr(response, "output_format", None) or "png", "image/png")
        return Job(job_id, JobState.SUCCEEDED, output=Output(
            data=data, media_type=media_type, usage=usage,
            metadata={"usage": usage.as_json() if usage else None}))

    async def _analyze(self, request: ProviderRequest) -> Job:
        """Chat completion with a strict JSON-schema answer (structured outputs); the scraped
        text goes as delimited data, never as instructions (see pixellab.intel.taxonomy)."""

        model = request.model
        product = request.params.get("product")
        if not isinstance(product, dict):
            raise InvalidRequest(f"{model.id}: analyze needs the product's text (params.product)",
                                 model_id=model.id)
        return await self._chat_json(
            request, analysis_messages(product, request.image, request.image_media_type),
            load_taxonomy().response_format(), exclude=("prompt", "product"))

    async def _judge(self, request: ProviderRequest) -> Job:
        """Two outputs compared against the source photo (:mod:`pixellab.verdicts`): the
        outputs come as the request's two extra photos, in the order they are shown."""
        model = request.model
        params = request.params
        outputs = params.get("angles")
        criteria = params.get("criteria")
        if (request.image is None or not isinstance(outputs, list) or len(outputs) != 2
                or not isinstance(criteria, dict) or not criteria):
            raise InvalidRequest(f"{model.id}: judge needs the source photo, two outputs and "
                                 "the criteria", model_id=model.id)
        messages = judge_messages(
            {str(k): str(v) for k, v in criteria.items()}, request.image,
            request.image_media_type, outputs[0], outputs[1],
            task=str(params.get("judged_task") or "?"), detail=str(params.get("detail", "low")))
        return await self._chat_json(request, messages, response_format(list(criteria)),
                                     exclude=tuple(params))

    async def _chat_json(self, request: ProviderRequest, messages: list[dict[str, Any]],
                         answer_format: dict[str, Any], *, exclude: tuple[str, ...]) -> Job:
        model = request.model
        arguments = {k: v for k, v in model.provider_inputs(request.params).items()
                     if k not in exclude}
        create: Any = self.client.chat.completions.with_raw_response.create
        try:
            raw = await create(model=model.endpoint, timeout=model.timeout_s,
                               messages=messages, response_format=answer_format, **arguments)
            response = raw.parse()
        except Exception as exc:
            raise map_error(exc, model.id, creating=True) from None
        job_id = raw.headers.get("x-request-id") or f"openai-{next(self._ids)}"
        usage = chat_usage(response)
        message = response.choices[0].message if response.choices else None
        if message is not None and getattr(message, "refusal", None):
            return Job(job_id, JobState.FAILED, usage=usage, error=ContentRejected(
                f"{model.id}: refused: {str(message.refusal)[:200]}", model_id=model.id,
                stage="output", outcome="succeeded"))
        if message is None or not message.content:
            return Job(job_id, JobState.FAILED, usage=usage, error=InvalidOutput(
                "no_output", f"{model.id}: the answer is empty", model_id=model.id,
                outcome="succeeded"))
        return Job(job_id, JobState.SUCCEEDED, output=Output(
            data=message.content.encode(), media_type="application/json", usage=usage,
            metadata={"usage": usage.as_json() if usage else None}))

    # -- videos (Sora) ---------------------------------------------------------------------

    async def _create_video(self, request: ProviderRequest) -> Job:
        model = request.model
        seconds, size = sora_arguments(request)
        arguments: dict[str, Any] = {**model.defaults, "model": model.endpoint, "size": size}
        if seconds is not None:
            arguments["seconds"] = seconds
        arguments["prompt"] = request.params.get("prompt") or "Animate this product photo."
        if request.image is not None and "image" in model.inputs:
            reference = await asyncio.to_thread(fit_reference, request.image, size, model.id)
            arguments["input_reference"] = ("input.png", reference, "image/png")
        create: Any = self.client.videos.with_raw_response.create
        try:
            raw = await create(timeout=min(model.timeout_s, 120.0), **arguments)
            video = raw.parse()
        except Exception as exc:
            raise map_error(exc, model.id, creating=True) from None
        return await self._video_job(video, {"model_id": model.id, "kind": "video"})

    async def _video_job(self, video: Any, context: dict[str, str]) -> Job:
        model_id = context["model_id"]
        state = _VIDEO_STATES.get(getattr(video, "status", None) or "", JobState.RUNNING)
        if state is JobState.FAILED:
            error = getattr(video, "error", None)
            code = getattr(error, "code", None)
            message = (f"{model_id}: sora video failed{f' ({code})' if code else ''}: "
                       f"{getattr(error, 'message', None) or 'no error message'}")
            failure: ProviderError = (
                ContentRejected(message, model_id=model_id, stage="output", outcome="rejected",
                                provider_job_id=video.id) if code in _CONTENT_CODES
                else ProviderUnavailable(message, model_id=model_id, provider_job_id=video.id))
            return Job(video.id, state, context=context, error=failure)
        if state is not JobState.SUCCEEDED:
            return Job(video.id, state, context=context)
        data, media_type = await self._download_video(video.id, model_id)
        try:
            usage: Usage | None = Usage(video_seconds=float(video.seconds))
        except (TypeError, ValueError):
            usage = None
        # the seconds are billed whatever our check of the clip says: on the job too
        return Job(video.id, state, context=context, usage=usage, output=Output(
            data=data, media_type=media_type, usage=usage,
            metadata={"seconds": getattr(video, "seconds", None),
                      "size": getattr(video, "size", None),
                      "usage": usage.as_json() if usage else None}))

    async def _download_video(self, video_id: str, model_id: str) -> tuple[bytes, str]:
        """The finished MP4, streamed with a video's byte cap and deadline."""
        max_bytes, deadline_s = limits(video=True)
        stream: Any = self.client.videos.with_streaming_response.download_content
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(deadline_s):
                async with stream(video_id, variant="video", timeout=deadline_s) as response:
                    media_type = response.headers.get("content-type", "").split(";")[0].strip()
                    if media_type and not media_type.startswith(
                            ("video/", "application/octet-stream", "application/binary")):
                        raise InvalidOutput("wrong_media_type",
                                            f"{model_id}: video served as {media_type}",
                                            model_id=model_id, provider_job_id=video_id)
                    if int(response.headers.get("content-length") or 0) > max_bytes:
                        raise InvalidOutput("too_many_bytes", f"{model_id}: the video declares "
                                            f"over {max_bytes} bytes", model_id=model_id,
                                            provider_job_id=video_id)
                    size = 0
                    async for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InvalidOutput("too_many_bytes", f"{model_id}: the video "
                                                f"exceeds {max_bytes} bytes", model_id=model_id,
                                                provider_job_id=video_id)
                        chunks.append(chunk)
        except ProviderError:
            raise
        except TimeoutError:
            raise ProviderTimeout(f"{model_id}: the video download took over {deadline_s:g} s",
                                  model_id=model_id) from None
        except openai.NotFoundError:
            raise DataRemoved(f"{model_id}: video {video_id}'s content is gone (its assets "
                              "expired before they were fetched)", model_id=model_id,
                              provider_job_id=video_id) from None
        except Exception as exc:
            raise map_error(exc, model_id) from None
        if media_type in ("", "application/binary", "application/octet-stream"):
            media_type = "video/mp4"  # what the content path serves (the spec's video/mp4)
        return b"".join(chunks), media_type

    async def poll(self, job: Job) -> Job:
        if job.context.get("kind") != "video":
            return job  # images and answers are complete when submit returns
        model_id = job.context["model_id"]
        try:
            video = await self.client.videos.retrieve(job.provider_job_id)
        except Exception as exc:  # the poll failed, not the job: the runner polls again
            raise map_error(exc, model_id) from None
        return await self._video_job(video, job.context)

    async def cancel(self, job: Job) -> None:
        """Nothing to do: images are complete when submit returns, and a Sora video cannot be
        cancelled (the API has no cancel endpoint; ``DELETE`` refuses an unfinished one)."""
        return None


def is_video(request: ProviderRequest) -> bool:
    """Whether ``request`` asks for a video (a video task, or a model priced per second)."""
    if request.task is not None and request.task.output_kind == "video":
        return True
    return request.model.pricing.unit == "second"


def sora_arguments(request: ProviderRequest) -> tuple[str | None, str]:
    """(``seconds``, ``size``) for a normalized request; :class:`InvalidRequest` for a
    duration or a shape Sora does not make. No ``duration_s``: the API's default (4 s)."""
    model, params = request.model, request.params
    seconds: str | None = None
    duration = params.get("duration_s") if "duration_s" in model.inputs else None
    if duration is not None:
        try:
            wanted = float(duration)
        except (TypeError, ValueError):
            wanted = -1.0
        seconds = next((s for s in SORA_SECONDS if float(s) == wanted), None)
        if seconds is None:
            raise InvalidRequest(f"{model.id}: duration_s = {duration!r} is not one Sora makes "
                                 f"({', '.join(SORA_SECONDS)} s)", model_id=model.id)
    aspect = params.get("aspect_ratio") if "aspect_ratio" in model.inputs else None
    if aspect is None:
        aspect = "9:16"
        if request.image is not None:
            try:
                width, height = decode_image(request.image).size
                aspect = "16:9" if width > height else "9:16"
            except Exception:  # the runner checked the photo; a guess is harmless here
                pass
    resolution = params.get("resolution") if "resolution" in model.inputs else None
    size = SORA_SIZES.get((str(aspect), str(resolution or "720p")))
    if size is None:
        raise InvalidRequest(f"{model.id}: aspect_ratio {aspect!r} at resolution "
                             f"{resolution or '720p'!r} is not a size Sora makes "
                             f"({', '.join(sorted(set(SORA_SIZES.values())))})",
                             model_id=model.id)
    return seconds, size


def fit_reference(image: bytes, size: str, model_id: str) -> bytes:
    """The photo fitted into the video's ``size`` on a white canvas, as PNG: Sora takes a
    reference image of exactly the video's size."""
    width, height = (int(part) for part in size.split("x"))
    try:
        photo = decode_image(image)
    except Exception as exc:
        raise InvalidRequest(f"{model_id}: the photo cannot be read: {exc}",
                             model_id=model_id) from None
    canvas = ImageOps.pad(photo.convert("RGB"), (width, height), color=(255, 255, 255))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
