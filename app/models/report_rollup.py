"""The public report's rollups: small rows the transparency figures are read from, kept current by
`app.reports.rollups` from a watermark (see there for how changes are found)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

# A column default that records the writing transaction's id (xid8, kept as bigint: it never wraps around).
CURRENT_XID = text("(pg_current_xact_id()::text)::bigint")


class ReportWatermark(Base):
    """Up to where a rollup has folded changes in: the database snapshot (`pg_snapshot` as text) whose committed
    transactions it includes, and no other."""

    __tablename__ = "report_watermarks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    snapshot: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ReportUnbilledCell(Base):
    """Orders not billed yet (with a donation), by the hour they were placed, currency and whether their donation
    was reversed whole: the report splits them into final and pledged by the hour. Those reversed whole are at
    that stage whatever the time: their `placed_hour` is the month's first."""

    __tablename__ = "report_unbilled_cells"

    placed_hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    fully_reversed: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger, nullable=False)
    net: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reversed: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReportStatementCell(Base):
    """A statement's orders by month placed and currency, and the stage they are counted at (billed, collected or
    in_pool): what moves when the statement is paid or its money converted."""

    __tablename__ = "report_statement_cells"

    statement_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    stage: Mapped[str] = mapped_column(String(10), nullable=False)
    orders: Mapped[int] = mapped_column(BigInteger, nullable=False)
    net: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reversed: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReportBilledCell(Base):
    """Billed orders by month placed, currency and stage: the statement cells summed."""

    __tablename__ = "report_billed_cells"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    stage: Mapped[str] = mapped_column(String(10), primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger, nullable=False)
    net: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reversed: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ReportMerchant(Base):
    """A merchant with at least one order that gave something."""

    __tablename__ = "report_merchants"

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)


class ReportOrderChange(Base):
    """A change of an order's reversed total not yet folded into the rollups: written by a trigger on every update
    of `orders.reversed_amount` that changes it (a refund, a cancellation, whatever writes it), and deleted by the
    catch-up that folds it in, so the table holds about a refresh interval's reversals."""

    __tablename__ = "report_order_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(40), nullable=False)
    reversed_change: Mapped[int] = mapped_column(BigInteger, nullable=False)
    recorded_xid: Mapped[int] = mapped_column(BigInteger, server_default=CURRENT_XID, nullable=False)
