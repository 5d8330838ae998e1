from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.core.auth import Role


class ActivityEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    occurred_at: datetime
    via: Literal["api", "console", "cli"]
    """Where it was done: through the API, on the console's pages, or with the CLI at the server."""
    key_id: str | None
    """The key that acted (never its token); null only for the CLI, which acts without one."""
    key_name: str | None
    """The key's name when it acted."""
    key_role: Role | None
    key_platform_id: str | None
    key_merchant_id: str | None
    key_logistics_partner_id: str | None
    action: str
    """Stable, `resource.verb`: `school.create`, `api_key.revoke`, `allocation.run`…"""
    resource_type: str
    resource_id: str | None
    merchant_id: str | None
    """The merchant whose resource this was, if any."""
    address: str | None
    """The client's address, as the server saw it."""
    request_id: str | None
    """The `X-Request-ID` of the request (to find it in the logs)."""
    details: dict[str, Any]
    """A few ids and figures about the change; never a token, a secret or a roster code."""
