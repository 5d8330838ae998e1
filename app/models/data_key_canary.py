from __future__ import annotations

from sqlalchemy import SmallInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class DataKeyCanary(CreatedAt, Base):
    """A known text encrypted with the data key the database was first served with: a process started with
    another key can tell before it fails on real secrets (`app/core/preflight.py`)."""

    __tablename__ = "data_key_canaries"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(Text, nullable=False)
