"""`Idempotency-Key` on creating POSTs: the same key and body get the first answer again; another body, 409."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import asyncpg
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from app.core.auth import Principal
from app.core.database import SessionDep
from app.core.errors import IdempotencyKeyReused
from app.core.secrets import decrypt, encrypt
from app.models import IdempotencyRecord

ResultT = TypeVar("ResultT", bound=BaseModel)

REPLAY_HEADER = "Idempotent-Replayed"


class Idempotency:
    def __init__(self, request: Request, session: SessionDep, key: str | None) -> None:
        self._request = request
        self._session = session
        self._key = key

    async def _fingerprint(self) -> bytes:
        raw = await self._request.body()
        try:
            canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
        except ValueError:
            canonical = raw
        digest = hashlib.sha256(f"{self._request.method} {self._request.url.path}\n".encode())
        digest.update(canonical)
        return digest.digest()

    async def run(
        self, principal: Principal, create: Callable[[], Awaitable[ResultT]], *, status: int = 201
    ) -> ResultT | JSONResponse:
        """Run `create` once per key. Concurrent requests with one key are serialised by a transaction-scoped
        advisory lock, so the second waits for the first to commit and then replays its answer."""
        if self._key is None:
            return await create()
        session = self._session
        tenant = principal.tenant
        fingerprint = await self._fingerprint()
        await session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"{tenant}\n{self._key}", 0)))
        )
        now = datetime.now(UTC)
        record = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.tenant == tenant,
                IdempotencyRecord.key == self._key,
                IdempotencyRecord.expires_at > now,
            )
        )
        cipher = self._request.app.state.cipher
        if record is not None:
            if record.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was first used with another method, path or body; use a new key."
                )
            return JSONResponse(
                json.loads(decrypt(cipher, record.response_body_encrypted)),
                status_code=record.response_status,
                headers={REPLAY_HEADER: "true"},
            )
        result = await create()
        values = {
            "tenant": tenant,
            "key": self._key,
            "fingerprint": fingerprint,
            "response_status": status,
            "response_body_encrypted": encrypt(cipher, result.model_dump_json()),
            "expires_at": now + timedelta(hours=self._request.app.state.settings.idempotency_ttl_hours),
        }
        statement = insert(IdempotencyRecord).values(**values)
        # An expired record under the same key is replaced: after the retention period a key may be reused.
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[IdempotencyRecord.tenant, IdempotencyRecord.key],
                set_={name: statement.excluded[name] for name in values if name not in ("tenant", "key")},
            )
        )
        return result


def _idempotency(
    request: Request,
    session: SessionDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Retry-safe creation: the same key with the same body returns the first answer.",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(request, session, idempotency_key)


IdempotencyDep = Annotated[Idempotency, Depends(_idempotency)]


async def delete_expired_records(db: asyncpg.Connection, *, now: datetime, limit: int) -> int:
    """Forget up to `limit` answers whose retention passed (they are already ignored); returns how many."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM idempotency_records WHERE (tenant, key) IN (
                   SELECT tenant, key FROM idempotency_records WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        now,
        limit,
    )
    return int(deleted or 0)
