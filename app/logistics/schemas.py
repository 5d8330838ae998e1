from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.core.types import Name


class LogisticsPartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class LogisticsPartnerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    created_at: datetime
