"""OpenAI adapter on the official ``openai`` SDK (async client, images API).

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
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import openai

from pixellab.billing import Usage
from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
    InvalidRequest,
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
)
from pixellab.intel.taxonomy import analysis_messages, load_taxonomy
from pixellab.providers.base import (
    Job,
    JobState,
    KeyedProvider,
    Output,
    ProviderRequest,
    error_for_status,
    transport_error,
)
from pixellab.tasks import Task

_CONTENT_CODES = ("moderation_blocked", "content_policy_violation")
_QUOTA_CODES = ("insufficient_quota",)
_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MAX_EDIT_IMAGE_BYTES = 50 * 1024 * 1024


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


class OpenAIProvider(KeyedProvider):
    """OpenAI image edits (with an input image) and generations (prompt only)."""

    name = "openai"
    credential_env = "OPENAI_API_KEY"

    def __init__(self, *, key: str | None = None, base_url: str | None = None) -> None:
        super().__init__(key=key)
        self._base_url = base_url
        self._client: openai.AsyncOpenAI | None = None
        self._ids = itertools.count(1)

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(api_key=self.key(), base_url=self._base_url,
                                              max_retries=0, timeout=120.0)
        return self._client

    async def submit(self, request: ProviderRequest) -> Job:
        if request.task is Task.ANALYZE:
            return await self._analyze(request)
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
        arguments = {k: v for k, v in model.provider_inputs(request.params).items()
                     if k not in ("prompt", "product")}
        create: Any = self.client.chat.completions.with_raw_response.create
        try:
            raw = await create(
                model=model.endpoint, timeout=model.timeout_s,
                messages=analysis_messages(product, request.image, request.image_media_type),
                response_format=load_taxonomy().response_format(), **arguments)
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

    async def poll(self, job: Job) -> Job:
        return job

    async def cancel(self, job: Job) -> None:
        return None
