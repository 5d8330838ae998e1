from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt

PACKAGE_STATUSES = (
    "allocated",  # assigned to a student, its shipment planned
    "shipped",  # handed to the partner, on its way
    "delivered",  # at the school, receipt not yet confirmed
    "accepted",  # the school confirmed it
    "damaged",  # the school received it damaged: written off
    "missing",  # never arrived: written off
    "in_stock",  # came back; waits for a student of a later run
    "cancelled",  # its planned shipment was cancelled: its money went back to the pool
)


class LovePackage(CreatedAt, Base):
    """One box of school supplies, funded at its kind version's cost from the pool, assigned to one student at a
    time (`allocations`), moved by its shipment's events.

    Its funding is its stretch of the pool queue, `[funding_start, funding_end)`: exactly its cost, and the
    orders whose funding sources overlap that stretch paid for it, each with the overlap. The queue is
    append-only and packages take consecutive stretches from its front, so the stretches never overlap and no
    unit of money pays for two packages; the database holds it too (each stretch must follow another's end)."""

    __tablename__ = "love_packages"
    __table_args__ = (
        CheckConstraint("cost > 0", name="cost_positive"),
        CheckConstraint(f"status IN {PACKAGE_STATUSES}", name="status"),
        CheckConstraint("funding_start >= 0 AND funding_end = funding_start + cost", name="funding_is_cost"),
        Index(
            "ix_love_packages_stock", "kind_id", "created_at", postgresql_where=text("status = 'in_stock'")
        ),
        # The stretches tile the spent part of the queue: each starts where another ends (or at 0), and no two
        # start, or end, at the same place. So no unit of money is in two packages, and none is skipped.
        Index("ix_love_packages_funding_start", "funding_start", unique=True),
        UniqueConstraint("funding_end"),
        ForeignKeyConstraint(["follows_end"], ["love_packages.funding_end"]),
        # Which packages an order's money went into: the packages whose stretch overlaps its funding sources'.
        Index(
            "ix_love_packages_funding_stretch",
            func.int8range(text("funding_start"), text("funding_end")),
            postgresql_using="spgist",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind_id: Mapped[str] = mapped_column(ForeignKey("package_kinds.id"), nullable=False)
    kind_version_id: Mapped[str] = mapped_column(ForeignKey("package_kind_versions.id"), nullable=False)
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    run_id: Mapped[str] = mapped_column(ForeignKey("allocation_runs.id"), index=True, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # Where it is going (or went), for whom: the current allocation's school and student grade.
    school_id: Mapped[str | None] = mapped_column(ForeignKey("schools.id"), index=True, nullable=True)
    grade: Mapped[str | None] = mapped_column(String(2), nullable=True)
    shipment_id: Mapped[str | None] = mapped_column(ForeignKey("shipments.id"), index=True, nullable=True)
    funding_start: Mapped[int] = mapped_column(BigInteger, nullable=False)
    funding_end: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The end of the stretch this one follows; none for the stretch that starts the queue.
    follows_end: Mapped[int | None] = mapped_column(
        BigInteger, Computed("NULLIF(funding_start, 0)", persisted=True), nullable=True
    )
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The current trip's delivery (its shipment's `delivered` event) and the school's receipt (`receipt_confirmed`).
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    receipt_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
