"""A partner's device signed in to the field app: the cookie holds a random token, only its SHA-256 is stored, and
the session ends at its expiry (`G4G_PARTNER_SESSION_DAYS`), at sign-out, or as soon as the API key it was opened
with is revoked (every request checks the key). CSRF tokens are derived from the session token, as the merchant
pages' are (`app/web/service.py`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import TOKEN_PREFIX, Principal, Role, hash_token
from app.core.ids import new_id
from app.models import LogisticsPartner, PartnerSession
from app.web.partner import repository
from app.web.service import session_csrf_token

log = structlog.get_logger("g4g.web.partner")

SESSION_COOKIE = "g4g_partner"


class SignInRefused(Exception):
    """The key is not a live logistics key."""


@dataclass(frozen=True, slots=True)
class SignedInPartner:
    partner: LogisticsPartner
    session_id: str
    api_key_id: str
    cookie_token: str

    @property
    def csrf_token(self) -> str:
        return session_csrf_token(self.cookie_token)

    @property
    def principal(self) -> Principal:
        """The caller the logistics and evidence services see: the key the device signed in with."""
        return Principal(key_id=self.api_key_id, role=Role.logistics, logistics_partner_id=self.partner.id)


async def sign_in(session: AsyncSession, token: str, *, now: datetime, lifetime: timedelta) -> str:
    """Open a device session for the partner whose logistics key this is; returns the cookie's token."""
    token = token.strip()
    key = None
    if token.startswith(TOKEN_PREFIX) and len(token) <= 200:
        key = await repository.PARTNER_SESSIONS.live_key(session, hash_token(token))
    if key is None or key.logistics_partner_id is None:
        log.info("partner_sign_in_refused")  # never the key itself
        raise SignInRefused
    await repository.PARTNER_SESSIONS.end_expired(session, now)
    cookie_token = secrets.token_urlsafe(32)
    await repository.PARTNER_SESSIONS.add(
        session,
        PartnerSession(
            id=new_id("pss"),
            token_hash=hash_token(cookie_token),
            api_key_id=key.id,
            logistics_partner_id=key.logistics_partner_id,
            expires_at=now + lifetime,
        ),
    )
    log.info("partner_signed_in", logistics_partner_id=key.logistics_partner_id, key_id=key.id)
    return cookie_token


async def signed_in(
    session: AsyncSession, cookie_token: str | None, *, now: datetime
) -> SignedInPartner | None:
    if not cookie_token or len(cookie_token) > 100:
        return None
    found = await repository.PARTNER_SESSIONS.live(session, hash_token(cookie_token), now)
    if found is None:
        return None
    partner_session, partner = found
    return SignedInPartner(partner, partner_session.id, partner_session.api_key_id, cookie_token)


async def sign_out(session: AsyncSession, signed: SignedInPartner) -> None:
    await repository.PARTNER_SESSIONS.end(session, hash_token(signed.cookie_token))
    log.info("partner_signed_out", logistics_partner_id=signed.partner.id, session_id=signed.session_id)
