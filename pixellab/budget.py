"""Budgets: reserve the estimated cost before a call, settle the actual after.

Check-then-spend races when calls run concurrently (every call passes the check before any is
recorded). Reserving an upper-bound estimate first closes that race: ``committed + reserved`` never
exceeds the cap, so the sweep stops *before* it would overspend, not after.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pixellab.errors import BudgetExceeded
from pixellab.ledger import money


@dataclass(frozen=True)
class Reservation:
    amount: Decimal


class Budget:
    """A cap in USD (``None`` = unlimited) with live reservations.

    ``already_spent_usd`` carries what earlier runs of the same sweep spent, so a resumed sweep
    respects the cap across runs.
    """

    def __init__(self, cap_usd: float | None, *, already_spent_usd: float = 0.0) -> None:
        self.cap = money(cap_usd)
        self.committed = money(already_spent_usd) or Decimal(0)
        self.reserved = Decimal(0)

    def reserve(self, estimate_usd: float) -> Reservation:
        amount = money(estimate_usd) or Decimal(0)
        if self.cap is not None and self.committed + self.reserved + amount > self.cap:
            raise BudgetExceeded(
                f"budget ${self.cap} would be exceeded: spent ${self.committed}, "
                f"in flight ${self.reserved}, next call ${amount}",
                cap_usd=float(self.cap), committed_usd=float(self.committed),
                reserved_usd=float(self.reserved), requested_usd=float(amount))
        self.reserved += amount
        return Reservation(amount)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation by what the call really cost (may exceed the estimate)."""
        self.reserved -= reservation.amount
        self.committed += money(actual_usd) or Decimal(0)

    def release(self, reservation: Reservation) -> None:
        """The call cost nothing (never submitted): give the reservation back."""
        self.reserved -= reservation.amount

    @property
    def remaining(self) -> Decimal | None:
        return None if self.cap is None else self.cap - self.committed - self.reserved
