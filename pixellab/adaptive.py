"""Adaptive sweeps: run products in rounds, stop paying for a model once it is clearly losing.

Evaluating costs money too: a sweep that runs every model on every product pays the same for a
model that is plainly worse after a dozen products as for the leaders. An adaptive sweep
(``adaptive: true``) runs the products in **looks**, and after each look compares the leader
(best mean composite among the models still running) with every other model on the products
both have, pooled over categories, by the same paired sign-flip test the decision uses:

* a model **significantly worse** than the leader at the look's level is **dropped**: it is not
  run on later products, and the drop (look, products, difference, p-value, threshold) is
  recorded in the ledger and shown in the report;
* the sweep **stops** when one model is left (the task is decided), when the products run out,
  or when the budget does.

Looking after every round and stopping early would inflate the error of a fixed-level test.
The levels are spent instead: look ``r`` tests at ``alpha / (r (r + 1))``, which sum to
``alpha`` over any number of looks, so the chance of ever dropping a model that is not worse is
at most ``alpha`` (an alpha-spending union bound: valid however the looks fall, conservative).
Looks grow geometrically (8, 12, 18, 27 … products) so few looks are spent on many products.

What it assumes: a model worse on the products of every category pooled is worth dropping in
each; a model worse overall but best in one category would be dropped too. Keep
``adaptive: false`` when categories are known to disagree.

The rule is pure (:func:`drops` on a scored-requests frame) so ``benchmarks/bench_decisions.py``
measures it on simulated pools with a known truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from pixellab.stats import Interval, paired_comparison

FIRST_LOOK = 8
"""Products in the first look: at its level (alpha / 2), the fewest a sign-flip test can
decide on is 7 (2 / 2^7 = 1.6 % < 2.5 %)."""

GROWTH = 1.5
"""Each look covers this many times the products of the one before."""

PAIR_ON = ("product_id", "prompt_id", "seed")


def look_sizes(total: int, *, first: int = FIRST_LOOK, growth: float = GROWTH) -> list[int]:
    """Cumulative products at each look, ending with ``total``."""
    if total <= 0:
        return []
    sizes: list[int] = []
    size = float(first)
    while not sizes or sizes[-1] < total:
        sizes.append(min(total, max(sizes[-1] + 1 if sizes else 1, math.ceil(size))))
        size *= growth
    return sizes


def looks(order: Sequence[str], *, first: int = FIRST_LOOK,
          growth: float = GROWTH) -> Iterator[tuple[int, list[str]]]:
    """``(look, the products it adds)`` for products in ``order`` (see :func:`interleaved`):
    each look runs only the products the looks before it did not."""
    done = 0
    for look, size in enumerate(look_sizes(len(order), first=first, growth=growth), start=1):
        yield look, list(order[done:size])
        done = size


def look_alpha(look: int, alpha: float) -> float:
    """The level look ``look`` (1, 2, …) tests at: ``alpha / (look (look + 1))``, which sums to
    ``alpha`` over every look."""
    if look < 1:
        raise ValueError(f"looks count from 1, not {look}")
    return alpha / (look * (look + 1))


def interleaved(products: pd.DataFrame) -> list[str]:
    """Product ids in the order looks take them: one from each category in turn (categories
    in first-appearance order, products in dataset order), so every look covers every
    category. ``products`` has columns ``product_id`` and ``category``."""
    queues: dict[str, list[str]] = {}
    for product_id, category in products[["product_id", "category"]].itertuples(index=False):
        queue = queues.setdefault(str(category), [])
        if product_id not in queue:
            queue.append(str(product_id))
    order: list[str] = []
    while any(queues.values()):
        for queue in queues.values():
            if queue:
                order.append(queue.pop(0))
    return order


@dataclass(frozen=True)
class Drop:
    """A model an adaptive sweep stopped running, and why."""

    arm: str
    look: int
    products: int
    """Products the comparison rests on."""
    leader: str
    difference: Interval
    """Leader − this arm, per product, with its t interval."""
    p_value: float
    threshold: float
    """The look's level the p-value was under."""

    @property
    def reason(self) -> str:
        return (f"significantly worse than {self.leader} after {self.products} products "
                f"(look {self.look}): {self.leader} leads by {self.difference}, sign-flip "
                f"p = {self.p_value:.3g} ≤ {self.threshold:.3g}")


def drops(frame: pd.DataFrame, alive: Iterable[str], look: int, *, alpha: float = 0.05,
          seed: int = 0) -> list[Drop]:
    """The models to drop after look ``look``: each still-running model (``alive``) whose
    paired difference from the leader, over the products both have in ``frame`` (shaped like
    :func:`pixellab.evidence.scored_requests`, every category pooled), is significant at
    :func:`look_alpha`. The leader is the best mean composite among them; a model without
    scores is left running (its evidence is missing, not bad)."""
    alive = list(alive)
    scored = frame[frame["arm"].isin(alive) & frame["score"].notna()]
    means = scored.groupby("arm")["score"].mean()
    if len(means) < 2:
        return []
    leader = str(means.idxmax())
    threshold = look_alpha(look, alpha)
    found = []
    for arm in sorted(str(a) for a in means.index if a != leader):
        comparison = paired_comparison(scored, a=leader, b=arm, pair_on=PAIR_ON,
                                       level=1 - alpha, seed=seed)
        if comparison.p_value <= threshold and comparison.difference.estimate > 0:
            found.append(Drop(arm=arm, look=look, products=comparison.n, leader=leader,
                              difference=comparison.difference, p_value=comparison.p_value,
                              threshold=threshold))
    return found


def remaining(arms: Sequence[str], dropped: Iterable[Drop | str]) -> list[str]:
    """``arms`` without the dropped ones, in order."""
    gone = {d.arm if isinstance(d, Drop) else d for d in dropped}
    return [a for a in arms if a not in gone]
