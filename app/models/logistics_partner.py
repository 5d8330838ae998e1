from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class LogisticsPartner(CreatedAt, Base):
    """A carrier that ships Love Packages to schools and reports delivery."""

    __tablename__ = "logistics_partners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
