"""The score pass on an executor: threads in-process (the default) or a local Ray cluster
started by the test (``ray.init(num_cpus=2)``). Same outputs, same ledger rows; a Ray worker
killed mid-batch is replaced and its batch rerun, and nothing is scored twice."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixellab.executors import Executor, RayExecutor, ThreadExecutor
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import write_dataset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="pixellab[ray] is not installed")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayExecutor]:
    executor = RayExecutor(num_cpus=2, batch=2, object_store_bytes=256 * 1024 * 1024)
    try:
        yield executor
    finally:
        executor.close()


def scored(home: Path, dataset: Path, executor: Executor) -> list[tuple[object, ...]]:
    """A packshot sweep of two local models, scored on ``executor``; the score rows."""
    workbench = Workbench(home)
    sweep = Sweep(SweepSpec.parse({"name": "p", "task": "packshot", "dataset": str(dataset),
                                   "models": ["local:packshot", "local:packshot-threshold"]}),
                  workbench)
    sweep.run(score=False)
    written = sweep.score(executor=executor)
    rows = workbench.ledger.query(
        "select output_sha256, metric, scorer_version, round(value, 9) v, missing_reason "
        "from scores order by 1, 2").values.tolist()
    assert written == len(rows) > 0
    return [tuple(None if value != value else value for value in row)  # NaN: missing
            for row in rows]


def test_a_ray_cluster_scores_exactly_what_threads_score(
        tmp_path: Path, ray_cluster: RayExecutor) -> None:
    dataset = write_dataset(tmp_path / "ds", n=4)
    threads = ThreadExecutor(2)
    try:
        in_process = scored(tmp_path / "threads", dataset, threads)
    finally:
        threads.close()
    on_ray = scored(tmp_path / "ray", dataset, ray_cluster)
    assert on_ray == in_process
    assert {row[1] for row in on_ray} >= {"identity", "blank"}


def test_a_worker_killed_mid_batch_loses_nothing_and_scores_nothing_twice(
        tmp_path: Path, ray_cluster: RayExecutor) -> None:
    """The first worker to reach item 5 dies (``os._exit``, as a kill would leave it); Ray
    starts another and reruns that batch. Every result comes back once, in order."""
    marker = tmp_path / "killed-once"

    def square_or_die(item: int) -> tuple[int, int]:
        if item == 5 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return item, item * item

    results = list(ray_cluster.map(square_or_die, list(range(12))))
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    assert results == [(i, i * i) for i in range(12)]


def test_without_the_extra_the_executor_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pixellab.errors import MissingDependency
    from pixellab.executors import make_executor

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(MissingDependency, match=r"pixellab\[ray\]"):
        make_executor("ray")
