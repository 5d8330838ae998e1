from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints

from app.events.catalogue import EVENT_TYPES

EventType = Annotated[str, Field(json_schema_extra={"enum": sorted(EVENT_TYPES)})]
EndpointUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000, allowed_schemes=["http", "https"])]
EventList = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: EndpointUrl
    events: EventList


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: EndpointUrl | None = None
    events: EventList | None = None
    enabled: bool | None = Field(None, description="false disables it; true enables it again after a disable")


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    platform_id: str | None
    merchant_id: str | None
    status: Literal["enabled", "disabled"]
    disabled_at: datetime | None
    disabled_reason: str | None = Field(description="Why it was disabled, e.g. after 5 days of failures")
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str
    """Shown only in this answer: at creation and on rotation."""


class EndpointSecretRotated(EndpointWithSecret):
    previous_secrets_valid_until: datetime


class AttemptOut(BaseModel):
    id: str
    attempted_at: datetime
    trigger: Literal["scheduled", "replay"]
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None = Field(
        description="The start of the receiver's answer (at most 1000 characters)"
    )
    next_attempt_at: datetime | None


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` of every attempt")
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[AttemptOut] = Field(description="The latest attempts, newest first (at most 50)")
