"""Sweeps on a Ray cluster (:mod:`pixellab.cluster`): provider calls on the workers of a local
cluster this module starts, the ledger written by the driver alone.

What must hold, against the emulator (real SDKs) and the emulator's own records:

- the same ledger rows (request outcomes, attempts, costs, scores) as the sweep run in one
  process;
- the catalog's per-model quota holds across workers: two shards on two workers never have
  more jobs running at the provider than the model allows;
- a worker killed right after a create the provider accepted (and bills), and the driver
  killed the same way: nothing is created twice, every billed job is in the ledger, nothing is
  left half-done.

The cluster starts once for the module (``ray.init(num_cpus=2)``), after the emulator, so its
workers inherit the emulator's addresses and test keys the way a real cluster's nodes would
hold the provider keys in their environment.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixellab.catalog import load_catalog
from pixellab.emulator import Emulator, JobRecord
from pixellab.runner import RetryPolicy
from pixellab.settings import Settings
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import started, write_dataset, write_prompted_dataset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="pixellab[ray] is not installed")

MODELS = """
[models."replicate:emu/enhance"]
tasks = ["enhance"]
endpoint = "emu/enhance"
inputs = { prompt = "prompt", image = "input_image" }
pricing = { unit = "image", usd_per_unit = 0.02 }
timeout_s = 60
max_concurrency = 2

[models."openai:emu-enhance"]
tasks = ["enhance"]
endpoint = "emu-enhance"
inputs = { prompt = "prompt" }
pricing = { unit = "image", usd_per_unit = 0.04 }
timeout_s = 60
"""

KEYS = {"REPLICATE_API_TOKEN": "r8_" + "t" * 37, "OPENAI_API_KEY": "sk-emulator-" + "x" * 20}


class Cluster:
    def __init__(self, emulator: Emulator, catalog_dir: Path, address: str) -> None:
        self.emulator, self.catalog_dir, self.address = emulator, catalog_dir, address


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from pixellab.executors import connect_ray

    catalog_dir = tmp_path_factory.mktemp("catalog")
    (catalog_dir / "emu.toml").write_text(MODELS)
    saved = dict(os.environ)
    with Emulator(latency_s=0.4, jitter_s=0.1, seed=5) as emulator:
        os.environ.update({**emulator.env(), **KEYS})
        ray, _ = connect_ray(num_cpus=2, object_store_bytes=256 * 1024 * 1024)
        try:
            yield Cluster(emulator, catalog_dir, ray.get_runtime_context().gcs_address)
        finally:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(saved)


def workbench(home: Path, cluster: Cluster, executor: str) -> Workbench:
    return Workbench(home, catalog=load_catalog(cluster.catalog_dir),
                     settings=Settings(executor=executor))  # type: ignore[arg-type]


def ledger_rows(bench: Workbench) -> dict[str, Any]:
    ledger = bench.ledger
    return {
        "requests": ledger.query(
            "select product_id, seed, status, model_id, error_class from requests "
            "order by 1, 2").values.tolist(),
        "attempts": ledger.query(
            "select r.product_id, r.seed, a.attempt_no, a.model_id, a.status, a.error_reason "
            "from attempts a join requests r using (request_key) "
            "order by 1, 2, 3").values.tolist(),
        "costs": ledger.query(
            "select r.product_id, r.seed, c.model_id, c.usd, c.credits, c.estimated "
            "from costs c join requests r using (request_key) order by 1, 2, 3").values.tolist(),
        "scores": ledger.query(
            "select r.product_id, r.seed, s.metric, s.missing_reason is null, "
            "round(coalesce(s.value, -1), 6) from scores s "
            "join requests r on r.output_sha256 = s.output_sha256 "
            "order by 1, 2, 3").values.tolist(),
    }


def test_a_sweep_on_the_cluster_writes_the_rows_one_process_writes(
        tmp_path: Path, cluster: Cluster) -> None:
    """Two seeds of six products, on a chain of two models: outcomes, attempts, costs and
    scores are the same, row for row."""
    dataset = write_dataset(tmp_path / "ds", n=6)
    spec = SweepSpec.parse({"name": "same", "task": "enhance", "dataset": str(dataset),
                            "chain": ["replicate:emu/enhance", "openai:emu-enhance"],
                            "seeds": [0, 1], "concurrency": 4})
    found = {}
    for executor in ("threads", "ray"):
        bench = workbench(tmp_path / executor, cluster, executor)
        result = Sweep(spec, bench).run(retry=RetryPolicy(poll_interval_s=0.1, max_attempts=1))
        assert result.succeeded == 12 and result.failed == 0
        found[executor] = ledger_rows(bench)
    assert found["ray"] == found["threads"]
    assert len(found["ray"]["costs"]) == 12 and found["ray"]["scores"]


def test_a_models_quota_holds_across_workers(tmp_path: Path, cluster: Cluster) -> None:
    """max_concurrency = 2 for the model; two shards on the two workers run 8 requests at a
    time each. Without a cluster-wide quota each worker would run 2 (4 at once)."""
    emulator = cluster.emulator
    before = len(emulator.creates("replicate"))
    dataset = write_dataset(tmp_path / "ds", n=12)
    bench = workbench(tmp_path / "home", cluster, "ray")
    spec = SweepSpec.parse({"name": "quota", "task": "enhance", "dataset": str(dataset),
                            "models": ["replicate:emu/enhance"], "concurrency": 8})
    result = Sweep(spec, bench).run(retry=RetryPolicy(poll_interval_s=0.05), score=False)
    assert result.succeeded == 12
    jobs = emulator.creates("replicate")[before:]
    assert len(jobs) == 12
    events = sorted([(j.created_at, 1) for j in jobs]
                    + [(j.completed_at or float("inf"), -1) for j in jobs],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2  # reached, never passed


class KillAfterCreate:
    """On the ``at``-th accepted create of this test's prompt, SIGKILL a process: the create
    has happened and bills, the job id never reaches the caller."""

    def __init__(self, prompt_word: str, at: int, victim: Any) -> None:
        self.prompt_word, self.at, self.victim = prompt_word, at, victim
        self.creates = 0
        self.killed: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, record: JobRecord) -> None:
        if self.prompt_word not in str(record.input.get("prompt")):
            return
        with self.lock:
            self.creates += 1
            if self.creates == self.at and not self.killed:
                pid = self.victim()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)


def shard_workers() -> list[int]:
    """Processes of this machine running a shard (Ray names a worker's process after its task)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::_run_shard"):
                found.append(int(entry.name))
    return found


def assert_paid_once(bench: Workbench, emulator: Emulator, word: str, products: int) -> None:
    jobs = [j for j in emulator.creates("replicate") if word in str(j.input.get("prompt"))]
    per_request = Counter(j.input.get("prompt") for j in jobs)
    assert len(per_request) == products and max(per_request.values()) == 1, per_request
    ledger = bench.ledger
    job_ids = set(ledger.query("select provider_job_id from attempts "
                               "where provider_job_id is not null")["provider_job_id"])
    assert {j.job_id for j in jobs} <= job_ids  # found again by the file it was given
    assert ledger.scalar("select count(*) from attempts "
                         "where status in ('started', 'submitting')") == 0
    assert set(ledger.query("select distinct status from requests")["status"]) == {"succeeded"}
    spent = float(ledger.scalar("select sum(usd) from costs"))
    assert spent >= round(sum(j.cost_usd for j in jobs), 9) - 1e-9


def test_a_worker_killed_after_an_accepted_create_pays_nothing_twice(
        tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker that made the third create is killed before the job id reaches it; the
    driver reruns what its shard had not finished from the ledger's resume state, which finds
    the job again instead of creating it."""
    emulator = cluster.emulator
    dataset = write_prompted_dataset(tmp_path, 10, "worker@1", monkeypatch)
    (dataset / "manifest.csv").write_text((dataset / "manifest.csv").read_text()
                                          .replace("Product", "Workerkill"))
    bench = workbench(tmp_path / "home", cluster, "ray")
    spec = SweepSpec.parse({"name": "wk", "task": "enhance", "dataset": str(dataset),
                            "models": ["replicate:emu/enhance"], "prompts": ["worker@1"],
                            "concurrency": 2})
    workers = shard_workers
    hook = emulator.on_create(KillAfterCreate("Workerkill", 3, lambda: (workers() or [None])[0]))
    try:
        result = Sweep(spec, bench).run(retry=RetryPolicy(poll_interval_s=0.05), score=False)
    finally:
        emulator.remove_create_hook(hook)
    assert hook.killed, "no worker was killed"
    assert result.succeeded == 10
    assert_paid_once(bench, emulator, "Workerkill", 10)


def test_the_driver_killed_after_an_accepted_create_resumes_without_paying_twice(
        tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pixellab sweep run`` joins the cluster and is SIGKILLed right after its fourth create
    was accepted; its hub and shards die with it. ``resume`` on the cluster finishes."""
    emulator = cluster.emulator
    dataset = write_prompted_dataset(tmp_path, 10, "driver@1", monkeypatch)
    (dataset / "manifest.csv").write_text((dataset / "manifest.csv").read_text()
                                          .replace("Product", "Driverkill"))
    home = tmp_path / "home"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: dk\ntask: enhance\ndataset: {dataset}\n"
                    "models: ['replicate:emu/enhance']\nprompts: ['driver@1']\n"
                    "concurrency: 2\n")
    env = {**os.environ, "PIXELLAB_EXECUTOR": "ray", "PIXELLAB_RAY_ADDRESS": cluster.address,
           "PIXELLAB_CATALOG": str(cluster.catalog_dir)}
    driver: list[subprocess.Popen[str]] = []
    hook = emulator.on_create(KillAfterCreate("Driverkill", 4,
                                              lambda: driver[0].pid if driver else None))
    try:
        with started([sys.executable, "-m", "pixellab.cli", "sweep", "run", str(spec),
                      "--home", str(home), ], env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as child:
            driver.append(child)
            child.wait(timeout=240)
    finally:
        emulator.remove_create_hook(hook)
    assert hook.killed == [driver[0].pid] and driver[0].returncode == -signal.SIGKILL
    bench = workbench(home, cluster, "ray")
    sweep = Sweep.resume("dk", bench)
    sweep.run(retry=RetryPolicy(poll_interval_s=0.05), score=False)
    assert_paid_once(bench, emulator, "Driverkill", 10)


def test_a_sweep_through_ray_client_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Ray Client runs the driver off the cluster: the hub would journal on another disk."""
    from pixellab.errors import ConfigError

    dataset = write_dataset(tmp_path / "ds", n=1)
    bench = Workbench(tmp_path / "home", settings=Settings(  # type: ignore[arg-type]
        executor="ray", ray_address="ray://10.0.0.1:10001"))
    spec = SweepSpec.parse({"name": "client", "task": "enhance", "dataset": str(dataset),
                            "models": ["local:autoenhance"]})
    with pytest.raises(ConfigError, match="--address auto"):
        Sweep(spec, bench).run(score=False)
    assert bench.ledger.scalar("select count(*) from attempts") == 0
