"""Every query of the web pages: dashboard sessions and the short lists a dashboard shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.repository import order_row
from app.models import ApiKey, Merchant, Order, Statement, StatementLine, WebSession

SessionRow = TypeVar("SessionRow")
Owner = TypeVar("Owner")


@dataclass(frozen=True, slots=True)
class SignedInSessions(Generic[SessionRow, Owner]):
    """The queries of one kind of signed-in browser session (a merchant's dashboard, a partner's phone): its
    table, the role of the API key it was opened with, and what it is for (the merchant, the partner)."""

    table: Any
    owner: Any
    owner_id: Any
    role: str

    async def live_key(self, session: AsyncSession, token_hash: bytes) -> ApiKey | None:
        """An unrevoked API key of this role with this token hash."""
        return await session.scalar(
            select(ApiKey).where(
                ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None), ApiKey.role == self.role
            )
        )

    async def add(self, session: AsyncSession, row: SessionRow) -> None:
        session.add(row)
        await session.flush()

    async def live(
        self, session: AsyncSession, token_hash: bytes, now: datetime
    ) -> tuple[SessionRow, Owner] | None:
        """The unexpired session with this token hash whose API key is still unrevoked, and what it is for."""
        row = (
            await session.execute(
                select(self.table, self.owner)
                .join(ApiKey, ApiKey.id == self.table.api_key_id)
                .join(self.owner, self.owner.id == self.owner_id)
                .where(
                    self.table.token_hash == token_hash,
                    self.table.expires_at > now,
                    ApiKey.revoked_at.is_(None),
                )
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def slide(self, session: AsyncSession, token_hash: bytes, expires_at: datetime) -> None:
        """Move the session's end (a sliding session: it lasts so long from its last request)."""
        await session.execute(
            update(self.table).where(self.table.token_hash == token_hash).values(expires_at=expires_at)
        )

    async def end(self, session: AsyncSession, token_hash: bytes) -> None:
        await session.execute(delete(self.table).where(self.table.token_hash == token_hash))

    async def end_expired(self, session: AsyncSession, now: datetime) -> None:
        await session.execute(delete(self.table).where(self.table.expires_at <= now))


MERCHANT_SESSIONS: SignedInSessions[WebSession, Merchant] = SignedInSessions(
    WebSession, Merchant, WebSession.merchant_id, "merchant"
)


async def latest_orders(
    session: AsyncSession, merchant_id: str, *, before: str | None, limit: int
) -> list[tuple[Order, str | None]]:
    """A merchant's orders, newest placed first, with the status of the statement that billed each (if any).
    `before`: an order id (the last one of the previous page); only orders after it in this order are read."""
    query = (
        select(Order, Statement.status)
        .outerjoin(Statement, Statement.id == Order.statement_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    if before is not None:
        cursor = (
            await session.execute(
                select(Order.placed_at, Order.id).where(Order.id == before, Order.merchant_id == merchant_id)
            )
        ).first()
        if cursor is None:
            return []
        query = query.where(tuple_(Order.placed_at, Order.id) < tuple_(cursor[0], cursor[1]))
    rows = await session.execute(query)
    return [(row[0], row[1]) for row in rows]


async def merchant_order(
    session: AsyncSession, merchant_id: str, order_id: str
) -> tuple[Order, Merchant, str | None] | None:
    """One of this merchant's orders (by this service's id), its merchant and its statement's status."""
    return await order_row(session, Order.id == order_id, Order.merchant_id == merchant_id)


async def merchant_statement(session: AsyncSession, merchant_id: str, statement_id: str) -> Statement | None:
    return await session.scalar(
        select(Statement).where(Statement.id == statement_id, Statement.merchant_id == merchant_id)
    )


async def latest_statements(session: AsyncSession, merchant_id: str, *, limit: int) -> list[Statement]:
    return list(
        await session.scalars(
            select(Statement)
            .where(Statement.merchant_id == merchant_id)
            .order_by(Statement.id.desc())
            .limit(limit)
        )
    )


async def statement_line_orders(session: AsyncSession, statement_id: str) -> list[str]:
    """This service's id of each line's order, in the order of the statement's lines."""
    return list(
        await session.scalars(
            select(StatementLine.order_id)
            .where(StatementLine.statement_id == statement_id)
            .order_by(StatementLine.id)
        )
    )
