"""Replicate adapter on the official ``replicate`` SDK (1.x, async API).

Wire facts that shape it (details: shared/research/providers.md §1):
- The SDK never retries a POST (create, cancel, file upload), so pixellab's runner stays the only
  retry loop for job creation; GETs (polls) are retried by the SDK on 429/503/504, which is safe.
- A create that times out is ambiguous (the job may exist and bill); the runner records the
  attempt before calling :meth:`submit`.
- Outputs are URLs deleted about an hour after completion: they are downloaded as soon as the
  prediction succeeds, through the bounded downloader.
- Cost: Replicate reports ``metrics.predict_time``; for models priced per GPU-second the reported
  cost is ``predict_time × usd_per_unit``, otherwise the catalog estimate applies.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError

from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
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
from pixellab.providers.download import fetch_output

_STATES = {
    "starting": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
}
_CONTENT_MARKERS = ("nsfw", "safety", "content policy", "flagged")


def map_error(exc: BaseException, model_id: str | None = None) -> ProviderError:
    """Translate an SDK or transport exception into the pixellab hierarchy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = exc.detail or exc.title or f"HTTP {status}"
        # the SDK drops the Retry-After header; our backoff applies
        return error_for_status(status, f"{model_id}: replicate {status}: {detail}",
                                model_id=model_id)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{model_id}: replicate timed out ({type(exc).__name__})",
                               model_id=model_id)
    if isinstance(exc, httpx.HTTPError):
        return ProviderUnavailable(f"{model_id}: replicate unreachable ({type(exc).__name__})",
                                   model_id=model_id)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def _failure(error: str | None, model_id: str, job_id: str) -> ProviderError:
    text = error or "prediction failed without an error message"
    cls = ContentRejected if any(m in text.lower() for m in _CONTENT_MARKERS) else (
        ProviderUnavailable)
    return cls(f"{model_id}: {text}", model_id=model_id, provider_job_id=job_id)


def _first_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and output:
        return _first_url(output[0])
    if isinstance(output, dict):
        for value in output.values():
            url = _first_url(value)
            if url:
                return url
    url = getattr(output, "url", None)
    return url if isinstance(url, str) else None


class ReplicateProvider(KeyedProvider):
    """Replicate predictions: create (with file upload), poll, cancel, download."""

    name = "replicate"
    credential_env = "REPLICATE_API_TOKEN"

    def __init__(self, *, key: str | None = None, base_url: str | None = None,
                 webhook_url: str | None = None) -> None:
        super().__init__(key=key)
        self._base_url = base_url
        self.webhook_url = webhook_url
        self._client: replicate.Client | None = None

    @property
    def client(self) -> replicate.Client:
        if self._client is None:
            self._client = replicate.Client(api_token=self.key(),
                                            base_url=self._base_url,
                                            timeout=httpx.Timeout(30.0, connect=5.0))
        return self._client

    async def submit(self, request: ProviderRequest) -> Job:
        model = request.model
        inputs = model.provider_inputs(request.params)
        image_field = model.inputs.get("image")
        if image_field and request.image is not None:
            upload = io.BytesIO(request.image)
            upload.name = "input.png" if request.image_media_type == "image/png" else "input.jpg"
            inputs[image_field] = upload
        params: dict[str, Any] = {}
        if self.webhook_url:
            params.update(webhook=self.webhook_url, webhook_events_filter=["completed"])
        owner_name, _, version = model.endpoint.partition(":")
        try:
            if version:
                prediction = await self.client.predictions.async_create(
                    version=version, input=inputs, **params)
            else:
                prediction = await self.client.predictions.async_create(
                    model=owner_name, input=inputs, **params)
        except Exception as exc:
            raise map_error(exc, model.id) from None
        return await self._job(prediction, model.id, model.pricing.unit,
                               model.pricing.usd_per_unit)

    async def poll(self, job: Job) -> Job:
        model_id = job.context["model_id"]
        try:
            prediction = await self.client.predictions.async_get(job.provider_job_id)
        except Exception as exc:
            raise map_error(exc, model_id) from None
        return await self._job(prediction, model_id, job.context["unit"],
                               float(job.context["usd_per_unit"]))

    async def cancel(self, job: Job) -> None:
        try:
            await self.client.predictions.async_cancel(job.provider_job_id)
        except Exception:  # best effort: the job may already be terminal
            return

    async def _job(self, prediction: Any, model_id: str, unit: str, usd_per_unit: float) -> Job:
        context = {"model_id": model_id, "unit": unit, "usd_per_unit": str(usd_per_unit)}
        state = _STATES.get(prediction.status, JobState.RUNNING)
        if state is JobState.FAILED:
            return Job(prediction.id, state, context=context,
                       error=_failure(prediction.error, model_id, prediction.id))
        if state is JobState.CANCELLED:
            return Job(prediction.id, state, context=context, error=ProviderUnavailable(
                f"{model_id}: prediction was canceled", model_id=model_id))
        if state is not JobState.SUCCEEDED:
            return Job(prediction.id, state, context=context)
        url = _first_url(prediction.output)
        if url is None:
            return Job(prediction.id, JobState.FAILED, context=context, error=InvalidOutput(
                "no_output", f"{model_id}: prediction succeeded with no output URL",
                model_id=model_id))
        data, media_type = await fetch_output(url, model_id=model_id)
        predict_time = (prediction.metrics or {}).get("predict_time")
        reported = (predict_time * usd_per_unit
                    if unit == "gpu_second" and isinstance(predict_time, int | float) else None)
        return Job(prediction.id, state, context=context, output=Output(
            data=data, media_type=media_type, reported_cost_usd=reported,
            metadata={"predict_time": predict_time, "output_url_host": httpx.URL(url).host}))
