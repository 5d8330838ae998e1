"""An operator signed in to the console: an admin API key, then a second factor (a TOTP code, RFC 6238, or a
one-time recovery code).

The key opens a *pending* session (a few minutes, a few tries) that can only give the second factor. A key with
no confirmed factor enrols one first: a fresh secret, shown once as a QR code, confirmed by typing a code from it;
then ten recovery codes are shown once (only their hashes are kept). A code accepted once is never accepted again
(nor one older than it): the factor remembers the time step of the last one. Once verified, the session gets a
new token and lasts `G4G_ADMIN_SESSION_MINUTES` from its last request; it ends at sign-out, or as soon as its API
key is revoked (every request checks the key). Wrong codes also count against the factor itself, across sign-ins,
and lock it after `G4G_ADMIN_FACTOR_MAX_FAILURES` (`factors.py`). The cookie holds a random token; only its SHA-256
is stored, and CSRF tokens derive from it as the merchant pages' do (`app/web/service.py`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
import structlog
from cryptography.fernet import MultiFernet
from markupsafe import Markup
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.auth import TOKEN_PREFIX, Principal, Role, hash_token
from app.core.ids import new_id
from app.core.secrets import decrypt, encrypt
from app.models import AdminFactor, AdminRecoveryCode, AdminSession, ApiKey
from app.web.admin.factors import CodeKind, FactorLocked, count_failure, reset_failures
from app.web.repository import SignedInSessions
from app.web.service import session_csrf_token

log = structlog.get_logger("g4g.web.admin")

SESSION_COOKIE = "g4g_admin"
ISSUER = "Goods for Good"
# The time between the key and the second factor, and the codes tried on one pending session.
PENDING_MINUTES = 10
MAX_CODE_ATTEMPTS = 5
RECOVERY_CODES = 10
# A code is accepted for the step before and after the current one too (a phone's clock a little off).
VALID_WINDOW = 1
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

# The key a session was opened with is also what it is for: an alias, so it can be joined twice.
_SessionKey = aliased(ApiKey)
ADMIN_SESSIONS: SignedInSessions[AdminSession, ApiKey] = SignedInSessions(
    AdminSession, _SessionKey, AdminSession.api_key_id, "admin"
)


class SignInRefused(Exception):
    """The key is not a live admin key."""


class CodeRefused(Exception):
    """The code is wrong, or was already used (`replayed`); it may have been the one that `locked` the factor."""

    def __init__(self, *, replayed: bool = False, attempts_left: int = 0, locked: bool = False) -> None:
        super().__init__("code refused")
        self.replayed = replayed
        self.attempts_left = attempts_left
        self.locked = locked


@dataclass(frozen=True, slots=True)
class SignedInAdmin:
    key: ApiKey
    session_id: str
    cookie_token: str
    verified: bool
    expires_at: datetime

    @property
    def csrf_token(self) -> str:
        return session_csrf_token(self.cookie_token)

    @property
    def principal(self) -> Principal:
        """The caller the domain services see: the admin key the operator signed in with."""
        return Principal(key_id=self.key.id, role=Role.admin)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new second factor, shown once: its secret (to type in if the QR code can't be scanned) and its QR code."""

    secret: str
    uri: str

    @property
    def qr_svg(self) -> Markup:
        qr = segno.make(self.uri, error="m")
        return Markup(qr.svg_inline(scale=4, border=4, dark="#000", light="#fff", title="TOTP"))  # noqa: S704

    @property
    def secret_groups(self) -> str:
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def _recovery_hash(api_key_id: str, code: str) -> bytes:
    normalized = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(f"g4g-recovery\n{api_key_id}\n{normalized}".encode()).digest()


def _new_recovery_code() -> str:
    letters = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{letters[:5]}-{letters[5:]}"


async def _open(
    session: AsyncSession, key_id: str, *, now: datetime, lifetime: timedelta, verified: bool
) -> str:
    cookie_token = secrets.token_urlsafe(32)
    await ADMIN_SESSIONS.add(
        session,
        AdminSession(
            id=new_id("ass"),
            token_hash=hash_token(cookie_token),
            api_key_id=key_id,
            expires_at=now + lifetime,
            verified_at=now if verified else None,
            code_attempts=0,
        ),
    )
    return cookie_token


async def sign_in(
    session: AsyncSession, token: str, *, cipher: MultiFernet, now: datetime
) -> tuple[str, Enrolment | None]:
    """Check the admin key and open a pending session; returns its cookie token, and the new factor to enrol if
    the key has no confirmed one yet (a fresh secret each time until one is confirmed). `FactorLocked` if its
    factor is locked: no pending session is opened."""
    token = token.strip()
    key = None
    if token.startswith(TOKEN_PREFIX) and len(token) <= 200:
        key = await ADMIN_SESSIONS.live_key(session, hash_token(token))
    if key is None:
        log.info("admin_sign_in_refused")  # never the key itself
        raise SignInRefused
    factor = await session.get(AdminFactor, key.id, with_for_update=True)
    if factor is not None and factor.locked_at is not None:
        log.info("admin_factor_locked_refused", key_id=key.id)
        raise FactorLocked
    await ADMIN_SESSIONS.end_expired(session, now)
    cookie_token = await _open(
        session, key.id, now=now, lifetime=timedelta(minutes=PENDING_MINUTES), verified=False
    )
    enrolment = None
    if factor is None or factor.confirmed_at is None:
        secret = pyotp.random_base32()
        if factor is None:
            session.add(AdminFactor(api_key_id=key.id, secret_encrypted=encrypt(cipher, secret)))
        else:
            factor.secret_encrypted = encrypt(cipher, secret)
        await session.flush()
        uri = pyotp.TOTP(secret).provisioning_uri(
            name=f"{key.name} ({key.token_prefix}…)", issuer_name=ISSUER
        )
        enrolment = Enrolment(secret, uri)
    log.info("admin_key_accepted", key_id=key.id, enrolling=enrolment is not None)
    return cookie_token, enrolment


async def signed_in(
    session: AsyncSession, cookie_token: str | None, *, now: datetime, minutes: int
) -> SignedInAdmin | None:
    """The session this cookie holds, if live; a verified one is extended to `minutes` from now."""
    if not cookie_token or len(cookie_token) > 100:
        return None
    found = await ADMIN_SESSIONS.live(session, hash_token(cookie_token), now)
    if found is None:
        return None
    row, key = found
    expires_at = row.expires_at
    if row.verified_at is not None:
        expires_at = now + timedelta(minutes=minutes)
        await ADMIN_SESSIONS.slide(session, row.token_hash, expires_at)
    return SignedInAdmin(key, row.id, cookie_token, row.verified_at is not None, expires_at)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code this is (within the window around now), if any."""
    if not _looks_like_totp(code):
        return None
    code = "".join(code.split())
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _looks_like_totp(code: str) -> bool:
    code = "".join(code.split())
    return code.isdigit() and len(code) == 6


async def _failed(
    session: AsyncSession, signed: SignedInAdmin, *, replayed: bool = False, locked: bool = False
) -> CodeRefused:
    """Count a wrong code on the pending session; the last allowed one ends it, and so does one that locked the
    factor."""
    attempts = await session.scalar(
        update(AdminSession)
        .where(AdminSession.id == signed.session_id)
        .values(code_attempts=AdminSession.code_attempts + 1)
        .returning(AdminSession.code_attempts)
    )
    left = 0 if locked else MAX_CODE_ATTEMPTS - int(attempts or MAX_CODE_ATTEMPTS)
    if left <= 0:
        await ADMIN_SESSIONS.end(session, hash_token(signed.cookie_token))
    log.info("admin_code_refused", key_id=signed.key.id, replayed=replayed)
    return CodeRefused(replayed=replayed, attempts_left=max(left, 0), locked=locked)


async def _accept_totp(session: AsyncSession, factor: AdminFactor, step: int) -> bool:
    """Remember the step as used, unless it (or a later one) already was: a code works once."""
    used = await session.scalar(
        update(AdminFactor)
        .where(
            AdminFactor.api_key_id == factor.api_key_id,
            (AdminFactor.last_used_step.is_(None)) | (AdminFactor.last_used_step < step),
        )
        .values(last_used_step=step)
        .returning(AdminFactor.api_key_id)
    )
    return used is not None


async def _verified(session: AsyncSession, signed: SignedInAdmin, *, now: datetime, minutes: int) -> str:
    """The pending session is replaced by a verified one with a new token (the old one is never worth more)."""
    await ADMIN_SESSIONS.end(session, hash_token(signed.cookie_token))
    return await _open(session, signed.key.id, now=now, lifetime=timedelta(minutes=minutes), verified=True)


async def enrolment_pending(session: AsyncSession, key_id: str) -> bool:
    factor = await session.get(AdminFactor, key_id)
    return factor is None or factor.confirmed_at is None


async def confirm_enrolment(
    session: AsyncSession,
    signed: SignedInAdmin,
    code: str,
    *,
    cipher: MultiFernet,
    now: datetime,
    minutes: int,
) -> tuple[str, list[str]]:
    """The first code from the new factor confirms it; returns the verified session's cookie token and the
    recovery codes (shown once; any earlier ones are spent)."""
    factor = await session.get(AdminFactor, signed.key.id, with_for_update=True)
    if factor is None or factor.confirmed_at is not None:
        raise await _failed(session, signed)
    step = _matching_step(decrypt(cipher, factor.secret_encrypted), code, now)
    if step is None or not await _accept_totp(session, factor, step):
        raise await _failed(session, signed, replayed=step is not None)
    factor.confirmed_at = now
    await session.execute(delete(AdminRecoveryCode).where(AdminRecoveryCode.api_key_id == signed.key.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    session.add_all(
        AdminRecoveryCode(
            id=new_id("arc"), api_key_id=signed.key.id, code_hash=_recovery_hash(signed.key.id, c)
        )
        for c in codes
    )
    await session.flush()
    log.info("admin_factor_enrolled", key_id=signed.key.id)
    return await _verified(session, signed, now=now, minutes=minutes), codes


async def verify(
    session: AsyncSession,
    signed: SignedInAdmin,
    code: str,
    *,
    cipher: MultiFernet,
    now: datetime,
    minutes: int,
    max_failures: int,
    address: str | None = None,
) -> tuple[str, int | None]:
    """A code from the key's factor, or one of its recovery codes (spent by it). Returns the verified session's
    cookie token, and how many recovery codes are left when one was used. A wrong code counts against the factor
    (`factors.count_failure`); `FactorLocked`, without looking at the code, once it is locked."""
    # The factor's row lock, in its own statement, orders the checks of one key's codes: a code racing the guess
    # that locks the factor sees the lock.
    factor = await session.get(AdminFactor, signed.key.id, with_for_update=True, populate_existing=True)
    if factor is None or factor.confirmed_at is None:
        raise await _failed(session, signed)
    if factor.locked_at is not None:
        await ADMIN_SESSIONS.end(session, hash_token(signed.cookie_token))
        log.info("admin_factor_locked_refused", key_id=signed.key.id)
        raise FactorLocked

    async def wrong(kind: CodeKind) -> CodeRefused:
        failure = await count_failure(
            session, signed.key.id, kind=kind, max_failures=max_failures, now=now, address=address
        )
        return await _failed(session, signed, replayed=kind == "used_totp_code", locked=failure.locked)

    step = _matching_step(decrypt(cipher, factor.secret_encrypted), code, now)
    if step is not None:
        if not await _accept_totp(session, factor, step):
            raise await wrong("used_totp_code")
        await reset_failures(session, signed.key.id)
        log.info("admin_signed_in", key_id=signed.key.id, factor="totp")
        return await _verified(session, signed, now=now, minutes=minutes), None
    spent = await session.scalar(
        update(AdminRecoveryCode)
        .where(
            AdminRecoveryCode.api_key_id == signed.key.id,
            AdminRecoveryCode.code_hash == _recovery_hash(signed.key.id, code[:40]),
            AdminRecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(AdminRecoveryCode.id)
    )
    if spent is None:
        raise await wrong("totp_code" if _looks_like_totp(code) else "recovery_code")
    await reset_failures(session, signed.key.id)
    left = len(
        (
            await session.scalars(
                select(AdminRecoveryCode.id).where(
                    AdminRecoveryCode.api_key_id == signed.key.id, AdminRecoveryCode.used_at.is_(None)
                )
            )
        ).all()
    )
    log.info("admin_signed_in", key_id=signed.key.id, factor="recovery_code", recovery_codes_left=left)
    return await _verified(session, signed, now=now, minutes=minutes), left


async def sign_out(session: AsyncSession, signed: SignedInAdmin) -> None:
    await ADMIN_SESSIONS.end(session, hash_token(signed.cookie_token))
    log.info("admin_signed_out", key_id=signed.key.id, session_id=signed.session_id)
