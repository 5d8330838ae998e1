"""Platforms and the secrets they sign order webhooks with."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime, timedelta

from cryptography.fernet import MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import NotFound
from app.core.ids import new_id
from app.core.secrets import decrypt, encrypt
from app.models import Platform, PlatformWebhookSecret
from app.platforms import repository


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def _add_secret(session: AsyncSession, cipher: MultiFernet, platform_id: str) -> str:
    secret = new_webhook_secret()
    session.add(
        PlatformWebhookSecret(
            id=new_id("whs"), platform_id=platform_id, secret_encrypted=encrypt(cipher, secret)
        )
    )
    await session.flush()
    return secret


async def create_platform(session: AsyncSession, cipher: MultiFernet, *, name: str) -> tuple[Platform, str]:
    """Register a platform and its first webhook secret; the secret is returned to show it once."""
    platform = Platform(id=new_id("plt"), name=name)
    session.add(platform)
    await session.flush()
    secret = await _add_secret(session, cipher, platform.id)
    await session.refresh(platform)
    return platform, secret


async def get_platform(session: AsyncSession, platform_id: str) -> Platform:
    platform = await repository.get(session, platform_id)
    if platform is None:
        raise NotFound(f"No platform {platform_id}.")
    return platform


async def rotate_webhook_secret(
    session: AsyncSession, cipher: MultiFernet, platform: Platform, *, grace: timedelta
) -> tuple[str, datetime]:
    """Issue a new secret. Secrets valid until now stay valid for `grace`, so the platform can switch over
    without dropping a single delivery. Rotations are serialised per platform by a row lock."""
    await session.execute(select(Platform.id).where(Platform.id == platform.id).with_for_update())
    valid_until = datetime.now(UTC) + grace
    await repository.expire_current_secrets(session, platform.id, at=valid_until)
    secret = await _add_secret(session, cipher, platform.id)
    return secret, valid_until


async def webhook_secrets(session: AsyncSession, cipher: MultiFernet, platform_id: str) -> list[str]:
    """Every secret a webhook from this platform may be signed with right now, newest first."""
    rows = await repository.valid_secrets(session, platform_id, now=datetime.now(UTC))
    return [decrypt(cipher, row.secret_encrypted) for row in rows]


class WebhookSecretCache:
    """The secrets each platform may sign with, cached briefly per process: verifying a webhook must not cost
    a database round trip. A signature that fails against a cached list is checked once more against a fresh
    one, so a rotation is honoured at once."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: MultiFernet, *, ttl: float = 30.0
    ):
        self._sessionmaker = sessionmaker
        self._cipher = cipher
        self._ttl = ttl
        self._entries: dict[str, tuple[float, list[str]]] = {}

    async def get(self, platform_id: str, *, fresh: bool = False) -> list[str] | None:
        """Valid secrets, newest first; None when there is no such platform."""
        cached = self._entries.get(platform_id)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        async with self._sessionmaker() as session:
            if await repository.get(session, platform_id) is None:
                self._entries.pop(platform_id, None)
                return None
            found = await webhook_secrets(session, self._cipher, platform_id)
        self._entries[platform_id] = (time.monotonic(), found)
        return found

    def age(self, platform_id: str) -> float:
        cached = self._entries.get(platform_id)
        return time.monotonic() - cached[0] if cached else float("inf")
