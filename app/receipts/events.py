"""`receipt.updated`: tells an order's platform when the receipt it linked its buyer to reached a new step, so it
can tell the buyer. Called where those steps happen (money into the pool, an allocation run, a shipment event),
in the same transaction; it costs one query when no platform subscribes.

Steps the platform causes or can see itself are not announced on their own: a refund (its own event) and the
end of the return window (a date it is told when the link is made). The next change carries them, as every event
says the receipt's current step."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.events.outbox import EventDraft, emit_many
from app.events.repository import subscribers
from app.receipts import repository
from app.receipts.service import step_of

EVENT = "receipt.updated"


async def announce(
    db: asyncpg.Connection,
    *,
    now: datetime | None,
    order_ids: Sequence[str] = (),
    package_ids: Sequence[str] = (),
) -> None:
    """`receipt.updated` for each linked order among these (or whose money is in these packages) whose step
    changed since it was last announced, to its platform's endpoints (and the programme's). `now`: when it happened (None: the
    transaction's time)."""
    listening = await subscribers(db, EVENT)
    if not (listening.platform_ids or listening.programme) or not (order_ids or package_ids):
        return
    linked = await repository.orders_with_links(db, order_ids) if order_ids else []
    if package_ids:
        linked += await repository.orders_in_packages(db, package_ids)
    if not linked:
        return
    occurred_at = now or await db.fetchval("SELECT now()")
    drafts: list[EventDraft] = []
    changed: list[tuple[str, str]] = []
    for facts in await repository.linked_facts(db, sorted(set(linked))):
        if facts["platform_id"] not in listening.platform_ids and not listening.programme:
            continue
        step = step_of(facts, now=occurred_at, window=None)
        if step == facts["notified_step"]:
            continue
        changed.append((facts["link_id"], step))
        data = {"order_id": facts["external_id"], "step": step, "previous_step": facts["notified_step"]}
        drafts.append(EventDraft(EVENT, data, occurred_at, platform_id=facts["platform_id"]))
    await repository.set_notified_steps(db, changed)
    await emit_many(db, drafts)
