"""The runner: retries that honour retry_after, deadlines, skipped models, limits.

Remote providers are proven against the loopback emulator with their real SDKs (a later issue);
here the provider boundary is faked by :class:`ScriptedProvider`, which raises scripted errors
before handing the call to the real local provider.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pixellab.catalog import load_catalog
from pixellab.errors import ContentRejected, ProviderError, RateLimited
from pixellab.ledger import LedgerWriter
from pixellab.providers.base import Job, ProviderRequest
from pixellab.providers.local import LocalProvider
from pixellab.runner import Request, RetryPolicy, Runner
from pixellab.tasks import Task
from pixellab.workbench import Workbench


class ScriptedProvider(LocalProvider):
    """Raises the scripted errors in order, then behaves like the local provider."""

    def __init__(self, name: str, script: list[ProviderError | float] | None = None,
                 credentials: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.script = list(script or [])
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
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
                await asyncio.sleep(step)  # a hang of this many seconds
            await asyncio.sleep(0.01)
            return await super().submit(request)
        finally:
            self.in_flight -= 1


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


@pytest.fixture
def setup(tmp_path: Path, dataset_dir: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "remote.toml").write_text(CATALOG)
    catalog = load_catalog(folder)
    image = str(dataset_dir / "images" / "p00.png")

    def make(providers: dict[str, ScriptedProvider], n: int = 1, **kwargs):  # type: ignore[no-untyped-def]
        workbench = Workbench(tmp_path / "home", catalog=catalog, providers=providers)
        sleeps: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        writer = LedgerWriter(workbench.ledger)
        runner = Runner(catalog=catalog, providers=providers, writer=writer,
                        store=workbench.store, sleep=fake_sleep, **kwargs)
        chain = (catalog.model("replicate:enhance-a"), catalog.model("fal:enhance-b"))
        requests = [Request(request_key=f"k{i}", product_id=f"p{i}", category="kitchen",
                            task=Task.ENHANCE, chain=chain, image_path=image) for i in range(n)]
        return workbench, runner, writer, requests, sleeps

    return make


async def test_a_429_is_retried_after_exactly_the_retry_after_it_asked_for(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", [RateLimited("slow down", retry_after=7.5)])
    workbench, runner, writer, requests, sleeps = setup({"replicate": a, "fal": ScriptedProvider("fal")})
    summary = await runner.run(requests)
    writer.close()
    assert summary.outcomes[0].model_id == "replicate:enhance-a"
    assert sleeps == [7.5]
    assert a.calls == 2


async def test_a_retry_after_longer_than_the_cap_moves_to_the_next_model(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", [RateLimited("come back tomorrow", retry_after=86400)])
    workbench, runner, writer, requests, sleeps = setup(
        {"replicate": a, "fal": ScriptedProvider("fal")}, retry=RetryPolicy(max_retry_after_s=60))
    summary = await runner.run(requests)
    writer.close()
    assert (a.calls, sleeps) == (1, [])
    assert summary.outcomes[0].model_id == "fal:enhance-b"


async def test_a_content_rejection_is_not_retried(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", [ContentRejected("nsfw")])
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": ScriptedProvider("fal")})
    summary = await runner.run(requests)
    writer.close()
    assert a.calls == 1 and summary.outcomes[0].model_id == "fal:enhance-b"


async def test_a_hang_times_out_and_falls_back(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", [5.0, 5.0, 5.0])  # each attempt hangs past timeout_s=0.5
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": ScriptedProvider("fal")},
                                                   retry=RetryPolicy(max_attempts=2))
    summary = await runner.run(requests)
    writer.close()
    assert summary.outcomes[0].model_id == "fal:enhance-b"
    errors = workbench.ledger.query(
        "select error_class from attempts where model_id = 'replicate:enhance-a'")["error_class"]
    assert list(errors) == ["ProviderTimeout", "ProviderTimeout"]


async def test_a_model_without_credentials_is_skipped_with_the_reason(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", credentials="no REPLICATE_API_TOKEN")
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": ScriptedProvider("fal")})
    summary = await runner.run(requests)
    writer.close()
    assert a.calls == 0 and summary.outcomes[0].status == "succeeded"
    row = workbench.ledger.query("select status, error_message from attempts "
                                 "where model_id = 'replicate:enhance-a'").iloc[0]
    assert (row["status"], row["error_message"]) == ("skipped", "no REPLICATE_API_TOKEN")


async def test_every_model_failing_records_the_last_reason(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", [ContentRejected("nsfw")])
    b = ScriptedProvider("fal", [ContentRejected("nsfw too")])
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": b})
    summary = await runner.run(requests)
    writer.close()
    outcome = summary.outcomes[0]
    assert (outcome.status, outcome.error_class, outcome.error_message) == (
        "failed", "ContentRejected", "nsfw too")


async def test_provider_concurrency_limit_holds(setup) -> None:  # type: ignore[no-untyped-def]
    a = ScriptedProvider("replicate", credentials="no key")
    b = ScriptedProvider("fal", [0.05] * 8)
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": b}, n=8, concurrency=8)
    await runner.run(requests)
    writer.close()
    assert b.max_in_flight == 2


async def test_estimated_cost_is_recorded_and_flagged_as_an_estimate(setup) -> None:  # type: ignore[no-untyped-def]
    workbench, runner, writer, requests, _ = setup(
        {"replicate": ScriptedProvider("replicate"), "fal": ScriptedProvider("fal")})
    await runner.run(requests)
    writer.close()
    row = workbench.ledger.query("select usd, estimated from costs").iloc[0]
    assert (float(row["usd"]), bool(row["estimated"])) == (0.01, True)


async def test_error_messages_are_redacted_before_they_reach_the_ledger(
        setup, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    secret = "r8_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t"
    monkeypatch.setenv("REPLICATE_API_TOKEN", secret)
    a = ScriptedProvider("replicate", [ContentRejected(f"bad request with token {secret}")])
    workbench, runner, writer, requests, _ = setup({"replicate": a, "fal": ScriptedProvider("fal")})
    await runner.run(requests)
    writer.close()
    messages = " ".join(workbench.ledger.query("select error_message from attempts "
                                               "where error_message is not null")["error_message"])
    assert secret not in messages and secret[:12] not in messages
    assert "[REDACTED]" in messages
