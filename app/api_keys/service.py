"""API keys: random tokens shown once, kept only as a hash, scoped to one tenant, revocable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import repository
from app.core.auth import Role, hash_token, new_token
from app.core.errors import InvalidRequest, NotFound
from app.core.ids import new_id
from app.models import ApiKey, LogisticsPartner, Merchant, Platform

_SCOPE_OF_ROLE = {
    Role.admin: None,
    Role.platform: ("platform_id", Platform),
    Role.merchant: ("merchant_id", Merchant),
    Role.logistics: ("logistics_partner_id", LogisticsPartner),
}


async def create_api_key(
    session: AsyncSession,
    *,
    role: Role,
    name: str,
    platform_id: str | None = None,
    merchant_id: str | None = None,
    logistics_partner_id: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for `role`, scoped to exactly the one tenant that role needs. Returns the key and its
    token, which is not stored and cannot be shown again."""
    scopes = {
        "platform_id": platform_id,
        "merchant_id": merchant_id,
        "logistics_partner_id": logistics_partner_id,
    }
    needed = _SCOPE_OF_ROLE[role]
    for field, value in scopes.items():
        if value is not None and (needed is None or needed[0] != field):
            raise InvalidRequest(f"{field}: not allowed for role {role.value}.")
    if needed is not None:
        field, model = needed
        scope_id = scopes[field]
        if scope_id is None:
            raise InvalidRequest(f"{field}: required for role {role.value}.")
        if await session.get(model, scope_id) is None:
            raise NotFound(f"No {field.removesuffix('_id').replace('_', ' ')} {scope_id}.")
    token = new_token()
    key = ApiKey(
        id=new_id("key"),
        role=role.value,
        name=name,
        token_hash=hash_token(token),
        token_prefix=token[:12],
        **scopes,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, token


def key_details(key: ApiKey) -> dict[str, Any]:
    """What the activity log says about a key: its role, name and tenant (never its token or prefix)."""
    scope = {
        name: value
        for name in ("platform_id", "merchant_id", "logistics_partner_id")
        if (value := getattr(key, name)) is not None
    }
    return {"role": key.role, "name": key.name, **scope}


async def revoke_api_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Revoke a key; it is refused from the next request on. Revoking twice keeps the first time."""
    if await repository.get(session, key_id) is None:
        raise NotFound(f"No API key {key_id}.")
    await repository.revoke(session, key_id, at=datetime.now(UTC))
    key = await repository.get(session, key_id)
    assert key is not None
    await session.refresh(key)
    return key
