"""Recording and reading the activity log.

Entries are written in the transaction of the change they describe, so a change rolled back leaves none and a
change committed always has one. API routes record through `app.activity.recording.Recorded`; the console and the
CLI call `record_activity` themselves."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.activity import repository
from app.core.auth import Principal, Role
from app.core.ids import new_id
from app.models import ActivityEntry

Via = Literal["api", "console", "cli"]

# `resource.verb`, lower case: stable names that filters and pages rely on.
ACTION = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
# The kind of resource acted on: `school`, `api_key`…
RESOURCE_TYPE = re.compile(r"^[a-z][a-z_]{0,39}$")
MAX_DETAILS_BYTES = 2_000
# Names a detail may never have: what they would hold must not be written anywhere but where it belongs.
_FORBIDDEN_DETAIL = re.compile(r"token|secret|roster|password|totp|recovery", re.IGNORECASE)


def check_details(details: dict[str, Any]) -> None:
    """A small JSON object of ids and figures. A detail named like a credential or a roster code, or too much
    of them, is a bug in the caller (not the client's fault): it raises rather than being written."""
    pending: list[Any] = [details]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for name, inner in value.items():
                if _FORBIDDEN_DETAIL.search(str(name)):
                    raise ValueError(f"activity details may not hold {name!r}")
                pending.append(inner)
        elif isinstance(value, list):
            pending.extend(value)
    if len(json.dumps(details, default=str)) > MAX_DETAILS_BYTES:
        raise ValueError("activity details are limited to a few ids and figures")


async def record_activity(
    session: AsyncSession,
    *,
    key_id: str | None,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    merchant_id: str | None = None,
    address: str | None = None,
    details: dict[str, Any] | None = None,
    via: Via = "console",
    request_id: str | None = None,
) -> None:
    """Write one entry in `session`'s transaction: the key `key_id` (its name, role and tenant are copied from
    its row) did `action` (`resource.verb`) to `resource_type`/`resource_id`, belonging to merchant
    `merchant_id` if any, from `address`. `key_id` may be None only with `via="cli"`. Commit is the caller's:
    the entry stands or falls with the change it records."""
    if not ACTION.match(action):
        raise ValueError(f"activity action {action!r} is not `resource.verb`")
    if key_id is None and via != "cli":
        raise ValueError("only the CLI acts without an API key")
    details = dict(details or {})
    check_details(details)
    values: dict[str, Any] = {
        "id": new_id("act"),
        "via": via,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "merchant_id": merchant_id,
        "address": address,
        "request_id": request_id,
        "details": details,
    }
    await repository.insert_entry(session, key_id=key_id, values=values)


async def list_activity(
    session: AsyncSession,
    principal: Principal,
    *,
    key_id: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: str | None,
    limit: int,
) -> list[ActivityEntry]:
    """Entries newest first, as `principal` may see them: an admin every one; a merchant the actions of its own
    keys and its platform's keys on its resources; a platform its own keys' actions. Other roles see none."""
    conditions = repository.filtered(
        key_id=key_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
    )
    if principal.role is Role.merchant:
        assert principal.merchant_id is not None
        conditions.append(repository.seen_by_merchant(principal.merchant_id))
    elif principal.role is Role.platform:
        assert principal.platform_id is not None
        conditions.append(repository.seen_by_platform(principal.platform_id))
    elif principal.role is not Role.admin:
        return []
    return await repository.list_after(session, conditions=conditions, after=after, limit=limit)
