"""What every scorer returns, and what it is given.

Scorers measure; they never call providers and never write the ledger. A metric that could not be
computed is a :class:`Score` with ``value=None`` and a ``missing_reason`` — never a zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Score:
    metric: str
    value: float | None
    version: str
    details: dict[str, Any] = field(default_factory=dict)
    missing_reason: str | None = None

    @classmethod
    def missing(cls, metric: str, version: str, reason: str) -> Score:
        return cls(metric=metric, value=None, version=version, missing_reason=reason)


@dataclass
class ScoreContext:
    """Everything a scorer may look at for one output.

    ``output`` is the decoded output image (RGB or RGBA). ``source`` is the product's input image,
    ``mask`` its ground-truth foreground mask (L, 255 = product) and ``reference`` its clean
    reference photo, each ``None`` when the dataset has none.
    """

    task: str
    output: Image.Image
    source: Image.Image | None = None
    mask: Image.Image | None = None
    reference: Image.Image | None = None
    marketplaces: Mapping[str, Any] | None = None
    """The marketplace profiles ``compliance_<profile>`` checks against (the workbench's);
    None: the package's own."""
    frames: tuple[np.ndarray, ...] | None = None
    """A video output's sampled frames (RGB ``uint8``, in order); ``output`` is then the first
    frame. None for images."""
    label_text: str | None = None
    """The text printed on the product, as the dataset states it (manifest column
    ``label_text``): ground truth for the label-text metric; None when the dataset says none."""
    video: Mapping[str, Any] | None = None
    """A video output's measured facts (``duration_s``, ``fps``, ``width``, ``height``,
    ``frame_count``, ``sampled_indices``…), for metrics and profiles that need them."""

    def output_array(self) -> np.ndarray:
        return np.asarray(self.output)
