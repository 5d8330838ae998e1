"""Wrong API keys, counted in PostgreSQL so that every server process sees the same counts: a client address with
more than `G4G_AUTH_FAILURES_PER_ADDRESS` (20) failures in the last minute, or a key prefix with more than
`G4G_AUTH_FAILURES_PER_KEY` (10), is refused with 429 and `Retry-After` before its key is even looked at — on the
API and at the dashboard's sign-in alike.

Counts sit in ten-second buckets (`auth_failure_counts`, UNLOGGED) and a minute is the last six of them, so a burst
that straddles a minute boundary gets no second allowance. An IPv6 client is counted by its /64 (one host usually
holds the whole block). The key prefix is the part `api_keys.token_prefix` keeps (`g4g_` and eight more); only a
digest of it is stored. A key that works never counts, and one already remembered by this process
(`ApiKeyCache`) is never checked at all."""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import ProblemError, Unauthorized

WINDOW = timedelta(minutes=1)
BUCKET_SECONDS = 10
KEY_PREFIX_LENGTH = 12  # as `api_keys.token_prefix`


class TooManyAttempts(ProblemError):
    status, kind, title = 429, "too-many-attempts", "Too many wrong keys; wait before trying again"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many wrong API keys from this address or with this key; try again in {retry_after} seconds.",
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


@dataclass(frozen=True, slots=True)
class _Subject:
    scope: str  # 'address' or 'key'
    subject: str
    limit: int


def client_address(client: tuple[str, int] | Sequence[object] | None) -> str:
    """The address a caller is counted by: the ASGI client's host (behind a proxy, what uvicorn's `proxy_headers`
    made of `X-Forwarded-For`), an IPv6 one as its /64."""
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def _key_digest(key: str) -> str:
    prefix = key.strip()[:KEY_PREFIX_LENGTH]
    return hashlib.sha256(b"g4g-key-prefix:" + prefix.encode("utf-8", "replace")).hexdigest()[:32]


def _bucket(now: datetime) -> datetime:
    return now.replace(second=now.second - now.second % BUCKET_SECONDS, microsecond=0)


def _first_counted(now: datetime) -> datetime:
    return _bucket(now) - WINDOW + timedelta(seconds=BUCKET_SECONDS)


_WINDOW_COUNTS = text(
    "SELECT scope, subject, bucket, failures FROM auth_failure_counts"
    " WHERE ((scope = :s1 AND subject = :v1) OR (scope = :s2 AND subject = :v2)) AND bucket >= :since"
    " ORDER BY bucket"
)
_RECORD = text(
    "INSERT INTO auth_failure_counts (scope, subject, bucket, failures)"
    " VALUES (:s1, :v1, :bucket, 1), (:s2, :v2, :bucket, 1)"
    " ON CONFLICT (scope, subject, bucket) DO UPDATE SET failures = auth_failure_counts.failures + 1"
)
# Old buckets go as failures come in; rows another transaction holds are left for the next one (no waiting, so
# no deadlock between two prunes).
_PRUNE = text(
    "DELETE FROM auth_failure_counts WHERE (scope, subject, bucket) IN ("
    " SELECT scope, subject, bucket FROM auth_failure_counts WHERE bucket < :before"
    " LIMIT 1000 FOR UPDATE SKIP LOCKED)"
)


async def _retry_after(
    connection: AsyncConnection, subjects: tuple[_Subject, _Subject], now: datetime, *, allowed: int
) -> int | None:
    """Seconds until every subject has fewer than its limit + `allowed` failures in the window; None if it
    already has."""
    a, b = subjects
    rows = (
        await connection.execute(
            _WINDOW_COUNTS,
            {"s1": a.scope, "v1": a.subject, "s2": b.scope, "v2": b.subject, "since": _first_counted(now)},
        )
    ).all()
    wait = 0.0
    for subject in subjects:
        counts = [
            (row.bucket, row.failures)
            for row in rows
            if (row.scope, row.subject) == (subject.scope, subject.subject)
        ]
        total = sum(failures for _, failures in counts)
        for bucket, failures in counts:  # oldest first: the failures that leave the window first
            if total < subject.limit + allowed:
                break
            total -= failures
            wait = max(wait, (bucket + WINDOW - now).total_seconds())
    return max(1, math.ceil(wait)) if wait > 0 else None


class AuthFailures:
    """The limits (`app.state.auth_failures`), and the guard that applies them."""

    def __init__(self, *, per_address: int, per_key: int) -> None:
        self.per_address = per_address
        self.per_key = per_key

    @asynccontextmanager
    async def guard(
        self,
        engine: AsyncEngine,
        client: tuple[str, int] | Sequence[object] | None,
        key: str,
        *,
        now: datetime,
        refused: type[Exception] = Unauthorized,
    ) -> AsyncIterator[None]:
        """Around the check of one presented key: `TooManyAttempts` at once if its address or prefix already
        failed too often; if the block raises `refused` (the key was wrong), that failure is counted and the
        exception goes on — or becomes `TooManyAttempts`, if this failure was one too many. The counts are written
        in their own transaction, so they stay even when the request's work is rolled back."""
        subjects = (
            _Subject("address", client_address(client), self.per_address),
            _Subject("key", _key_digest(key), self.per_key),
        )
        async with engine.connect() as connection:
            wait = await _retry_after(connection, subjects, now, allowed=0)
        if wait is not None:
            raise TooManyAttempts(wait)
        try:
            yield
        except refused:
            a, b = subjects
            values = {"s1": a.scope, "v1": a.subject, "s2": b.scope, "v2": b.subject, "bucket": _bucket(now)}
            async with engine.begin() as connection:
                await connection.execute(_PRUNE, {"before": _first_counted(now) - WINDOW})
                await connection.execute(_RECORD, values)
                # Read after the write, in the same transaction: failures racing each other (another process
                # included) each see the ones committed before them, so no more than the limit get past.
                wait = await _retry_after(connection, subjects, now, allowed=1)
            if wait is not None:
                raise TooManyAttempts(wait) from None
            raise
