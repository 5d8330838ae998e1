"""Job-queue choice: procrastinate against pgqueuer, on this machine, with our asyncpg stack.

    .venv/bin/python bench/queues.py [--transactions 2000] [--jobs 2000] [--latency-samples 30]

Both libraries must be importable (`pip install procrastinate pgqueuer`; only the chosen one is a dependency).
For each, on a fresh database of `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres),
dropped at the end:

1. enqueue in a transaction: N transactions on one asyncpg connection, each inserting a business row and
   enqueueing one job in the same transaction (how the service must do it), against the same transactions without
   the job; prints the extra cost per transaction. pgqueuer enqueues through its own `Queries` on our asyncpg
   connection; procrastinate's Python API defers only through its own psycopg connector, so the only way to share
   our asyncpg transaction is its SQL function `procrastinate_defer_jobs_v1`, called directly.
2. throughput: N no-op jobs queued, then one worker (10 jobs at a time) started; jobs/s until all are done.
3. pick-up latency: an idle worker; one job committed at a time; time from commit to the handler starting
   (median and p95).

Measured 2026-11-29 on this 2-core machine against its PostgreSQL 15 (pgqueuer 1.6.0, procrastinate 3.10.0;
1500 transactions, 2000 jobs, 20 latency samples):

    pgqueuer       enqueue in txn: +353 us/txn (456 -> 809 us)  throughput: 5045 jobs/s  pick-up: p50 2.2 ms, p95 3.0 ms
    procrastinate  enqueue in txn: +205 us/txn (415 -> 620 us)  throughput:  668 jobs/s  pick-up: p50 3.9 ms, p95 5.0 ms

Chosen: pgqueuer. It enqueues through our asyncpg connection inside our transaction with its own API (and a list
of jobs in one statement, which the batched order-webhook path needs), where procrastinate's API defers only
through its own psycopg connection (in our transaction only by calling its SQL function by hand); it runs 7x the
jobs per second through one worker; it re-runs a job whose worker stopped sending heartbeats by itself, where
procrastinate leaves stalled jobs to a periodic call the application must make; its cron schedules are taken
once per tick across workers. Its enqueue costs more per call (a NOTIFY trigger and a bigger statement); the
service enqueues once per batch, and only when some endpoint subscribes to the events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "postgresql+asyncpg://", "postgresql://"
)
CONCURRENCY = 10


def _url_for(database: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fresh_database(tag: str):  # type: ignore[no-untyped-def]
    name = f"bench_queue_{tag}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _timed_transactions(
    connection: asyncpg.Connection, count: int, enqueue: Callable[[int], Awaitable[object]] | None
) -> float:
    started = time.perf_counter()
    for i in range(count):
        async with connection.transaction():
            await connection.execute("INSERT INTO business (note) VALUES ($1)", f"row {i}")
            if enqueue is not None:
                await enqueue(i)
    return (time.perf_counter() - started) / count


async def enqueue_cost(
    url: str, count: int, enqueue_factory: Callable[[asyncpg.Connection], Callable[[int], Awaitable[object]]]
) -> tuple[float, float]:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS business (id bigserial primary key, note text)")
        enqueue = enqueue_factory(connection)
        await _timed_transactions(connection, 200, enqueue)  # warm up
        without: list[float] = []
        with_job: list[float] = []
        for _ in range(3):  # alternate, the machine is shared and noisy
            without.append(await _timed_transactions(connection, count // 3, None))
            with_job.append(await _timed_transactions(connection, count // 3, enqueue))
        return statistics.median(without), statistics.median(with_job)
    finally:
        await connection.close()


# ---- pgqueuer ----


async def pgqueuer_install(url: str) -> None:
    from pgqueuer import AsyncpgDriver, Queries

    connection = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(connection)).install()
    finally:
        await connection.close()


def pgqueuer_enqueue(connection: asyncpg.Connection) -> Callable[[int], Awaitable[object]]:
    from pgqueuer import AsyncpgDriver, Queries

    queries = Queries(AsyncpgDriver(connection))
    return lambda i: queries.enqueue("noop", str(i).encode())


async def pgqueuer_worker(
    url: str, on_job: Callable[[bytes | None], None]
) -> tuple[Callable[[], Awaitable[None]], asyncio.Task[None]]:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job

    connection = await asyncpg.connect(url)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))

    @manager.entrypoint("noop")
    async def noop(job: Job) -> None:
        on_job(job.payload)

    task = asyncio.create_task(manager.run(batch_size=CONCURRENCY, max_concurrent_tasks=2 * CONCURRENCY))

    async def stop() -> None:
        manager.shutdown.set()
        await task
        await connection.close()

    return stop, task


# ---- procrastinate ----


def _procrastinate_app(url: str, on_job: Callable[[bytes | None], None] | None = None):  # type: ignore[no-untyped-def]
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(n: str) -> None:
        if on_job is not None:
            on_job(n.encode())

    return app


async def procrastinate_install(url: str) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def procrastinate_enqueue(connection: asyncpg.Connection) -> Callable[[int], Awaitable[object]]:
    query = """
        SELECT procrastinate_defer_jobs_v1(ARRAY[
            ROW('default', 'noop', 0, NULL, NULL, jsonb_build_object('n', $1::text), NULL)
        ]::procrastinate_job_to_defer_v1[])
    """
    return lambda i: connection.fetchval(query, str(i))


async def procrastinate_worker(
    url: str, on_job: Callable[[bytes | None], None]
) -> tuple[Callable[[], Awaitable[None]], asyncio.Task[None]]:
    app = _procrastinate_app(url, on_job)
    await app.open_async()
    task = asyncio.create_task(
        app.run_worker_async(concurrency=CONCURRENCY, wait=True, install_signal_handlers=False)
    )

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.close_async()

    return stop, task


# ---- the measures ----


async def throughput(url: str, jobs: int, enqueue_factory, worker) -> float:  # type: ignore[no-untyped-def]
    connection = await asyncpg.connect(url)
    enqueue = enqueue_factory(connection)
    async with connection.transaction():
        for i in range(jobs):
            await enqueue(i)
    await connection.close()
    done = asyncio.Event()
    seen = 0

    def on_job(_: bytes | None) -> None:
        nonlocal seen
        seen += 1
        if seen >= jobs:
            done.set()

    started = time.perf_counter()
    stop, _ = await worker(url, on_job)
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await stop()
    return jobs / elapsed


async def pickup_latency(url: str, samples: int, enqueue_factory, worker) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    arrived: dict[bytes, float] = {}
    waiter: asyncio.Future[None] | None = None

    def on_job(payload: bytes | None) -> None:
        arrived[payload or b""] = time.perf_counter()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    stop, _ = await worker(url, on_job)
    await asyncio.sleep(1.0)  # let it go idle
    connection = await asyncpg.connect(url)
    enqueue = enqueue_factory(connection)
    latencies = []
    for i in range(samples):
        waiter = asyncio.get_running_loop().create_future()
        async with connection.transaction():
            await enqueue(10_000 + i)
        committed = time.perf_counter()
        await asyncio.wait_for(waiter, timeout=30)
        latencies.append(arrived[str(10_000 + i).encode()] - committed)
        await asyncio.sleep(0.2)
    await connection.close()
    await stop()
    latencies.sort()
    return statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]


async def measure(name: str, install, enqueue_factory, worker, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    async with fresh_database(name) as url:
        await install(url)
        without, with_job = await enqueue_cost(url, args.transactions, enqueue_factory)
    async with fresh_database(name) as url:
        await install(url)
        rate = await throughput(url, args.jobs, enqueue_factory, worker)
    async with fresh_database(name) as url:
        await install(url)
        p50, p95 = await pickup_latency(url, args.latency_samples, enqueue_factory, worker)
    print(
        f"{name:14} enqueue in txn: +{(with_job - without) * 1e6:6.0f} us/txn "
        f"({without * 1e6:.0f} -> {with_job * 1e6:.0f} us)   "
        f"throughput: {rate:7.0f} jobs/s   pick-up latency: p50 {p50 * 1e3:6.1f} ms, p95 {p95 * 1e3:6.1f} ms",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--latency-samples", type=int, default=30)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    await measure("pgqueuer", pgqueuer_install, pgqueuer_enqueue, pgqueuer_worker, args)
    await measure("procrastinate", procrastinate_install, procrastinate_enqueue, procrastinate_worker, args)


if __name__ == "__main__":
    asyncio.run(main())
