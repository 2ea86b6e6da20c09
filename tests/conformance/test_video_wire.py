"""Every video answer of the emulator conforms to what the providers publish, driven by the
real SDKs; and what pixellab's adapters send is what each model takes.

Sources:

* OpenAI: openai/openai-openapi @ f85dbe223d40e1a31cba812ab2d755c7e98a92a3, ``openapi.yaml``:
  paths ``/videos`` (POST ``CreateVideoMultipartBody``, GET ``VideoListResource``),
  ``/videos/{video_id}`` (GET ``VideoResource``, DELETE ``DeletedVideoResource``),
  ``/videos/{video_id}/content`` (``video/mp4``, ``image/webp``; ``VideoContentVariant``);
  components ``VideoResource``, ``VideoStatus``, ``VideoSize``, ``VideoSeconds``, ``Error-2``,
  ``ErrorResponse``. The SDK used is the installed ``openai`` (3.63.0:
  ``openai/resources/videos.py``, ``openai/types/video.py``; the same ``Video`` type as
  openai/openai-python @ 3e19420b ``src/openai/types/video.py``). No cancel path exists.
* Replicate: the prediction schema of :mod:`tests.conformance.replicate_schemas`
  (replicate/replicate-python-beta @ 48e138a1); ``metrics`` is open, where a video model's
  ``video_output_duration_seconds`` lives (replicate/cog @ f77c205f ``docs/metrics.md``:
  official models report their own metrics); ``google/veo-3.1``'s output schema is a single
  ``uri`` and its inputs ``image``, ``duration`` (integer), ``aspect_ratio``, ``resolution``,
  ``generate_audio``, ``seed`` (the model page as copied in Volpestyle/game-asset-pipeline @
  0864d61d ``docs/models/replicate/veo-3.1.md``).
* fal: the queue schemas of :mod:`tests.conformance.fal_schemas` (fal-ai/fal @ c6f0afaa); a
  video app's result is ``{"video": File}`` with ``url``, ``content_type``, ``file_name``,
  ``file_size`` (the apps' output schemas on fal.ai, e.g. fal.ai/docs/model-api-reference/
  video-generation-api/veo3.1-image-to-video: duration "4s"/"6s"/"8s", aspect_ratio
  auto/16:9/9:16, resolution 720p/1080p/4k, generate_audio).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import fal_client
import fal_client.client as fal_module
import openai
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

from pixellab.emulator import Emulator, ResponseRecord
from tests.conformance import fal_schemas, openai_schemas, replicate_schemas
from tests.conformance.conftest import nonconforming
from tests.conformance.support import INTEGER, STRING, URL, Schema, closed, errors, nullable
from tests.emulated import point_fal_at

pytestmark = pytest.mark.filterwarnings(  # the SDK marks the videos API deprecated (shut down)
    "ignore:The Sora API is scheduled:DeprecationWarning")

OPENAPI = "openai/openai-openapi@f85dbe223d40e1a31cba812ab2d755c7e98a92a3 openapi.yaml"

VIDEO_ERROR: Schema = closed({"code": STRING, "message": STRING}, ["code", "message"])
"""``Error-2``: the error of a failed video job."""

VIDEO_RESOURCE: Schema = closed({
    "id": STRING,
    "object": {"const": "video"},
    "model": STRING,  # VideoModel: any string, or a known sora-2 name
    "status": {"enum": ["queued", "in_progress", "completed", "failed"]},
    "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "created_at": INTEGER,
    "completed_at": nullable(INTEGER),
    "expires_at": nullable(INTEGER),
    "prompt": nullable(STRING),
    "size": {"enum": ["720x1280", "1280x720", "1024x1792", "1792x1024"]},
    "seconds": STRING,
    "remixed_from_video_id": nullable(STRING),
    "error": nullable(VIDEO_ERROR),
}, ["id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error"])

VIDEO_LIST: Schema = closed({"object": {"const": "list"},
                             "data": {"type": "array", "items": VIDEO_RESOURCE},
                             "first_id": nullable(STRING), "last_id": nullable(STRING),
                             "has_more": {"type": "boolean"}},
                            ["object", "data", "first_id", "last_id", "has_more"])

DELETED_VIDEO: Schema = closed({"object": {"const": "video.deleted"},
                                "deleted": {"type": "boolean"}, "id": STRING},
                               ["object", "deleted", "id"])

FAL_FILE: Schema = closed({"url": URL, "content_type": STRING, "file_name": STRING,
                           "file_size": INTEGER, "file_data": STRING}, ["url"])
FAL_VIDEO_RESULT: Schema = closed({"video": FAL_FILE, "seed": INTEGER}, ["video"])


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (190, 120, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, video_latency_s=0.25, video_fps=6, video_max_side=256,
                  seed=17, record_bodies=True) as emulator:
        yield emulator


def schema_for(record: ResponseRecord) -> Schema | None:
    """The schema a recorded video answer must follow (None: bytes, checked apart)."""
    route, method, status = record.route, record.method, record.status
    if status == 0 or route.startswith("/files/") or route.endswith("/content"):
        return None
    if route.startswith("/openai/v1/videos"):
        if status >= 400:
            return openai_schemas.ERROR_RESPONSE
        if route == "/openai/v1/videos":
            return VIDEO_RESOURCE if method == "POST" else VIDEO_LIST
        return DELETED_VIDEO if method == "DELETE" else VIDEO_RESOURCE
    if route.startswith("/replicate/"):
        if status >= 400:
            return replicate_schemas.PROBLEM
        if "/files" in route:
            return replicate_schemas.FILE
        return replicate_schemas.PREDICTION
    if route.startswith("/fal/"):
        if route.startswith("/fal/rest/") or route.startswith("/fal/cdn/"):
            return None  # storage: covered by test_fal.py
        if status >= 400:
            return fal_schemas.MODEL_ERROR if isinstance(record.json().get("detail"), list) \
                else fal_schemas.PLAIN_ERROR
        if method == "POST":
            return fal_schemas.SUBMIT
        if record.path.endswith("/status"):
            return fal_schemas.STATUS
        return FAL_VIDEO_RESULT
    raise LookupError(route)


# --- OpenAI videos (Sora) -------------------------------------------------------------------


async def drive_sora(emu: Emulator) -> None:
    oai = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-conf", max_retries=0)
    videos = oai.videos
    reference = ("r.png", png((1280, 720)), "image/png")
    video = await videos.create(model="sora-2", prompt="a lamp turning", seconds="4",
                                size="1280x720", input_reference=reference)
    assert (video.status, video.progress, video.seconds, video.size) == (
        "queued", 0, "4", "1280x720")
    seen = [video]
    while video.status in ("queued", "in_progress"):
        await asyncio.sleep(0.03)
        video = await videos.retrieve(video.id)
        seen.append(video)
    assert video.status == "completed" and video.progress == 100
    progress = [v.progress for v in seen]
    assert progress == sorted(progress) and any(0 < p < 100 for p in progress), progress
    assert "in_progress" in {v.status for v in seen}
    async with videos.with_streaming_response.download_content(video.id) as response:
        assert response.headers["content-type"] == "video/mp4"
        data = await response.read()
    assert data[4:8] == b"ftyp"
    thumb = await videos.download_content(video.id, variant="thumbnail")
    assert thumb.response.headers["content-type"] == "image/webp"
    listed = [v.id async for v in videos.list(limit=5)]
    assert video.id in listed
    # what cannot be asked: a duration, a size, a reference of another size
    for arguments in ({"seconds": "10"}, {"size": "1920x1080"},
                      {"size": "720x1280", "input_reference": reference}):
        with pytest.raises(openai.BadRequestError) as refused:
            await videos.create(prompt="x", **arguments)  # type: ignore[arg-type]
        assert refused.value.status_code == 400
    # content refused at create (input) and at the output (a failed job), a model failure
    emu.faults.add("openai", "content_rejected", model="sora-2")
    with pytest.raises(openai.BadRequestError) as blocked:
        await videos.create(model="sora-2", prompt="x")
    assert blocked.value.code == "moderation_blocked"
    failed = []
    for action, options in (("content_rejected", {"stage": "output"}), ("job_failure", {})):
        emu.faults.add("openai", action, model="sora-2", **options)
        job = await videos.create(model="sora-2", prompt="x")
        with pytest.raises(openai.BadRequestError):  # not completed: no content yet
            await videos.download_content(job.id)
        with pytest.raises(openai.BadRequestError):  # nor deleted while it runs
            await videos.delete(job.id)
        while job.status in ("queued", "in_progress"):
            await asyncio.sleep(0.03)
            job = await videos.retrieve(job.id)
        failed.append(job)
    assert [(j.status, j.error.code if j.error else None) for j in failed] == [
        ("failed", "moderation_blocked"), ("failed", "internal_error")]
    emu.faults.add("openai", "rate_limit", model="sora-2")
    with pytest.raises(openai.RateLimitError):
        await videos.create(model="sora-2", prompt="x")
    deleted = await videos.delete(video.id)
    assert (deleted.id, deleted.deleted) == (video.id, True)
    with pytest.raises(openai.NotFoundError):
        await videos.retrieve(video.id)


def test_every_sora_answer_matches_the_openapi_spec(emu: Emulator) -> None:
    asyncio.run(drive_sora(emu))
    answers = [r for r in emu.responses if r.route.startswith("/openai/v1/videos")]
    assert nonconforming(answers, schema_for) == [], OPENAPI
    assert {r.status for r in answers} >= {200, 400, 404, 429}
    contents = [r for r in answers if r.route.endswith("/content") and r.status == 200]
    assert {r.headers["content-type"] for r in contents} == {"video/mp4", "image/webp"}
    creates = [j for j in emu.creates("openai") if j.model == "sora-2"]
    assert creates[0].input["input_reference"].startswith("<image")  # multipart file part
    billed = {j.status: j.cost_usd for j in creates}
    assert billed == {"succeeded": pytest.approx(0.40), "failed": 0.0}  # 4 s x $0.10; none


# --- Replicate and fal video models ---------------------------------------------------------


async def drive_replicate(emu: Emulator) -> list[replicate.prediction.Prediction]:
    client = replicate.Client(api_token="r8_conf", base_url=emu.replicate_base_url)
    done = []
    for model, inputs in (("kwaivgi/kling-v1.6-standard", {"duration": 5,
                                                            "aspect_ratio": "9:16"}),
                          ("google/veo-3.1", {"duration": 4, "resolution": "720p",
                                              "generate_audio": False})):
        prediction = await client.predictions.async_create(
            model=model, input={"prompt": "a lamp", **inputs})
        while prediction.status not in ("succeeded", "failed", "canceled"):
            await asyncio.sleep(0.03)
            await prediction.async_reload()
        done.append(prediction)
    with pytest.raises(ReplicateError) as refused:
        await client.predictions.async_create(model="google/veo-3.1",
                                              input={"prompt": "x", "duration": "8"})
    assert refused.value.status == 422
    return done


def test_replicate_video_predictions_answer_one_mp4_and_their_billed_seconds(
        emu: Emulator) -> None:
    predictions = asyncio.run(drive_replicate(emu))
    answers = [r for r in emu.responses if r.route.startswith("/replicate/")]
    assert nonconforming(answers, schema_for) == [], replicate_schemas.SOURCE
    for prediction, seconds in zip(predictions, (5, 4), strict=True):
        assert prediction.status == "succeeded"
        assert isinstance(prediction.output, str) and prediction.output.endswith(".mp4")
        assert prediction.metrics is not None
        assert prediction.metrics["video_output_duration_seconds"] == seconds
    jobs = {j.model: j.cost_usd for j in emu.creates("replicate")}
    assert jobs == {"kwaivgi/kling-v1.6-standard": pytest.approx(5 * 0.026),
                    "google/veo-3.1": pytest.approx(4 * 0.13)}


async def drive_fal(emu: Emulator) -> list[dict[str, object]]:
    client = fal_client.AsyncClient(key="conformance:key")
    url = await client.upload(png((640, 360)), "image/png", "p.png")
    results = []
    for app, inputs in (("fal-ai/kling-video/v1.6/standard/image-to-video", {"duration": "5"}),
                        ("fal-ai/veo3.1/image-to-video", {"duration": "4s",
                                                          "generate_audio": True})):
        handle = await client.submit(app, {"prompt": "a lamp", "image_url": url, **inputs})
        await handle.status(with_logs=True)
        results.append(await handle.get())
    with pytest.raises(fal_client.client.FalClientHTTPError) as refused:
        await client.submit("fal-ai/veo3.1/image-to-video",
                            {"prompt": "x", "image_url": url, "duration": "5s"})
    assert refused.value.status_code == 422
    return results


def test_fal_video_results_name_one_mp4_file(emu: Emulator,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    point_fal_at(emu, monkeypatch)
    monkeypatch.setattr(fal_module, "MAX_ATTEMPTS", 1)
    results = asyncio.run(drive_fal(emu))
    answers = [r for r in emu.responses if r.route.startswith("/fal/")]
    assert nonconforming(answers, schema_for) == [], fal_schemas.SOURCE
    for result in results:
        assert errors(FAL_VIDEO_RESULT, result) == []
        video = result["video"]
        assert isinstance(video, dict) and video["content_type"] == "video/mp4"
    queued = [r.json() for r in answers if r.path.endswith("/status") and r.status == 202]
    assert all("queue_position" in q for q in queued if q["status"] == "IN_QUEUE")
    [refusal] = [r.json() for r in answers if r.status == 422]
    assert refusal["detail"][0]["loc"] == ["body", "duration"]
    jobs = {j.model: j.cost_usd for j in emu.creates("fal")}
    assert jobs == {"fal-ai/kling-video/v1.6/standard/image-to-video": pytest.approx(5 * 0.045),
                    "fal-ai/veo3.1/image-to-video": pytest.approx(4 * 0.40)}  # with audio
