from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.core.types import Name


class PlatformCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class PlatformRead(BaseModel):
    id: str
    name: str
    created_at: datetime


class PlatformWithSecret(PlatformRead):
    webhook_secret: str
    """Shown only in this answer: at creation and on rotation."""


class PlatformSecretRotated(PlatformWithSecret):
    previous_secrets_valid_until: datetime
