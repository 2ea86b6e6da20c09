"""The composite score: one number per request that ranks models for a task.

Why one number: a decision needs an order, and the metrics a task gets pull in different
directions (a packshot can be compliant yet lose the product; a cut-out can keep its colours yet
drop half the product). How the metrics combine is data, per task, in ``scoring/tasks.toml``
(``[<task>.composite]``), with a version: every decision records the composite's id
(``packshot@1``) and a fingerprint of its definition, so two decisions made under different
weights are never mistaken for one another.

The rule, stated so it can be checked:

1. **Gates first.** A request whose model failed (no output, an invalid output, a refusal, a
   timeout) or whose output fails a gate (``gates`` in tasks.toml, e.g. Amazon compliance for
   packshots) scores **0**: the shopper gets nothing usable from that model alone. A request that
   never reached its model through no fault of the model (missing credentials, a budget stop, an
   unusable input photo) has **no** score. So does an output whose gate could not be measured.
2. **Then quality.** Each term maps its metric linearly from ``worst`` (0) to ``best`` (1),
   clipped to [0, 1]; ``worst > best`` expresses lower-is-better (ΔE). The composite is the
   weighted mean of the terms.
3. **Missing is missing.** A term no output of the task has (CLIP without weights, PSNR without
   clean references) is dropped for the whole task, and the weights renormalise over the rest;
   the decision lists the terms it used. An output that lacks a term other outputs have gets no
   composite at all, rather than a number computed on different terms, unless the term is
   ``optional`` (undefined for a reason another term already scores). With no measurable term,
   a passing output scores 1 (the gate is the whole score).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

NOT_THE_MODELS_FAULT = frozenset({"MissingCredentials", "MissingDependency", "BudgetExceeded",
                                  "InvalidInputImage", "ConfigError"})
"""Error classes of requests the model never had a fair chance at: no composite, not zero."""


class CompositeTerm(BaseModel):
    """One metric's share of the composite and the values that map to 0 and to 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    weight: float = Field(gt=0)
    worst: float
    best: float
    optional: bool = False
    """An output that lacks this term is scored on the others (weights renormalised), where
    the metric is undefined for a reason another term already punishes: ΔE inside the product
    has no value when a cut-out kept none of the product, which IoU scores 0."""

    @model_validator(mode="after")
    def _distinct_ends(self) -> CompositeTerm:
        if self.worst == self.best:
            raise ValueError("worst and best must differ")
        return self

    def normalise(self, value: float) -> float:
        """``value`` on the 0-1 scale (NaN stays NaN; +inf PSNR is the best)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.nan
        share = (value - self.worst) / (self.best - self.worst)
        return float(min(1.0, max(0.0, share)))


class Composite(BaseModel):
    """How one task's metrics combine into its composite score (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    terms: dict[str, CompositeTerm] = Field(default_factory=dict)
    note: str = ""
    variant: str = ""
    """Set on a composite derived from the hand-written one (``fitted``: weights fitted to
    people's votes, see :mod:`pixellab.scoring.fitted`); its id reads ``<task>@<v>+fitted``."""

    def identifier(self, task: str) -> str:
        return f"{task}@{self.version}" + (f"+{self.variant}" if self.variant else "")

    def fingerprint(self, gates: dict[str, float]) -> str:
        """12 hex of the definition (terms and gates): changes whenever a weight does."""
        body = {"version": self.version, "gates": gates,
                "terms": {k: v.model_dump() for k, v in sorted(self.terms.items())},
                **({"variant": self.variant} if self.variant else {})}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CompositeUsed:
    """What a table of composites was computed with: recorded with every decision."""

    task: str
    id: str
    """``<task>@<version>``, ``+fitted`` when the weights were fitted to people's votes"""
    fingerprint: str
    terms: tuple[str, ...]
    """Terms that had values and so entered the score, in the order of the definition."""
    dropped: tuple[str, ...]
    """Terms no output of the task had (e.g. CLIP without weights)."""

    def describe(self) -> str:
        used = ", ".join(self.terms) or "gates only"
        text = f"{self.id} ({self.fingerprint}): {used}"
        return text + (f"; not measured: {', '.join(self.dropped)}" if self.dropped else "")


def composite_scores(frame: pd.DataFrame, task: str, composite: Composite | None,
                     gates: dict[str, float]) -> tuple[pd.Series, CompositeUsed]:
    """The composite of every row of ``frame`` (requests of one task, with one column per
    metric and ``status``, ``passed`` and ``error_class``), and what it was computed with."""
    index = frame.index
    terms = dict(composite.terms) if composite is not None else {}
    fingerprint = composite.fingerprint(gates) if composite is not None else "none"
    usable = [t for t in terms if t in frame.columns and frame[t].notna().any()]
    dropped = tuple(t for t in terms if t not in usable)
    identifier = composite.identifier(task) if composite is not None else f"{task}@0"
    used = CompositeUsed(task=task, id=identifier, fingerprint=fingerprint,
                         terms=tuple(usable), dropped=dropped)
    if frame.empty:
        return pd.Series(dtype="float64", index=index), used
    quality = np.ones(len(frame))
    if usable:
        weighted = np.zeros(len(frame))
        weights = np.zeros(len(frame))
        for term in usable:
            values = frame[term].astype("float64").to_numpy()
            mapped = np.array([terms[term].normalise(v) for v in values])
            if terms[term].optional:
                present = ~np.isnan(mapped)
                weighted = weighted + np.where(present, terms[term].weight * mapped, 0.0)
                weights = weights + np.where(present, terms[term].weight, 0.0)
            else:  # NaN propagates: a missing required term leaves no composite
                weighted = weighted + terms[term].weight * mapped
                weights = weights + terms[term].weight
        with np.errstate(invalid="ignore", divide="ignore"):
            quality = np.where(weights > 0, weighted / np.where(weights > 0, weights, 1.0),
                               math.nan)
    scores = np.full(len(frame), math.nan)
    status = frame["status"].to_numpy()
    passed = frame["passed"].to_numpy(dtype=bool)
    error_class = (frame["error_class"] if "error_class" in frame.columns
                   else pd.Series([None] * len(frame), index=index)).to_numpy()
    gate_known = _gates_measured(frame, gates)
    for i in range(len(frame)):
        if status[i] == "succeeded":
            if passed[i]:
                scores[i] = quality[i]
            elif gate_known[i]:
                scores[i] = 0.0  # a measured gate failure: nothing usable
        elif status[i] == "failed" and error_class[i] not in NOT_THE_MODELS_FAULT:
            scores[i] = 0.0
    return pd.Series(scores, index=index, dtype="float64"), used


def _gates_measured(frame: pd.DataFrame, gates: dict[str, float]) -> np.ndarray:
    """True where every gate metric has a value: an unmeasured gate is not a failed one."""
    known = np.ones(len(frame), dtype=bool)
    for metric in gates:
        if metric not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        known &= frame[metric].notna().to_numpy()
    return known
