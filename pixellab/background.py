"""Threads for work that may wait: below the event loop in the operating system's scheduler.

Why a module of its own: a sweep's event loop sends requests and reads answers; every
millisecond the core spends on something else while an answer waits is a millisecond that
request's slot stands idle. Checking an output (decoding it, the blank and size checks) and
storing it has to happen, but nothing is sent sooner for doing it first. P10 measured it in
``benchmarks/bench_sweep.py`` (2,000 requests, 2 s each, 64 at a time, the client on one core):
~1 ms of such work per answer in ordinary threads cost ~5 % of the sweep's wall time, as much
as running it on the loop itself, because answers arrive in waves and every check in a wave
delays the sends behind it; in threads at the lowest priority it cost nothing measurable (the
loop thread preempts them whenever it has anything to do, and the checks fill the idle time
between waves). A lower priority of ``nice`` 10 did not help; 19 did.

Linux keeps a nice value per thread, so only these threads are lowered. Elsewhere they run at
normal priority (correct, just not faster). Lowering is one-way for an unprivileged process,
which is why only work nobody is blocked on runs here: the ledger writer, which the sweep waits
for at the end and under backpressure, keeps its normal priority.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

BACKGROUND_NICE = 19
"""The nice value of background threads: the lowest priority that still always progresses
(the kernel gives a nice-19 thread ~1.5 % of a core against a busy normal one)."""

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def lower_this_thread(nice: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's CPU priority to ``nice`` (never raise it); whether the
    platform let it (Linux only: elsewhere ``setpriority`` would lower the whole process)."""
    if not sys.platform.startswith("linux"):
        return False
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError:  # a sandbox that forbids it: the work still runs, at normal priority
        return False
    return True


def background_pool() -> ThreadPoolExecutor:
    """This process's pool of low-priority threads (created on first use, sized like asyncio's
    default executor: checks decode images in C that releases the GIL)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4),
                                       thread_name_prefix="pixellab-background",
                                       initializer=lower_this_thread)
        return _pool


def _forget_after_fork() -> None:
    """A forked child inherits the pool object but none of its threads: start afresh."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
