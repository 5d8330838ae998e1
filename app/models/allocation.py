from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt

ALLOCATION_STATUSES = (
    "allocated",
    "shipped",
    "delivered",
    "accepted",
    "damaged",
    "missing",
    "returned",
    "cancelled",
)
# A student has at most one of these per term (the database refuses a second).
LIVE_STATUSES = ("allocated", "shipped", "delivered", "accepted")


class Allocation(CreatedAt, Base):
    """A package given to a student in a term, and what became of it: the per-student record."""

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint(f"status IN {ALLOCATION_STATUSES}", name="status"),
        CheckConstraint("reason IN ('replacement', 'never_received', 'longest_since_last')", name="reason"),
        Index(
            "uq_allocations_live_per_term",
            "student_id",
            "term",
            unique=True,
            postgresql_where=text(f"status IN {LIVE_STATUSES}"),
        ),
        Index("ix_allocations_student", "student_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), nullable=False)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True, nullable=False)
    package_id: Mapped[str] = mapped_column(ForeignKey("love_packages.id"), index=True, nullable=False)
    run_id: Mapped[str] = mapped_column(ForeignKey("allocation_runs.id"), index=True, nullable=False)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), index=True, nullable=False)
    term: Mapped[str] = mapped_column(String(32), nullable=False)
    grade: Mapped[str] = mapped_column(String(2), nullable=False)
    # Position in the run's fairness order (1 = first served), why the student came then, and the version of
    # the fairness rules that ordered it.
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(20), nullable=False)
    rule_version: Mapped[str] = mapped_column(String(20), nullable=False)
    from_stock: Mapped[bool] = mapped_column(Boolean, nullable=False)
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    receipt_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
