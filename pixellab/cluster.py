"""Sweeps on a Ray cluster: provider calls fan out to workers; one process writes the ledger.

Why: a catalogue sweep of a million requests is held by providers' per-account concurrency
quotas and by the CPU each output's validation and storage take; more machines help only if
every worker shares the quotas, the budget and the ledger's money guarantees. This module keeps
those three in one place each while the :class:`~pixellab.runner.Runner` itself runs unchanged
on every worker (``PIXELLAB_EXECUTOR=ray``, or ``pixellab sweep run --executor ray``):

- The driver (the process that runs the sweep) splits the requests still to run into shards,
  one Ray task each; a task runs a runner over its shard with three parts swapped for
  cluster-wide ones.
- **The ledger**: a :class:`Hub` actor, placed on the driver's node, receives every unit of
  ledger writes the workers make, in each worker's order, and appends a paid create's
  ``submitting`` row to its own submit journal beside the ledger before it answers, so a
  create leaves a worker only once that row would survive a kill of any process
  (:class:`~pixellab.ledger.journal.SubmitJournal`). The driver drains the hub and alone writes
  the DuckDB file, in group commits as in one process.
- **The budget**: the hub holds the sweep's :class:`~pixellab.budget.Budget` and the spend
  policy's caps; every worker reserves against the one cap before every paid call.
- **The quotas**: a :class:`QuotaBook` actor, one per cluster (``pixellab-quotas``), lends slots
  per provider and per model (the catalog's ``max_concurrency``) and per sweep (its
  ``concurrency``) to every worker of every sweep. A slot is leased for
  :data:`LEASE_S` and renewed by its live holder every third of that, so a slot that a dead
  process held comes back within seconds.

A worker that dies mid-shard: the driver commits what the hub received, gives the dead shard's
slots back, keeps its in-flight reservations counted at their estimates, and runs what the
shard had not finished again from the ledger's resume state, as ``pixellab sweep resume``
would: a create that was in flight is settled (polled, asked about, or charged as unknown),
never made again. The driver killed: the hub dies with it, its journal is folded into the
ledger by the next run, and ``resume`` goes on with the same guarantees.

Workers build their providers from their own environment (every node needs the provider keys,
from the cluster's secrets: nothing secret travels with a task), read inputs by path and write
outputs to the store's URL: both must name storage every node reaches (a shared file system, or
an fsspec URL such as ``s3://``). Workers poll for results; provider webhooks are not used.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pixellab.budget import Budget, Reservation
from pixellab.catalog import Catalog, Model
from pixellab.errors import BudgetExceeded, ConfigError
from pixellab.executors import connect_ray
from pixellab.ledger import Ledger, LedgerWriter, ResumeState, Row, Statement, money
from pixellab.ledger.journal import SubmitJournal
from pixellab.providers import default_providers
from pixellab.requests import Request
from pixellab.runner import LocalLimits, RequestOutcome, RetryPolicy, Runner, RunSummary
from pixellab.spend import governor_for
from pixellab.store import Store

NAMESPACE = "pixellab"
QUOTAS_ACTOR = "pixellab-quotas"
LEASE_S = 15.0
"""A slot is lent for this long and renewed by its holder every third of it: a holder that
died (its worker, or the driver and with it its workers) gives it back by not renewing."""
IN_PROCESS = ("local",)
"""Providers that run in the worker itself: their quotas are per worker, not cluster-wide."""
SHARD_TRIES = 3
"""A shard whose worker died is run again (what it had not finished) up to this many times."""


class QuotaBook:
    """Concurrency slots per key (``provider:<name>``, ``model:<id>``, ``sweep:<id>``) shared
    by every worker on the cluster; an async Ray actor (:func:`quota_book`). An attempt takes
    one slot of each of its keys at once, or waits: taking them one by one could deadlock two
    attempts that each hold one."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._leases: dict[str, tuple[tuple[str, ...], str, float]] = {}
        self._changed: asyncio.Condition | None = None

    async def acquire(self, keys: list[tuple[str, int]], holder: str, lease_s: float) -> str:
        """A token for one slot of each ``(key, limit)``, once every key has one free."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                self._expire()
                if all(self._held.get(key, 0) < limit for key, limit in keys):
                    break
                try:  # woken by a release, or after a second to reclaim expired leases
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            for key, _ in keys:
                self._held[key] = self._held.get(key, 0) + 1
            token = uuid.uuid4().hex
            self._leases[token] = (tuple(key for key, _ in keys), holder,
                                   time.monotonic() + lease_s)
            return token

    async def renew(self, holder: str, lease_s: float) -> None:
        until = time.monotonic() + lease_s
        for token, (keys, owner, _) in list(self._leases.items()):
            if owner == holder:
                self._leases[token] = (keys, owner, until)

    async def release(self, token: str) -> None:
        await self._give_back([token])

    async def release_holder(self, holder: str) -> int:
        """Give back every slot ``holder`` (a shard's run) still holds; how many."""
        tokens = [t for t, (_, owner, _) in self._leases.items() if owner == holder]
        await self._give_back(tokens)
        return len(tokens)

    async def _give_back(self, tokens: Sequence[str]) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            for token in tokens:
                self._drop(token)
            self._changed.notify_all()

    def _drop(self, token: str) -> None:
        lease = self._leases.pop(token, None)
        for key in lease[0] if lease else ():
            self._held[key] -= 1

    def _expire(self) -> None:
        clock = time.monotonic()
        for token in [t for t, (_, _, until) in self._leases.items() if until < clock]:
            self._drop(token)


class Hub:
    """The driver's side of one sweep on a cluster: the ledger units, journal, outcomes and
    budget of every worker; a Ray actor placed on the driver's node (its calls run one at a
    time, in the order each caller made them)."""

    def __init__(self, ledger_path: str, cap_usd: float | None, spent_usd: float,
                 policy_path: str | None, project: str, name: str) -> None:
        self._ledger_path = Path(ledger_path)
        self._name = name
        self._journal: SubmitJournal | None = None
        self._units: list[list[Statement]] = []
        self._outcomes: list[tuple[str, RequestOutcome]] = []
        self._budget = Budget(cap_usd, already_spent_usd=spent_usd, governor=governor_for(
            Path(policy_path) if policy_path else None, self._ledger_path, project))
        self._held: dict[str, tuple[str, Reservation]] = {}

    def journal(self, row: Row) -> None:
        """On disk before this returns (see :class:`SubmitJournal`), then queued."""
        if self._journal is None:
            self._journal = SubmitJournal.create(self._ledger_path, owner=self._name)
        self._journal.append(row)
        self._units.append([row])

    def submit(self, statements: list[Statement]) -> None:
        self._units.append(statements)

    def done(self, holder: str, outcome: RequestOutcome) -> None:
        self._outcomes.append((holder, outcome))

    def ping(self) -> None:
        """Answered once every call the caller made before it has run."""

    def drain(self) -> tuple[list[list[Statement]], list[tuple[str, RequestOutcome]]]:
        """Everything received since the last drain, in order."""
        units, outcomes = self._units, self._outcomes
        self._units, self._outcomes = [], []
        return units, outcomes

    def reserve(self, holder: str, usd: float, credits: float,
                model_id: str | None) -> str | BudgetExceeded:
        """A reservation's token, or the refusal (returned, so the worker raises it)."""
        try:
            reservation = self._budget.reserve(usd, credits, model_id=model_id)
        except BudgetExceeded as exc:
            return exc
        token = uuid.uuid4().hex
        self._held[token] = (holder, reservation)
        return token

    def settle(self, token: str | None, usd: float, credits: float | None) -> None:
        """``token`` None: a call reserved as free that cost something after all."""
        held = self._held.pop(token, None) if token is not None else ("", Reservation(
            Decimal(0)))
        if held is not None:
            self._budget.settle(held[1], usd, credits)

    def abandon(self, holder: str) -> int:
        """A dead shard's reservations, settled at their estimates (its calls may have billed;
        the rerun settles them in the ledger again, so the budget errs on the safe side)."""
        tokens = [t for t, (owner, _) in self._held.items() if owner == holder]
        for token in tokens:
            _, reservation = self._held.pop(token)
            self._budget.settle(reservation, float(reservation.amount), reservation.credits)
        return len(tokens)

    def close(self, delete_journal: bool) -> None:
        """The journal goes once the driver committed all it holds; alerts are delivered."""
        if self._journal is not None:
            self._journal.close(delete=delete_journal)
            self._journal = None
        if self._budget.governor is not None:
            self._budget.governor.flush()


# -- a worker's view of the hub and the quotas ----------------------------------------------


class _HubWriter:
    """The runner's :class:`~pixellab.runner.WriteBehind`, on a worker."""

    def __init__(self, ray: Any, hub: Any) -> None:
        self._ray, self._hub = ray, hub

    def submit(self, statements: Sequence[Statement]) -> asyncio.Future[None]:
        return asyncio.wrap_future(self._hub.submit.remote(list(statements)).future())

    def journal(self, row: Row) -> asyncio.Future[None]:
        self._ray.get(self._hub.journal.remote(row))  # on disk before the create is sent
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def flush(self) -> None:
        """Nothing waits on a worker: the hub has every unit as soon as it is sent."""


class _HubBudget(Budget):
    """The sweep's budget, held by the hub for every worker."""

    def __init__(self, ray: Any, hub: Any, holder: str) -> None:
        super().__init__(None)
        self._ray, self._hub, self._holder = ray, hub, holder

    def reserve(self, estimate_usd: float, estimate_credits: float = 0.0, *,
                model_id: str | None = None) -> Reservation:
        if estimate_usd <= 0 and estimate_credits <= 0:  # a free call cannot overspend:
            return Reservation(Decimal(0))                # no round trip to the hub
        answer = self._ray.get(self._hub.reserve.remote(self._holder, estimate_usd,
                                                        estimate_credits, model_id))
        if isinstance(answer, BudgetExceeded):
            raise answer
        return Reservation(money(estimate_usd) or Decimal(0), estimate_credits, booked=answer)

    def settle(self, reservation: Reservation, actual_usd: float,
               actual_credits: float | None = None) -> None:
        if reservation.booked is not None or actual_usd > 0 or (actual_credits or 0) > 0:
            self._hub.settle.remote(reservation.booked, actual_usd, actual_credits)


class ClusterLimits:
    """The runner's :class:`~pixellab.runner.Limits` from the cluster's :class:`QuotaBook`."""

    def __init__(self, quotas: Any, catalog: Catalog, holder: str,
                 extra: Sequence[tuple[str, int]] = ()) -> None:
        self._quotas, self._catalog, self._holder = quotas, catalog, holder
        self._extra = list(extra)
        self._local = LocalLimits(catalog, IN_PROCESS)
        self._renewing: asyncio.Task[None] | None = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            self._quotas.renew.remote(self._holder, LEASE_S)

    @asynccontextmanager
    async def slot(self, model: Model) -> Any:
        if model.provider in IN_PROCESS:  # its quota is this worker's CPU, not an account's
            async with self._local.slot(model):
                yield
            return
        if self._renewing is None:  # ends with the shard's event loop
            self._renewing = asyncio.get_running_loop().create_task(self._renew())
        keys = [(f"provider:{model.provider}",
                 self._catalog.provider_settings(model.provider).max_concurrency),
                (f"model:{model.id}", model.max_concurrency), *self._extra]
        token = await self._quotas.acquire.remote(keys, self._holder, LEASE_S)
        try:
            yield
        finally:
            self._quotas.release.remote(token)


@dataclass
class _Shard:
    requests: list[Request]
    holder: str
    sweep_id: str | None
    catalog: Catalog
    store_url: str
    concurrency: int
    retry: RetryPolicy | None
    resume: ResumeState
    resubmit: bool
    hub: Any
    quotas: Any


def _run_shard(shard: _Shard) -> tuple[int, str | None, dict[str, str]]:
    """One shard on a worker: the runner of one process, with the cluster's ledger, budget and
    quotas. Returns its provider calls, why it stopped (if it did) and the providers it
    stopped calling; its outcomes went to the hub as they came."""
    import ray

    hub = shard.hub
    runner = Runner(
        catalog=shard.catalog, providers=default_providers(), writer=_HubWriter(ray, hub),
        store=Store(shard.store_url), budget=_HubBudget(ray, hub, shard.holder),
        sweep_id=shard.sweep_id, concurrency=shard.concurrency, retry=shard.retry,
        on_done=lambda outcome: hub.done.remote(shard.holder, outcome), resume=shard.resume,
        resubmit=shard.resubmit,
        limits=ClusterLimits(shard.quotas, shard.catalog, shard.holder,
                             [(f"sweep:{shard.sweep_id}", shard.concurrency)]))
    summary = asyncio.run(runner.run(shard.requests))
    ray.get(hub.ping.remote())  # its calls run in order: every outcome and settle has landed
    return summary.provider_calls, summary.stopped_reason, summary.stopped_providers


def hub_name(ledger_path: Path, sweep_id: str | None) -> str:
    """One hub per ledger and sweep on a cluster (see :func:`fence`)."""
    digest = hashlib.sha256(f"{ledger_path.resolve()}\x1f{sweep_id}".encode()).hexdigest()
    return f"pixellab-hub-{digest[:24]}"


def fence(ray: Any, ledger_path: Path, sweep_id: str | None, *, timeout_s: float = 60.0) -> bool:
    """Kill the hub an earlier driver of this sweep left, and wait until its journal is free.

    Why: a driver killed with SIGKILL leaves its hub and shard workers running until Ray
    notices, seconds later; meanwhile the hub would still journal creates the workers then
    send, in a journal the next run cannot fold while the hub holds it, so a resume started at
    once would not see those creates and would make them again (measured: two products
    created twice). After the kill no worker of the old run can journal, so none can create;
    once its journal is free the resume folds it and settles what it holds.
    Its journals are named after it, so they are waited for even when Ray already forgot the
    actor but its process has not exited yet. Returns whether there was such a hub."""
    name = hub_name(ledger_path, sweep_id)
    try:
        old = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        old = None
    else:
        ray.kill(old, no_restart=True)
    folder = SubmitJournal.folder(ledger_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        named = old is not None
        if named:
            try:
                ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                named = False
        held = [path for path in folder.glob(f"{name}-*.jsonl")
                if SubmitJournal.rows(path) is None] if folder.is_dir() else []
        if not named and not held:
            return old is not None
        time.sleep(0.1)
    raise ConfigError(f"the hub of an earlier run of sweep {sweep_id!r} did not stop within "
                      f"{timeout_s:g} s; nothing was run", key="sweep")


def quota_book(ray: Any) -> Any:
    """The cluster's one :class:`QuotaBook` (created by the first sweep that needs it)."""
    return ray.remote(QuotaBook).options(
        name=QUOTAS_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        num_cpus=0).remote()


def _shards(requests: Sequence[Request], count: int) -> Iterator[list[Request]]:
    size = max(1, math.ceil(len(requests) / max(1, count)))
    for start in range(0, len(requests), size):
        yield list(requests[start:start + size])


async def run_on_ray(requests: Sequence[Request], *, catalog: Catalog, store_url: str,
                     ledger: Ledger, writer: LedgerWriter, sweep_id: str | None,
                     concurrency: int, retry: RetryPolicy | None, resubmit: bool,
                     cap_usd: float | None, spent_usd: float,
                     policy_path: Path | None, project: str,
                     progress: Callable[[RequestOutcome], None] | None,
                     address: str | None = None, shards: int | None = None) -> RunSummary:
    """Run ``requests`` on the cluster at ``address`` (None: the one this process joined, or a
    local one, which then stays up for the score pass and later sweeps of this process); the
    ledger units stream back through ``writer``. See the module docstring."""
    if address and address.startswith("ray://"):
        raise ConfigError(
            f"a sweep on a cluster runs its driver on a cluster node (the hub journals on the "
            f"driver's disk beside the ledger): run it there with --address auto, not "
            f"{address} (Ray Client); the score pass works through ray:// too", key="address")
    ray, _ = connect_ray(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    await asyncio.to_thread(fence, ray, ledger.path, sweep_id)
    resume = await asyncio.to_thread(ledger.resume_state, [r.request_key for r in requests])

    summary = RunSummary()
    written: list[asyncio.Future[None]] = []
    finished: dict[str, set[str]] = {}
    actor_name = hub_name(ledger.path, sweep_id)  # the actor's name and its journals' prefix
    hub = ray.remote(Hub).options(
        name=actor_name, namespace=NAMESPACE,
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(str(ledger.path), cap_usd, spent_usd,
             str(policy_path) if policy_path else None, project, actor_name)
    quotas = quota_book(ray)
    task = ray.remote(_run_shard).options(max_retries=0)
    died = tuple(getattr(ray.exceptions, name) for name in (
        "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError")
        if hasattr(ray.exceptions, name))

    async def pump() -> None:
        """Hand what the hub received to the writer (in order), and the outcomes on."""
        units, outcomes = await hub.drain.remote()
        for unit in units:
            written.append(writer.submit(unit))
        written[:] = [future for future in written if not future.done() or future.exception()]
        for holder, outcome in outcomes:
            finished.setdefault(holder, set()).add(outcome.request_key)
            summary.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

    def launch(part: list[Request], state: ResumeState, tries: int) -> None:
        shard = _Shard(part, uuid.uuid4().hex, sweep_id, catalog, store_url, concurrency,
                       retry, state, resubmit, hub, quotas)
        running[task.remote(shard)] = (shard, tries)

    running: dict[Any, tuple[_Shard, int]] = {}
    cpus = int(ray.cluster_resources().get("CPU", 1))
    for part in _shards(requests, shards or 2 * cpus):
        keys = {r.request_key for r in part}
        launch(part, ResumeState({k: v for k, v in resume.unfinished.items() if k in keys},
                                 {k: v for k, v in resume.blocked.items() if k in keys}), 1)
    clean = False
    try:
        while running:
            ready, _ = await asyncio.to_thread(ray.wait, list(running), num_returns=1,
                                               timeout=0.2)
            await pump()
            for ref in ready:
                shard, tries = running.pop(ref)
                try:
                    calls, stopped, stopped_providers = await ref
                except died:
                    if tries >= SHARD_TRIES:
                        raise
                    await pump()  # all the dead worker sent: nothing more can come
                    await hub.abandon.remote(shard.holder)
                    await quotas.release_holder.remote(shard.holder)
                    writer.flush()
                    await asyncio.gather(*written)
                    done = finished.get(shard.holder, set())
                    left = [r for r in shard.requests if r.request_key not in done]
                    state = await asyncio.to_thread(ledger.resume_state,
                                                    [r.request_key for r in left])
                    if left:
                        launch(left, state, tries + 1)
                    continue
                summary.provider_calls += calls
                summary.stopped_reason = summary.stopped_reason or stopped
                for name, why in stopped_providers.items():
                    summary.stopped_providers.setdefault(name, why)
        await pump()
        writer.flush()
        await asyncio.gather(*written)
        clean = True
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        try:
            await hub.close.remote(clean)
        finally:
            ray.kill(hub)
    return summary
