"""Where CPU-bound work runs: threads in this process (the default) or a Ray cluster.

The score pass measures every output (decode, identity, OCR, video metrics): ~0.2-0.6 s of
CPU per output on this machine, so 1.2 M outputs are days on one. The work is a pure function
of picklable arguments (:mod:`pixellab.scoring.units`); an executor maps it over the outputs
in order. The driver alone writes the ledger, so the ledger stays the one source of truth
whichever executor ran the work.

- :class:`ThreadExecutor`: today's pool (numpy, OpenCV and scikit-image release the GIL).
- :class:`RayExecutor` (``pixellab[ray]``): batches of items go out as Ray tasks; each worker
  fetches the output's bytes from the store itself (by content hash: the driver ships only
  names), and a task whose worker dies is retried elsewhere by Ray (``max_retries``), so a
  killed worker loses nothing and, since results come back to the driver before anything is
  written, nothing is scored twice. ``address="auto"`` joins a running cluster
  (``ray start --head`` on a head node, ``ray start --address=...`` on the others); None
  starts a local one in this process tree.

Chosen by ``PIXELLAB_EXECUTOR`` (``threads`` or ``ray``) and ``PIXELLAB_RAY_ADDRESS``, or
``pixellab score --executor ray --address auto``.
"""

from __future__ import annotations

import importlib.util
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from pixellab.errors import MissingDependency

T = TypeVar("T")
R = TypeVar("R")

RAY_HINT = "missing: install pixellab[ray] to score on a Ray cluster"


class Executor(Protocol):
    name: str

    def map(self, function: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``function`` over ``items``, results in the items' order."""

    def close(self) -> None:
        """Give back what the executor holds (threads; a local Ray instance it started)."""


class ThreadExecutor:
    """Threads in this process."""

    name = "threads"

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                        thread_name_prefix="pixellab-score")

    def map(self, function: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        return self._pool.map(function, items)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def connect_ray(address: str | None = None, *, num_cpus: int | None = None,
                object_store_bytes: int | None = None) -> tuple[Any, bool]:
    """The ``ray`` module, connected: to ``address`` (``auto``, ``ray://host:10001``), else to
    the cluster this process already joined, else to a local one started here (``num_cpus``,
    ``object_store_bytes``). Returns ``(ray, started)``: whether this call connected, so the
    caller that did shuts it down. :class:`MissingDependency` without the extra."""
    if importlib.util.find_spec("ray") is None:
        raise MissingDependency(RAY_HINT)
    import ray

    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    else:  # a local cluster of our own
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        if object_store_bytes is not None:
            kwargs["object_store_memory"] = object_store_bytes
    ray.init(**kwargs)
    return ray, True


def _run_batch(function: Callable[[Any], Any], batch: list[Any]) -> list[Any]:
    return [function(item) for item in batch]


class RayExecutor:
    """Ray tasks, ``batch`` items each, retried on a worker's death."""

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None,
                 batch: int = 8, max_retries: int = 3,
                 object_store_bytes: int | None = None, window: int | None = None) -> None:
        self._ray, self._started = connect_ray(address, num_cpus=num_cpus,
                                               object_store_bytes=object_store_bytes)
        ray = self._ray
        self.batch = max(1, batch)
        self.window = window
        self._task = ray.remote(max_retries=max_retries)(_run_batch)

    def map(self, function: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """In order, with at most ``window`` batches in flight (4 per CPU of the cluster by
        default), so the driver holds a bounded number of task specs and results whatever
        the number of items."""
        ray = self._ray
        shared = ray.put(function)
        window = self.window or max(2, 4 * int(ray.cluster_resources().get("CPU", 1)))
        pending: deque[Any] = deque()
        for start in range(0, len(items), self.batch):
            pending.append(self._task.remote(shared, list(items[start:start + self.batch])))
            if len(pending) >= window:
                yield from ray.get(pending.popleft())
        while pending:  # each batch as soon as it and those before it are done
            yield from ray.get(pending.popleft())

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(name: str = "threads", *, address: str | None = None,
                  workers: int | None = None) -> Executor:
    """``threads`` or ``ray`` (:class:`MissingDependency` without the extra)."""
    if name == "ray":
        return RayExecutor(address=address, num_cpus=workers)
    if name == "threads":
        return ThreadExecutor(workers)
    raise ValueError(f"unknown executor {name!r} (threads or ray)")

