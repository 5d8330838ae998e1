"""Background jobs that fail: tried again after a pause, then kept for the operator, never silently dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from app.core.jobs import JobContext, Task, Worker, enqueue
from app.main import create_app
from tests.conftest import make_settings
from tests.jobs import job_context


async def _drain(database_url: str, tmp_path: Path, tasks: list[Task], **settings: object) -> None:
    app: Any = create_app(make_settings(database_url, tmp_path, **settings))
    async with app.router.lifespan_context(app):
        context = job_context(app)
        try:
            await Worker(context, tasks).run(drain=True)
        finally:
            await context.http.aclose()


async def _queue(database_url: str, task: str) -> asyncpg.Connection:
    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    async with db.transaction():
        await enqueue(db, task, [b"statement 7"])
    return db


async def test_a_job_that_fails_once_is_tried_again_and_done(database_url: str, tmp_path: Path) -> None:
    tries: list[bytes] = []

    async def flaky(_: JobContext, payload: bytes) -> None:
        tries.append(payload)
        if len(tries) == 1:
            raise ConnectionError("Stripe did not answer")

    db = await _queue(database_url, "test.flaky")
    try:
        await _drain(database_url, tmp_path, [Task("test.flaky", flaky)], job_retry_seconds=0.2)
        assert tries == [b"statement 7", b"statement 7"]
        assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 0  # done, nothing left queued
    finally:
        await db.close()


async def test_a_job_that_keeps_failing_is_kept_as_failed_after_its_tries(
    database_url: str, tmp_path: Path
) -> None:
    tries = 0

    async def broken(_: JobContext, __: bytes) -> None:
        nonlocal tries
        tries += 1
        raise RuntimeError("always")

    db = await _queue(database_url, "test.broken")
    try:
        await _drain(
            database_url, tmp_path, [Task("test.broken", broken)], job_attempts=3, job_retry_seconds=0.1
        )
        assert tries == 3
        # Kept where an operator (and the console's overview) finds it, with its payload, not deleted.
        job = await db.fetchrow("SELECT status::text, payload FROM pgqueuer WHERE entrypoint = 'test.broken'")
        assert (job["status"], job["payload"]) == ("failed", b"statement 7")
    finally:
        await db.close()
