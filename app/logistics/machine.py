"""The shipment state machine (SPEC §8) as data, and the one function that decides what an event does.

    planned ─▶ handed_over ─▶ in_transit ⇄ customs_hold
                                  │
                                  ▼
                          out_for_delivery ─▶ delivered ─▶ receipt_confirmed ■
                              ▲      │
                              │      ▼
                          delivery_failed ─▶ returning ─▶ returned ■
    planned ─▶ cancelled ■ (the programme only)

■ final: nothing leaves it. Everything here is pure, so the table is tested on its own and the audit builds its
SQL from the same mappings (a rule written once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "planned": ("handed_over", "cancelled"),
    "handed_over": ("in_transit",),
    "in_transit": ("customs_hold", "out_for_delivery"),
    "customs_hold": ("in_transit",),
    "out_for_delivery": ("delivered", "delivery_failed"),
    "delivery_failed": ("out_for_delivery", "returning"),
    "returning": ("returned",),
    "delivered": ("receipt_confirmed",),
    "receipt_confirmed": (),
    "returned": (),
    "cancelled": (),
}
FINAL = frozenset(status for status, following in TRANSITIONS.items() if not following)
# What an event may report: every status but the first (planned is where allocation runs start shipments).
POSTABLE = tuple(status for status in TRANSITIONS if status != "planned")
# Only the programme (admin) cancels, and only a shipment that has not left.
PROGRAMME_ONLY = frozenset({"cancelled"})
# Statuses a carrier reports again and again while the boxes move (another scan, another place): the same status
# once more is kept in history as a tracking update. `delivered` is not among them: its proof is given once.
REPEATABLE = frozenset(
    {"handed_over", "in_transit", "customs_hold", "out_for_delivery", "delivery_failed", "returning"}
)

# Where the boxes of a shipment in each status are: the per-student record's status (`allocations.status`).
# `receipt_confirmed` leaves each box at its own outcome.
OUTCOMES = ("accepted", "damaged", "missing")
ALLOCATION_STATUS: dict[str, tuple[str, ...]] = {
    "planned": ("allocated",),
    "handed_over": ("shipped",),
    "in_transit": ("shipped",),
    "customs_hold": ("shipped",),
    "out_for_delivery": ("shipped",),
    "delivery_failed": ("shipped",),
    "returning": ("shipped",),
    "delivered": ("delivered",),
    "receipt_confirmed": OUTCOMES,
    "returned": ("returned",),
    "cancelled": ("cancelled",),
}
# Where a package's money is, by the package's status (`GET /v1/funds`, the order trail, the audit):
# in transit until the school's receipt, then delivered or written off; back in stock; or, for a box cancelled
# before it left, released back into the pool.
PACKAGE_STAGE: dict[str, str] = {
    "allocated": "in_transit",
    "shipped": "in_transit",
    "delivered": "in_transit",
    "accepted": "delivered",
    "damaged": "written_off",
    "missing": "written_off",
    "in_stock": "in_stock",
    "cancelled": "released",
}
# A shipment event that moves boxes from one allocation status to the next (the rest change only the shipment).
BOX_STATUS_ON: dict[str, str] = {"handed_over": "shipped", "delivered": "delivered", "returned": "returned"}


def allowed_next(current: str, *, programme: bool) -> list[str]:
    """The statuses the caller may post next, in the table's order."""
    return [s for s in TRANSITIONS[current] if programme or s not in PROGRAMME_ONLY]


Result = Literal["applied", "recorded"]
Reason = Literal["older_than_current_status", "repeats_current_status"]


@dataclass(frozen=True, slots=True)
class Decision:
    result: Result
    reason: Reason | None = None


class IllegalTransition(Exception):
    """The machine does not allow this event now (the caller gets 409 naming the status and what may follow)."""

    def __init__(self, current: str, requested: str, allowed: list[str]) -> None:
        super().__init__(f"{current} -> {requested}")
        self.current, self.requested, self.allowed = current, requested, allowed


def decide(
    current: str, current_since: datetime, status: str, occurred_at: datetime, *, programme: bool
) -> Decision:
    """What an event reporting `status` at `occurred_at` does to a shipment that is `current` since
    `current_since` (the `occurred_at` of the event that set it).

    - Older than the current status (it happened before the event that set it): kept in history, changes
      nothing — out-of-order delivery never moves a shipment back, and never out of a final state. A shipment
      still `planned` has no such event: nothing is older than it.
    - The current status again, for a status a carrier repeats (a scan in another place): kept, changes nothing.
    - A transition the table allows: applied.
    - Anything else: `IllegalTransition`. Cancelling is decided on the current status alone (it is the
      programme's decision, not a report of something that happened): only a `planned` shipment can be."""
    if status not in PROGRAMME_ONLY:
        if current != "planned" and occurred_at < current_since:
            return Decision("recorded", "older_than_current_status")
        if status == current and status in REPEATABLE:
            return Decision("recorded", "repeats_current_status")
    if status in allowed_next(current, programme=programme):
        return Decision("applied")
    raise IllegalTransition(current, status, allowed_next(current, programme=programme))
