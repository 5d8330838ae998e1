"""Tracking events: what a shipment's logistics partner (or the programme) reports, and what follows from it.

`post_event` decides an event under the shipment's row lock, so one shipment's events take turns and its history
is one consistent sequence whatever arrives at once:

1. the shipment must be the caller's (another partner's is a 404) and only the programme cancels;
2. the same `event_id` again is answered from the history: the same content gets the first answer, other content
   a 409;
3. `occurred_at` may not be more than 5 minutes ahead; a receipt must give an outcome for every box, no other;
4. `machine.decide` says whether the event moves the shipment (`applied`), is only kept (`recorded`), or is not
   allowed (409 naming the current status and what may follow);
5. the event goes into the history; if applied, the boxes and the students' records follow, the money follows
   the boxes in the ledger (each entry naming the event), and events go out.

Money per applied event (base currency, one entry per box, cause `shipment_event` / the event's `sev_…` id):

| event | boxes become | ledger |
|---|---|---|
| `receipt_confirmed`, accepted | accepted | packages:assigned → packages:delivered |
| `receipt_confirmed`, damaged or missing | damaged / missing | packages:assigned → packages:written_off |
| `returned` | in stock | packages:assigned → packages:in_stock |
| `cancelled`, a new box | cancelled; its funding back in the pool queue | packages:assigned → pool |
| `cancelled`, a box that came from stock | in stock again | packages:assigned → packages:in_stock |

The other events move no money: the boxes stay "assigned" (in transit) until the school's receipt."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Forbidden, Principal
from app.core.database import driver_connection
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.core.ids import new_id
from app.core.secrets import decrypt, encrypt, keyed_hash
from app.events.outbox import EventDraft, emit_many
from app.events.repository import subscribers
from app.evidence import repository as evidence_store
from app.evidence.schemas import evidence_url
from app.ledger import accounts
from app.ledger.service import EntryDraft, post, transfer
from app.logistics import machine, repository
from app.logistics.schemas import (
    DeliveredEventIn,
    DeliveryProofOut,
    PackageOutcomeOut,
    ReceiptEventIn,
    ShipmentEventAnswer,
    ShipmentEventIn,
    ShipmentEventOut,
    StoredEvidence,
)
from app.packages import pool
from app.packages.allocation import package_share
from app.receipts import events as receipts

log = structlog.get_logger("g4g.logistics")

FUTURE_TOLERANCE = timedelta(minutes=5)
SHOWN_IDS = 20  # package ids named in a 422, at most


class IllegalTransition(Conflict):
    kind, title = "illegal-transition", "The shipment's state machine does not allow this event now"


class EventIdReused(Conflict):
    kind, title = "event-id-reused", "This event_id was already recorded with other content"


def visible(principal: Principal, partner_id: str) -> bool:
    """Admin sees every shipment; a partner key only its own partner's."""
    return principal.is_admin or principal.logistics_partner_id == partner_id


def _invalid(field: str, message: str, kind: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field}: {message}", errors=[{"loc": ["body", field], "msg": message, "type": kind}]
    )


def content_hash(lookup_key: bytes, shipment_id: str, body: ShipmentEventIn) -> bytes:
    """The event's content as validated (so one instant in two time zones, or outcomes in another order, are the
    same event), keyed: the proof names a person, and a plain hash could be checked against guesses."""
    content = body.model_dump(mode="json")
    content["occurred_at"] = body.occurred_at.astimezone(UTC).isoformat()  # one instant, in any zone
    if "packages" in content:
        content["packages"] = sorted(content["packages"], key=lambda p: p["package_id"])
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return keyed_hash(lookup_key, "shipment-event", shipment_id, canonical)


def event_out(
    row: Mapping[str, Any], outcomes: Sequence[Mapping[str, Any]], cipher: MultiFernet
) -> ShipmentEventOut:
    """An event of the history as the API shows it (its stored columns, and its package outcomes)."""
    proof = row["proof_encrypted"]
    return ShipmentEventOut(
        id=row["id"],
        event_id=row["event_id"],
        status=row["status"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        location=row["location"],
        note=row["note"],
        proof=DeliveryProofOut.model_validate_json(decrypt(cipher, proof)) if proof is not None else None,
        packages=(
            [
                PackageOutcomeOut(package_id=o["package_id"], outcome=o["outcome"], reason=o["reason"])
                for o in outcomes
            ]
            if row["status"] == "receipt_confirmed"
            else None
        ),
        result=row["result"],
        reason=row["reason"],
        status_before=row["status_before"],
        status_after=row["status_after"],
        posted_by=row["posted_by"],
    )


def _answer(
    row: asyncpg.Record, outcomes: Sequence[Mapping[str, Any]], cipher: MultiFernet
) -> ShipmentEventAnswer:
    """The answer to a post, made from the stored event alone, so a retry gets exactly the first answer."""
    out = event_out(row, outcomes, cipher)
    programme = row["posted_by"] == "programme"
    return ShipmentEventAnswer(
        **out.model_dump(), allowed_next=machine.allowed_next(row["status_after"], programme=programme)
    )


async def post_event(
    session: AsyncSession,
    principal: Principal,
    shipment_id: str,
    body: ShipmentEventIn,
    *,
    cipher: MultiFernet,
    lookup_key: bytes,
    now: datetime,
) -> tuple[ShipmentEventAnswer, bool]:
    """Record a tracking event and apply what it means (see the module). Returns the answer and whether it is a
    replay of an event already recorded under the same `event_id`."""
    db = await driver_connection(session)
    shipment = await repository.lock_shipment(db, shipment_id)
    if shipment is None or not visible(principal, shipment["logistics_partner_id"]):
        raise NotFound(f"No shipment {shipment_id}.")
    if body.status in machine.PROGRAMME_ONLY and not principal.is_admin:
        raise Forbidden("Only the programme (an admin key) cancels a shipment.")

    fingerprint = content_hash(lookup_key, shipment_id, body)
    existing = await repository.find_event(db, shipment_id, body.event_id)
    if existing is not None:
        if existing["content_hash"] != fingerprint:
            raise EventIdReused(
                f"Event {body.event_id!r} of shipment {shipment_id} was recorded with other content; "
                "send a new event_id for a new event."
            )
        stored = (
            await repository.event_outcomes(db, existing["id"])
            if existing["status"] == "receipt_confirmed"
            else []
        )
        return _answer(existing, stored, cipher), True

    if body.occurred_at > now + FUTURE_TOLERANCE:
        raise _invalid("occurred_at", "more than 5 minutes in the future", "future_time")
    outcomes = await _checked_outcomes(db, shipment_id, body)
    proof = await _proof_json(session, shipment_id, body)

    current = shipment["status"]
    programme = principal.is_admin
    try:
        decision = machine.decide(
            current, shipment["status_changed_at"], body.status, body.occurred_at, programme=programme
        )
    except machine.IllegalTransition as refused:
        allowed = ", ".join(refused.allowed) or "nothing (a final status)"
        raise IllegalTransition(
            f"Shipment {shipment_id} is {current}; it can't go to {body.status}. Allowed next: {allowed}.",
            current_status=current,
            allowed_next=refused.allowed,
        ) from None

    applied = decision.result == "applied"
    row = await repository.insert_event(
        db,
        repository.NewEvent(
            id=new_id("sev"),
            shipment_id=shipment_id,
            event_id=body.event_id,
            status=body.status,
            occurred_at=body.occurred_at,
            recorded_at=now,
            location=body.location,
            note=body.note,
            proof_encrypted=encrypt(cipher, proof) if proof is not None else None,
            result=decision.result,
            reason=decision.reason,
            status_before=current,
            status_after=body.status if applied else current,
            posted_by="programme" if programme else "logistics_partner",
            api_key_id=principal.key_id,
            content_hash=fingerprint,
        ),
        outcomes,
    )
    await repository.record_activity(
        db, shipment_id, body.occurred_at, new_status=body.status if applied else None
    )
    if applied:
        await _apply(db, row, shipment, body, outcomes, now=now)
    log.info(
        "shipment_event",
        shipment_id=shipment_id,
        shipment_event_id=row["id"],
        status=body.status,
        result=decision.result,
        reason=decision.reason,
        status_before=current,
        posted_by=row["posted_by"],
    )
    # In the order a replay reads them back (by package id), so the first answer and a replay are the same.
    recorded = [{"package_id": p, "outcome": o, "reason": r} for p, o, r in sorted(outcomes)]
    return _answer(row, recorded, cipher), False


async def _proof_json(session: AsyncSession, shipment_id: str, body: ShipmentEventIn) -> str | None:
    """A delivery's proof as stored: a photo kept here is named by its id, its address and its SHA-256 (which
    must be evidence sent for this shipment)."""
    if not isinstance(body, DeliveredEventIn):
        return None
    proof = body.proof.model_dump(mode="json")
    if isinstance(body.proof.evidence, StoredEvidence):
        evidence_id = body.proof.evidence.evidence_id
        found = await evidence_store.described(session, shipment_id, evidence_id)
        if found is None:
            raise _invalid(
                "proof",
                f"evidence {evidence_id} was not sent for this shipment "
                f"(POST /v1/shipments/{shipment_id}/evidence first)",
                "evidence_unknown",
            )
        proof["evidence"] = {
            "url": evidence_url(shipment_id, evidence_id),
            "sha256": found[0].sha256.hex(),
            "evidence_id": evidence_id,
        }
    return json.dumps(proof, separators=(",", ":"))


async def _checked_outcomes(
    db: asyncpg.Connection, shipment_id: str, body: ShipmentEventIn
) -> list[tuple[str, str, str | None]]:
    """A receipt's outcomes, which must name every box of the shipment and no other (accepted + damaged +
    missing = shipped)."""
    if not isinstance(body, ReceiptEventIn):
        return []
    shipped = set(await repository.shipment_package_ids(db, shipment_id))
    given = {p.package_id for p in body.packages}
    errors = []
    if repeated := sorted(p for p, n in Counter(p.package_id for p in body.packages).items() if n > 1):
        errors.append(
            {
                "loc": ["body", "packages"],
                "msg": "each package has one outcome; given more than once: "
                + ", ".join(repeated[:SHOWN_IDS]),
                "type": "packages_repeated",
            }
        )
    if missing := sorted(shipped - given):
        errors.append(
            {
                "loc": ["body", "packages"],
                "msg": f"no outcome for {len(missing)} of the shipment's {len(shipped)} packages: "
                + ", ".join(missing[:SHOWN_IDS])
                + (" …" if len(missing) > SHOWN_IDS else ""),
                "type": "packages_missing",
            }
        )
    if unknown := sorted(given - shipped):
        errors.append(
            {
                "loc": ["body", "packages"],
                "msg": f"{len(unknown)} packages are not in this shipment: "
                + ", ".join(unknown[:SHOWN_IDS])
                + (" …" if len(unknown) > SHOWN_IDS else ""),
                "type": "packages_unknown",
            }
        )
    if errors:
        raise InvalidRequest(
            "packages: accepted + damaged + missing must be exactly the shipment's packages "
            f"({len(shipped)}); got {len(given)}.",
            errors=errors,
        )
    return [(p.package_id, p.outcome, getattr(p, "reason", None)) for p in body.packages]


async def _apply(
    db: asyncpg.Connection,
    event: asyncpg.Record,
    shipment: asyncpg.Record,
    body: ShipmentEventIn,
    outcomes: list[tuple[str, str, str | None]],
    *,
    now: datetime,
) -> None:
    """The boxes, the students' records, the money and the events out that follow an applied event."""
    shipment_id, at = shipment["id"], body.occurred_at
    entries: list[EntryDraft] = []
    accepted: list[str] = []
    if body.status == "handed_over":
        await repository.ship_boxes(db, shipment_id, at=at)
    elif body.status == "delivered":
        await repository.deliver_boxes(db, shipment_id, at=at)
    elif body.status == "receipt_confirmed":
        for box in await repository.confirm_boxes(db, shipment_id, [(o[0], o[1]) for o in outcomes], at=at):
            if box["outcome"] == "accepted":
                accepted.append(box["package_id"])
                entries.append(_move(event, box, accounts.PACKAGES_DELIVERED, "accepted by the school"))
            else:
                entries.append(
                    _move(event, box, accounts.PACKAGES_WRITTEN_OFF, f"{box['outcome']}: written off")
                )
    elif body.status == "returned":
        for box in await repository.return_boxes(db, shipment_id, at=at):
            entries.append(_move(event, box, accounts.PACKAGES_IN_STOCK, "returned to stock"))
    elif body.status == "cancelled":
        # The pool queue has one writer at a time (allocation runs too); this shipment's row is already ours,
        # and runs never lock existing shipments, so the two locks can't meet in the other order.
        await pool.lock_pool(db)
        restocked, cancelled = await repository.cancel_boxes(db, shipment_id, at=at)
        for box in restocked:
            entries.append(_move(event, box, accounts.PACKAGES_IN_STOCK, "shipment cancelled: back to stock"))
        by_currency: dict[str, list[str]] = defaultdict(list)
        for box in cancelled:
            by_currency[box["currency"]].append(box["package_id"])
            entries.append(_move(event, box, accounts.POOL, "shipment cancelled: money back to the pool"))
        for currency, package_ids in sorted(by_currency.items()):
            await pool.release(db, package_ids, currency)
    await post(db, entries)
    await _announce(db, event, shipment, accepted, now=now)
    if body.status in ("handed_over", "delivered", "receipt_confirmed"):  # a step of its buyers' receipts
        await receipts.announce(
            db, now=now, package_ids=await repository.shipment_package_ids(db, shipment_id)
        )


def _move(event: asyncpg.Record, box: asyncpg.Record, debit: str, what: str) -> EntryDraft:
    return transfer(
        cause_type="shipment_event",
        cause_id=event["id"],
        memo=f"package {box['package_id']} {what} (shipment {event['shipment_id']}, event {event['event_id']})"[
            :300
        ],
        debit=debit,
        credit=accounts.PACKAGES_ASSIGNED,
        currency=box["currency"],
        amount=int(box["cost"]),
    )


async def _announce(
    db: asyncpg.Connection,
    event: asyncpg.Record,
    shipment: asyncpg.Record,
    accepted: list[str],
    *,
    now: datetime,
) -> None:
    """`shipment.status_changed` to programme endpoints; `package.delivered` for each box the school accepted, to
    each merchant whose orders funded it (with its share) and to programme endpoints."""
    drafts = [
        EventDraft(
            "shipment.status_changed",
            {
                "shipment_id": shipment["id"],
                "school_id": shipment["school_id"],
                "logistics_partner_id": shipment["logistics_partner_id"],
                "status": event["status_after"],
                "previous_status": event["status_before"],
                "occurred_at": event["occurred_at"].isoformat(),
                "shipment_event_id": event["id"],
            },
            now,
        )
    ]
    listening = await subscribers(db, "package.delivered") if accepted else None
    if listening is not None and listening.anyone:
        for row in await repository.funding_shares(db, accepted):
            if row["merchant_id"] not in listening.merchant_ids:
                continue
            data = {
                **package_share(row),
                "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
                "receipt_confirmed_at": row["receipt_confirmed_at"].isoformat(),
            }
            drafts.append(EventDraft("package.delivered", data, now, merchant_id=row["merchant_id"]))
        if listening.programme:
            drafts += [
                EventDraft("package.delivered", {"package_id": p, "shipment_id": shipment["id"]}, now)
                for p in accepted
            ]
    await emit_many(db, drafts)
