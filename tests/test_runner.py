"""The runner: retries that honour retry_after, deadlines, skipped models, limits.

Remote providers are proven against the loopback emulator with their real SDKs (a later issue);
here the provider boundary is faked by :class:`ScriptedProvider`, which raises scripted errors
before handing the call to the real local provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pixellab.catalog import load_catalog
from pixellab.errors import ContentRejected, ProviderError, RateLimited
from pixellab.ledger import LedgerWriter
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
