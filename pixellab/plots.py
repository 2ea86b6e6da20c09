"""Static figures for the report (matplotlib, no pyplot state): they render in Jupyter and
export as PNG into the self-contained HTML, with no JavaScript to load on a phone."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from pixellab.evidence import pareto_front

FRONT = "#1b7f3b"
OTHER = "#8a8a8a"


def quality_cost_figure(table: pd.DataFrame, *, label: str = "arm",
                        cost: str = "usd_per_request", quality: str = "mean_score",
                        metric_names: dict[str, str] | None = None,
                        width_in: float = 4.2) -> Figure:
    """One panel per task: each model's mean quality against its cost per request, the Pareto
    front (no other model is both cheaper and better) filled and joined by a line.

    ``table`` is a per task × model summary such as :func:`pixellab.evidence.task_summary` with
    ``usd_per_request`` added; rows without a quality value are left out and counted in the
    panel's title, so a missing metric is never plotted as zero.
    """
    tasks = sorted(table["task"].unique())
    figure = Figure(figsize=(width_in * max(1, len(tasks)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        rows = table[table["task"] == task].reset_index(drop=True)
        present = rows[rows[quality].notna()].reset_index(drop=True)
        on_front = pareto_front(present, cost=cost, quality=quality)
        for (_, row), best in zip(present.iterrows(), on_front, strict=True):
            ax.scatter(row[cost], row[quality], s=60, zorder=3,
                       facecolors=FRONT if best else "none", edgecolors=FRONT if best else OTHER)
            ax.annotate(str(row[label]), (row[cost], row[quality]), textcoords="offset points",
                        xytext=(5, 4), fontsize=7, color="#222" if best else "#666")
        front = present[on_front.to_numpy()].sort_values(cost)
        if len(front) > 1:
            ax.plot(front[cost], front[quality], color=FRONT, linewidth=1, zorder=2,
                    drawstyle="steps-post")
        missing = len(rows) - len(present)
        title = task + (f" ({missing} without a score)" if missing else "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("USD per request" + (" (all free)" if _all_zero(present[cost]) else ""),
                      fontsize=8)
        ax.set_ylabel((metric_names or {}).get(task, quality), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.35, y=0.15)
        if _all_zero(present[cost]):
            ax.set_xlim(-0.004, 0.05)  # free models: put them at the left, not mid-axis
        elif len(present):
            ax.set_xlim(left=-0.05 * float(present[cost].max()))
        ax.grid(alpha=0.3)
    return figure


def png(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (e.g. for ``IPython.display.Image``): static, so the exported
    HTML needs no plotting script, and independent of the notebook's matplotlib backend."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _all_zero(values: pd.Series) -> bool:
    return bool(len(values)) and all(not math.isnan(v) and v == 0 for v in values)
