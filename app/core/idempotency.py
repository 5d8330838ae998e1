"""`Idempotency-Key` on creating POSTs: the same API key, key and body get the first answer again; another body, 409.

Keys belong to the API key that sends them: another API key (another admin's, say) using the same `Idempotency-Key`
makes a request of its own. An answer that carries a secret shown once (a new API key's token, a webhook signing
secret) is never stored: a retry gets 409 `secret-shown-once` naming what was created, so a lost answer costs a new
resource (after revoking or deleting the first), never a second showing of the secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, TypeVar

import asyncpg
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from app.core.auth import Principal
from app.core.database import SessionDep
from app.core.errors import IdempotencyKeyReused, SecretShownOnce
from app.core.secrets import decrypt, encrypt
from app.models import IdempotencyRecord

ResultT = TypeVar("ResultT", bound=BaseModel)


class _Created(Protocol):
    @property
    def id(self) -> str: ...


CreatedT = TypeVar("CreatedT", bound=_Created)

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
        # Keyed (the lookup key, outside the database): a body may hold personal data, e.g. one roster code, and
        # a plain hash of a short body could be confirmed by guessing from a copy of the database.
        digest = hmac.new(self._request.app.state.lookup_key, digestmod=hashlib.sha256)
        digest.update(f"{self._request.method} {self._request.url.path}\n".encode())
        digest.update(canonical)
        return digest.digest()

    async def _first_answer(
        self, principal: Principal, key: str, fingerprint: bytes
    ) -> IdempotencyRecord | None:
        """The live record of this API key's first request under `key`, if any. Concurrent requests with one key
        are serialised by a transaction-scoped advisory lock, so the second waits for the first to commit."""
        await self._session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"{principal.key_id}\n{key}", 0)))
        )
        record = await self._session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.api_key_id == principal.key_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.expires_at > datetime.now(UTC),
            )
        )
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was first used with another method, path or body; use a new key."
            )
        return record

    async def _remember(
        self,
        principal: Principal,
        key: str,
        fingerprint: bytes,
        *,
        status: int,
        body_encrypted: str | None = None,
        shown_once_resource_id: str | None = None,
    ) -> None:
        values = {
            "api_key_id": principal.key_id,
            "key": key,
            "fingerprint": fingerprint,
            "response_status": status,
            "response_body_encrypted": body_encrypted,
            "shown_once_resource_id": shown_once_resource_id,
            "expires_at": datetime.now(UTC)
            + timedelta(hours=self._request.app.state.settings.idempotency_ttl_hours),
        }
        statement = insert(IdempotencyRecord).values(**values)
        # An expired record under the same key is replaced: after the retention period a key may be reused.
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[IdempotencyRecord.api_key_id, IdempotencyRecord.key],
                set_={name: statement.excluded[name] for name in values if name not in ("api_key_id", "key")},
            )
        )

    async def run(
        self, principal: Principal, create: Callable[[], Awaitable[ResultT]], *, status: int = 201
    ) -> ResultT | JSONResponse:
        """Run `create` once per API key and `Idempotency-Key`; a retry gets the first answer again."""
        if self._key is None:
            return await create()
        fingerprint = await self._fingerprint()
        cipher = self._request.app.state.cipher
        record = await self._first_answer(principal, self._key, fingerprint)
        if record is not None:
            # Path and body are in the fingerprint, so a record found here was written by `run` itself.
            assert record.response_body_encrypted is not None
            # Nothing changes on a replay: no activity entry either (`app.activity.recording`).
            self._request.state.activity_replayed = True
            return JSONResponse(
                json.loads(decrypt(cipher, record.response_body_encrypted)),
                status_code=record.response_status,
                headers={REPLAY_HEADER: "true"},
            )
        result = await create()
        body = encrypt(cipher, result.model_dump_json())
        await self._remember(principal, self._key, fingerprint, status=status, body_encrypted=body)
        return result

    async def run_showing_secret_once(
        self,
        principal: Principal,
        create: Callable[[], Awaitable[CreatedT]],
        *,
        if_lost: str,
        status: int = 201,
    ) -> CreatedT:
        """Like `run`, for an answer holding a secret shown once: only the created resource's id is kept, and a
        retry is refused (409 `secret-shown-once`, naming it and saying what to do, `if_lost`)."""
        if self._key is None:
            return await create()
        fingerprint = await self._fingerprint()
        record = await self._first_answer(principal, self._key, fingerprint)
        if record is not None:
            created = record.shown_once_resource_id
            raise SecretShownOnce(
                f"This Idempotency-Key already created {created}; its secret was in that answer only and is not"
                f" kept. {if_lost}",
                resource_id=created,
            )
        result = await create()
        await self._remember(
            principal, self._key, fingerprint, status=status, shown_once_resource_id=result.id
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
            description="Retry-safe creation: the same key with the same body, sent with the same API key, returns"
            " the first answer (an answer holding a secret shown once: 409 `secret-shown-once` instead).",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(request, session, idempotency_key)


IdempotencyDep = Annotated[Idempotency, Depends(_idempotency)]


async def delete_expired_records(db: asyncpg.Connection, *, now: datetime, limit: int) -> int:
    """Forget up to `limit` answers whose retention passed (they are already ignored); returns how many."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM idempotency_records WHERE (api_key_id, key) IN (
                   SELECT api_key_id, key FROM idempotency_records WHERE expires_at <= $1
                   ORDER BY expires_at LIMIT $2)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        now,
        limit,
    )
    return int(deleted or 0)
