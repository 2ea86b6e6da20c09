"""OpenAI adapter on the official ``openai`` SDK (async client, images API).

Wire facts that shape it (shared/research/providers.md §3):
- The SDK retries every POST twice by default (timeouts, 429, 5xx) and sends no idempotency key,
  so the client is built with ``max_retries=0``: pixellab's runner is the only retry loop, and a
  timed-out image edit is never silently paid for twice.
- Image calls are synchronous: the job is complete when :meth:`submit` returns; GPT image models
  answer ``b64_json``, never a URL.
- Rate limits carry ``retry-after-ms`` / ``retry-after``; both are passed on as ``retry_after``.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import openai

from pixellab.catalog import Model
from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from pixellab.providers.base import (
    Job,
    JobState,
    KeyedProvider,
    Output,
    ProviderRequest,
    error_for_status,
)
from pixellab.tasks import Task

_CONTENT_CODES = ("moderation_blocked", "content_policy_violation")
_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


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


def map_error(exc: BaseException, model_id: str | None = None) -> ProviderError:
    """Translate an SDK exception into the pixellab hierarchy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(f"{model_id}: openai timed out", model_id=model_id)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable(f"{model_id}: openai unreachable", model_id=model_id)
    if isinstance(exc, openai.APIStatusError):
        detail = getattr(exc, "message", exc)
        return error_for_status(
            exc.status_code, f"{model_id}: openai {exc.status_code}: {detail}",
            model_id=model_id, retry_after=_retry_after(exc),
            content_rejected=getattr(exc, "code", None) in _CONTENT_CODES)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def _billed(response: Any, model: Model) -> tuple[int | None, float | None]:
    """The tokens a response reports, and what they cost at a per-token catalog price (None
    when the model is not priced per token or the response says nothing)."""
    tokens = getattr(getattr(response, "usage", None), "total_tokens", None)
    if model.pricing.unit == "token" and isinstance(tokens, int):
        return tokens, tokens * model.pricing.usd_per_unit
    return (tokens if isinstance(tokens, int) else None), None


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
            raise map_error(exc, model.id) from None
        job_id = raw.headers.get("x-request-id") or f"openai-{next(self._ids)}"
        if not response.data or not response.data[0].b64_json:
            return Job(job_id, JobState.FAILED, error=InvalidOutput(
                "no_output", f"{model.id}: response carried no image", model_id=model.id))
        try:
            data = base64.b64decode(response.data[0].b64_json, validate=True)
        except ValueError:
            return Job(job_id, JobState.FAILED, error=InvalidOutput(
                "undecodable", f"{model.id}: b64_json is not base64", model_id=model.id))
        tokens, reported = _billed(response, model)
        media_type = _FORMATS.get(getattr(response, "output_format", None) or "png", "image/png")
        return Job(job_id, JobState.SUCCEEDED, output=Output(
            data=data, media_type=media_type, reported_cost_usd=reported,
            metadata={"total_tokens": tokens}))

    async def _analyze(self, request: ProviderRequest) -> Job:
        """Chat completion with a strict JSON-schema answer (structured outputs); the scraped
        text goes as delimited data, never as instructions (see pixellab.intel.analyze)."""
        from pixellab.intel.analyze import analysis_messages, load_taxonomy

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
            raise map_error(exc, model.id) from None
        job_id = raw.headers.get("x-request-id") or f"openai-{next(self._ids)}"
        message = response.choices[0].message if response.choices else None
        if message is not None and getattr(message, "refusal", None):
            return Job(job_id, JobState.FAILED, error=ContentRejected(
                f"{model.id}: refused: {str(message.refusal)[:200]}", model_id=model.id))
        if message is None or not message.content:
            return Job(job_id, JobState.FAILED, error=InvalidOutput(
                "no_output", f"{model.id}: the answer is empty", model_id=model.id))
        tokens, reported = _billed(response, model)
        return Job(job_id, JobState.SUCCEEDED, output=Output(
            data=message.content.encode(), media_type="application/json",
            reported_cost_usd=reported, metadata={"total_tokens": tokens}))

    async def poll(self, job: Job) -> Job:
        return job

    async def cancel(self, job: Job) -> None:
        return None
