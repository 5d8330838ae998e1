from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Platform(CreatedAt, Base):
    """An e-commerce platform that registers merchants and sends their order events."""

    __tablename__ = "platforms"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
