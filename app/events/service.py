"""Webhook endpoints and the delivery of events to them.

Retry schedule (after the first attempt, which is immediate): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and
24 h — ten attempts over about 75 hours (three days, like Standard Webhooks senders); then the delivery is
`failed` and can still be replayed. An endpoint that has failed every attempt for 5 days (no success in between)
is disabled, with the reason on the endpoint, until its owner enables it again."""

from __future__ import annotations

import base64
import json
import secrets as random_secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import structlog
from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import partitions
from app.core.auth import Principal, Role
from app.core.database import driver_connection
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.core.ids import new_id
from app.core.jobs import JobContext, enqueue
from app.core.observability import EVENT_ATTEMPTS
from app.core.secrets import decrypt, encrypt
from app.events import destinations, repository, sender
from app.events.catalogue import EVENT_TYPES, Audience, allowed_for
from app.events.outbox import DELIVER_TASK, job_dedupe_key, job_payload
from app.models import EventDelivery, WebhookEndpoint, WebhookEndpointSecret

log = structlog.get_logger("g4g.events")

# Partitioned together by month on the delivery's id (`app/core/partitions.py`).
DELIVERIES = "event_deliveries"
ATTEMPTS = "event_delivery_attempts"

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
DISABLE_AFTER = timedelta(days=5)
# Longer than one attempt can take (connect + read timeouts); a worker that died mid-send frees it at expiry.
SEND_LEASE = timedelta(minutes=2)


class EndpointDisabled(Conflict):
    kind, title = "endpoint-disabled", "The endpoint is disabled"


# ---- endpoints ----


def audience_of(principal: Principal) -> Audience:
    if principal.role is Role.platform:
        return "platform"
    if principal.role is Role.merchant:
        return "merchant"
    return "programme"


def can_see(principal: Principal, endpoint: WebhookEndpoint) -> bool:
    if principal.is_admin:
        return True
    if principal.platform_id is not None:
        return endpoint.platform_id == principal.platform_id
    return principal.merchant_id is not None and endpoint.merchant_id == principal.merchant_id


def audience_of_endpoint(endpoint: WebhookEndpoint) -> Audience:
    if endpoint.platform_id is not None:
        return "platform"
    if endpoint.merchant_id is not None:
        return "merchant"
    return "programme"


def check_events(events: list[str], audience: Audience) -> list[str]:
    allowed = allowed_for(audience)
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"events: unknown event type {unknown[0]!r}; one of {', '.join(sorted(EVENT_TYPES))}.",
            errors=[
                {
                    "loc": ["body", "events"],
                    "msg": f"unknown event type {unknown[0]!r}",
                    "type": "value_error",
                }
            ],
        )
    refused = [e for e in events if e not in allowed]
    if refused:
        raise InvalidRequest(
            f"events: {refused[0]!r} is not sent to {audience} endpoints; they may subscribe to "
            f"{', '.join(allowed)}.",
            errors=[
                {"loc": ["body", "events"], "msg": f"{refused[0]!r} not available", "type": "value_error"}
            ],
        )
    return sorted(set(events))


async def check_url(url: str, *, production: bool, private_allowed: bool) -> None:
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InvalidRequest("url: may not carry a user name or password; authenticate with the signature.")
    if production and parts.scheme != "https":
        raise InvalidRequest("url: must be https in production.")
    if not parts.hostname:
        raise InvalidRequest("url: has no host.")
    if not private_allowed:
        try:
            await destinations.public_addresses(parts.hostname)
        except destinations.UnsafeAddress as exc:
            raise InvalidRequest(f"url: refused: {exc}.") from None


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


async def _add_secret(session: AsyncSession, cipher: MultiFernet, endpoint_id: str) -> str:
    secret = new_signing_secret()
    session.add(
        WebhookEndpointSecret(
            id=new_id("wes"), endpoint_id=endpoint_id, secret_encrypted=encrypt(cipher, secret)
        )
    )
    await session.flush()
    return secret


async def create_endpoint(
    session: AsyncSession, cipher: MultiFernet, principal: Principal, *, url: str, events: list[str]
) -> tuple[WebhookEndpoint, str]:
    """An endpoint for the caller itself (a platform's, a merchant's; an admin's is the programme's). Its signing
    secret is returned to be shown once."""
    endpoint = WebhookEndpoint(
        id=new_id("whe"),
        platform_id=principal.platform_id if principal.role is Role.platform else None,
        merchant_id=principal.merchant_id if principal.role is Role.merchant else None,
        url=url,
        events=check_events(events, audience_of(principal)),
    )
    session.add(endpoint)
    await session.flush()
    secret = await _add_secret(session, cipher, endpoint.id)
    await session.refresh(endpoint)
    return endpoint, secret


async def get_visible_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, endpoint_id, lock=lock)
    if endpoint is None or not can_see(principal, endpoint):
        raise NotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    *,
    url: str | None,
    events: list[str] | None,
    enabled: bool | None,
    now: datetime,
) -> WebhookEndpoint:
    if url is not None:
        endpoint.url = url
    if events is not None:
        endpoint.events = check_events(events, audience_of_endpoint(endpoint))
    if enabled is True and endpoint.disabled_at is not None:
        endpoint.disabled_at = None
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    elif enabled is False and endpoint.disabled_at is None:
        endpoint.disabled_at = now
        endpoint.disabled_reason = "disabled by its owner"
    endpoint.updated_at = now
    await session.flush()
    return endpoint


async def rotate_secret(
    session: AsyncSession, cipher: MultiFernet, endpoint: WebhookEndpoint, *, now: datetime, grace: timedelta
) -> tuple[str, datetime]:
    """A new signing secret; the ones valid until now keep signing beside it for `grace`, so the receiver can
    switch over without failing a message."""
    valid_until = now + grace
    await repository.expire_current_secrets(session, endpoint.id, at=valid_until)
    return await _add_secret(session, cipher, endpoint.id), valid_until


async def replay(
    session: AsyncSession, endpoint: WebhookEndpoint, delivery_id: str, *, now: datetime
) -> EventDelivery:
    """Send a delivery again now, whatever its state: one more attempt, with the same `webhook-id`."""
    delivery = await repository.get_delivery(session, endpoint.id, delivery_id)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id} for this endpoint.")
    if endpoint.disabled_at is not None:
        raise EndpointDisabled("Enable the endpoint first (PATCH with enabled: true).")
    delivery.status = "pending"
    delivery.schedule += 1
    delivery.next_attempt_at = now
    delivery.lease_until = None
    await session.flush()
    await enqueue(
        await driver_connection(session),
        DELIVER_TASK,
        [job_payload(delivery.id, delivery.schedule, replay=True)],
        dedupe_keys=[job_dedupe_key(delivery.id, delivery.schedule)],
    )
    return delivery


# ---- sending (jobs) ----


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    delivery_id: str
    schedule: int
    trigger: str

    @classmethod
    def parse(cls, payload: bytes) -> DeliveryJob:
        delivery_id, schedule, trigger = payload.decode().split(":")
        return cls(delivery_id, int(schedule), trigger)


def message_body(event_type: str, occurred_at: datetime, data: str) -> str:
    """`{"type", "timestamp", "data"}`, the same bytes on every attempt."""
    timestamp = occurred_at.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": event_type, "timestamp": timestamp, "data": json.loads(data)}, separators=(",", ":")
    )


async def attempt_delivery(ctx: JobContext, job: DeliveryJob) -> None:
    """One attempt at a delivery, if the job is still the current one for it: claim it (short transaction),
    send (no transaction open), record the outcome and schedule the next attempt (short transaction)."""
    now = ctx.clock.now()
    async with ctx.engine.connect() as connection:
        db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        async with db.transaction():
            claimed = await repository.claim_delivery(
                db, job.delivery_id, job.schedule, now=now, lease=SEND_LEASE
            )
            if claimed is None:
                return  # already sent, superseded by a replay, or being sent by another worker
            encrypted = await repository.valid_secrets(db, claimed["endpoint_id"], now=now)
        secrets = [decrypt(ctx.cipher, s) for s in encrypted]
        if claimed["disabled_at"] is not None:
            result = sender.SendResult(
                False, None, 0, f"not sent: the endpoint is disabled ({claimed['disabled_reason']})", None
            )
            final: str | None = "failed"
        else:
            body = message_body(claimed["type"], claimed["occurred_at"], claimed["data"])
            # ctx.http is the events client: it connects to public addresses only unless private ones are allowed.
            result = await sender.send(ctx.http, claimed["url"], job.delivery_id, body, secrets)
            final = None
        attempts = claimed["attempts"] + 1
        next_at: datetime | None = None
        if not result.succeeded and final is None:
            if attempts <= len(RETRY_DELAYS):
                next_at = now + RETRY_DELAYS[attempts - 1]
            else:
                final = "failed"
        async with db.transaction():
            await repository.record_attempt(
                db,
                repository.AttemptRecord(
                    id=new_id("att"),
                    delivery_id=job.delivery_id,
                    schedule=job.schedule,
                    attempted_at=now,
                    trigger=job.trigger,
                    succeeded=result.succeeded,
                    status_code=result.status_code,
                    duration_ms=result.duration_ms,
                    error=result.error[:500] if result.error else None,
                    response_body=result.response_body,
                ),
                next_attempt_at=next_at,
                final_status=final,
            )
            if result.succeeded:
                await repository.endpoint_succeeded(db, claimed["endpoint_id"])
            elif claimed["disabled_at"] is None:
                reason = (
                    f"every attempt failed for {DISABLE_AFTER.days} days; the last, at {now.isoformat()}: "
                    f"{result.error}"
                )
                disabled = await repository.endpoint_failed(
                    db, claimed["endpoint_id"], now=now, disable_after=DISABLE_AFTER, reason=reason[:600]
                )
                if disabled:
                    log.warning("webhook_endpoint_disabled", endpoint_id=claimed["endpoint_id"])
    EVENT_ATTEMPTS.labels("delivered" if result.succeeded else "failed").inc()
    log.info(
        "event_delivery_attempt",
        delivery_id=job.delivery_id,
        attempt=attempts,
        succeeded=result.succeeded,
        status_code=result.status_code,
        duration_ms=result.duration_ms,
        error=result.error,
        cause=result.cause,
    )


async def enqueue_due_retries(ctx: JobContext, *, limit: int = 1000) -> int:
    """Enqueue an attempt for every pending delivery that is due (by the service's clock). A job already queued
    for the same attempt is not doubled."""
    async with ctx.engine.connect() as connection:
        db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        async with db.transaction():
            due = await repository.due_deliveries(db, now=ctx.clock.now(), limit=limit)
            await enqueue(
                db,
                DELIVER_TASK,
                [job_payload(r["id"], r["schedule"]) for r in due],
                dedupe_keys=[job_dedupe_key(r["id"], r["schedule"]) for r in due],
            )
    return len(due)


async def sweep_old_deliveries(ctx: JobContext, *, batch: int = 1000) -> int:
    """Drop each month of deliveries (and its attempts' month) that ended before the retention's cutoff and whose
    every delivery is delivered or failed; a month with a pending one (retries last three days, a replay makes
    one pending again) waits for a later sweep. Then delete the events left without deliveries, in bounded
    batches. Returns how many months went."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.event_delivery_retention_days)
    async with ctx.sessionmaker() as session:
        months = [
            p for p in await partitions.partitions(session, DELIVERIES) if p.upper and p.upper <= cutoff
        ]
        attempt_months = await partitions.partitions(session, ATTEMPTS)
    dropped = 0
    for month in months:
        attempts = partitions.same_month(attempt_months, month)
        async with ctx.sessionmaker() as session:
            # Both months in one transaction: a rollback (a pending delivery) restores both.
            if attempts is not None:
                await partitions.detach(session, ATTEMPTS, attempts.name)
                await repository.drop_month(session, attempts.name)
            await partitions.detach(session, DELIVERIES, month.name)
            if await repository.any_pending(session, month.name):
                await session.rollback()
                continue
            await repository.drop_month(session, month.name)
            await session.commit()
        dropped += 1
        log.info("event deliveries dropped", partition=month.name, before=month.upper)
    boundary = partitions.PARTITIONED[DELIVERIES].bound(cutoff).strip("'").replace("dlv_", "evt_", 1)
    while True:
        async with ctx.engine.connect() as connection:
            db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            async with db.transaction():
                deleted = await repository.delete_events_without_deliveries(db, boundary, limit=batch)
        if deleted < batch:
            return dropped
