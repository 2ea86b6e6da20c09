"""A chaos sweep: 204 requests across Replicate, fal and OpenAI (real SDKs, loopback emulator),
one OpenAI model priced per token class, with over 20 % of job-creating calls faulted, every kind
of fault: refusals, hangs, failures, content refusals (fal's typed 422; OpenAI's at the output
stage), corrupt and blank outputs, fal runners that die and are retried by fal, and creates
that were accepted and then answered with a 5xx or a reset connection.

What must hold, checked against the emulator's own billing (its rules written apart from the
catalog's, from the same published pages) rather than pixellab's counters:
- every request ends succeeded or failed with a recorded reason; no attempt is left open;
- every job the emulator created is in the ledger - as its job, or as an ``OutcomeUnknown``
  attempt on that request and model (a create whose answer never came) - and no job twice;
- no request and model got more creates than the ledger has attempts that reached the
  provider: nothing was paid for twice without a record saying why;
- for every job whose outcome and usage are known, the ledger charges exactly what the emulator
  billed, to the cent; where the ledger had to estimate (an unknown outcome; a refusal that
  reports no usage) it charges at least the bill; in total, ledger spend >= bill.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from pixellab.catalog import load_catalog
from pixellab.emulator import Emulator
from pixellab.runner import RetryPolicy
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import write_prompted_dataset
from tests.emulated import emulated_providers, point_sdks_at, remote_models, settled

# 2.5 s: far above an emulated job (10 ms), so a loaded 2-core CI machine does not time out
# healthy jobs (at 1 s it did, and the extra paid retries diluted the fault rate below 20 %),
# and below the 5 s "hang", which must time out.
CATALOG = remote_models("emu/enhance", "emu-enhance", usd_per_image=0.02, timeout_s=2.5)
TOKEN_MODEL = "openai:gpt-image-2.6-sunburst"  # the shipped catalog's, priced per token class
FAULTS = {  # action: (times per provider, options)
    "rate_limit": (3, {"retry_after": 0}),
    "server_error": (3, {"status": 500}),
    "hang": (2, {"seconds": 5}),
    "accept_then_hang": (2, {}),
    "accept_then_error": (2, {"status": 504}),
    "accept_then_reset": (2, {}),
    "job_failure": (3, {"error": "CUDA out of memory"}),
    "content_rejected": (2, {}),
    "corrupt": (3, {}),
    "blank": (2, {}),
}
EXTRA = [  # provider, action, times, options
    ("fal", "runner_failure", 2, {"attempts": 1}),  # fal retries on a new runner, bills once
    # OpenAI does not say whether an image refused at the output stage is billed: the catalog
    # counts it billed, and the emulator is run with that reading.
    ("openai", "content_rejected", 2, {"stage": "output", "billed": True}),
]
PRODUCTS = 51  # x 4 arms = 204 requests, each with its own prompt, so a job names its request


class Attempt(NamedTuple):
    model_id: str
    job_id: str | None
    reason: str
    estimated: bool
    usd: float
    prompt: str


@pytest.mark.slow
def test_a_chaos_sweep_loses_nothing_and_pays_for_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = write_prompted_dataset(tmp_path, PRODUCTS, "chaos@1", monkeypatch)
    with Emulator(latency_s=0.01, seed=7) as emu:
        point_sdks_at(emu, monkeypatch)
        for provider in ("replicate", "fal", "openai"):
            for action, (times, options) in FAULTS.items():
                emu.faults.add(provider, action, times=times, **options)
        for provider, action, times, options in EXTRA:
            emu.faults.add(provider, action, times=times, **options)
        folder = tmp_path / "catalog"
        folder.mkdir()
        (folder / "emu.toml").write_text(CATALOG)
        workbench = Workbench(tmp_path / "home", catalog=load_catalog(folder),
                              providers=emulated_providers(emu))
        arms = ["replicate:emu/enhance", "fal:emu/enhance", "openai:emu-enhance", TOKEN_MODEL]
        result = Sweep(SweepSpec.parse({
            "name": "chaos", "task": "enhance", "dataset": str(dataset), "models": arms,
            "prompts": ["chaos@1"], "concurrency": 24}), workbench).run(
            retry=RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05,
                              poll_interval_s=0.02), score=False)
        settled(emu, timeout_s=30)  # jobs the runner let go of still end, and bill
        billed = emu.creates()

    ledger = workbench.ledger
    faulted = (sum(times for times, _ in FAULTS.values()) * 3
               + sum(times for _, _, times, _ in EXTRA))
    refused = sum(FAULTS[a][0] for a in ("rate_limit", "server_error", "hang")) * 3
    assert result.planned == PRODUCTS * len(arms) == 204
    assert not emu.faults.pending()  # every armed fault was met by a real create call
    assert faulted / (len(billed) + refused) >= 0.20, (faulted, len(billed) + refused)
    statuses = ledger.query("select status, count(*) n from requests group by status")
    assert set(statuses["status"]) <= {"succeeded", "failed"}
    assert ledger.scalar("select count(*) from requests where status = 'failed' "
                         "and (error_class is null or error_message is null)") == 0
    assert ledger.scalar("select count(*) from attempts "
                         "where status in ('started', 'submitting')") == 0

    attempts = [Attempt(m, j if isinstance(j, str) else None, str(reason or ""), bool(est),
                        float(usd), prompt) for m, j, reason, est, usd, prompt in ledger.query(
        """select a.model_id, a.provider_job_id, a.error_reason, a.cost_estimated,
                  coalesce(a.usd, 0)::double usd, r.prompt_text
           from attempts a join requests r using (request_key)
           where a.provider != 'local' and a.status != 'skipped'""").itertuples(index=False)]
    recorded = Counter(a.job_id for a in attempts if a.job_id is not None)
    assert max(recorded.values()) == 1  # no job recorded twice
    by_id = {a.job_id: a for a in attempts if a.job_id is not None}
    unknown = Counter((a.model_id, a.prompt) for a in attempts
                      if a.job_id is None and a.reason == "outcome_unknown")
    reached = Counter((a.model_id, a.prompt) for a in attempts
                      if a.job_id is not None or a.reason == "outcome_unknown")
    creates = Counter((f"{j.provider}:{j.model}", j.input.get("prompt")) for j in billed)
    orphans = Counter((f"{j.provider}:{j.model}", j.input.get("prompt")) for j in billed
                      if j.job_id not in by_id)
    for key, count in creates.items():  # no create the ledger cannot account for
        assert count <= reached[key], (key, count, reached[key])
    for key, count in orphans.items():  # a job with no record is an unknown create's
        assert count <= unknown[key], (key, count, unknown[key])
    for job in billed:
        row = by_id.get(job.job_id)
        if row is None:
            continue
        if row.estimated:  # an upper bound: never less than the bill
            assert row.usd >= job.cost_usd - 0.005, (job, row)
        else:
            assert row.usd == pytest.approx(job.cost_usd, abs=0.005), (job, row)
    assert any(j.model == "gpt-image-2.6-sunburst" and j.cost_usd > 0 for j in billed)
    total_spend = float(ledger.scalar("select coalesce(sum(usd), 0) from costs"))
    assert total_spend >= emu.bill() - 0.005  # never under-counted
