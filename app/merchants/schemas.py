from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.core.types import CountryCode, ExternalId, Name, ResourceId


class MerchantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: ExternalId
    """The platform's own id for the merchant, as it appears in order events."""
    name: Name
    country: CountryCode
    platform_id: ResourceId | None = None
    """Admin only: the platform the merchant sells on. A platform key registers on its own platform."""


class MerchantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    platform_id: str
    external_id: str
    name: str
    country: str
    created_at: datetime
