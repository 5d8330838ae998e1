"""Emitting events: in the transaction of the change, one statement for a whole batch.

    await emit(db, "statement.paid", {"statement_id": …}, merchant_id=…)

An event goes to every enabled endpoint subscribed to its type that belongs to its platform, its merchant, or the
programme. The event, one delivery per endpoint and one job per delivery are written with the change, so they
exist exactly when the change commits; an event nobody subscribes to writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.core.ids import new_id
from app.core.jobs import enqueue
from app.events import repository
from app.events.catalogue import EVENT_TYPES

DELIVER_TASK = "events.deliver"


@dataclass(frozen=True, slots=True)
class EventDraft:
    type: str
    data: dict[str, Any]
    occurred_at: datetime
    merchant_id: str | None = None
    platform_id: str | None = None


def job_payload(delivery_id: str, schedule: int, *, replay: bool = False) -> bytes:
    return f"{delivery_id}:{schedule}:{'replay' if replay else 'scheduled'}".encode()


def job_dedupe_key(delivery_id: str, schedule: int) -> str:
    return f"{delivery_id}:{schedule}"


def drafted(events: Sequence[EventDraft]) -> list[repository.NewEvent]:
    """The rows to write for these events (for a caller writing them in a statement of its own)."""
    for event in events:
        assert event.type in EVENT_TYPES, (
            f"unknown event type {event.type}: add it to app/events/catalogue.py"
        )
    return [
        repository.NewEvent(
            id=new_id("evt"),
            type=e.type,
            occurred_at=e.occurred_at,
            data_json=orjson.dumps(e.data, option=orjson.OPT_SORT_KEYS).decode(),
            platform_id=e.platform_id,
            merchant_id=e.merchant_id,
        )
        for e in events
    ]


async def enqueue_deliveries(db: asyncpg.Connection, delivery_ids: Sequence[str]) -> None:
    """One job per new delivery, in the same transaction (nothing when nobody subscribed)."""
    if delivery_ids:
        await enqueue(
            db,
            DELIVER_TASK,
            [job_payload(d, 1) for d in delivery_ids],
            dedupe_keys=[job_dedupe_key(d, 1) for d in delivery_ids],
        )


async def emit_many(db: asyncpg.Connection, events: Sequence[EventDraft]) -> None:
    if not events:
        return
    created = await repository.insert_events_for_subscribers(db, drafted(events))
    await enqueue_deliveries(db, created)


async def emit(
    db: asyncpg.Connection,
    type: str,
    data: dict[str, Any],
    *,
    occurred_at: datetime,
    merchant_id: str | None = None,
    platform_id: str | None = None,
) -> None:
    await emit_many(db, [EventDraft(type, data, occurred_at, merchant_id, platform_id)])
