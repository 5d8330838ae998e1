"""Bearer API keys and roles. Every endpoint names the roles that may call it with `Authorized(...)`."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from app.core.database import SessionDep
from app.core.errors import InvalidRequest, NotFound, ProblemError, Unauthorized
from app.models import ApiKey

TOKEN_PREFIX = "g4g_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    admin = "admin"
    platform = "platform"
    merchant = "merchant"
    logistics = "logistics"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the role of their key and the one tenant it is scoped to, if any."""

    key_id: str
    role: Role
    platform_id: str | None = None
    merchant_id: str | None = None
    logistics_partner_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def acting_platform(self, requested: str | None) -> str:
        """The platform a request acts for: an admin names it; a platform key acts for its own, and naming
        another platform finds nothing."""
        if self.is_admin:
            if requested is None:
                raise InvalidRequest("platform_id: required when an admin calls this.")
            return requested
        if self.platform_id is None or (requested is not None and requested != self.platform_id):
            raise NotFound(f"No platform {requested}.")
        return self.platform_id

    @property
    def tenant(self) -> str:
        """The scope that owns this caller's idempotency keys: all admin keys share one, a platform its own."""
        scope = self.platform_id or self.merchant_id or self.logistics_partner_id or "-"
        return f"{self.role.value}:{scope}"


class Forbidden(ProblemError):
    status, kind, title = 403, "forbidden", "This credential's role may not do this"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    # Tokens carry 256 bits of randomness, so a fast hash is enough; it keeps lookups to one index probe.
    return hashlib.sha256(token.encode()).digest()


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer g4g_…`")


async def authenticate(
    session: SessionDep, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <token>`.")
    token = credentials.credentials
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("Unknown or revoked API key.")
    key = await session.scalar(
        select(ApiKey).where(ApiKey.token_hash == hash_token(token), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        raise Unauthorized("Unknown or revoked API key.")
    return Principal(
        key_id=key.id,
        role=Role(key.role),
        platform_id=key.platform_id,
        merchant_id=key.merchant_id,
        logistics_partner_id=key.logistics_partner_id,
    )


def Authorized(*roles: Role) -> Any:
    """A dependency giving the caller's `Principal`, refusing any role not listed with 403."""
    allowed = frozenset(roles)

    async def check(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"Allowed roles: {', '.join(sorted(r.value for r in allowed))}.")
        request.state.principal = principal
        return principal

    return Depends(check)


def ensure_visible(visible: bool, what: str) -> None:
    """Another tenant's resource is indistinguishable from a missing one: 404, not 403."""
    if not visible:
        raise NotFound(f"No such {what}.")
