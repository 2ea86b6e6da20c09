"""The remote image-to-video models - Kling 1.6 and Veo 3.1 on Replicate and fal, Sora 2 on
OpenAI - end to end: the real SDKs, pixellab's adapters, runner and video validation, against
the loopback emulator, which makes real H.264 clips and bills them by each provider's rule.

What must hold, from the emulator's own records:
- each model's clip arrives as ``video/mp4`` of the asked duration and shape, sent with the
  model's own input values (Kling ``duration`` 5 / "5", Veo 4 / "4s", Sora ``seconds`` "4" and
  ``size`` 1280x720), and a value a model does not take is refused before any call;
- every video fault ends in the right recorded outcome (a truncated, black, frozen, short or
  wrongly shaped clip is an ``InvalidOutput`` with its reason; a content refusal a
  ``ContentRejected``; a model failure a ``ProviderUnavailable``);
- the ledger charges each job exactly the emulator's bill where the provider reports the billed
  seconds (Replicate's ``video_output_duration_seconds``, Sora's ``seconds``), at least the bill
  where it does not (fal: the catalog's per-clip upper bound), and nothing where no job was paid;
- a video job that runs past its deadline is cancelled where the provider can cancel (Replicate,
  fal: free), and charged as finished where it cannot (Sora has no cancel endpoint);
- a sweep killed right after a video create was accepted, or while its job runs, is resumed
  without a second create.

Clips are short and small (``video_fps=6``, ``video_max_side=256``: a few dozen 256x144 frames),
and a video job takes 0.25 s here instead of minutes.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from pixellab.catalog import Catalog, load_catalog
from pixellab.emulator import Emulator, JobRecord
from pixellab.errors import InvalidRequest
from pixellab.providers.base import Job, JobState, Provider, ProviderRequest
from pixellab.runner import RetryPolicy
from pixellab.sweep import Sweep, SweepResult, SweepSpec
from pixellab.tasks import Task
from pixellab.workbench import Workbench
from tests.conftest import product_photo, started, write_prompted_dataset
from tests.emulated import emulated_providers, point_sdks_at, settled

pytestmark = pytest.mark.filterwarnings(  # the SDK marks the videos API deprecated (shut down)
    "ignore:The Sora API is scheduled:DeprecationWarning")

KLING_R = "replicate:kwaivgi/kling-v1.6-standard"
VEO_R = "replicate:google/veo-3.1"
KLING_F = "fal:fal-ai/kling-video/v1.6/standard/image-to-video"
VEO_F = "fal:fal-ai/veo3.1/image-to-video"
SORA = "openai:sora-2"
MODELS = [KLING_R, VEO_R, KLING_F, VEO_F, SORA]

PARAMS: dict[str, dict[str, Any]] = {  # what each model can make, as a sweep asks it
    KLING_R: {"duration_s": 5, "aspect_ratio": "16:9"},
    VEO_R: {"duration_s": 4, "aspect_ratio": "16:9"},
    KLING_F: {"duration_s": 5},  # fal's Kling takes no aspect ratio: the clip follows the photo
    VEO_F: {"duration_s": 4, "aspect_ratio": "16:9"},
    SORA: {"duration_s": 4, "aspect_ratio": "16:9"},
}
WIRE: dict[str, dict[str, Any]] = {  # what the provider must receive for PARAMS
    KLING_R: {"duration": 5, "aspect_ratio": "16:9"},
    VEO_R: {"duration": 4, "aspect_ratio": "16:9", "generate_audio": False},
    KLING_F: {"duration": "5"},
    VEO_F: {"duration": "4s", "aspect_ratio": "16:9", "generate_audio": False},
    SORA: {"seconds": "4", "size": "1280x720", "model": "sora-2"},
}
FAST = RetryPolicy(max_attempts=1, initial_wait_s=0.01, max_wait_s=0.05, poll_interval_s=0.04)


def provider_of(model_id: str) -> str:
    return model_id.partition(":")[0]


def endpoint_of(model_id: str) -> str:
    return model_id.partition(":")[2]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02, video_latency_s=0.25, video_fps=6, video_max_side=256,
                  seed=31) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def workbench(emu: Emulator, catalog: Catalog, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Workbench:
    emu.faults.clear()
    point_sdks_at(emu, monkeypatch)
    return Workbench(tmp_path / "home", catalog=catalog, providers=emulated_providers(emu))


def sweep(workbench: Workbench, dataset: Path, model_id: str, n: int, *, name: str = "video",
          params: dict[str, Any] | None = None, retry: RetryPolicy = FAST) -> SweepResult:
    spec = SweepSpec.parse({"name": name, "task": "image_to_video", "dataset": str(dataset),
                            "chain": [model_id], "limit": n, "prompts": ["clip@1"],
                            "params": params if params is not None else PARAMS[model_id],
                            "concurrency": 2})
    return Sweep(spec, workbench).run(retry=retry, score=False)


def attempts(workbench: Workbench) -> dict[str, dict[str, Any]]:
    """The ledger's attempts that reached a provider job, by job id."""
    frame = workbench.ledger.query(
        """select a.provider_job_id, a.status, a.error_class, a.error_reason, a.error_message,
                  coalesce(a.usd, 0)::double usd, coalesce(a.credits, 0)::double credits,
                  a.cost_estimated, r.prompt_text
           from attempts a join requests r using (request_key)
           where a.provider_job_id is not null""")
    frame = frame.astype(object).where(frame.notna(), None)
    return {row["provider_job_id"]: row for row in frame.to_dict("records")}


def jobs_since(emu: Emulator, model_id: str, before: int) -> list[JobRecord]:
    provider = provider_of(model_id)
    return [j for j in emu.creates(provider)[before:] if j.model == endpoint_of(model_id)]


def assert_ledger_pays_the_bill(workbench: Workbench, jobs: list[JobRecord]) -> None:
    """Exactly the bill where the provider reported the billed seconds; at least it where the
    ledger had to estimate; nothing charged twice."""
    rows = attempts(workbench)
    for job in jobs:
        row = rows[job.job_id]
        if row["cost_estimated"]:
            assert row["usd"] >= job.cost_usd - 1e-9, (job, row)
        else:
            assert row["usd"] == pytest.approx(job.cost_usd, abs=1e-9), (job, row)
    spent = float(workbench.ledger.scalar("select coalesce(sum(usd), 0) from costs"))
    assert spent >= sum(j.cost_usd for j in jobs) - 1e-9


def clip_facts(data: bytes) -> tuple[int, int, float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert container.duration is not None
        return stream.width, stream.height, container.duration / 1e6


# --- success, on the wire and in the ledger -------------------------------------------------


@pytest.mark.parametrize("model_id", MODELS)
def test_each_video_model_delivers_the_asked_clip_and_the_ledger_pays_its_bill(
        workbench: Workbench, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model_id: str) -> None:
    dataset = write_prompted_dataset(tmp_path, 1, "clip@1", monkeypatch)
    before = len(emu.creates(provider_of(model_id)))
    result = sweep(workbench, dataset, model_id, 1)
    settled(emu, provider_of(model_id), before)
    [job] = jobs_since(emu, model_id, before)
    assert result.succeeded == 1, attempts(workbench)
    for name, value in WIRE[model_id].items():  # the model's own names and value types
        assert job.input[name] == value and type(job.input[name]) is type(value), (name, job)
    digest, media_type, duration = workbench.ledger.query(
        "select sha256, media_type, duration_s from outputs").iloc[0]
    assert media_type == "video/mp4" and workbench.store.exists(digest, media_type)
    width, height, seconds = clip_facts(workbench.store.get(digest, media_type))
    asked = PARAMS[model_id]
    assert seconds == pytest.approx(asked["duration_s"], abs=0.2)
    assert duration == pytest.approx(seconds, abs=0.2)
    if "aspect_ratio" in asked:
        assert width / height == pytest.approx(16 / 9, rel=0.03)
    price = workbench.catalog.model(model_id).pricing
    assert job.cost_usd == pytest.approx(asked["duration_s"] * price.usd_per_unit)
    [row] = attempts(workbench).values()
    if provider_of(model_id) == "fal":  # fal reports no seconds: the per-clip upper bound
        assert row["cost_estimated"] and row["usd"] == pytest.approx(
            price.usd_per_unit * (price.units_per_call or 0))
    else:  # Replicate's video_output_duration_seconds, Sora's seconds: exactly the bill
        assert not row["cost_estimated"]
    assert row["credits"] == pytest.approx(price.credits_for(row["usd"]))
    assert_ledger_pays_the_bill(workbench, [job])


@pytest.mark.parametrize(("model_id", "params", "wrong"), [
    (KLING_R, {"duration_s": 6}, "duration_s = 6"),
    (VEO_R, {"duration_s": 4, "aspect_ratio": "1:1"}, "aspect_ratio = '1:1'"),
    (KLING_F, {"duration_s": 4}, "duration_s = 4"),
    (VEO_F, {"duration_s": 5}, "duration_s = 5"),
    (SORA, {"duration_s": 5}, "duration_s = 5"),
    (SORA, {"duration_s": 4, "aspect_ratio": "1:1"}, "'1:1'"),
])
def test_a_clip_a_model_cannot_make_is_refused_before_any_call(
        workbench: Workbench, emu: Emulator, catalog: Catalog, model_id: str,
        params: dict[str, Any], wrong: str) -> None:
    provider = workbench.providers[provider_of(model_id)]
    photo, _ = product_photo(2)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    before = len(emu.log)
    request = ProviderRequest("k", catalog.model(model_id), image=buffer.getvalue(),
                              image_media_type="image/png", task=Task.IMAGE_TO_VIDEO,
                              params={"prompt": "turn", **params})
    with pytest.raises(InvalidRequest, match=wrong):
        asyncio.run(provider.submit(request))
    assert [r for r in emu.log[before:] if r.provider != "files"] == []  # no upload, no create


# --- faults ---------------------------------------------------------------------------------

FAULTS: list[tuple[str | None, dict[str, Any]]] = [
    (None, {}), ("corrupt", {}), ("blank", {}), ("frozen", {}), ("wrong_duration", {}),
    ("wrong_aspect", {}), ("content_rejected", {"stage": "output"}),
    ("job_failure", {"error": "CUDA out of memory"}),
]
EXPECTED: dict[str | None, tuple[str, set[str]]] = {  # outcome class, validation reasons
    None: ("", set()),
    "corrupt": ("InvalidOutput", {"truncated", "undecodable"}),
    "blank": ("InvalidOutput", {"blank_black"}),
    "frozen": ("InvalidOutput", {"still_image", "frozen"}),
    "wrong_duration": ("InvalidOutput", {"duration_mismatch"}),
    "wrong_aspect": ("InvalidOutput", {"aspect_mismatch"}),
    "content_rejected": ("ContentRejected", set()),
    "job_failure": ("ProviderUnavailable", set()),
}


@pytest.mark.parametrize("model_id", [VEO_R, VEO_F, SORA])
def test_every_video_fault_ends_in_its_outcome_and_the_ledger_never_pays_less_than_the_bill(
        workbench: Workbench, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model_id: str) -> None:
    dataset = write_prompted_dataset(tmp_path, len(FAULTS), "clip@1", monkeypatch)
    for action, options in FAULTS:
        if action is not None:
            emu.faults.add(provider_of(model_id), action, model=endpoint_of(model_id),
                           **options)
    before = len(emu.creates(provider_of(model_id)))
    result = sweep(workbench, dataset, model_id, len(FAULTS))
    settled(emu, provider_of(model_id), before)
    jobs = jobs_since(emu, model_id, before)
    assert not emu.faults.pending() and len(jobs) == len(FAULTS)  # one create each, no retry
    rows = attempts(workbench)
    for job in jobs:
        row = rows[job.job_id]
        error_class, reasons = EXPECTED[job.fault]
        assert (row["error_class"] or "") == error_class, (job.fault, row)
        if reasons:
            assert row["error_reason"] in reasons, (job.fault, row)
    assert result.succeeded == 1
    assert_ledger_pays_the_bill(workbench, jobs)
    billed = {j.fault: j.cost_usd for j in jobs}
    price = workbench.catalog.model(model_id).pricing.usd_per_unit
    for fault in ("corrupt", "blank", "frozen", "wrong_duration", "wrong_aspect"):
        assert billed[fault] == pytest.approx(4 * price)  # a clip was made: the asked seconds
    assert billed["job_failure"] == 0.0  # a failed video is not billed, by any of the three
    # a content refusal: fal bills a 422 that ran (its FAQ); Replicate's official per-second
    # models and OpenAI bill nothing for it
    assert billed["content_rejected"] == (pytest.approx(4 * price) if model_id == VEO_F else 0)


# --- deadlines and cancel -------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [KLING_R, KLING_F, SORA])
def test_a_video_job_past_its_deadline_is_cancelled_where_the_provider_can_cancel(
        emu: Emulator, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model_id: str) -> None:
    emu.faults.clear()
    point_sdks_at(emu, monkeypatch)
    model = catalog.model(model_id).model_copy(update={"timeout_s": 1.0})
    short = catalog.model_copy(update={"models": {**catalog.models, model_id: model}})
    workbench = Workbench(tmp_path / "home", catalog=short, providers=emulated_providers(emu))
    dataset = write_prompted_dataset(tmp_path, 1, "clip@1", monkeypatch)
    emu.faults.add(provider_of(model_id), "accept_then_hang", model=endpoint_of(model_id),
                   seconds=1.5)
    before = len(emu.creates(provider_of(model_id)))
    result = sweep(workbench, dataset, model_id, 1)
    assert result.succeeded == 0
    settled(emu, provider_of(model_id), before, timeout_s=10)
    [job] = jobs_since(emu, model_id, before)
    [row] = attempts(workbench).values()
    assert row["error_class"] == "ProviderTimeout"
    if model_id == SORA:  # no cancel endpoint: it ran on (and failed by itself), charged as
        assert job.status == "failed" and row["cost_estimated"]  # finished, at the estimate
        assert row["usd"] == pytest.approx(1.20)
    else:  # cancelled while processing: an official per-second model / fal bill nothing
        assert job.status == "canceled" and job.cost_usd == 0.0 and row["usd"] == 0.0
    assert_ledger_pays_the_bill(workbench, [job])


def run_to_end(provider: Provider, request: ProviderRequest) -> tuple[list[Job], Job]:
    """Submit and poll until terminal; every state seen, and the last."""
    async def go() -> tuple[list[Job], Job]:
        job = await provider.submit(request)
        seen = [job]
        while not job.state.terminal:
            await asyncio.sleep(0.02)
            job = await provider.poll(job)
            seen.append(job)
        return seen, job
    return asyncio.run(go())


def photo_request(catalog: Catalog, model_id: str) -> ProviderRequest:
    photo, _ = product_photo(5)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return ProviderRequest("k", catalog.model(model_id), image=buffer.getvalue(),
                           image_media_type="image/png", task=Task.IMAGE_TO_VIDEO,
                           params={"prompt": "turn", **PARAMS[model_id]})


@pytest.mark.parametrize("model_id", [KLING_R, KLING_F, SORA])
def test_a_video_job_is_queued_then_runs_then_succeeds_with_its_billed_seconds(
        workbench: Workbench, catalog: Catalog, model_id: str) -> None:
    provider = workbench.providers[provider_of(model_id)]
    seen, done = run_to_end(provider, photo_request(catalog, model_id))
    states = [s.state for s in seen]
    assert states[0] is JobState.QUEUED and done.state is JobState.SUCCEEDED
    assert JobState.RUNNING in states  # 30 % of the emulated time queued, then processing
    if model_id == KLING_F:  # fal's queue says where the request stands while queued
        assert all(isinstance(s.queue_position, int) for s in seen[1:]
                   if s.state is JobState.QUEUED)
    assert done.output is not None and done.output.media_type == "video/mp4"
    usage = done.output.usage
    if model_id == KLING_F:
        assert usage is None  # fal's result names the file only
    else:
        assert usage is not None and usage.video_seconds == PARAMS[model_id]["duration_s"]


# --- kill and resume ------------------------------------------------------------------------

CHILD = os.environ.get("PYTHON", sys.executable)


def kill_and_resume(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    model_id: str, *, after_create: bool) -> tuple[list[JobRecord], Workbench]:
    """Run a one-request video sweep as its own process and SIGKILL it - from inside the
    emulator right after it accepted the create (before a byte of the answer), or 1.2 s into
    the job (its id recorded, being polled) - then resume it here."""
    dataset = write_prompted_dataset(tmp_path, 1, "clip@1", monkeypatch)
    spec = tmp_path / "video.yaml"
    spec.write_text(f"name: kill\ntask: image_to_video\ndataset: {dataset}\n"
                    f"chain: ['{model_id}']\nprompts: ['clip@1']\n"
                    f"params: {{duration_s: {PARAMS[model_id]['duration_s']}}}\n")
    home = tmp_path / "home"
    env = {**os.environ, **emu.env()}
    provider = provider_of(model_id)
    before = len(emu.creates(provider))
    accepted = threading.Event()
    child: list[subprocess.Popen[str]] = []

    def on_create(record: JobRecord) -> None:
        if record.provider == provider and record.model == endpoint_of(model_id):
            accepted.set()
            if after_create and child:
                os.kill(child[0].pid, signal.SIGKILL)

    emu.on_create(on_create)
    try:
        with started([CHILD, "-m", "pixellab.cli", "sweep", "run", str(spec), "--home",
                      str(home)], env=env, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL) as process:
            child.append(process)
            assert accepted.wait(60), "the sweep never created its job"
            if not after_create:
                time.sleep(1.2)  # the job id is on disk, the job still runs (3 s)
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            assert process.returncode == -signal.SIGKILL
    finally:
        emu.remove_create_hook(on_create)
    workbench = Workbench(home, catalog=load_catalog(), providers=emulated_providers(emu))
    resumed = Sweep(SweepSpec.from_file(spec), workbench)
    resumed.run(retry=RetryPolicy(max_attempts=2, poll_interval_s=0.1), score=False)
    settled(emu, provider, before, timeout_s=20)
    return jobs_since(emu, model_id, before), workbench


@pytest.mark.parametrize("model_id", [KLING_R, KLING_F, SORA])
def test_a_sweep_killed_right_after_a_video_create_never_creates_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_id: str) -> None:
    with Emulator(latency_s=0.02, video_latency_s=0.5, video_fps=6, video_max_side=256,
                  seed=41) as emu:
        point_sdks_at(emu, monkeypatch)
        jobs, workbench = kill_and_resume(emu, tmp_path, monkeypatch, model_id,
                                          after_create=True)
    [job] = jobs  # exactly one create, whatever the resume found
    rows = workbench.ledger.query(
        "select provider_job_id, status, error_reason from attempts where status != 'skipped'")
    if model_id == KLING_R:  # found again by the file it was given, polled, used
        assert list(rows["provider_job_id"]) == [job.job_id]
        assert list(rows["status"]) == ["succeeded"]
    else:  # no way to ask fal or OpenAI: charged as unknown, never created again
        assert "outcome_unknown" in set(rows["error_reason"])
    assert workbench.ledger.scalar(
        "select count(*) from attempts where status in ('started', 'submitting')") == 0
    spent = float(workbench.ledger.scalar("select coalesce(sum(usd), 0) from costs"))
    assert spent >= job.cost_usd - 1e-9


@pytest.mark.parametrize("model_id", [VEO_F, SORA])
def test_a_sweep_killed_while_its_video_job_runs_polls_that_job_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_id: str) -> None:
    with Emulator(latency_s=0.02, video_latency_s=3.0, video_fps=6, video_max_side=256,
                  seed=43) as emu:
        point_sdks_at(emu, monkeypatch)
        jobs, workbench = kill_and_resume(emu, tmp_path, monkeypatch, model_id,
                                          after_create=False)
    [job] = jobs
    rows = workbench.ledger.query(
        "select provider_job_id, status from attempts where status != 'skipped'")
    assert list(rows["provider_job_id"]) == [job.job_id]
    assert list(rows["status"]) == ["succeeded"]
    assert_ledger_pays_the_bill(workbench, [job])


# --- chaos ----------------------------------------------------------------------------------

CHAOS_FAULTS: dict[str, tuple[int, dict[str, Any]]] = {  # action: (times per provider, options)
    "rate_limit": (2, {"retry_after": 0}),
    "server_error": (1, {"status": 500}),
    "hang": (1, {"seconds": 3}),
    "accept_then_hang": (1, {"seconds": 3}),
    "accept_then_error": (1, {"status": 504}),
    "accept_then_reset": (1, {}),
    "job_failure": (2, {}),
    "content_rejected": (1, {"stage": "output"}),
    "corrupt": (1, {}),
    "blank": (1, {}),
    "frozen": (1, {}),
}


@pytest.mark.slow
def test_a_video_chaos_sweep_loses_nothing_and_pays_for_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The five video models, 8 products each, with refusals, hangs, cut-off creates, failures,
    content refusals and broken clips on every provider: the invariants of tests/test_chaos.py
    (which runs one image task), for videos."""
    dataset = write_prompted_dataset(tmp_path, 8, "clip@1", monkeypatch)
    catalog = load_catalog()
    short = {m: catalog.model(m).model_copy(update={"timeout_s": 2.0}) for m in MODELS}
    catalog = catalog.model_copy(update={"models": {**catalog.models, **short}})
    with Emulator(latency_s=0.02, video_latency_s=0.2, video_fps=6, video_max_side=192,
                  seed=47) as emu:
        point_sdks_at(emu, monkeypatch)
        for provider in ("replicate", "fal", "openai"):
            for action, (times, options) in CHAOS_FAULTS.items():
                emu.faults.add(provider, action, times=times, **options)
        workbench = Workbench(tmp_path / "home", catalog=catalog,
                              providers=emulated_providers(emu))
        spec = SweepSpec.parse({"name": "video-chaos", "task": "image_to_video",
                                "dataset": str(dataset), "models": MODELS,
                                "prompts": ["clip@1"], "concurrency": 16})
        result = Sweep(spec, workbench).run(retry=RetryPolicy(
            max_attempts=2, initial_wait_s=0.01, max_wait_s=0.05, poll_interval_s=0.04),
            score=False)
        settled(emu, timeout_s=30)
        billed = emu.creates()

    ledger = workbench.ledger
    assert result.planned == 8 * len(MODELS)
    assert set(ledger.query("select distinct status from requests")["status"]) <= {
        "succeeded", "failed"}
    assert result.succeeded >= 8  # most clips still arrive
    assert ledger.scalar("select count(*) from attempts "
                         "where status in ('started', 'submitting')") == 0
    rows = ledger.query(
        """select a.model_id, a.provider_job_id, a.error_reason, a.cost_estimated,
                  coalesce(a.usd, 0)::double usd, r.prompt_text
           from attempts a join requests r using (request_key) where a.status != 'skipped'""")
    rows = rows.astype(object).where(rows.notna(), None)
    recorded = [r for r in rows.to_dict("records") if r["provider_job_id"] is not None]
    by_id = {r["provider_job_id"]: r for r in recorded}
    assert len(by_id) == len(recorded)  # no job recorded twice
    reached: dict[tuple[str, str], int] = {}
    for r in rows.to_dict("records"):
        if r["provider_job_id"] is not None or r["error_reason"] == "outcome_unknown":
            key = (r["model_id"], r["prompt_text"])
            reached[key] = reached.get(key, 0) + 1
    for job in billed:
        key = (f"{job.provider}:{job.model}", job.input.get("prompt"))
        assert sum(1 for j in billed if (f"{j.provider}:{j.model}", j.input.get("prompt"))
                   == key) <= reached.get(key, 0), key  # never a create the ledger lacks
        row = by_id.get(job.job_id)
        if row is None:  # a create whose answer never came: charged as unknown
            continue
        if row["cost_estimated"]:
            assert row["usd"] >= job.cost_usd - 1e-9, (job, row)
        else:
            assert row["usd"] == pytest.approx(job.cost_usd, abs=1e-6), (job, row)
    spent = float(ledger.scalar("select coalesce(sum(usd), 0) from costs"))
    assert spent >= emu.bill() - 1e-9
