"""Replicate adapter on the official ``replicate`` SDK (1.x, async API).

Wire facts that shape it (details: shared/research/providers.md §1, §5):
- The SDK never retries a POST (create, cancel, file upload), so pixellab's runner stays the only
  retry loop for job creation; GETs (polls) are retried by the SDK on 429/503/504, which is safe.
- No idempotency key exists, but Replicate can be asked afterwards: the input image is uploaded
  first through the files API with ``metadata = {"pixellab_attempt": <attempt id>}``, and
  :meth:`ReplicateProvider.find_job` lists the predictions created since the attempt started
  (``GET /v1/predictions?created_after=``) and matches the one whose input names that file. A
  create that ended ambiguously (5xx, a cut connection, a crash) is settled that way instead of
  being charged blind or created twice.
- Outputs are URLs deleted an hour after completion (with the prediction's input and logs:
  ``data_removed``): they are downloaded as soon as the prediction succeeds, and a resumed run
  that finds them gone says so (:class:`~pixellab.errors.DataRemoved`) instead of paying again.
- Cost: the adapter reports ``metrics.predict_time`` as usage; the catalog prices it for models
  billed per GPU-second, per output otherwise. Video models are billed per second of output
  video: a succeeded prediction's ``metrics.video_output_duration_seconds`` (official models
  report their billing metrics there, replicate/cog ``docs/metrics.md``) is reported as
  ``Usage.video_seconds``; without it the runner charges the catalog's upper bound.
- Video models take a few values only (Kling 1.6: ``duration`` 5 or 10, ``aspect_ratio`` 16:9,
  9:16 or 1:1; Veo 3.1: 4, 6 or 8 s, 16:9 or 9:16, 720p or 1080p; both integers for seconds):
  a normalized ``duration_s`` is sent as the model's value, and anything it does not take is
  refused here (:class:`~pixellab.errors.InvalidRequest`) before an upload or a call. Their
  ``.mp4`` is downloaded with a video's limits (500 MiB, 5 minutes).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import replicate
from replicate.exceptions import ReplicateError

from pixellab.billing import Usage
from pixellab.errors import (
    ContentRejected,
    DataRemoved,
    InvalidOutput,
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
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

_STATES = {
    "starting": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
    "aborted": JobState.CANCELLED,  # ended by a deadline before it started: never ran
}
_CONTENT_MARKERS = ("nsfw", "safety", "content policy", "flagged")


VIDEO_INPUTS: dict[str, dict[str, tuple[Any, ...]]] = {
    # replicate.com/kwaivgi/kling-v1.6-standard (720p)
    "kwaivgi/kling-v1.6": {"duration": (5, 10), "aspect_ratio": ("16:9", "9:16", "1:1")},
    # replicate.com/google/veo-3.1 (24 fps)
    "google/veo-3.1": {"duration": (4, 6, 8), "aspect_ratio": ("16:9", "9:16"),
                       "resolution": ("720p", "1080p")},
}
"""The values each video model takes, by Replicate input name (model name prefix → input →
allowed values, in the types the model's schema wants)."""


_ATTEMPT_KEY = "pixellab_attempt"
_CLOCK_SKEW = timedelta(minutes=2)
"""How far before the attempt's recorded start the prediction list is read: our clock and
Replicate's may disagree a little."""


def map_error(exc: BaseException, model_id: str | None = None, *,
              creating: bool = False) -> ProviderError:
    """Translate an SDK or transport exception into the pixellab hierarchy (``creating``: the
    call was the create POST, where a 5xx or a cut connection leaves the outcome unknown)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = exc.detail or exc.title or f"HTTP {status}"
        # the SDK drops the Retry-After header; our backoff applies
        return error_for_status(status, f"{model_id}: replicate {status}: {detail}",
                                model_id=model_id, creating=creating)
    if isinstance(exc, httpx.HTTPError):
        return transport_error(exc, f"{model_id}: replicate", model_id=model_id,
                               creating=creating)
    return ProviderUnavailable(f"{model_id}: {type(exc).__name__}: {exc}", model_id=model_id)


def _failure(error: str | None, model_id: str, job_id: str) -> ProviderError:
    text = error or "prediction failed without an error message"
    cls = ContentRejected if any(m in text.lower() for m in _CONTENT_MARKERS) else (
        ProviderUnavailable)
    return cls(f"{model_id}: {text}", model_id=model_id, provider_job_id=job_id)


def _file_ids(value: Any) -> set[str]:
    """Ids of Replicate files (``.../v1/files/<id>``) named anywhere in a prediction's input."""
    if isinstance(value, str):
        head, marker, tail = value.partition("/v1/files/")
        return {tail.split("/")[0].split("?")[0]} if marker and head and tail else set()
    if isinstance(value, dict):
        return set().union(*(_file_ids(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_file_ids(v) for v in value)) if value else set()
    return set()


def _created_at(prediction: Any) -> datetime | None:
    stamp = getattr(prediction, "created_at", None)
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None) - (parsed.utcoffset() or timedelta(0))


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


async def _close_client(client: replicate.Client) -> None:
    """Its async HTTP client (the sync one holds no loop's state)."""
    await client._async_client.aclose()


class ReplicateProvider(KeyedProvider):
    """Replicate predictions: create (with file upload), poll, cancel, download."""

    name = "replicate"
    credential_env = "REPLICATE_API_TOKEN"

    def __init__(self, *, key: str | None = None, base_url: str | None = None,
                 webhook_url: str | None = None) -> None:
        super().__init__(key=key)
        self._base_url = base_url
        self.webhook_url = webhook_url
        self._clients = LoopBound(self._make_client, _close_client)

    def _make_client(self) -> replicate.Client:
        return replicate.Client(api_token=self.key(), base_url=self._base_url,
                                timeout=httpx.Timeout(30.0, connect=5.0))

    @property
    def client(self) -> replicate.Client:
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def submit(self, request: ProviderRequest) -> Job:
        model = request.model
        inputs = video_inputs(model, model.provider_inputs(request.params), VIDEO_INPUTS)
        image_field = model.inputs.get("image")
        if image_field and request.image is not None:
            inputs[image_field] = await self._upload(request)
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
            raise map_error(exc, model.id, creating=True) from None
        return await self._job(prediction, model.id, model.pricing.unit)

    async def _upload(self, request: ProviderRequest) -> str:
        """Upload the input image, tagged with the attempt, and return the URL to send.

        An upload is free and creates no job, so a failed one is an ordinary retryable error."""
        assert request.image is not None
        upload = io.BytesIO(request.image)
        upload.name = "input.png" if request.image_media_type == "image/png" else "input.jpg"
        metadata = {_ATTEMPT_KEY: request.attempt_id} if request.attempt_id else {}
        try:
            created = await self.client.files.async_create(
                upload, content_type=request.image_media_type or "application/octet-stream",
                metadata=metadata)
        except Exception as exc:
            raise map_error(exc, request.model.id) from None
        return str(created.urls["get"])

    async def find_job(self, request: ProviderRequest, since: datetime) -> Job | None:
        """The prediction an earlier create for this attempt made, found by the file it was
        given (see the module docstring); None when no prediction names it."""
        model = request.model
        owner_name, _, version = model.endpoint.partition(":")
        uploaded = bool(model.inputs.get("image")) and request.image is not None
        if not uploaded or not request.attempt_id:
            raise OutcomeUnknown(f"{model.id}: a create without an uploaded input cannot be "
                                 "matched to a prediction afterwards", model_id=model.id)
        start = since - _CLOCK_SKEW
        cursor: str | None = "/v1/predictions?" + urlencode(
            {"created_after": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        owners: dict[str, bool] = {}
        try:
            while cursor:
                page = await self.client.predictions.async_list(cursor)
                for prediction in page.results:
                    created = _created_at(prediction)
                    if created is not None and created < start:
                        return None  # newest first: everything after this is older
                    if prediction.model != owner_name and (
                            not version or prediction.version != version):
                        continue
                    for file_id in _file_ids(prediction.input):
                        if file_id not in owners:
                            stored = await self.client.files.async_get(file_id)
                            owners[file_id] = (
                                (stored.metadata or {}).get(_ATTEMPT_KEY) == request.attempt_id)
                        if owners[file_id]:
                            return await self._job(prediction, model.id, model.pricing.unit)
                cursor = page.next
        except ProviderError:
            raise
        except Exception as exc:
            raise OutcomeUnknown(f"{model.id}: could not list predictions to find the job "
                                 f"({type(exc).__name__})", model_id=model.id) from None
        return None

    async def poll(self, job: Job) -> Job:
        model_id = job.context["model_id"]
        try:
            prediction = await self.client.predictions.async_get(job.provider_job_id)
        except Exception as exc:
            raise map_error(exc, model_id) from None
        return await self._job(prediction, model_id, job.context["unit"])

    async def cancel(self, job: Job) -> None:
        try:
            await self.client.predictions.async_cancel(job.provider_job_id)
        except Exception:  # best effort: the job may already be terminal
            return

    async def _job(self, prediction: Any, model_id: str, unit: str) -> Job:
        context = {"model_id": model_id, "unit": unit}
        state = _STATES.get(prediction.status, JobState.RUNNING)
        metrics = prediction.metrics or {}
        predict_time = metrics.get("predict_time")
        usage = (Usage(seconds=float(predict_time))
                 if isinstance(predict_time, int | float) else None)
        video = unit == "second"
        video_seconds = metrics.get("video_output_duration_seconds")
        if (video and state is JobState.SUCCEEDED and isinstance(video_seconds, int | float)
                and not isinstance(video_seconds, bool)):
            usage = Usage(seconds=usage.seconds if usage else None,
                          video_seconds=float(video_seconds))
        if state is JobState.FAILED:
            return Job(prediction.id, state, context=context, usage=usage,
                       error=_failure(prediction.error, model_id, prediction.id))
        if state is JobState.CANCELLED:
            if prediction.status == "aborted":
                usage = Usage(seconds=0.0)
            return Job(prediction.id, state, context=context, usage=usage,
                       error=ProviderUnavailable(f"{model_id}: prediction was canceled",
                                                 model_id=model_id, outcome="canceled"))
        if state is not JobState.SUCCEEDED:
            return Job(prediction.id, state, context=context)
        url = _first_url(prediction.output)
        if url is None:
            # replicate 1.0.7's Prediction drops the ``data_removed`` flag, but the removal
            # empties the input too, and we never send an empty one
            if getattr(prediction, "data_removed", False) or not prediction.input:
                return Job(prediction.id, JobState.FAILED, context=context, usage=usage,
                           error=DataRemoved(
                               f"{model_id}: Replicate removed prediction {prediction.id}'s "
                               "output (data_removed: outputs are kept one hour)",
                               model_id=model_id, provider_job_id=prediction.id))
            return Job(prediction.id, JobState.FAILED, context=context, usage=usage,
                       error=InvalidOutput("no_output",
                                           f"{model_id}: prediction succeeded with no output URL",
                                           model_id=model_id))
        data, media_type = await fetch_output(url, model_id=model_id, video=video)
        metadata: dict[str, Any] = {"predict_time": predict_time,
                                    "output_url_host": httpx.URL(url).host}
        if video:
            metadata["video_output_duration_seconds"] = video_seconds
        # a video's seconds are billed whatever our check of the clip says: on the job too
        return Job(prediction.id, state, context=context, usage=usage if video else None,
                   output=Output(data=data, media_type=media_type, usage=usage,
                                 metadata=metadata))
