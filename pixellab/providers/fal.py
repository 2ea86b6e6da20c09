"""fal adapter on the official ``fal-client`` SDK (async queue API).

Wire facts that shape it (shared/research/providers.md §2, §5):
- fal-client retries its submit POST on any transport error and on 408/409/429, up to 10 times
  (``fal_client/client.py: _maybe_retry_request``, ``_should_retry``). A connection reset after
  fal accepted the job would make a second paid job, and fal takes no idempotency key. So the
  submit goes through fal's documented queue REST call (``POST https://queue.fal.run/<app>``,
  docs.fal.ai/model-endpoints/queue) with a single attempt on fal-client's own HTTP client (its
  auth header), and pixellab's runner stays the only retry loop. Uploads, status, result and
  cancel stay on fal-client: retrying them pays nothing.
- An ambiguous submit (a 5xx that is not an ingress error, a cut connection, a read timeout) is
  :class:`~pixellab.errors.OutcomeUnknown`; fal has no way to list a key's requests to settle
  it. Ingress 502-504s without ``x-fal-request-id`` never reached the queue (fal-client retries
  them for that reason), nor did a refused connection.
- Errors are typed: ``error_type`` in the body or ``x-fal-error-type``, and a 422's ``detail`` is
  a list of ``{loc, msg, type}`` (``type: "content_policy_violation"`` for a refusal,
  docs.fal.ai/model-apis/errors). The words of a message are never the test.
- We always send ``X-Fal-Request-Timeout`` (fal ends a request that has not started by then with
  a 504 ``request_timeout``), so a job never waits in the queue past the model's deadline.
- fal-client forces https and hard-codes its upload hosts. Pointing it elsewhere (the loopback
  emulator for a zero-cost dry run) sets the module's URL constants from ``PIXELLAB_FAL_*_URL``;
  without them it talks to fal.ai as usual.
- Output URLs are downloaded right away through the bounded downloader; fal never downloads.
  A video app answers ``{"video": {url, content_type, file_name, file_size}}``; its ``.mp4`` is
  downloaded with a video's limits (500 MiB, 5 minutes).
- Video apps take a few values only, as strings (Kling 1.6: ``duration`` "5" or "10"; Veo 3.1:
  "4s", "6s" or "8s", ``aspect_ratio`` auto, 16:9 or 9:16, ``resolution`` 720p, 1080p or 4k;
  the apps' pages on fal.ai): a normalized ``duration_s`` is sent as the app's string, anything
  it does not take is refused here (:class:`~pixellab.errors.InvalidRequest`) before a call.
  fal reports no billed seconds (the result names the file only): the runner charges the
  catalog's upper bound per clip.
"""

from __future__ import annotations

from typing import Any

import fal_client
import fal_client.client as fal_wire
import httpx

from pixellab.errors import (
    InvalidOutput,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from pixellab.providers.base import (
    Job,
    JobState,
    KeyedProvider,
    LoopBound,
    Output,
    ProviderRequest,
    error_for_status,
    transport_error,
    video_inputs,
)
from pixellab.providers.download import fetch_output
from pixellab.settings import current as current_settings

_CONTENT_TYPES = frozenset({"content_policy_violation"})
_TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout", "generation_timeout"})
_CANCELLED_TYPES = frozenset({"request_cancelled", "client_cancelled"})
_INGRESS = (502, 503, 504)
_URL_SETTINGS = {  # Settings field → fal-client's constant
    "fal_queue_url": "QUEUE_URL_FORMAT",
    "fal_run_url": "RUN_URL_FORMAT",
    "fal_rest_url": "REST_URL",
    "fal_cdn_url": "CDN_URL",
}


VIDEO_INPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    # fal.ai/models/fal-ai/kling-video/v1.6/standard/image-to-video
    "fal-ai/kling-video/v1.6": {"duration": ("5", "10")},
    # fal.ai/docs/model-api-reference/video-generation-api/veo3.1-image-to-video
    "fal-ai/veo3.1": {"duration": ("4s", "6s", "8s"), "aspect_ratio": ("auto", "16:9", "9:16"),
                      "resolution": ("720p", "1080p", "4k")},
}
"""The values each video app takes, by input name (app id prefix → input → allowed values)."""


def _retry_after(headers: dict[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_types(body: Any, headers: dict[str, str] | None = None,
                error_type: str | None = None) -> set[str]:
    """Every error type a fal error names: the top-level ``error_type`` (or the
    ``x-fal-error-type`` header) and the ``type`` of each entry of a ``detail`` list."""
    found = {error_type} if error_type else set()
    header = {k.lower(): v for k, v in (headers or {}).items()}.get("x-fal-error-type")
    if header:
        found.add(header)
    if isinstance(body, dict):
        if isinstance(body.get("error_type"), str):
            found.add(body["error_type"])
        body = body.get("detail")
    if isinstance(body, list):
        found.update(item["type"] for item in body
                     if isinstance(item, dict) and isinstance(item.get("type"), str))
    return found


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                         for item in detail)[:300]
    return str(detail)[:300]


def _for_types(types: set[str], status: int, message: str, model_id: str | None, *,
               retry_after: float | None = None, creating: bool = False) -> ProviderError:
    if types & _TIMEOUT_TYPES:
        return ProviderTimeout(message, model_id=model_id)
    return error_for_status(status, message, model_id=model_id, retry_after=retry_after,
                            content_rejected=bool(types & _CONTENT_TYPES), creating=creating)


def map_error(exc: BaseException, model_id: str | None = None, *,
              creating: bool = False) -> ProviderError:
    """Translate an SDK or transport exception into the pixellab hierarchy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, fal_client.FalClientHTTPError):
        status = exc.status_code
        types = error_types(exc.message, exc.response_headers, exc.error_type)
        return _for_types(types, status, f"{model_id}: fal {status}: {_detail_text(exc.message)}",
                          model_id, retry_after=_retry_after(exc.response_headers),
                          creating=creating)
    if isinstance(exc, httpx.HTTPError):
        return transport_error(exc, f"{model_id}: fal", model_id=model_id, creating=creating)
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"{model_id}: fal timed out ({type(exc).__name__})",
                               model_id=model_id)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def submit_error(response: httpx.Response, model_id: str) -> ProviderError:
    """What a non-2xx answer to a queue submit means (the same reading fal-client applies)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
    message = f"{model_id}: fal {status}: {_detail_text(detail)}"
    headers = dict(response.headers)
    ingress = (status in _INGRESS and "x-fal-request-id" not in response.headers
               and "nginx" in response.text)
    if ingress:  # the gateway answered; the queue never saw the request
        return ProviderUnavailable(message + " (ingress error)", model_id=model_id)
    return _for_types(error_types(body, headers), status, message, model_id,
                      retry_after=_retry_after(headers), creating=True)


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
    settings = current_settings()
    for field, constant in _URL_SETTINGS.items():
        value = getattr(settings, field)
        if value:
            setattr(fal_wire, constant, value)


async def _close_client(client: fal_client.AsyncClient) -> None:
    """fal-client has no close: its HTTP client (an async cached property) is closed."""
    http = await client._client
    await http.aclose()


class FalProvider(KeyedProvider):
    """fal queue jobs: upload, submit, status, result, cancel, download."""

    name = "fal"
    credential_env = "FAL_KEY"

    def __init__(self, *, key: str | None = None, webhook_url: str | None = None) -> None:
        super().__init__(key=key)
        self.webhook_url = webhook_url
        self._clients = LoopBound(self._make_client, _close_client)

    def _make_client(self) -> fal_client.AsyncClient:
        configure_endpoints()
        return fal_client.AsyncClient(key=self.key(), default_timeout=60.0)

    @property
    def client(self) -> fal_client.AsyncClient:
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def submit(self, request: ProviderRequest) -> Job:
        model = request.model
        arguments = video_inputs(model, model.provider_inputs(request.params), VIDEO_INPUTS)
        try:
            image_field = model.inputs.get("image")
            if image_field and request.image is not None:
                arguments[image_field] = await self.client.upload(
                    request.image, request.image_media_type or "image/png")
            http = await self.client._client
        except Exception as exc:
            raise map_error(exc, model.id) from None
        params = {"fal_webhook": self.webhook_url} if self.webhook_url else None
        try:
            response = await http.post(
                fal_wire.QUEUE_URL_FORMAT + model.endpoint, json=arguments, params=params,
                headers={"X-Fal-Request-Timeout": f"{max(2.0, model.timeout_s):g}"})
        except httpx.HTTPError as exc:
            raise map_error(exc, model.id, creating=True) from None
        if response.status_code >= 300:
            raise submit_error(response, model.id)
        try:
            data = response.json()
            context = {"model_id": model.id, "application": model.endpoint,
                       "status_url": data["status_url"], "response_url": data["response_url"],
                       "cancel_url": data["cancel_url"]}
            if model.pricing.unit == "second":  # a video: downloaded with a video's limits
                context["video"] = "1"
            request_id = str(data["request_id"])
        except (ValueError, KeyError, TypeError):
            raise OutcomeUnknown(f"{model.id}: fal accepted the submit ({response.status_code}) "
                                 "but its answer names no request", model_id=model.id) from None
        return Job(request_id, JobState.QUEUED, context=context)

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
        except Exception as exc:  # the poll failed, not the job: the runner polls again
            raise map_error(exc, model_id) from None
        if isinstance(status, fal_client.Queued):
            return Job(job.provider_job_id, JobState.QUEUED, context=job.context,
                       queue_position=status.position)
        if not isinstance(status, fal_client.Completed):
            return Job(job.provider_job_id, JobState.RUNNING, context=job.context)
        if status.error:
            types = {status.error_type} if status.error_type else set()
            error = _for_types(types, 500, f"{model_id}: {status.error}", model_id)
            if types & _CANCELLED_TYPES:
                error.outcome = "canceled"
            return Job(job.provider_job_id, JobState.FAILED, context=job.context, error=error)
        try:
            result = await handle.get()
        except fal_client.FalClientHTTPError as exc:  # COMPLETED: this is the job's answer
            error = map_error(exc, model_id)
            if isinstance(error, RateLimited):
                raise error from None
            if 400 <= exc.status_code < 500 and error.outcome is None:
                error.outcome = "rejected"  # the model refused the input after accepting it
            return Job(job.provider_job_id, JobState.FAILED, context=job.context, error=error)
        except Exception as exc:
            raise map_error(exc, model_id) from None
        url = _output_url(result)
        if url is None:
            return Job(job.provider_job_id, JobState.FAILED, context=job.context,
                       error=InvalidOutput("no_output", f"{model_id}: result has no output URL",
                                           model_id=model_id))
        video = job.context.get("video") == "1" or isinstance(result.get("video"), dict)
        data, media_type = await fetch_output(url, model_id=model_id, video=video)
        flags = result.get("has_nsfw_concepts") if isinstance(result, dict) else None
        return Job(job.provider_job_id, JobState.SUCCEEDED, context=job.context, output=Output(
            data=data, media_type=media_type,
            metadata={"has_nsfw_concepts": flags, "timings": result.get("timings")}))

    async def cancel(self, job: Job) -> None:
        try:
            await (await self._handle(job)).cancel()
        except Exception:  # best effort: the job may already be terminal
            return
