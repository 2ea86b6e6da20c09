"""Budgets: reserve the estimated cost before a call, settle the actual after.

Check-then-spend races when calls run concurrently (every call passes the check before any is
recorded). Reserving an upper-bound estimate first closes that race: ``committed + reserved`` never
exceeds the cap, so the sweep stops *before* it would overspend, not after.

A budget caps one run; with a spend policy (:mod:`pixellab.spend`) each paid reservation is also
held against the ledger-wide daily and monthly caps, across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pixellab.errors import BudgetExceeded
from pixellab.ledger import money
from pixellab.spend import SpendGovernor


@dataclass(frozen=True)
class Reservation:
    amount: Decimal
    credits: float = 0.0
    booked: str | None = None
    """The spend book's reservation, when a spend policy holds this call too."""


class Budget:
    """A cap in USD (``None`` = unlimited) with live reservations.

    ``already_spent_usd`` carries what earlier runs of the same sweep spent, so a resumed sweep
    respects the cap across runs.
    """

    def __init__(self, cap_usd: float | None, *, already_spent_usd: float = 0.0,
                 governor: SpendGovernor | None = None) -> None:
        self.governor = governor
        self.cap = money(cap_usd)
        self.committed = money(already_spent_usd) or Decimal(0)
        self.reserved = Decimal(0)

    def reserve(self, estimate_usd: float, estimate_credits: float = 0.0, *,
                model_id: str | None = None) -> Reservation:
        """Hold the estimate, or :class:`BudgetExceeded` (this budget's cap, or a cap of the
        spend policy) with nothing held."""
        amount = money(estimate_usd) or Decimal(0)
        if self.cap is not None and self.committed + self.reserved + amount > self.cap:
            raise BudgetExceeded(
                f"budget ${self.cap} would be exceeded: spent ${self.committed}, "
                f"in flight ${self.reserved}, next call ${amount}",
                cap_usd=float(self.cap), committed_usd=float(self.committed),
                reserved_usd=float(self.reserved), requested_usd=float(amount))
        booked = None
        if self.governor is not None and (amount > 0 or estimate_credits > 0):
            booked = self.governor.reserve(float(amount), estimate_credits, model_id=model_id)
        self.reserved += amount
        return Reservation(amount, estimate_credits, booked)

    def settle(self, reservation: Reservation, actual_usd: float,
               actual_credits: float | None = None) -> None:
        """Replace the reservation by what the call really cost (may exceed the estimate);
        ``actual_credits`` defaults to the estimate's when the call cost anything."""
        self.reserved -= reservation.amount
        self.committed += money(actual_usd) or Decimal(0)
        if reservation.booked is not None and self.governor is not None:
            credits = actual_credits if actual_credits is not None else (
                reservation.credits if actual_usd > 0 else 0.0)
            self.governor.settle(reservation.booked, actual_usd, credits)

    def release(self, reservation: Reservation) -> None:
        """The call cost nothing (never submitted): give the reservation back."""
        self.settle(reservation, 0.0, 0.0)

    @property
    def remaining(self) -> Decimal | None:
        return None if self.cap is None else self.cap - self.committed - self.reserved
