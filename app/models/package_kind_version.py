from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.packages.grades import sql_grade_list


class PackageKindVersion(CreatedAt, Base):
    """One version of a package kind, never changed: a change to the kind (its cost above all) adds a version,
    and a package refers to the version it was funded at, so it keeps that cost and those contents."""

    __tablename__ = "package_kind_versions"
    __table_args__ = (
        UniqueConstraint("kind_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("unit_cost > 0", name="unit_cost_positive"),
        CheckConstraint(
            "jsonb_typeof(contents) = 'array' AND jsonb_array_length(contents) >= 1", name="contents_listed"
        ),
        CheckConstraint("cardinality(countries) >= 1", name="countries_listed"),
        CheckConstraint("cardinality(grades) >= 1", name="grades_listed"),
        CheckConstraint(f"grades <@ ARRAY[{sql_grade_list()}]::varchar[]", name="grades_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind_id: Mapped[str] = mapped_column(ForeignKey("package_kinds.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # [{"item": "Pencil", "quantity": 6}, ...]
    contents: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    # In minor units of `currency`, the programme's base currency.
    unit_cost: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    # ISO 3166-1 alpha-2 codes, sorted; grades in school order.
    countries: Mapped[list[str]] = mapped_column(ARRAY(String(2)), nullable=False)
    grades: Mapped[list[str]] = mapped_column(ARRAY(String(2)), nullable=False)
