"""What an order webhook delivery came to, and the HTTP answer that says so (stored, so a redelivery of the
same webhook id gets the same answer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.errors import PROBLEM_BASE


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A note for the anomaly list, which the operator and the sending platform read. `asked` and `applied`
    (minor units of `currency`) say how much an event asked for and how much of it took effect."""

    kind: str
    detail: str
    asked: int | None = None
    applied: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # applied | parked | duplicate | conflict | rejected
    http_status: int
    body: dict[str, Any]
    natural_key: str | None = None
    waiting_for: str | None = None
    anomaly: Anomaly | None = field(default=None, compare=False)
    # False: the delivery is not claimed in the inbox, so a corrected event under the same webhook id is
    # decided afresh (its answer is not stored for redelivery).
    kept: bool = True
    redelivered: bool = field(default=False, compare=False)  # the stored answer to a webhook id seen before

    @property
    def is_problem(self) -> bool:
        return self.http_status >= 400


def applied(natural_key: str, *, anomaly: Anomaly | None = None) -> Outcome:
    return Outcome("applied", 200, {"status": "applied"}, natural_key, anomaly=anomaly)


def duplicate(natural_key: str) -> Outcome:
    return Outcome("duplicate", 200, {"status": "duplicate"}, natural_key)


def parked(natural_key: str, waiting_for: str) -> Outcome:
    return Outcome("parked", 202, {"status": "parked"}, natural_key, waiting_for)


def _problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}


def conflict(natural_key: str, detail: str) -> Outcome:
    body = _problem(409, "conflicting-event", "An event with this natural key had other content", detail)
    return Outcome("conflict", 409, body, natural_key, anomaly=Anomaly("conflicting-event", detail))


def rejected(
    detail: str,
    *,
    status: int = 422,
    kind: str = "invalid-event",
    natural_key: str | None = None,
    **extra: Any,
) -> Outcome:
    title = "The event body is malformed" if status == 400 else "The event is invalid"
    return Outcome("rejected", status, _problem(status, kind, title, detail, **extra), natural_key)


def placed_in_future(natural_key: str, placed_at: str, latest: str) -> Outcome:
    """An order placed later than the service accepts: refused, not kept (a corrected event may reuse its
    webhook id), and noted once as an anomaly."""
    detail = (
        f"placed_at {placed_at} is more than a day ahead of the service's clock (latest accepted: {latest})."
    )
    body = _problem(
        422,
        "placed-at-in-the-future",
        "The order is placed in the future",
        detail,
        errors=[{"loc": ["data", "placed_at"], "msg": "more than a day ahead", "type": "future"}],
    )
    return Outcome(
        "rejected", 422, body, natural_key, anomaly=Anomaly("placed-at-in-the-future", detail), kept=False
    )
