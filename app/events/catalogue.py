"""Every event type the service sends, and whose endpoints may subscribe to it.

Adding an event: a line here, and one `emit(...)` (or an `EventDraft` in a batch) where the change happens."""

from __future__ import annotations

from typing import Literal

Audience = Literal["platform", "merchant", "programme"]

_EVERYONE: frozenset[Audience] = frozenset({"platform", "merchant", "programme"})
_MERCHANTS: frozenset[Audience] = frozenset({"merchant", "programme"})

EVENT_TYPES: dict[str, frozenset[Audience]] = {
    "donation.recorded": _EVERYONE,  # an order.paid applied: the order's donation
    "donation.reversed": _EVERYONE,  # a refund or cancellation reversed part of it
    # A statement is the merchant's invoice from the programme (amount owed, card declines): its platform is not
    # a party to it, and sees the effect on each order's stage through `GET /v1/orders/{id}`.
    "statement.paid": _MERCHANTS,
    "statement.payment_failed": _MERCHANTS,
    "package.allocated": _MERCHANTS,  # to the merchants whose orders funded it, with their share
    "package.delivered": _MERCHANTS,
    "shipment.status_changed": frozenset({"programme"}),
    # A buyer's receipt link reached a new step (in the pool, packed, shipped, delivered, confirmed): to the
    # order's platform, which made the link and can tell its buyer (and to the programme's, which sees all).
    "receipt.updated": frozenset({"platform", "programme"}),
}


def allowed_for(audience: Audience) -> list[str]:
    return sorted(name for name, audiences in EVENT_TYPES.items() if audience in audiences)
