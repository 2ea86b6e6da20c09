"""fal adapter on the official ``fal-client`` SDK (async queue API).

Wire facts that shape it (shared/research/providers.md §2):
- ``submit`` goes through fal-client's own retry loop (10 attempts on 408/409/429, transport
  errors, and timeouts). We always send ``start_timeout`` (the ``X-Fal-Request-Timeout`` header),
  which switches off its retry of *timeouts*, the one case where the job may already exist; what
  it still retries (connection refused, 429, 408, 409) means the request was not accepted, so no
  job is paid twice. pixellab's runner remains the only loop that retries a failed job.
- fal-client forces https and hard-codes its upload hosts. Pointing it elsewhere (the loopback
  emulator for a zero-cost dry run) sets the module's URL constants from ``PIXELLAB_FAL_*_URL``;
  without them it talks to fal.ai as usual.
- Output URLs are downloaded right away through the bounded downloader; fal never downloads.
"""

from __future__ import annotations

import os
from typing import Any

import fal_client
import fal_client.client as fal_wire
import httpx

from pixellab.errors import (
    ContentRejected,
    InvalidOutput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
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

_CONTENT_MARKERS = ("nsfw", "content policy", "content_policy", "safety", "moderation")
_URL_SETTINGS = {
    "PIXELLAB_FAL_QUEUE_URL": "QUEUE_URL_FORMAT",
    "PIXELLAB_FAL_RUN_URL": "RUN_URL_FORMAT",
    "PIXELLAB_FAL_REST_URL": "REST_URL",
    "PIXELLAB_FAL_CDN_URL": "CDN_URL",
}


def _retry_after(headers: dict[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def map_error(exc: BaseException, model_id: str | None = None) -> ProviderError:
    """Translate an SDK or transport exception into the pixellab hierarchy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, fal_client.FalClientHTTPError):
        status = exc.status_code
        kind = f"{exc.error_type or ''} {exc.message}".lower()
        return error_for_status(status, f"{model_id}: fal {status}: {exc.message}",
                                model_id=model_id,
                                retry_after=_retry_after(exc.response_headers),
                                content_rejected=any(m in kind for m in _CONTENT_MARKERS))
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return ProviderTimeout(f"{model_id}: fal timed out ({type(exc).__name__})",
                               model_id=model_id)
    if isinstance(exc, httpx.HTTPError):
        return ProviderUnavailable(f"{model_id}: fal unreachable ({type(exc).__name__})",
                                   model_id=model_id)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def _output_url(result: Any) -> str | None:
    if not isinstance(result, dict):
        return None
    images = result.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        url = images[0].get("url")
        return url if isinstance(url, str) else None
    for key in ("image", "video"):
        item = result.get(key)
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            return str(item["url"])
    return None


def configure_endpoints() -> None:
    """Point fal-client at the hosts named in ``PIXELLAB_FAL_*_URL`` (e.g. the emulator)."""
    for variable, constant in _URL_SETTINGS.items():
        value = os.environ.get(variable)
        if value:
            setattr(fal_wire, constant, value)


class FalProvider(KeyedProvider):
    """fal queue jobs: upload, submit, status, result, cancel, download."""

    name = "fal"
    credential_env = "FAL_KEY"

    def __init__(self, *, key: str | None = None, webhook_url: str | None = None) -> None:
        super().__init__(key=key)
        self.webhook_url = webhook_url
        self._client: fal_client.AsyncClient | None = None

    @property
    def client(self) -> fal_client.AsyncClient:
        if self._client is None:
            configure_endpoints()
            self._client = fal_client.AsyncClient(key=self.key(), default_timeout=60.0)
        return self._client

    async def submit(self, request: ProviderRequest) -> Job:
        model = request.model
        arguments = model.provider_inputs(request.params)
        try:
            image_field = model.inputs.get("image")
            if image_field and request.image is not None:
                arguments[image_field] = await self.client.upload(
                    request.image, request.image_media_type or "image/png")
            handle = await self.client.submit(
                model.endpoint, arguments=arguments, webhook_url=self.webhook_url,
                start_timeout=max(2.0, model.timeout_s))
        except Exception as exc:
            raise map_error(exc, model.id) from None
        context = {"model_id": model.id, "application": model.endpoint,
                   "status_url": handle.status_url, "response_url": handle.response_url,
                   "cancel_url": handle.cancel_url}
        return Job(handle.request_id, JobState.QUEUED, context=context)

    async def _handle(self, job: Job) -> fal_wire.AsyncRequestHandle:
        return fal_wire.AsyncRequestHandle(
            request_id=job.provider_job_id, response_url=job.context["response_url"],
            status_url=job.context["status_url"], cancel_url=job.context["cancel_url"],
            client=await self.client._client)

    async def poll(self, job: Job) -> Job:
        model_id = job.context["model_id"]
        try:
            handle = await self._handle(job)
            status = await handle.status()
            if isinstance(status, fal_client.Queued):
                return Job(job.provider_job_id, JobState.QUEUED, context=job.context,
                           queue_position=status.position)
            if not isinstance(status, fal_client.Completed):
                return Job(job.provider_job_id, JobState.RUNNING, context=job.context)
            if status.error:
                text = f"{model_id}: {status.error}"
                error_cls = (ContentRejected if any(m in status.error.lower()
                                                    for m in _CONTENT_MARKERS)
                             else ProviderUnavailable)
                return Job(job.provider_job_id, JobState.FAILED, context=job.context,
                           error=error_cls(text, model_id=model_id))
            result = await handle.get()
        except Exception as exc:
            error = map_error(exc, model_id)
            if isinstance(error, RateLimited | ProviderTimeout) or not isinstance(
                    exc, fal_client.FalClientHTTPError):
                raise error from None
            return Job(job.provider_job_id, JobState.FAILED, context=job.context, error=error)
        url = _output_url(result)
        if url is None:
            return Job(job.provider_job_id, JobState.FAILED, context=job.context,
                       error=InvalidOutput("no_output", f"{model_id}: result has no output URL",
                                           model_id=model_id))
        data, media_type = await fetch_output(url, model_id=model_id)
        flags = result.get("has_nsfw_concepts") if isinstance(result, dict) else None
        return Job(job.provider_job_id, JobState.SUCCEEDED, context=job.context, output=Output(
            data=data, media_type=media_type,
            metadata={"has_nsfw_concepts": flags, "timings": result.get("timings")}))

    async def cancel(self, job: Job) -> None:
        try:
            await (await self._handle(job)).cancel()
        except Exception:  # best effort: the job may already be terminal
            return
