"""Running a coroutine to completion from plain (synchronous) code.

Why a module of its own: the sync faces of async work (``Sweep.run``, ``pixellab.generate``,
``intel.fetch.fetch``) are called from scripts, where ``asyncio.run`` is right, and from
notebooks, where an event loop is already running and ``asyncio.run`` is refused. There the
coroutine runs on a fresh loop in a worker thread, and its result or exception comes back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_blocking(coroutine: Coroutine[Any, Any, _T], *,
                 cleanup: Callable[[], Awaitable[None]] | None = None) -> _T:
    """Run ``coroutine`` to completion and return its result (or raise its exception);
    ``cleanup`` is awaited after it, success or not, on the same loop before the loop ends
    (what is bound to the loop, such as an SDK's connections, is closed there)."""
    if cleanup is not None:
        coroutine = _then(coroutine, cleanup)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pixellab-run") as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _then(coroutine: Coroutine[Any, Any, _T],
                cleanup: Callable[[], Awaitable[None]]) -> _T:
    try:
        return await coroutine
    finally:
        await cleanup()
