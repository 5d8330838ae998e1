from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class AllocationRun(CreatedAt, Base):
    """One allocation run: which term and kind, and what it made (packages, students served per school, money
    spent, pool left, students still waiting). Dry runs are never stored."""

    __tablename__ = "allocation_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    term: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    kind_id: Mapped[str] = mapped_column(ForeignKey("package_kinds.id"), nullable=False)
    kind_version_id: Mapped[str] = mapped_column(ForeignKey("package_kind_versions.id"), nullable=False)
    max_packages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
