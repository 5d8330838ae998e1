"""Every events-out query. Emitting and sending run set-based statements on the raw asyncpg connection; the
endpoint API uses SQLAlchemy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.json_rows import rows_from, rows_param
from app.models import EventDelivery, EventDeliveryAttempt, WebhookEndpoint, WebhookEndpointSecret

# ---- emitting (raw asyncpg, one statement per batch) ----


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    occurred_at: datetime
    data_json: str
    platform_id: str | None
    merchant_id: str | None


def events_for_subscribers_cte(param: str) -> str:
    """CTEs writing, from the table `events_table` puts in the `jsonb` parameter `param` (`app.core.json_rows`), a
    delivery for every enabled endpoint subscribed to each event (its platform's, its merchant's, the
    programme's), and the events that have at least one; `event_deliveries_written` returns the new deliveries'
    ids. For statements that write other things too."""
    drafted = rows_from(
        f"{param} -> 'events'",
        "id text, type text, occurred_at timestamptz, data text, platform_id text, merchant_id text",
    )
    return f"""
        events_drafted AS ({drafted}
        ), event_deliveries_written AS (
            INSERT INTO event_deliveries (id, event_id, endpoint_id, status, attempts, schedule, next_attempt_at)
            SELECT 'dlv_' || substr(e.id, 5) || substr(w.id, 5), e.id, w.id, 'pending', 0, 1, e.occurred_at
            FROM events_drafted e JOIN webhook_endpoints w
              ON w.disabled_at IS NULL AND e.type = ANY (w.events)
             AND (w.platform_id = e.platform_id OR w.merchant_id = e.merchant_id
                  OR (w.platform_id IS NULL AND w.merchant_id IS NULL))
            RETURNING id, event_id
        ), events_written AS (
            INSERT INTO events (id, type, occurred_at, data, platform_id, merchant_id)
            SELECT e.id, e.type, e.occurred_at, e.data::jsonb, e.platform_id, e.merchant_id
            FROM events_drafted e WHERE e.id IN (SELECT event_id FROM event_deliveries_written)
        )"""  # noqa: S608 - only our own column lists are formatted in


def events_table(events: Sequence[NewEvent]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "events": [(e.id, e.type, e.occurred_at, e.data_json, e.platform_id, e.merchant_id) for e in events]
    }


_INSERT_EVENTS = (
    f"WITH {events_for_subscribers_cte('$1::jsonb')} SELECT id FROM event_deliveries_written ORDER BY id"  # noqa: S608
)


async def insert_events_for_subscribers(db: asyncpg.Connection, events: Sequence[NewEvent]) -> list[str]:
    """One statement: the events and their deliveries (see `events_for_subscribers_cte`). Returns the new
    deliveries' ids."""
    rows = await db.fetch(_INSERT_EVENTS, rows_param(events_table(events)))
    return [r["id"] for r in rows]


# ---- sending ----


async def claim_delivery(
    db: asyncpg.Connection, delivery_id: str, schedule: int, *, now: datetime, lease: timedelta
) -> asyncpg.Record | None:
    """Lease a pending delivery for one attempt, if the job's schedule is still the current one and nobody else
    holds it. Returns what sending needs."""
    return await db.fetchrow(
        """
        WITH claimed AS (
            UPDATE event_deliveries SET lease_until = $3::timestamptz + $4::interval
            WHERE id = $1 AND schedule = $2 AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3)
            RETURNING id, event_id, endpoint_id, attempts
        )
        SELECT c.id, c.attempts, c.endpoint_id, w.url, w.disabled_at, w.disabled_reason,
               e.type, e.occurred_at, e.data::text AS data
        FROM claimed c JOIN webhook_endpoints w ON w.id = c.endpoint_id JOIN events e ON e.id = c.event_id
        """,
        delivery_id,
        schedule,
        now,
        lease,
    )


async def valid_secrets(db: asyncpg.Connection, endpoint_id: str, *, now: datetime) -> list[str]:
    """Encrypted secrets an endpoint's messages are signed with now, newest first."""
    rows = await db.fetch(
        """SELECT secret_encrypted FROM webhook_endpoint_secrets
           WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC""",
        endpoint_id,
        now,
    )
    return [r["secret_encrypted"] for r in rows]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: str
    delivery_id: str
    schedule: int
    attempted_at: datetime
    trigger: str
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None


async def record_attempt(
    db: asyncpg.Connection,
    attempt: AttemptRecord,
    *,
    next_attempt_at: datetime | None,
    final_status: str | None,
) -> bool:
    """Record the attempt; move the delivery on if its schedule is still the one this attempt belonged to.
    Returns whether it was (a replay asked meanwhile leaves the delivery to the replay)."""
    await db.execute(
        """INSERT INTO event_delivery_attempts (id, delivery_id, attempted_at, trigger, succeeded, status_code,
                                               duration_ms, error, response_body, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        attempt.id,
        attempt.delivery_id,
        attempt.attempted_at,
        attempt.trigger,
        attempt.succeeded,
        attempt.status_code,
        attempt.duration_ms,
        attempt.error,
        attempt.response_body,
        next_attempt_at,
    )
    status = "delivered" if attempt.succeeded else (final_status or "pending")
    moved = await db.fetchval(
        """UPDATE event_deliveries
           SET attempts = attempts + 1, last_attempt_at = $3, lease_until = NULL, status = $4::text,
               next_attempt_at = $5, schedule = schedule + CASE WHEN $4::text = 'pending' THEN 1 ELSE 0 END,
               delivered_at = CASE WHEN $4::text = 'delivered' THEN $3 ELSE delivered_at END
           WHERE id = $1 AND schedule = $2
           RETURNING id""",
        attempt.delivery_id,
        attempt.schedule,
        attempt.attempted_at,
        status,
        next_attempt_at,
    )
    return moved is not None


async def endpoint_succeeded(db: asyncpg.Connection, endpoint_id: str) -> None:
    await db.execute(
        "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
        endpoint_id,
    )


async def endpoint_failed(
    db: asyncpg.Connection, endpoint_id: str, *, now: datetime, disable_after: timedelta, reason: str
) -> bool:
    """Note a failure; disable the endpoint if it has failed without a success for `disable_after`.
    Returns whether this disabled it."""
    disabled = await db.fetchval(
        """UPDATE webhook_endpoints
           SET failing_since = COALESCE(failing_since, $2),
               disabled_at = CASE WHEN disabled_at IS NULL AND $2 - COALESCE(failing_since, $2) >= $3
                                  THEN $2 ELSE disabled_at END,
               disabled_reason = CASE WHEN disabled_at IS NULL AND $2 - COALESCE(failing_since, $2) >= $3
                                      THEN $4::text ELSE disabled_reason END,
               updated_at = now()
           WHERE id = $1
           RETURNING disabled_at = $2""",
        endpoint_id,
        now,
        disable_after,
        reason,
    )
    return bool(disabled)


async def due_deliveries(db: asyncpg.Connection, *, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Pending deliveries whose next attempt is due and that nobody is sending right now."""
    return list(
        await db.fetch(
            """SELECT id, schedule FROM event_deliveries
               WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
               ORDER BY next_attempt_at LIMIT $2""",
            now,
            limit,
        )
    )


async def any_pending(session: AsyncSession, partition: str) -> bool:
    """Whether a month of deliveries (a partition, named by `app/core/partitions.py`) has one still pending."""
    query = f"SELECT EXISTS (SELECT 1 FROM {partition} WHERE status = 'pending')"  # noqa: S608 - a partition's name
    return bool((await session.execute(text(query))).scalar_one())


async def drop_month(session: AsyncSession, partition: str) -> None:
    """Drop a detached month of deliveries or attempts (a name from `app/core/partitions.py`)."""
    await session.execute(text(f"DROP TABLE {partition}"))


async def delete_events_without_deliveries(db: asyncpg.Connection, boundary_id: str, *, limit: int) -> int:
    """Events whose id sorts before `boundary_id` (ids are time-ordered) and which no delivery is left for, at
    most `limit`. Returns how many went."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM events WHERE id IN (
                   SELECT e.id FROM events e
                   WHERE e.id < $1 AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_id = e.id)
                   ORDER BY e.id LIMIT $2)
               RETURNING id
           )
           SELECT count(*) FROM gone""",
        boundary_id,
        limit,
    )
    return int(deleted or 0)


# ---- the endpoint API (SQLAlchemy) ----


async def get_endpoint(
    session: AsyncSession, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    endpoint: WebhookEndpoint | None = await session.scalar(query)
    return endpoint


async def list_endpoints(
    session: AsyncSession, *, platform_id: str | None, merchant_id: str | None, after: str | None, limit: int
) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id).limit(limit)
    if platform_id is not None:
        query = query.where(WebhookEndpoint.platform_id == platform_id)
    if merchant_id is not None:
        query = query.where(WebhookEndpoint.merchant_id == merchant_id)
    if after is not None:
        query = query.where(WebhookEndpoint.id > after)
    return list(await session.scalars(query))


async def failing_endpoints(session: AsyncSession, *, limit: int) -> list[WebhookEndpoint]:
    """Endpoints whose deliveries are failing, or that were disabled for it."""
    query = (
        select(WebhookEndpoint)
        .where(or_(WebhookEndpoint.failing_since.is_not(None), WebhookEndpoint.disabled_at.is_not(None)))
        .order_by(WebhookEndpoint.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> None:
    """The endpoint, its deliveries (by cascade) and their attempts (which carry no foreign key)."""
    deliveries = select(EventDelivery.id).where(EventDelivery.endpoint_id == endpoint_id)
    await session.execute(
        delete(EventDeliveryAttempt).where(EventDeliveryAttempt.delivery_id.in_(deliveries))
    )
    await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))


async def expire_current_secrets(session: AsyncSession, endpoint_id: str, *, at: datetime) -> None:
    await session.execute(
        update(WebhookEndpointSecret)
        .where(
            WebhookEndpointSecret.endpoint_id == endpoint_id,
            or_(WebhookEndpointSecret.expires_at.is_(None), WebhookEndpointSecret.expires_at > at),
        )
        .values(expires_at=at)
    )


async def list_deliveries(
    session: AsyncSession, endpoint_id: str, *, before: str | None, limit: int
) -> list[tuple[EventDelivery, str]]:
    """An endpoint's deliveries, newest first, with their event's type."""
    from app.models import Event

    query = (
        select(EventDelivery, Event.type)
        .join(Event, Event.id == EventDelivery.event_id)
        .where(EventDelivery.endpoint_id == endpoint_id)
        .order_by(EventDelivery.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(EventDelivery.id < before)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def attempts_of(
    session: AsyncSession, delivery_ids: Sequence[str], *, per_delivery: int
) -> dict[str, list[EventDeliveryAttempt]]:
    """The latest `per_delivery` attempts of each delivery, newest first."""
    if not delivery_ids:
        return {}
    ranked = (
        select(
            EventDeliveryAttempt,
            func.row_number()
            .over(partition_by=EventDeliveryAttempt.delivery_id, order_by=EventDeliveryAttempt.id.desc())
            .label("rank"),
        )
        .where(EventDeliveryAttempt.delivery_id.in_(delivery_ids))
        .subquery()
    )
    from sqlalchemy.orm import aliased

    attempt = aliased(EventDeliveryAttempt, ranked)
    rows = await session.scalars(
        select(attempt).where(ranked.c.rank <= per_delivery).order_by(attempt.delivery_id, attempt.id.desc())
    )
    found: dict[str, list[EventDeliveryAttempt]] = {}
    for row in rows:
        found.setdefault(row.delivery_id, []).append(row)
    return found


async def get_delivery(session: AsyncSession, endpoint_id: str, delivery_id: str) -> EventDelivery | None:
    delivery: EventDelivery | None = await session.scalar(
        select(EventDelivery)
        .where(EventDelivery.id == delivery_id, EventDelivery.endpoint_id == endpoint_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return delivery


async def event_type_of(session: AsyncSession, event_id: str) -> str:
    from app.models import Event

    found: str | None = await session.scalar(select(Event.type).where(Event.id == event_id))
    return found or ""


@dataclass(frozen=True, slots=True)
class Subscribers:
    """Who listens for an event type: the programme (admin endpoints), and which merchants and platforms."""

    programme: bool
    merchant_ids: frozenset[str]
    platform_ids: frozenset[str]

    @property
    def anyone(self) -> bool:
        return self.programme or bool(self.merchant_ids) or bool(self.platform_ids)


async def subscribers(db: asyncpg.Connection, event_type: str) -> Subscribers:
    """For events that would be many (one per package of a run): build only those someone will receive."""
    rows = await db.fetch(
        """SELECT DISTINCT merchant_id, platform_id FROM webhook_endpoints
           WHERE disabled_at IS NULL AND $1 = ANY(events)""",
        event_type,
    )
    return Subscribers(
        programme=any(r["merchant_id"] is None and r["platform_id"] is None for r in rows),
        merchant_ids=frozenset(r["merchant_id"] for r in rows if r["merchant_id"]),
        platform_ids=frozenset(r["platform_id"] for r in rows if r["platform_id"]),
    )
