from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.packages.grades import sql_grade_list


class Student(CreatedAt, Base):
    """A student, known to us only by the school's roster code and a grade: no name, birth date or photo.

    The roster code is never stored in clear: `roster_code_encrypted` (data key, outside the database) gives it
    back to an admin; `roster_code_hash` (HMAC with the lookup key, also outside) finds a student again by
    (school, roster code) on re-import. Erasure removes both and leaves a tombstone — id, school, grade,
    registration — so allocation history and the ledger stay intact."""

    __tablename__ = "students"
    __table_args__ = (
        UniqueConstraint("school_id", "roster_code_hash"),
        CheckConstraint(f"grade IN ({sql_grade_list()})", name="grade_known"),
        CheckConstraint("octet_length(roster_code_hash) = 32", name="roster_code_hash_length"),
        CheckConstraint(
            "(erased_at IS NULL) = (roster_code_hash IS NOT NULL)"
            " AND (erased_at IS NULL) = (roster_code_encrypted IS NOT NULL)",
            name="erased_means_no_roster_code",
        ),
        CheckConstraint("erased_at IS NULL OR NOT active", name="erased_is_inactive"),
        # A school's students in registration order (lists, and the order within a school for allocation).
        Index("ix_students_school_registration", "school_id", "registration_number"),
        Index("ix_students_active_school_grade", "school_id", "grade", postgresql_where=text("active")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), nullable=False)
    registration_number: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True, nullable=False)
    grade: Mapped[str] = mapped_column(String(2), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), nullable=False)
    roster_code_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    roster_code_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
