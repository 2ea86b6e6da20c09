"""The runner: retries that honour retry_after, deadlines, skipped models, limits.

Remote providers are proven against the loopback emulator with their real SDKs (a later issue);
here the provider boundary is faked by :class:`ScriptedProvider`, which raises scripted errors
before handing the call to the real local provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pixellab import background, heap
from pixellab.billing import Usage
from pixellab.catalog import load_catalog
from pixellab.errors import (
    ContentRejected,
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pixellab.ledger import Ledger, LedgerWriter, SubmitJournal
from pixellab.providers.base import Job, JobState, ProviderRequest
from pixellab.providers.local import LocalProvider
from pixellab.runner import Request, RetryPolicy, Runner, RunSummary
from pixellab.tasks import Task
from pixellab.workbench import Workbench


class ScriptedProvider(LocalProvider):
    """Raises the scripted errors in order, then behaves like the local provider."""

    def __init__(self, name: str, script: list[ProviderError | float | str] | None = None,
                 credentials: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.script = list(script or [])
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled: list[str] = []
        self._credentials = credentials

    def missing_credentials(self) -> str | None:
        return self._credentials

    async def submit(self, request: ProviderRequest) -> Job:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.script:
                step = self.script.pop(0)
                if isinstance(step, ProviderError):
                    raise step
                if step == "accept_then_hang":  # a job that is created and never finishes
                    return Job(f"stuck-{self.calls}", JobState.RUNNING)
                assert isinstance(step, float)
                await asyncio.sleep(step)  # the create call hangs this many seconds
            await asyncio.sleep(0.01)
            return await super().submit(request)
        finally:
            self.in_flight -= 1

    async def poll(self, job: Job) -> Job:
        return job

    async def cancel(self, job: Job) -> None:
        self.cancelled.append(job.provider_job_id)


CATALOG = """
[models."replicate:enhance-a"]
tasks = ["enhance"]
endpoint = "autoenhance"
timeout_s = 0.5
pricing = { unit = "image", usd_per_unit = 0.01 }

[models."fal:enhance-b"]
tasks = ["enhance"]
endpoint = "autoenhance"
pricing = { unit = "image", usd_per_unit = 0.02 }

[providers.fal]
max_concurrency = 2
"""


@dataclass
class Harness:
    """A real workbench and ledger, two scripted providers, and a clock that records sleeps."""

    workbench: Workbench
    runner: Runner
    writer: LedgerWriter
    requests: list[Request]
    sleeps: list[float]

    async def run(self) -> RunSummary:
        try:
            return await self.runner.run(self.requests)
        finally:
            self.writer.close()

    def column(self, sql: str) -> list[object]:
        return list(self.workbench.ledger.query(sql).iloc[:, 0])


@pytest.fixture
def harness(tmp_path: Path, dataset_dir: Path) -> Callable[..., Harness]:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "remote.toml").write_text(CATALOG)
    catalog = load_catalog(folder)
    image = str(dataset_dir / "images" / "p00.png")

    def make(primary: ScriptedProvider | None = None, fallback: ScriptedProvider | None = None,
             n: int = 1, **kwargs: Any) -> Harness:
        providers = {"replicate": primary or ScriptedProvider("replicate"),
                     "fal": fallback or ScriptedProvider("fal")}
        workbench = Workbench(tmp_path / "home", catalog=catalog, providers=dict(providers))
        sleeps: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)
            await asyncio.sleep(0)  # yield, as a real sleep does, so deadlines can fire

        writer = LedgerWriter(workbench.ledger)
        runner = Runner(catalog=catalog, providers=dict(providers), writer=writer,
                        store=workbench.store, sleep=fake_sleep, **kwargs)
        chain = (catalog.model("replicate:enhance-a"), catalog.model("fal:enhance-b"))
        requests = [Request(request_key=f"k{i}", product_id=f"p{i}", category="kitchen",
                            task=Task.ENHANCE, chain=chain, image_path=image) for i in range(n)]
        return Harness(workbench, runner, writer, requests, sleeps)

    return make


async def test_a_429_is_retried_after_exactly_the_retry_after_it_asked_for(harness) -> None:
    primary = ScriptedProvider("replicate", [RateLimited("slow down", retry_after=7.5)])
    h = harness(primary)
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a"
    assert (h.sleeps, primary.calls) == ([7.5], 2)


async def test_a_retry_after_longer_than_the_cap_moves_to_the_next_model(harness) -> None:
    primary = ScriptedProvider("replicate", [RateLimited("come back tomorrow", retry_after=86400)])
    h = harness(primary, retry=RetryPolicy(max_retry_after_s=60))
    summary = await h.run()
    assert (primary.calls, h.sleeps) == (1, [])
    assert summary.outcomes[0].model_id == "fal:enhance-b"


async def test_a_content_rejection_is_not_retried(harness) -> None:
    primary = ScriptedProvider("replicate", [ContentRejected("nsfw")])
    summary = await harness(primary).run()
    assert primary.calls == 1 and summary.outcomes[0].model_id == "fal:enhance-b"


async def test_a_create_that_never_answers_is_charged_not_retried_and_falls_back(
        harness) -> None:
    primary = ScriptedProvider("replicate", [5.0, 5.0, 5.0])  # the create hangs past 0.5 s
    h = harness(primary, retry=RetryPolicy(max_attempts=3))
    summary = await h.run()
    assert summary.outcomes[0].model_id == "fal:enhance-b"
    assert primary.calls == 1  # the job may exist: retrying the same model could pay twice
    assert h.column("select error_reason || ' ' || usd::double from attempts "
                    "where model_id = 'replicate:enhance-a'") == ["outcome_unknown 0.01"]


async def test_an_accepted_job_that_never_finishes_is_cancelled_and_retried(harness) -> None:
    primary = ScriptedProvider("replicate", ["accept_then_hang", "accept_then_hang"])
    h = harness(primary, retry=RetryPolicy(max_attempts=2, poll_interval_s=0.01))
    summary = await h.run()
    assert primary.cancelled == ["stuck-1", "stuck-2"]
    assert summary.outcomes[0].model_id == "fal:enhance-b"
    assert h.column("select error_class from attempts where model_id = 'replicate:enhance-a'"
                    ) == ["ProviderTimeout", "ProviderTimeout"]


async def test_a_model_without_credentials_is_skipped_with_the_reason(harness) -> None:
    primary = ScriptedProvider("replicate", credentials="no REPLICATE_API_TOKEN")
    h = harness(primary)
    summary = await h.run()
    assert primary.calls == 0 and summary.outcomes[0].status == "succeeded"
    assert h.column("select status || ': ' || error_message from attempts "
                    "where model_id = 'replicate:enhance-a'") == [
        "skipped: no REPLICATE_API_TOKEN"]


async def test_every_model_failing_records_the_last_reason(harness) -> None:
    summary = await harness(ScriptedProvider("replicate", [ContentRejected("nsfw")]),
                            ScriptedProvider("fal", [ContentRejected("nsfw too")])).run()
    outcome = summary.outcomes[0]
    assert (outcome.status, outcome.error_class, outcome.error_message) == (
        "failed", "ContentRejected", "nsfw too")


async def test_provider_concurrency_limit_holds(harness) -> None:
    fallback = ScriptedProvider("fal", [0.05] * 8)
    await harness(ScriptedProvider("replicate", credentials="no key"), fallback, n=8,
                  concurrency=8).run()
    assert fallback.max_in_flight == 2


async def test_estimated_cost_is_recorded_and_flagged_as_an_estimate(harness) -> None:
    h = harness()
    await h.run()
    assert h.column("select usd::double || ' ' || estimated from costs") == ["0.01 true"]


async def test_error_messages_are_redacted_before_they_reach_the_ledger(
        harness, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "r8_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t"
    monkeypatch.setenv("REPLICATE_API_TOKEN", secret)
    h = harness(ScriptedProvider("replicate", [ContentRejected(f"bad request, token {secret}")]))
    await h.run()
    messages = " ".join(str(m) for m in h.column(
        "select error_message from attempts where error_message is not null"))
    assert secret[:12] not in messages and "[REDACTED]" in messages


# --- money: durable submits, ambiguous creates, billing rules, resumes --------------------


class ReconcilingProvider(ScriptedProvider):
    """A provider that can be asked afterwards whether a create made a job (as Replicate can):
    ``made`` holds the attempt ids whose ambiguous create really made a job."""

    def __init__(self, name: str, script: list[ProviderError | float | str] | None = None,
                 made: set[str] | None = None) -> None:
        super().__init__(name, script)
        self.made = made if made is not None else set()
        self.asked: list[str | None] = []

    async def find_job(self, request: ProviderRequest, since: object) -> Job | None:
        self.asked.append(request.attempt_id)
        if request.attempt_id in self.made:
            return await LocalProvider.submit(self, request)
        return None


async def test_a_paid_create_is_on_disk_as_submitting_before_the_call_leaves(harness) -> None:
    seen: list[str] = []

    class Watching(ScriptedProvider):
        async def submit(self, request: ProviderRequest) -> Job:
            folder = SubmitJournal.folder(h.workbench.ledger.path)
            seen.extend(line for path in folder.glob("*.jsonl")
                        for line in path.read_text().splitlines()
                        if request.attempt_id and request.attempt_id in line)
            return await super().submit(request)

    h = harness(Watching("replicate"))
    await h.run()
    assert len(seen) == 1 and '"submitting"' in seen[0]
    assert h.column("select status from attempts") == ["succeeded"]


async def test_a_5xx_after_the_create_was_sent_is_charged_once_and_not_retried(harness) -> None:
    primary = ScriptedProvider("replicate", [OutcomeUnknown("replicate 504 after send")])
    h = harness(primary, retry=RetryPolicy(max_attempts=3))
    summary = await h.run()
    assert primary.calls == 1 and summary.outcomes[0].model_id == "fal:enhance-b"
    assert h.column("select error_reason || ' ' || usd::double from attempts "
                    "where model_id = 'replicate:enhance-a'") == ["outcome_unknown 0.01"]


async def test_an_ambiguous_create_the_provider_says_made_a_job_is_adopted_not_repaid(
        harness) -> None:
    primary = ReconcilingProvider("replicate", [OutcomeUnknown("reset after send")])
    h = harness(primary)
    primary.made = _AnyAttempt()
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a"
    assert primary.calls == 1 and len(primary.asked) == 1
    assert h.column("select status || ' ' || usd::double from attempts") == ["succeeded 0.01"]


async def test_an_ambiguous_create_that_made_no_job_is_retried_for_free(harness) -> None:
    primary = ReconcilingProvider("replicate", [OutcomeUnknown("500 after send")])
    h = harness(primary, retry=RetryPolicy(max_attempts=2))
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a" and primary.calls == 2
    assert h.column("select status || ' ' || usd::double from attempts order by attempt_no"
                    ) == ["failed 0.0", "succeeded 0.01"]


async def test_a_poll_that_fails_transiently_is_polled_again_not_created_again(harness) -> None:
    class FlakyPoll(ScriptedProvider):
        polls = 0

        async def submit(self, request: ProviderRequest) -> Job:
            self.calls += 1
            self.job = await LocalProvider.submit(self, request)
            return Job("job-1", JobState.RUNNING)

        async def poll(self, job: Job) -> Job:
            self.polls += 1
            if self.polls < 3:
                raise ProviderUnavailable("503 on the status GET")
            return self.job

    primary = FlakyPoll("replicate")
    h = harness(primary, retry=RetryPolicy(poll_interval_s=0.0, initial_wait_s=0.0))
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a"
    assert (primary.calls, primary.polls) == (1, 3)


async def test_an_exhausted_quota_stops_that_provider_for_the_run(harness) -> None:
    primary = ScriptedProvider("replicate", [QuotaExhausted("insufficient_quota")])
    h = harness(primary, n=3, concurrency=1)
    summary = await h.run()
    assert primary.calls == 1
    assert [o.model_id for o in summary.outcomes] == ["fal:enhance-b"] * 3
    assert summary.stopped_providers == {"replicate": "insufficient_quota"}
    assert h.column("select status || ' ' || error_class from attempts "
                    "where model_id = 'replicate:enhance-a' order by request_key") == [
        "failed QuotaExhausted", "skipped QuotaExhausted", "skipped QuotaExhausted"]


async def test_a_failed_job_is_charged_by_the_providers_billing_rule(harness) -> None:
    # Replicate bills a failed prediction what it used: nothing for a model priced per output
    # (it generated none); fal does not bill server errors.
    failing = [ProviderUnavailable("CUDA out of memory"), ProviderUnavailable("again")]
    h = harness(_FailingJob("replicate", failing[:1]), _FailingJob("fal", failing[1:]),
                retry=RetryPolicy(max_attempts=1))
    await h.run()
    assert h.column("select model_id || ' ' || usd::double from attempts order by attempt_no"
                    ) == ["replicate:enhance-a 0.0", "fal:enhance-b 0.0"]
    assert h.column("select count(*) from costs") == [0]


GPU_MODEL = """
[models."replicate:sdxl-like"]
tasks = ["enhance"]
pricing = { unit = "gpu_second", usd_per_unit = 0.001, units_per_call = 60 }
"""


@pytest.mark.parametrize(("provider", "outcome", "usage", "expected"), [
    ("replicate", "failed", Usage(seconds=4.0), (0.004, False)),   # the compute it used
    ("replicate", "canceled", None, (0.06, True)),                # used, but unreported
    ("replicate", "succeeded", Usage(seconds=2.5), (0.0025, False)),
    ("fal", "failed", Usage(seconds=4.0), (0.0, False)),           # 5xx: never billed
    ("fal", "rejected", None, (0.06, True)),                      # a 422 may be billed
    ("fal", "unknown", None, (0.06, True)),                       # may exist: the bound
    ("fal", None, None, (0.0, False)),                            # refused: no job exists
])
def test_what_an_attempt_costs_follows_the_rule_the_usage_and_the_bound(
        tmp_path: Path, provider: str, outcome: str | None, usage: Usage | None,
        expected: tuple[float, bool]) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "gpu.toml").write_text(GPU_MODEL.replace("replicate:", f"{provider}:"))
    catalog = load_catalog(folder)
    model = catalog.model(f"{provider}:sdxl-like")
    usd, _, estimated = Runner._charge(model, catalog.billing(model), outcome, usage,  # type: ignore[arg-type]
                                       model.estimate_usd(), model.estimate_credits())
    assert (round(usd, 6), estimated) == expected


class _AnyAttempt(set[str]):
    def __contains__(self, item: object) -> bool:
        return True


class _FailingJob(ScriptedProvider):
    """The create is accepted (a job exists); the job then fails with the scripted error."""

    async def submit(self, request: ProviderRequest) -> Job:
        self.calls += 1
        if self.script:
            error = self.script.pop(0)
            assert isinstance(error, ProviderError)
            return Job(f"{self.name}-{self.calls}", JobState.FAILED, error=error)
        return await LocalProvider.submit(self, request)


def _orphan(h: Harness, model_id: str = "replicate:enhance-a") -> None:
    """What a kill between recording a create and learning its job id leaves behind."""
    h.workbench.ledger.write([Ledger.start_attempt("orphan", "k0", None, 1, model_id.split(":")[0],
                                                   model_id, status="submitting")])
    h.runner.resume = h.workbench.ledger.resume_state(["k0"])


async def test_a_create_cut_short_by_a_crash_is_charged_as_unknown_and_not_made_again(
        harness) -> None:
    primary = ScriptedProvider("replicate")
    h = harness(primary)
    _orphan(h)
    summary = await h.run()
    assert primary.calls == 0 and summary.outcomes[0].model_id == "fal:enhance-b"
    assert h.column("select attempt_id || ' ' || error_reason || ' ' || usd::double "
                    "from attempts where model_id = 'replicate:enhance-a'") == [
        "orphan outcome_unknown 0.01"]
    assert h.column("select usd::double from costs where attempt_id = 'orphan'") == [0.01]


async def test_a_create_cut_short_that_made_a_job_is_found_and_adopted(harness) -> None:
    primary = ReconcilingProvider("replicate", made={"orphan"})
    h = harness(primary)
    _orphan(h)
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a"
    assert (primary.calls, primary.asked) == (0, ["orphan"])
    assert h.column("select attempt_id || ' ' || status from attempts") == ["orphan succeeded"]


async def test_a_create_cut_short_that_made_no_job_is_made_once_in_the_same_attempt(
        harness) -> None:
    primary = ReconcilingProvider("replicate")
    h = harness(primary)
    _orphan(h)
    await h.run()
    assert (primary.calls, primary.asked) == (1, ["orphan"])
    assert h.column("select attempt_id || ' ' || status || ' ' || usd::double from attempts"
                    ) == ["orphan succeeded 0.01"]


async def test_a_model_whose_outcome_is_unknown_is_called_again_only_on_resubmit(
        harness) -> None:
    first = harness(ScriptedProvider("replicate", [OutcomeUnknown("reset after send")]))
    await first.run()
    keys = ["k0"]
    again = ScriptedProvider("replicate")
    second = harness(again, resume=first.workbench.ledger.resume_state(keys))
    await second.run()
    assert again.calls == 0
    assert second.column("select status || ' ' || error_reason from attempts "
                         "where model_id = 'replicate:enhance-a' order by started_at") == [
        "failed outcome_unknown", "skipped outcome_unknown"]
    third = harness(again, resume=second.workbench.ledger.resume_state(keys), resubmit=True)
    summary = await third.run()
    assert again.calls == 1 and summary.outcomes[0].model_id == "replicate:enhance-a"


async def test_a_job_that_finished_before_its_cancel_landed_is_used_and_paid_for(
        harness) -> None:
    """On a busy machine the deadline can pass while the job is finishing: the provider bills
    it, so the run keeps its output instead of paying for another."""
    class LateCancel(ScriptedProvider):
        async def submit(self, request: ProviderRequest) -> Job:
            self.calls += 1
            self.finished = await LocalProvider.submit(self, request)
            return Job("slow-1", JobState.RUNNING)

        async def poll(self, job: Job) -> Job:
            if self.cancelled:
                return self.finished  # the cancel came too late
            await asyncio.sleep(1.0)  # past the model's 0.5 s deadline
            return job

    primary = LateCancel("replicate")
    h = harness(primary, retry=RetryPolicy(poll_interval_s=0.0))
    summary = await h.run()
    assert summary.outcomes[0].model_id == "replicate:enhance-a" and primary.calls == 1
    assert h.column("select status || ' ' || usd::double from attempts") == ["succeeded 0.01"]


async def test_a_task_whose_output_kind_is_not_registered_fails_before_any_call(
        harness, monkeypatch) -> None:
    """Without a kind to check its outputs (a plugin's task whose kind is not installed), an
    output must not be judged as another kind's: the request fails with the reason, and no
    provider is called or paid."""
    from pixellab import media

    monkeypatch.delitem(media.KINDS, "video")
    primary, fallback = ScriptedProvider("replicate"), ScriptedProvider("fal")
    h = harness(primary, fallback)
    h.requests = [dataclasses.replace(r, task=Task.IMAGE_TO_VIDEO) for r in h.requests]
    outcome = (await h.run()).outcomes[0]
    assert (outcome.status, outcome.error_class) == ("failed", "ConfigError")
    assert "no media kind 'video'" in str(outcome.error_message)
    assert (primary.calls, fallback.calls, h.column("select count(*) from attempts")) == (0, 0, [0])


async def test_an_image_returned_for_a_video_task_is_not_a_video_and_the_chain_falls_back(
        harness) -> None:
    """A provider that answers an image_to_video request with a PNG delivered no clip: each
    attempt fails validation as ``not_a_video``."""
    primary, fallback = ScriptedProvider("replicate"), ScriptedProvider("fal")
    h = harness(primary, fallback)
    h.requests = [dataclasses.replace(r, task=Task.IMAGE_TO_VIDEO) for r in h.requests]
    outcome = (await h.run()).outcomes[0]
    assert outcome.status == "failed" and primary.calls == 1 and fallback.calls == 1
    assert h.column("select distinct error_reason from attempts") == ["not_a_video"]


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux keeps nice per thread")
async def test_outputs_are_checked_and_stored_in_threads_below_the_loops_priority(
        harness, monkeypatch) -> None:
    """P10: checking answers at the loop's priority delayed the sends queued behind them (~5 %
    of a sweep's wall time in bench_sweep); the checks run at nice 19, the loop's thread keeps
    its own priority, and the outputs are checked and stored all the same."""
    monkeypatch.setattr(background, "_pool", None)
    loop_nice = _thread_nice()
    h = harness(n=3)
    try:
        summary = await h.run()
        pool = background._pool
        assert pool is not None, "the run did not check its outputs in the background pool"
        assert pool.submit(_thread_nice).result() == background.BACKGROUND_NICE
    finally:
        if background._pool is not None:
            background._pool.shutdown(wait=False)
    assert _thread_nice() == loop_nice
    assert [o.status for o in summary.outcomes] == ["succeeded"] * 3
    stored = h.workbench.ledger.query(
        "select o.sha256, o.media_type from attempts a join outputs o on o.sha256 = "
        "a.output_sha256")
    assert len(stored) == 3
    assert all(h.workbench.store.exists(d, m) for d, m in stored.itertuples(index=False))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux keeps nice per thread")
def test_lowering_a_thread_never_raises_it_back() -> None:
    def lowered_twice() -> tuple[bool, int]:
        assert background.lower_this_thread(19)
        return background.lower_this_thread(10), _thread_nice()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lowered_twice).result() == (True, 19)


class _HeapWatcher(ScriptedProvider):
    """Notes, at each create, how many objects the collector is told to leave alone."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.frozen_at_submit: list[int] = []

    async def submit(self, request: ProviderRequest) -> Job:
        self.frozen_at_submit.append(gc.get_freeze_count())
        return await super().submit(request)


async def test_while_requests_are_in_flight_full_collections_skip_the_heap_that_was_there(
        harness) -> None:
    """P10: requests live for seconds, so their objects reach the oldest generation and set off
    full collections, each walking every module and DataFrame in the process with the loop
    stopped (~200 ms apiece in bench_sweep). During the run the heap that existed before it is
    frozen out of collection; afterwards the collector has it back."""
    before = gc.get_freeze_count()
    watcher = _HeapWatcher("replicate")
    summary = await harness(primary=watcher, n=3).run()
    assert [o.status for o in summary.outcomes] == ["succeeded"] * 3
    assert len(watcher.frozen_at_submit) == 3
    assert min(watcher.frozen_at_submit) > max(before, 1000)
    assert gc.get_freeze_count() == before


def test_overlapping_runs_keep_the_heap_frozen_until_the_last_one_ends() -> None:
    before = gc.get_freeze_count()
    with heap.old_objects_frozen():
        frozen = gc.get_freeze_count()
        with heap.old_objects_frozen():
            pass
        assert gc.get_freeze_count() >= frozen > before
    assert gc.get_freeze_count() == before
