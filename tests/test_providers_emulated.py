"""Each real SDK (replicate, fal-client, openai), driven by pixellab's adapters and runner,
against the loopback emulator: success with upload and download, faults, fallbacks.

Nothing here leaves 127.0.0.1. Attempt counts and billed jobs come from the emulator's own log,
not from pixellab's counters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pixellab.catalog import load_catalog
from pixellab.emulator import Emulator
from pixellab.ledger import Ledger
from pixellab.providers.fal import FalProvider
from pixellab.providers.local import LocalProvider
from pixellab.providers.replicate import ReplicateProvider
from pixellab.runner import RetryPolicy
from pixellab.sweep import Sweep, SweepResult, SweepSpec
from pixellab.webhooks import JobSignals, JwksKeys, WebhookReceiver, WebhookServer
from pixellab.workbench import Workbench
from tests.conftest import run_process, started
from tests.emulated import emulated_providers, point_sdks_at, remote_models, settled

CATALOG = remote_models("emu/kontext-edit", "gpt-image-emu", usd_per_image=0.04, timeout_s=5)
REPLICATE = "replicate:emu/kontext-edit"
FAL = "fal:emu/kontext-edit"
OPENAI = "openai:gpt-image-emu"
FAST = RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05, poll_interval_s=0.02)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(latency_s=0.02) as emu:
        yield emu


@pytest.fixture
def workbench(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    emulator.faults.clear()
    point_sdks_at(emulator, monkeypatch)
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "emu.toml").write_text(CATALOG)
    return Workbench(tmp_path / "home", catalog=load_catalog(folder),
                     providers=emulated_providers(emulator))


def run_chain(workbench: Workbench, dataset_dir: Path, chain: list[str],
              n: int = 1) -> SweepResult:
    spec = SweepSpec.parse({"name": "emu", "task": "enhance", "dataset": str(dataset_dir),
                            "chain": chain, "limit": n, "prompts": []})
    return Sweep(spec, workbench).run(retry=FAST)


def attempts(workbench: Workbench) -> list[tuple[str, str, str | None]]:
    frame = workbench.ledger.query(
        "select model_id, status, coalesce(error_class, '') from attempts order by started_at")
    return [(m, st, e or None) for m, st, e in frame.itertuples(index=False, name=None)]


@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_a_real_sdk_uploads_the_input_and_the_output_is_downloaded_and_stored(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    before = len(emulator.creates(model_id.split(":")[0]))
    result = run_chain(workbench, dataset_dir, [model_id])
    assert result.succeeded == 1, attempts(workbench)
    assert len(emulator.creates(model_id.split(":")[0])) == before + 1
    digest, media = workbench.ledger.query("select sha256, media_type from outputs").iloc[0]
    assert workbench.store.exists(digest, media)
    assert attempts(workbench) == [(model_id, "succeeded", None)]


@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_a_429_is_retried_and_then_succeeds_on_the_same_model(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    emulator.faults.add(model_id.split(":")[0], "rate_limit", times=1, retry_after=0)
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    assert result.succeeded == 1
    rows = attempts(workbench)
    assert rows[-1] == (model_id, "succeeded", None)
    # fal-client retries a 429 on submit by itself (the job was not accepted, so nothing is paid
    # twice); replicate and openai surface it and pixellab's runner retries.
    if model_id != FAL:
        assert rows[0] == (model_id, "failed", "RateLimited")


@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_a_5xx_on_create_is_settled_or_charged_as_unknown_never_retried_blind(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    emulator.faults.add(model_id.split(":")[0], "server_error", times=FAST.max_attempts,
                        status=500)
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    assert result.succeeded == 1
    rows = attempts(workbench)
    assert rows[-1] == ("local:autoenhance", "succeeded", None)
    if model_id == REPLICATE:  # asked afterwards: it made no prediction, so retries are free
        assert [r[2] for r in rows[:-1]] == ["ProviderUnavailable"] * FAST.max_attempts
        assert workbench.ledger.scalar("select count(*) from costs") == 1  # the local one
    else:  # no way to ask: charged at the estimate, and that model is not called again
        assert [r[2] for r in rows[:-1]] == ["OutcomeUnknown"]


@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_one_workbench_runs_sweep_after_sweep_each_on_its_own_event_loop(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    # A notebook's habit: each Sweep.run is an event loop of its own. The SDK clients of the
    # first must not be reused on its closed loop (fal-client failed every call of the second).
    before = len(emulator.creates(model_id.split(":")[0]))
    for seed in (0, 1, 2):
        spec = SweepSpec.parse({"name": f"emu-{seed}", "task": "enhance",
                                "dataset": str(dataset_dir), "chain": [model_id], "limit": 2,
                                "prompts": [], "seeds": [seed]})
        result = Sweep(spec, workbench).run(retry=FAST)
        assert (result.succeeded, result.failed) == (2, 0), attempts(workbench)
    assert len(emulator.creates(model_id.split(":")[0])) == before + 6


def spend(workbench: Workbench, model_id: str) -> float:
    return float(workbench.ledger.scalar(
        "select coalesce(sum(usd), 0) from costs where model_id = ?", [model_id]))


@pytest.mark.parametrize("action", ["accept_then_error", "accept_then_reset"])
@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_a_create_accepted_then_cut_off_is_paid_once_and_never_made_twice(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str,
        action: str) -> None:
    provider = model_id.split(":")[0]
    emulator.faults.add(provider, action, times=FAST.max_attempts, status=504)
    before = len(emulator.creates(provider))
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    settled(emulator, provider, before)
    jobs = emulator.creates(provider)[before:]
    assert result.succeeded == 1 and len(jobs) == 1  # one create for the request and model
    billed = sum(j.cost_usd for j in jobs)
    assert billed > 0 and spend(workbench, model_id) >= billed - 1e-9
    if model_id == REPLICATE:  # found by the file it was given: adopted, polled, used
        assert attempts(workbench) == [(REPLICATE, "succeeded", None)]
        assert spend(workbench, model_id) == pytest.approx(billed)
    else:
        assert [r[2] for r in attempts(workbench)] == ["OutcomeUnknown", None]


def test_an_exhausted_openai_quota_stops_openai_for_the_sweep_and_costs_nothing(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path) -> None:
    emulator.faults.add("openai", "insufficient_quota", times=10)
    before, billed = len(emulator.log), emulator.bill("openai")
    spec = SweepSpec.parse({"name": "quota", "task": "enhance", "dataset": str(dataset_dir),
                            "chain": [OPENAI, "local:autoenhance"], "limit": 3,
                            "concurrency": 1})
    result = Sweep(spec, workbench).run(retry=FAST)
    creates = [r for r in emulator.log[before:] if r.provider == "openai" and r.method == "POST"]
    assert result.succeeded == 3 and len(creates) == 1  # one refusal, then OpenAI is left alone
    assert "insufficient_quota" in result.stopped_providers["openai"]
    assert spend(workbench, OPENAI) == 0 and emulator.bill("openai") == billed
    assert [r[2] for r in attempts(workbench) if r[0] == OPENAI] == [
        "QuotaExhausted", "QuotaExhausted", "QuotaExhausted"]
    assert [r[1] for r in attempts(workbench) if r[0] == OPENAI] == [
        "failed", "skipped", "skipped"]


def test_a_fal_refusal_is_recognised_by_its_type_whatever_its_words(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path) -> None:
    emulator.faults.add("fal", "content_rejected", error="Unprocessable image")
    before = len(emulator.creates("fal"))
    run_chain(workbench, dataset_dir, [FAL, "local:autoenhance"])
    settled(emulator, "fal", before)
    assert [r[2] for r in attempts(workbench)] == ["ContentRejected", None]
    assert len(emulator.creates("fal")[before:]) == 1  # not retried
    assert spend(workbench, FAL) == pytest.approx(emulator.bill("fal") - sum(
        j.cost_usd for j in emulator.creates("fal")[:before]))  # billed: the runner had run


@pytest.mark.parametrize("action,reason", [("corrupt", {"truncated", "undecodable"}),
                                           ("blank", {"blank_black"})])
@pytest.mark.parametrize("model_id", [REPLICATE, FAL, OPENAI])
def test_a_corrupt_or_blank_output_falls_back(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str,
        action: str, reason: set[str]) -> None:
    emulator.faults.add(model_id.split(":")[0], action, times=1)
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    assert result.succeeded == 1
    first = workbench.ledger.query(
        "select error_class, error_reason from attempts order by started_at limit 1").iloc[0]
    assert first["error_class"] == "InvalidOutput" and first["error_reason"] in reason


@pytest.mark.parametrize("model_id", [REPLICATE, OPENAI])
def test_a_create_that_hangs_is_charged_as_unknown_not_retried_and_falls_back(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    emulator.faults.add(model_id.split(":")[0], "hang", times=FAST.max_attempts, seconds=8)
    _shorten_timeout(workbench, model_id, 0.5)
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    assert result.succeeded == 1
    assert [r[2] for r in attempts(workbench)] == ["OutcomeUnknown", None]
    assert float(workbench.ledger.scalar(
        f"select usd from costs where model_id = '{model_id}'")) > 0  # charged, pessimistically


@pytest.mark.parametrize("model_id", [REPLICATE, FAL])
def test_an_accepted_job_that_never_finishes_is_cancelled_retried_then_falls_back(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    provider = model_id.split(":")[0]
    emulator.faults.add(provider, "accept_then_hang", times=FAST.max_attempts)
    _shorten_timeout(workbench, model_id, 0.5)
    before = len(emulator.creates(provider))
    result = run_chain(workbench, dataset_dir, [model_id, "local:autoenhance"])
    assert result.succeeded == 1
    jobs = emulator.creates(provider)[before:]
    assert [j.status for j in jobs] == ["canceled"] * FAST.max_attempts
    assert [r[2] for r in attempts(workbench)] == ["ProviderTimeout"] * FAST.max_attempts + [None]


def _shorten_timeout(workbench: Workbench, model_id: str, seconds: float) -> None:
    catalog = workbench.catalog
    model = catalog.models[model_id].model_copy(update={"timeout_s": seconds})
    workbench.catalog = catalog.model_copy(update={"models": {**catalog.models, model_id: model}})


def test_a_content_rejection_is_not_retried(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path) -> None:
    emulator.faults.add("openai", "content_rejected", times=1)
    run_chain(workbench, dataset_dir, [OPENAI, "local:autoenhance"])
    assert [r[2] for r in attempts(workbench)] == ["ContentRejected", None]


def test_a_model_without_its_key_is_skipped_and_the_chain_moves_on(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    before = len(emulator.creates("replicate"))
    result = run_chain(workbench, dataset_dir, [REPLICATE, FAL])
    assert result.succeeded == 1
    assert len(emulator.creates("replicate")) == before
    assert attempts(workbench)[0] == (REPLICATE, "skipped", "MissingCredentials")


def test_ledger_cost_equals_the_emulator_bill(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path) -> None:
    before = {p: len(emulator.creates(p)) for p in ("replicate", "fal", "openai")}
    run_chain(workbench, dataset_dir, [REPLICATE], n=3)
    billed = len(emulator.creates("replicate")) - before["replicate"]
    assert billed == 3
    assert float(workbench.ledger.scalar("select sum(usd) from costs")) == pytest.approx(0.12)


def kill_once_the_job_is_recorded(tmp_path: Path, dataset_dir: Path, emu: Emulator,
                                  monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """Run a one-request Replicate sweep in a child process and SIGKILL it once the prediction
    id is in its ledger; return an in-process workbench on the same home, pointed at ``emu``."""
    env = {**os.environ, "REPLICATE_API_TOKEN": "r8_" + "k" * 37,
           "REPLICATE_BASE_URL": emu.replicate_base_url, "SSL_CERT_FILE": emu.ca_pem,
           "PIXELLAB_CATALOG": str(tmp_path / "catalog")}
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "emu.toml").write_text(CATALOG)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: killed\ntask: enhance\ndataset: {dataset_dir}\n"
                    f"chain: ['{REPLICATE}']\nlimit: 1\n")
    home = tmp_path / "home"
    with started([sys.executable, "-m", "pixellab.cli", "sweep", "run", str(spec),
                  "--home", str(home)], env=env, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL) as child:
        ledger = home / "ledger.duckdb"
        deadline = time.monotonic() + 60
        while not (ledger.exists() and Ledger(ledger, read_only=True).scalar(
                "select count(*) from attempts where provider_job_id is not null")):
            assert time.monotonic() < deadline and child.poll() is None, "no job id recorded"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    for name in ("REPLICATE_API_TOKEN", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, env[name])
    return Workbench(home, catalog=load_catalog(tmp_path / "catalog"), providers={
        "local": LocalProvider(), "replicate": ReplicateProvider(base_url=emu.replicate_base_url)})


def test_a_sweep_killed_after_submit_resumes_by_polling_not_by_paying_again(
        tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the sweep process while its job runs; the resumed sweep finds the recorded
    prediction id and polls it. The emulator must see exactly one create."""
    with Emulator(latency_s=4.0) as slow:
        workbench = kill_once_the_job_is_recorded(tmp_path, dataset_dir, slow, monkeypatch)
        assert len(slow.creates("replicate")) == 1
        result = Sweep.resume("killed", workbench).run(retry=FAST)
        assert result.succeeded == 1 and result.provider_calls == 0
        assert len(slow.creates("replicate")) == 1
        assert attempts(workbench) == [(REPLICATE, "succeeded", None)]


def test_a_resume_after_replicate_deleted_the_output_says_so_and_pays_again_only_on_request(
        tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicate removes a prediction's input and output an hour after it completes (here:
    0.5 s). A resume that comes later records why it has no output, charges the job that ran,
    and creates nothing; only ``--resubmit`` pays again."""
    with Emulator(latency_s=1.0, retention_s=0.5) as emu:
        workbench = kill_once_the_job_is_recorded(tmp_path, dataset_dir, emu, monkeypatch)
        settled(emu, "replicate", 0)
        time.sleep(0.6)  # past the retention period
        result = Sweep.resume("killed", workbench).run(retry=FAST)
        [outcome] = result.outcomes
        assert (outcome.status, outcome.error_reason) == ("failed", "data_removed")
        assert result.provider_calls == 0 and len(emu.creates("replicate")) == 1
        assert spend(workbench, REPLICATE) == pytest.approx(emu.bill("replicate")) == 0.04

        again = Sweep.resume("killed", workbench).run(retry=FAST)
        assert again.provider_calls == 0 and again.outcomes[0].error_reason == "data_removed"
        cli = run_process([sys.executable, "-m", "pixellab.cli", "sweep", "resume", "killed",
                           "--home", str(workbench.home), "--resubmit"], timeout=120,
                          env={**os.environ, "PIXELLAB_CATALOG": str(tmp_path / "catalog"),
                               "REPLICATE_BASE_URL": emu.replicate_base_url})
        assert cli.returncode == 0, cli.stderr
        assert len(emu.creates("replicate")) == 2
        assert workbench.ledger.scalar(
            "select status from requests where request_key = ?", [outcome.request_key]
        ) == "succeeded"


@dataclass
class Hooked:
    workbench: Workbench
    signals: JobSignals
    receiver: WebhookReceiver
    server: WebhookServer

    def run(self, model_id: str, dataset_dir: Path, retry: RetryPolicy) -> SweepResult:
        spec = SweepSpec.parse({"name": "hooked", "task": "enhance", "limit": 1,
                                "dataset": str(dataset_dir), "chain": [model_id]})
        return Sweep(spec, self.workbench).run(retry=retry, signals=self.signals, score=False)


@pytest.fixture
def hooked(emulator: Emulator, workbench: Workbench) -> Iterator[Hooked]:
    """Replicate and fal send signed webhooks to a local receiver that wakes the runner."""
    signals = JobSignals()
    receiver = WebhookReceiver(replicate_secret=emulator.webhook_secret,
                               fal_keys=JwksKeys(emulator.fal_jwks_url, verify=emulator.ca_pem),
                               on_signal=signals)
    with WebhookServer(receiver) as server:
        workbench.providers["replicate"] = ReplicateProvider(
            base_url=emulator.replicate_base_url, webhook_url=server.replicate_url)
        workbench.providers["fal"] = FalProvider(webhook_url=server.fal_url)
        yield Hooked(workbench, signals, receiver, server)


SLOW_POLLS = RetryPolicy(max_attempts=1, poll_interval_s=30.0)  # with webhooks on: 120 s


@pytest.mark.parametrize("model_id", [REPLICATE, FAL])
def test_a_webhook_wakes_the_poll_so_the_job_finishes_long_before_the_next_poll(
        hooked: Hooked, dataset_dir: Path, model_id: str) -> None:
    assert hooked.run(model_id, dataset_dir, SLOW_POLLS).succeeded == 1
    assert float(hooked.workbench.ledger.scalar("select latency_s from attempts")) < 10
    assert hooked.receiver.stats.accepted == 1


@pytest.mark.parametrize("model_id", [REPLICATE, FAL])
def test_a_duplicated_webhook_is_applied_once(
        hooked: Hooked, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    emulator.faults.add(model_id.split(":")[0], "duplicate_webhook")
    assert hooked.run(model_id, dataset_dir, SLOW_POLLS).succeeded == 1
    assert hooked.receiver.stats.duplicate == 1
    assert attempts(hooked.workbench) == [(model_id, "succeeded", None)]
    assert hooked.workbench.ledger.scalar("select count(*) from costs") == 1


@pytest.mark.parametrize("model_id", [REPLICATE, FAL])
def test_a_dropped_webhook_is_completed_by_polling(
        hooked: Hooked, emulator: Emulator, dataset_dir: Path, model_id: str) -> None:
    emulator.faults.add(model_id.split(":")[0], "drop_webhook")
    result = hooked.run(model_id, dataset_dir, RetryPolicy(max_attempts=1, poll_interval_s=0.1))
    assert result.succeeded == 1 and hooked.receiver.stats.accepted == 0


def test_a_webhook_with_a_bad_signature_is_rejected_and_signals_nothing(hooked: Hooked) -> None:
    body = b'{"id": "p1", "status": "succeeded"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": "v1,AAAA"}
    response = httpx.post(hooked.server.replicate_url, content=body, headers=headers)
    assert response.status_code == 401
    assert hooked.receiver.stats.accepted == 0 and len(hooked.signals) == 0


@pytest.mark.parametrize("model_id", [REPLICATE, FAL])
def test_a_configured_public_url_makes_the_sweep_run_its_own_receiver(
        workbench: Workbench, emulator: Emulator, dataset_dir: Path, model_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PIXELLAB_WEBHOOK_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PIXELLAB_WEBHOOK_PORT", str(port))
    monkeypatch.setenv("PIXELLAB_FAL_JWKS_URL", emulator.fal_jwks_url)
    spec = SweepSpec.parse({"name": "auto-hooks", "task": "enhance", "limit": 1,
                            "dataset": str(dataset_dir), "chain": [model_id]})
    result = Sweep(spec, workbench).run(retry=SLOW_POLLS, score=False)
    assert result.succeeded == 1  # a 120 s poll interval: only the webhook can explain this
    assert float(workbench.ledger.scalar("select latency_s from attempts")) < 10
    assert workbench.providers[model_id.split(":")[0]].webhook_url is None  # type: ignore[attr-defined]


def test_costs_of_a_token_priced_edit_are_its_usage_at_each_token_classs_price(
        tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-image-1.5 prices text in, image in and image out tokens differently; the ledger and
    `pixellab costs` must equal the response's usage priced by hand at OpenAI's published
    rates ($5, $8 and $32 per 1M), not total_tokens at one rate."""
    with Emulator(latency_s=0.01, record_bodies=True) as emu:
        point_sdks_at(emu, monkeypatch)
        home = tmp_path / "home"
        workbench = Workbench(home, providers=emulated_providers(emu))  # the shipped catalog
        spec = SweepSpec.parse({"name": "tokens", "task": "enhance", "dataset": str(dataset_dir),
                                "chain": ["openai:gpt-image-1.5"], "limit": 1})
        assert Sweep(spec, workbench).run(retry=FAST, score=False).succeeded == 1
        [edit] = [r for r in emu.responses if r.route.endswith("/images/edits")]
        usage = edit.json()["usage"]
    by_hand = (usage["input_tokens_details"]["text_tokens"] * 5
               + usage["input_tokens_details"]["image_tokens"] * 8
               + usage["output_tokens"] * 32) / 1_000_000
    one_rate = usage["total_tokens"] * 32 / 1_000_000
    assert usage["input_tokens_details"]["image_tokens"] > 0 and one_rate > by_hand * 1.05
    assert float(workbench.ledger.scalar("select usd from costs")) == pytest.approx(
        by_hand, abs=1e-6)
    printed = run_process([sys.executable, "-m", "pixellab.cli", "costs", "--home", str(home)],
                          timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert f"Total: ${by_hand:.4f}" in printed.stdout
