from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.auth import Role
from app.core.types import Name, ResourceId


class _KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class AdminKeyCreate(_KeyCreate):
    role: Literal[Role.admin]


class PlatformKeyCreate(_KeyCreate):
    role: Literal[Role.platform]
    platform_id: ResourceId


class MerchantKeyCreate(_KeyCreate):
    role: Literal[Role.merchant]
    merchant_id: ResourceId


class LogisticsKeyCreate(_KeyCreate):
    role: Literal[Role.logistics]
    logistics_partner_id: ResourceId


# Each role names exactly the one tenant it is scoped to; the schema says so, so clients can't get it wrong.
ApiKeyCreate = Annotated[
    AdminKeyCreate | PlatformKeyCreate | MerchantKeyCreate | LogisticsKeyCreate, Field(discriminator="role")
]


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    role: Role
    name: str
    token_prefix: str
    """The first characters of the token, to tell keys apart; never enough to use one."""
    platform_id: str | None
    merchant_id: str | None
    logistics_partner_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    token: str
    """Shown only in this answer. Send it as `Authorization: Bearer <token>`."""
