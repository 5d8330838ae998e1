"""Bearer API keys and roles. Every endpoint names the roles that may call it with `Authorized(...)`."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.datastructures import State

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


class Forbidden(ProblemError):
    status, kind, title = 403, "forbidden", "This credential's role may not do this"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    # Tokens carry 256 bits of randomness, so a fast hash is enough; it keeps lookups to one index probe.
    return hashlib.sha256(token.encode()).digest()


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer g4g_…`")


class ApiKeyCache:
    """Callers by the SHA-256 of their token, remembered `ttl` seconds in this process, so an API request doesn't
    pay a database round trip for its credentials. A revoked key is refused at once by the process that revoked it
    (`forget`) and by every other process within `ttl` (`G4G_API_KEY_CACHE_SECONDS`); 0 turns the cache off.
    Unknown tokens are never remembered."""

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def get(self, token_hash: bytes) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if time.monotonic() - entry[0] >= self._ttl:
            del self._entries[token_hash]
            return None
        return entry[1]

    def put(self, token_hash: bytes, principal: Principal) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # many distinct live keys at once: start over rather than grow
        self._entries[token_hash] = (time.monotonic(), principal)

    def forget(self, key_id: str) -> None:
        for token_hash in [h for h, (_, p) in self._entries.items() if p.key_id == key_id]:
            del self._entries[token_hash]


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:  # checked before the body was read (`authorize_early`)
        return known
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <token>`.")
    return await principal_for(request.app.state, credentials.credentials, request.client)


async def principal_for(state: State, token: str, client: Sequence[object] | None = None) -> Principal:
    """The caller a bearer token stands for; `Unauthorized` if it is unknown or revoked, `TooManyAttempts` if
    its `client` address or its prefix has sent too many wrong keys (`app.core.auth_failures`)."""
    token_hash = hash_token(token)
    cache: ApiKeyCache = state.api_keys
    principal = cache.get(token_hash)
    if principal is not None:
        return principal
    async with state.auth_failures.guard(state.engine, client, token, now=state.clock.now()):
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthorized("Unknown or revoked API key.")
        async with state.sessionmaker() as session:
            key = await session.scalar(
                select(ApiKey).where(ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None))
            )
        if key is None:
            raise Unauthorized("Unknown or revoked API key.")
    principal = Principal(
        key_id=key.id,
        role=Role(key.role),
        platform_id=key.platform_id,
        merchant_id=key.merchant_id,
        logistics_partner_id=key.logistics_partner_id,
    )
    cache.put(token_hash, principal)
    return principal


# Each `Authorized(...)` dependency and the roles it allows, so a route can check them before reading a body.
_ROLE_CHECKS: dict[Any, frozenset[Role]] = {}


def Authorized(*roles: Role) -> Any:
    """A dependency giving the caller's `Principal`, refusing any role not listed with 403."""
    allowed = frozenset(roles)

    async def check(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        ensure_role(principal, allowed)
        request.state.principal = principal
        return principal

    _ROLE_CHECKS[check] = allowed
    return Depends(check)


def roles_required(dependant: Dependant) -> frozenset[Role] | None:
    """The roles an endpoint's `Authorized(...)` allows (None: it takes no API key)."""
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call in _ROLE_CHECKS:
            return _ROLE_CHECKS[current.call]
        pending.extend(current.dependencies)
    return None


async def authorize_early(request: Request, roles: frozenset[Role]) -> None:
    """What `Authorized(*roles)` decides, from the Authorization header alone: called before the body is read,
    so a request without a valid key of an allowed role is answered 401 or 403 having sent nothing we read."""
    principal = await authenticate(request, await _bearer(request))
    ensure_role(principal, roles)
    request.state.principal = principal


def ensure_role(principal: Principal, allowed: frozenset[Role]) -> None:
    if principal.role not in allowed:
        raise Forbidden(f"Allowed roles: {', '.join(sorted(r.value for r in allowed))}.")


def ensure_visible(visible: bool, what: str) -> None:
    """Another tenant's resource is indistinguishable from a missing one: 404, not 403."""
    if not visible:
        raise NotFound(f"No such {what}.")
