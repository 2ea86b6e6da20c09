"""The process heap during a run: freed image memory handed back to the system, and the
collector kept off the objects that were there before the run.

Why: decoding and scoring 1600 px images in worker threads allocates and frees arrays of tens
of megabytes in several glibc malloc arenas; glibc keeps much of that freed memory mapped, so
the process's resident size ratchets up phase after phase (the demo measured 1.5 GB resident
after a score pass whose live data was a few hundred MB, and the next phase's peak stacked on
top of it). :func:`bound_retention` (called where a sweep starts and by the CLI) makes every
allocation of 1 MiB or more its own mapping, returned to the system the moment it is freed,
and caps the arenas at two; :func:`release_freed` (``malloc_trim(0)``) returns the free pages
that remain where a phase ends. Measured on the demo (192 requests, 1600 px packshots): peak
resident size 2.5 GB before, 1.0 GB with streaming scores and trims, 0.67 GB with both. Both
are no-ops where the C library is not glibc.

:func:`old_objects_frozen` (around a runner's requests) keeps the cyclic garbage collector's
full collections off the objects that existed before the run: the modules, a notebook's data.
A run keeps requests in flight for seconds, so their objects outlive the young generations and
trigger full collections, each of which walked the whole heap with the event loop stopped:
``bench_sweep`` (1,280 requests, pandas, DuckDB and the SDKs loaded) measured 2-3 of them at
~200 ms each, 0.3-0.44 ms of CPU per attempt; with the heap frozen, one of ~20 ms (0.02 ms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
"""Allocations this large or larger get their own mapping (glibc's default starts at 128 KiB
but rises to 32 MiB after the first large frees, which is what kept image arrays resident)."""
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return libc


@functools.cache
def bound_retention() -> bool:
    """Set the allocator so that freed image arrays do not stay resident (once per process);
    True when the C library took it."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_ARENA_MAX, ARENA_MAX))


def release_freed() -> bool:
    """Return freed heap memory to the system; True when the C library could."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


_freeze_lock = threading.Lock()
_frozen_runs = 0


@contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Inside: the objects that existed on entry are left out of every garbage collection
    (``gc.freeze``); on leaving the last of overlapping uses, they are handed back to the
    collector (``gc.unfreeze``), which collects any cycle among them that died meanwhile.
    No collection is forced on entry: that would be the very pause this avoids."""
    global _frozen_runs
    with _freeze_lock:
        if _frozen_runs == 0:
            gc.freeze()
        _frozen_runs += 1
    try:
        yield
    finally:
        with _freeze_lock:
            _frozen_runs -= 1
            if _frozen_runs == 0:
                gc.unfreeze()
