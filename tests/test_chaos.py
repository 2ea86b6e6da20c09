"""A chaos sweep: 204 requests across Replicate, fal and OpenAI (real SDKs, loopback emulator)
with over 20 % of job-creating calls faulted, every kind of fault.

What must hold, checked against the emulator's own billing log rather than pixellab's counters:
every request ends succeeded or failed with a recorded reason; no attempt is left hanging; every
job the emulator billed is recorded in the ledger exactly once (nothing paid for twice without a
record); the ledger's spend equals the emulator's bill to the cent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pixellab.catalog import load_catalog
from pixellab.emulator import Emulator
from pixellab.runner import RetryPolicy
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.emulated import emulated_providers, point_sdks_at, remote_models

# 2.5 s: far above an emulated job (10 ms), so a loaded 2-core CI machine does not time out
# healthy jobs (at 1 s it did, and the extra paid retries diluted the fault rate below 20 %),
# and below the 5 s "hang", which must time out.
CATALOG = remote_models("emu/enhance", "emu-enhance", usd_per_image=0.02, timeout_s=2.5)
FAULTS = {  # action: (times per provider, options)
    "rate_limit": (4, {"retry_after": 0}),
    "server_error": (4, {"status": 500}),
    "hang": (2, {"seconds": 5}),
    "accept_then_hang": (2, {}),
    "job_failure": (3, {"error": "CUDA out of memory"}),
    "content_rejected": (2, {}),
    "corrupt": (3, {}),
    "blank": (3, {}),
}


@pytest.mark.slow
def test_a_chaos_sweep_loses_nothing_and_pays_for_nothing_twice(
        tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(latency_s=0.01, seed=7) as emu:
        point_sdks_at(emu, monkeypatch)
        for provider in ("replicate", "fal", "openai"):
            for action, (times, options) in FAULTS.items():
                emu.faults.add(provider, action, times=times, **options)
        folder = tmp_path / "catalog"
        folder.mkdir()
        (folder / "emu.toml").write_text(CATALOG)
        workbench = Workbench(tmp_path / "home", catalog=load_catalog(folder),
                              providers=emulated_providers(emu))
        arms = ["replicate:emu/enhance", "fal:emu/enhance", "openai:emu-enhance"]
        result = Sweep(SweepSpec.parse({
            "name": "chaos", "task": "enhance", "dataset": str(dataset_dir),
            "models": arms, "seeds": list(range(17)), "concurrency": 24}), workbench).run(
            retry=RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05,
                              poll_interval_s=0.02), score=False)
        billed = emu.creates()

    ledger = workbench.ledger
    faulted = sum(times for times, _ in FAULTS.values()) * 3
    refused = sum(FAULTS[a][0] for a in ("rate_limit", "server_error", "hang")) * 3
    assert result.planned == 4 * 17 * 3 == 204
    assert not emu.faults.pending()  # every armed fault was met by a real create call
    assert faulted / (len(billed) + refused) >= 0.20, (faulted, len(billed) + refused)
    statuses = ledger.query("select status, count(*) n from requests group by status")
    assert set(statuses["status"]) <= {"succeeded", "failed"}
    assert ledger.scalar("select count(*) from requests where status = 'failed' "
                         "and (error_class is null or error_message is null)") == 0
    assert ledger.scalar("select count(*) from attempts where status = 'started'") == 0

    recorded = ledger.query("select provider, provider_job_id from attempts "
                            "where provider_job_id is not null and provider != 'local'")
    recorded_ids = list(recorded["provider_job_id"])
    assert len(recorded_ids) == len(set(recorded_ids))  # no job recorded twice
    # A billed job the ledger has no id for is a create that never answered (OutcomeUnknown):
    # it is charged at its estimate and not retried, so it is never a silent duplicate.
    unrecorded = [j for j in billed if j.job_id not in recorded_ids]
    unknown = ledger.query("select provider, count(*) n from attempts "
                           "where error_reason = 'outcome_unknown' group by provider")
    unknown_by_provider = dict(zip(unknown["provider"], unknown["n"], strict=True))
    for provider in {j.provider for j in unrecorded}:
        assert sum(j.provider == provider for j in unrecorded) <= unknown_by_provider[provider]
    recorded_spend = float(ledger.scalar(
        "select coalesce(sum(c.usd), 0) from costs c join attempts a using (attempt_id) "
        "where a.provider != 'local' and a.provider_job_id is not null"))
    assert recorded_spend == pytest.approx(
        sum(j.cost_usd for j in billed if j.job_id in recorded_ids), abs=0.005)
    total_spend = float(ledger.scalar("select coalesce(sum(usd), 0) from costs"))
    assert total_spend >= sum(j.cost_usd for j in billed) - 0.005  # never under-counted
