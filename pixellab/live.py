"""A sweep's progress in a notebook: a tqdm bar and a results table that fills in as it runs.

Why a table and not only a bar: in a long sweep the first failures (a model that rejects
jewelry, a key that is missing) show in the first minute, and the user can stop the cell
instead of paying for the rest. The table is refreshed at most once per ``refresh_s`` so a
fast sweep does not flood the notebook with display messages.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pandas as pd

from pixellab.runner import RequestOutcome


class LiveProgress:
    """Pass :meth:`planned` and :meth:`done` to :meth:`pixellab.sweep.Sweep.run`."""

    def __init__(self, arms: dict[str, str], *, refresh_s: float = 1.0) -> None:
        self.arms = arms
        """request_key → arm (column of the comparison), from the sweep's plan."""
        self.refresh_s = refresh_s
        self.counts: Counter[tuple[str, str]] = Counter()
        self.cached = 0
        self._bar: Any = None
        self._handle: Any = None
        self._shown = 0.0

    @classmethod
    def for_sweep(cls, sweep: Any, *, refresh_s: float = 1.0) -> LiveProgress:
        return cls({r.request_key: r.arm for r in sweep.plan()},
                   refresh_s=refresh_s)

    def table(self) -> pd.DataFrame:
        arms = sorted(set(self.arms.values()))
        rows = [{"model": arm, **{s: self.counts[(arm, s)]
                                  for s in ("succeeded", "failed", "stopped")}} for arm in arms]
        return pd.DataFrame(rows, columns=["model", "succeeded", "failed", "stopped"])

    def planned(self, sweep_id: str, planned: int, todo: int) -> None:
        from IPython.display import display
        from tqdm.auto import tqdm

        self.cached = planned - todo
        self._bar = tqdm(total=todo, desc=f"{sweep_id} ({self.cached} reused)", unit="req")
        self._handle = display(self.table(), display_id=True)

    def done(self, outcome: RequestOutcome) -> None:
        self.counts[(self.arms.get(outcome.request_key, "?"), outcome.status)] += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._handle is not None and time.monotonic() - self._shown >= self.refresh_s:
            self._shown = time.monotonic()
            self._handle.update(self.table())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._handle is not None:
            self._handle.update(self.table())
