"""Receipt links and what a receipt shows.

Tokens: `base64url(HMAC-SHA256(receipt key, order id ‖ nonce)[:18])`, 144 bits. The receipt key is derived from
the lookup key (held outside the database); each link row keeps its random nonce and the token's SHA-256, never
the token. So asking for the order's link again derives the same token (the same URL), opening a link is one
indexed lookup of a hash, and a copy of the database cannot produce a working link. Revoking deletes the row:
a revoked token and one never issued take the same path to the same 404."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import segno
from croniter import croniter
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import driver_connection
from app.core.errors import NotFound
from app.core.ids import new_id
from app.core.money import MoneyOut
from app.models import Order, ReceiptLink
from app.receipts import repository
from app.receipts.schemas import NextStep, ReceiptLinkIn, ReceiptOut, ReceiptPackage, Step, TimelineStep
from app.reports.schemas import TransparencyOut
from app.reports.service import TransparencyReport

TOKEN_BYTES = 18
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{24}")
_KEY_LABEL = b"g4g receipt links v1"


def receipt_key(lookup_key: bytes) -> bytes:
    """A key of its own for receipt tokens, so the lookup key's other uses and these never meet."""
    return hmac.new(lookup_key, _KEY_LABEL, hashlib.sha256).digest()


def token_for(key: bytes, order_id: str, nonce: bytes) -> str:
    mac = hmac.new(key, order_id.encode() + b"\x00" + nonce, hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).decode()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ReceiptNotFound(NotFound):
    pass


@dataclass(frozen=True, slots=True)
class IssuedLink:
    token: str
    created_at: datetime
    new: bool
    order_id: str
    merchant_id: str


async def issue_link(
    session: AsyncSession,
    key: bytes,
    platform_id: str,
    order_external_id: str,
    choices: ReceiptLinkIn,
    *,
    now: datetime,
    window: timedelta,
) -> IssuedLink:
    """The order's receipt link: the existing one again (with the platform's display choices updated), or a
    new one. Only the order's platform can ask; another's order is as unknown as a missing one."""
    order = await repository.order_of_platform(session, platform_id, order_external_id)
    if order is None:
        raise NotFound(f"No order {order_external_id!r} has been applied for this platform.")
    for link in await repository.links_of(session, order.id):
        token = token_for(key, order.id, link.nonce)
        if hmac.compare_digest(token_hash(token), link.token_hash):  # else made under a replaced lookup key
            link.show_merchant, link.order_reference = choices.show_merchant, choices.order_reference
            await session.flush()
            return IssuedLink(token, link.created_at, False, order.id, order.merchant_id)
    nonce = os.urandom(16)
    token = token_for(key, order.id, nonce)
    link = ReceiptLink(
        id=new_id("rcl"),
        order_id=order.id,
        nonce=nonce,
        token_hash=token_hash(token),
        show_merchant=choices.show_merchant,
        order_reference=choices.order_reference,
    )
    session.add(link)
    await session.flush()
    # `receipt.updated` announces changes from here on: the platform knows where the receipt starts.
    [facts] = [
        f
        for f in await repository.linked_facts(await driver_connection(session), [order.id])
        if f["link_id"] == link.id
    ]
    link.notified_step = step_of(facts, now=now, window=window)
    await session.flush()
    await session.refresh(link, ["created_at"])
    return IssuedLink(token, link.created_at, True, order.id, order.merchant_id)


async def current_link(
    session: AsyncSession, key: bytes, platform_id: str, order_external_id: str
) -> IssuedLink:
    """The order's receipt link, if it has one (404 if not, or if the order is not this platform's)."""
    order = await repository.order_of_platform(session, platform_id, order_external_id)
    if order is None:
        raise NotFound(f"No order {order_external_id!r} has been applied for this platform.")
    for link in await repository.links_of(session, order.id):
        token = token_for(key, order.id, link.nonce)
        if hmac.compare_digest(token_hash(token), link.token_hash):
            return IssuedLink(token, link.created_at, False, order.id, order.merchant_id)
    raise NotFound(f"Order {order_external_id!r} has no receipt link.")


async def revoke_links(session: AsyncSession, platform_id: str, order_external_id: str) -> Order:
    """Revoke the order's receipt link(s): they answer 404 from now on, like a token never issued. Asking for
    a link afterwards makes a new one. Returns the order."""
    order = await repository.order_of_platform(session, platform_id, order_external_id)
    if order is None:
        raise NotFound(f"No order {order_external_id!r} has been applied for this platform.")
    await repository.delete_links(session, order.id)
    return order


def qr_svg(url: str) -> str:
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=4, border=2, xmldecl=False, svgns=True)
    return buffer.getvalue().decode()


def qr_png(url: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="png", scale=8, border=2)
    return buffer.getvalue()


def shown_regions(figures: TransparencyOut) -> frozenset[tuple[str, str]]:
    """Regions the public report names with their students reached, five or more: the only regions a receipt
    may name. Anything smaller, or hidden to protect a smaller cell, is shown as its country alone."""
    return frozenset(
        (row.country, row.region)
        for row in figures.regions
        if row.region is not None and isinstance(row.students_reached, int) and row.students_reached >= 5
    )


class PublicRegions:
    """`shown_regions` of the public report as this process serves it, worked out once per publication."""

    def __init__(self, report: TransparencyReport) -> None:
        self._report = report
        self._etag: str | None = None
        self._regions: frozenset[tuple[str, str]] = frozenset()

    async def shown(self) -> frozenset[tuple[str, str]]:
        snapshot = await self._report.current()
        if snapshot.etag != self._etag:
            self._regions, self._etag = shown_regions(snapshot.figures()), snapshot.etag
        return self._regions


async def link_exists(db: asyncpg.Connection, token: str) -> bool:
    """Whether the token opens a receipt (a malformed one is looked up too: every wrong token takes one path)."""
    found = await repository.receipt_facts(db, token_hash(token))
    return found is not None and _well_formed(token)


async def link_is_live(db: asyncpg.Connection, token: str) -> bool:
    """Whether a link with this token exists (not revoked), without reading the receipt."""
    return await repository.link_is_live(db, token_hash(token))


def _well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


async def receipt(
    db: asyncpg.Connection,
    token: str,
    *,
    now: datetime,
    window: timedelta,
    regions: PublicRegions,
    settlement_schedule: str | None = None,
) -> ReceiptOut:
    """What happened to the order's donation, step by step, with dates; what comes next and roughly when."""
    # A malformed token is hashed and looked up like any other: every wrong token takes the same path.
    facts = await repository.receipt_facts(db, token_hash(token))
    if facts is None or not _well_formed(token):
        raise ReceiptNotFound("No such receipt.")
    currency = facts["currency"]
    donation, reversed_ = facts["donation_amount"], facts["reversed_amount"]
    packages = _packages(facts, await regions.shown())
    timeline = _timeline(facts, packages, now=now, window=window, settlement_schedule=settlement_schedule)
    reached = [t for t in timeline if t.done]
    upcoming = [t for t in timeline if not t.done]
    return ReceiptOut(
        merchant=facts["merchant_name"] if facts["show_merchant"] else None,
        order_reference=facts["order_reference"],
        donation=MoneyOut(amount=donation, currency=currency),
        reversed=MoneyOut(amount=reversed_, currency=currency),
        net=MoneyOut(amount=donation - reversed_, currency=currency),
        step=reached[-1].step,
        timeline=timeline,
        packages=packages,
        next=NextStep(step=upcoming[0].step, expected_by=upcoming[0].expected_by) if upcoming else None,
    )


def _packages(facts: asyncpg.Record, shown: frozenset[tuple[str, str]]) -> list[ReceiptPackage]:
    return [
        ReceiptPackage(
            share=MoneyOut(amount=int(share), currency=package_currency),
            cost=MoneyOut(amount=cost, currency=package_currency),
            grade=grade,
            country=country,
            region=region if (country, region) in shown else None,
            status=status,
            allocated_at=allocated_at,
            shipped_at=shipped_at,
            delivered_at=delivered_at,
            confirmed_at=confirmed_at,
        )
        for (
            share,
            cost,
            package_currency,
            grade,
            status,
            country,
            region,
            allocated_at,
            shipped_at,
            delivered_at,
            confirmed_at,
        ) in facts["packages"]
    ]


def step_of(facts: asyncpg.Record, *, now: datetime, window: timedelta | None) -> Step:
    """The latest step the receipt has reached. Without the return window (`None`), an order counts as final
    once billed, as settlement bills only final orders."""
    timeline = _timeline(facts, _packages(facts, frozenset()), now=now, window=window)
    return [t for t in timeline if t.done][-1].step


def _first(dates: list[datetime | None]) -> datetime | None:
    known = [d for d in dates if d is not None]
    return min(known) if known else None


def next_settlement(schedule: str | None, after: datetime) -> datetime | None:
    """The first settlement run of `G4G_SETTLEMENT_SCHEDULE` (cron, UTC) after `after`; None when settlement
    runs only when an operator starts it."""
    if schedule is None:
        return None
    found: datetime = croniter(schedule, after.astimezone(UTC)).get_next(datetime)
    return found


def _timeline(
    f: asyncpg.Record,
    packages: list[ReceiptPackage],
    *,
    now: datetime,
    window: timedelta | None,
    settlement_schedule: str | None = None,
) -> list[TimelineStep]:
    currency = f["currency"]
    placed_at: datetime = f["placed_at"]
    steps = [TimelineStep(step="pledged", done=True, at=placed_at)]
    reversed_amount: int = f["reversed_amount"]
    if reversed_amount > 0:
        steps.append(
            TimelineStep(
                step="refunded",
                done=True,
                at=f["refunded_at"] or f["cancelled_at"],
                amount=MoneyOut(amount=reversed_amount, currency=currency),
            )
        )
        if reversed_amount == f["donation_amount"]:
            return steps  # the whole donation was reversed: nothing more will happen to it
    final_at = placed_at + window if window is not None else None
    final = f["billed"] or (final_at is not None and final_at <= now)  # billed only once final
    steps.append(
        TimelineStep(
            step="final", done=final, at=final_at if final else None, expected_by=None if final else final_at
        )
    )
    paid_at: datetime | None = f["paid_at"]
    # Not yet billed: roughly when the next settlement after the return window bills it (then it is paid).
    billed_by = None if f["billed"] else next_settlement(settlement_schedule, max(final_at or now, now))
    steps.append(TimelineStep(step="collected", done=paid_at is not None, at=paid_at, expected_by=billed_by))
    pooled = f["pooled_amount"]
    steps.append(
        TimelineStep(
            step="in_pool",
            done=pooled is not None,
            at=paid_at if pooled is not None else None,
            amount=MoneyOut(amount=int(pooled), currency=f["pooled_currency"]) if pooled else None,
        )
    )
    count = len(packages)

    def step(name: Step, dates: list[datetime | None]) -> TimelineStep:
        done = sum(d is not None for d in dates)
        return TimelineStep(step=name, done=count > 0 and done == count, at=_first(dates), packages=done)

    steps.append(step("packaged", [p.allocated_at for p in packages]))
    steps.append(step("shipped", [p.shipped_at for p in packages]))
    steps.append(step("delivered", [p.delivered_at for p in packages]))
    steps.append(step("confirmed", [p.confirmed_at for p in packages]))
    return steps
