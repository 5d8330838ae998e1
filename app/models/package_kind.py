from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class PackageKind(CreatedAt, Base):
    """A kind of Love Package (say, "Primary starter box"). What it is — name, contents, unit cost, countries
    and grades — lives in its versions; the kind is the identity and its lifecycle. The highest version is the
    current one. A retired kind keeps its history and reads, but new allocation runs may not use it."""

    __tablename__ = "package_kinds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
