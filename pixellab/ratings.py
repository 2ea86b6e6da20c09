"""Pairwise human ratings: which of two outputs for the same product is better.

Metrics say whether an output is valid; only a person says which of two valid cut-outs a shopper
would rather see. The review notebook (``notebooks/30_review.ipynb``) shows two outputs of the
same product and task side by side and asks for a vote: left better, right better, or a tie.
This module chooses the pairs and reads and writes the ``ratings`` table; the widgets live in
:mod:`pixellab.review`, so this module never needs ipywidgets.

Why pairs and not 1-to-5 stars: people agree far more on "which of these two" than on absolute
grades, and pairwise votes turn into a ranking of arms with a Bradley-Terry model, where a tie
counts as half a win for each side (that aggregation is computed elsewhere, from this table).

Why the sides are shuffled: people favour one side (usually the left) when unsure. If one arm
were always on the left, that habit would read as a quality difference. Each pair's sides are
drawn from a hash of the seed and the pair, so they are random across pairs yet the same every
time the notebook runs, and a rater who comes back later sees the remaining pairs unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from pixellab.errors import ConfigError
from pixellab.ledger import Ledger, queries

WINNERS = ("a", "b", "tie")
"""``a``: the left output (``output_a``) is better; ``b``: the right one; ``tie``: no difference
worth a vote (Bradley-Terry counts it as half a win for each side)."""

_SAME_REQUEST = ("prompt_id", "prompt_hash", "seed")
"""Columns that, where the frame has them, must match too: two arms are only compared on the same
prompt and seed (:func:`pixellab.evidence.scored_requests` carries ``prompt_id`` and ``seed``)."""


class Shown(NamedTuple):
    """One side of a pair: which arm made it, and the output's address in the store."""

    arm: str
    output_sha256: str
    media_type: str


@dataclass(frozen=True)
class Pair:
    """Two outputs of the same task for the same product, made by two different arms.

    ``left`` is stored as ``output_a`` and ``right`` as ``output_b``, so a vote of ``a`` always
    means "the one that was shown on the left".
    """

    task: str
    category: str
    product_id: str
    sweep_id: str
    left: Shown
    right: Shown

    @property
    def outputs(self) -> frozenset[str]:
        """The two output hashes, unordered: a pair rated either way round is the same pair."""
        return frozenset((self.left.output_sha256, self.right.output_sha256))

    def preferred_arm(self, winner: str) -> str:
        """The arm a vote favours, or ``tie``: what the status line reveals after a vote."""
        return {"a": self.left.arm, "b": self.right.arm}.get(winner, "tie")


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def pairs_to_rate(frame: pd.DataFrame, *, rater: str, ledger: Ledger | None = None,
                  seed: int = 0, task: str | None = None,
                  category: str | None = None) -> list[Pair]:
    """The pairs ``rater`` still has to judge, in a shuffled but reproducible order.

    ``frame`` is :func:`pixellab.evidence.scored_requests`. For each task and product (and prompt
    and seed, where the frame has those columns) every two arms with a succeeded output make one
    pair; an arm with several outputs there is represented by its first (by sweep and request).
    A pair whose two outputs are the same bytes is dropped: there is nothing to judge. With
    ``ledger``, pairs this rater already rated, in either order, are left out, so a rater can stop
    and carry on later. Sides and order depend only on ``seed`` and the pair (see the module
    docstring for why they are shuffled at all).
    """
    if frame.empty:
        return []
    ok = frame[(frame["status"] == "succeeded") & frame["output_sha256"].notna()]
    if task:
        ok = ok[ok["task"] == task]
    if category:
        ok = ok[ok["category"] == category]
    ok = ok.sort_values(["sweep_id", "request_key"], kind="stable")
    done = rated_outputs(ledger, rater) if ledger is not None else set()
    keys = ["task", "product_id", *[c for c in _SAME_REQUEST if c in ok.columns]]
    ranked: list[tuple[str, Pair]] = []
    for _, group in ok.groupby(keys, dropna=False, sort=True):
        first = group.drop_duplicates("arm")
        rows = sorted(first.to_dict("records"), key=lambda r: str(r["arm"]))
        for one, two in itertools.combinations(rows, 2):
            if one["output_sha256"] == two["output_sha256"]:
                continue
            pair_task = str(one["task"])
            hashes = sorted((str(one["output_sha256"]), str(two["output_sha256"])))
            if (pair_task, frozenset(hashes)) in done:
                continue
            draw = _digest(seed, pair_task, one["product_id"], *hashes)
            left, right = (one, two) if int(draw[-1], 16) % 2 == 0 else (two, one)
            ranked.append((draw, Pair(
                task=pair_task, category=str(one["category"]),
                product_id=str(one["product_id"]), sweep_id=str(left["sweep_id"]),
                left=Shown(str(left["arm"]), str(left["output_sha256"]),
                           str(left["media_type"])),
                right=Shown(str(right["arm"]), str(right["output_sha256"]),
                            str(right["media_type"])))))
    ranked.sort(key=lambda item: item[0])
    return [pair for _, pair in ranked]


def rated_outputs(ledger: Ledger, rater: str) -> set[tuple[str, frozenset[str]]]:
    """(task, {output_a, output_b}) of every pair ``rater`` has rated: the order is ignored."""
    frame = queries.rated_pairs(ledger, rater.strip())
    return {(str(t), frozenset((str(a), str(b))))
            for t, a, b in frame.itertuples(index=False)}


def record(ledger: Ledger, pair: Pair, winner: str, rater: str,
           comment: str | None = None) -> str:
    """Store one vote at once, in its own short transaction, and return its ``rating_id``.

    Written immediately rather than at the end of a session: a kernel crash or a closed laptop
    loses nothing, and the ledger's file lock is held for milliseconds, so a sweep can keep
    writing meanwhile.
    """
    if winner not in WINNERS:
        raise ConfigError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}",
                          key="winner")
    if not isinstance(rater, str) or not rater.strip():
        raise ConfigError("say who is rating: a rater name is required", key="rater")
    rating_id = uuid.uuid4().hex
    ledger.write([Ledger.record_rating(
        rating_id, rater.strip(), task=pair.task, category=pair.category,
        product_id=pair.product_id, output_a=pair.left.output_sha256,
        output_b=pair.right.output_sha256, arm_a=pair.left.arm, arm_b=pair.right.arm,
        winner=winner, sweep_id=pair.sweep_id, comment=comment)])
    return rating_id


def delete(ledger: Ledger, rating_id: str) -> None:
    """Remove one rating: the undo of :func:`record` (a mistyped key is not a judgement)."""
    ledger.write([Ledger.delete_rating(rating_id)])


def ratings_table(ledger: Ledger, sweep_ids: Sequence[str] | None = None, *,
                  rater: str | None = None) -> pd.DataFrame:
    """Stored ratings, oldest first, optionally of some sweeps and one rater, with
    ``preferred``: the arm the vote favoured, or ``tie``."""
    frame = queries.ratings(ledger, sweep_ids, rater=rater.strip() if rater else None)
    return frame


def count(ledger: Ledger, rater: str) -> int:
    """How many ratings ``rater`` has stored, all sweeps together."""
    return queries.rating_count(ledger, rater.strip())
