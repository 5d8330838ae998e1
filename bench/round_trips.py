"""A batch's statements over asyncpg, one round trip each, against psycopg 3's pipeline mode, two round trips a batch.

    pip install 'psycopg[binary]>=3.2'   # psycopg is not a dependency of the service
    .venv/bin/python bench/round_trips.py [--seconds 5] [--rounds 3] [--connections 4] [--size 16]

The order-webhook inbox runs each batch as four round trips on asyncpg (docs/scaling.md): BEGIN with the batch's
advisory locks (one simple query), the read, the write, COMMIT. asyncpg sends one statement at a time; psycopg 3
can pipeline, sending BEGIN, the locks and the read together (the read's snapshot is still taken after the locks,
statement by statement), then the write with COMMIT: two round trips. This prices that change before anyone
makes it, on a stand-in of the same shape (a fresh database on `DATABASE_URL`'s server: a 100,000-row table read
by key, a table the write inserts into from one `jsonb` parameter; `--size` keys a batch, random, so batches
rarely contend). Three ways, alternating, each with `--connections` connections at once in one process:
asyncpg (4 round trips), psycopg without a pipeline (4), psycopg with one (2). Two scenarios: the event loop
doing nothing else, and the loop shared with request-like work (eight tasks running 0.2 ms slices of Python), as
the service's loop is under load, where every round trip also waits for the loop to come back to it. Prints per
way the batches a second, the process's CPU a batch (quiet loop) and the slices of other work done a second (busy
loop), with ratios against asyncpg measured in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import uvloop

SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROWS = 100_000
LOCKS = "SELECT pg_advisory_xact_lock(k) FROM unnest({}::bigint[]) AS k ORDER BY k"
READ = "SELECT k, v, at FROM bench_read WHERE k = ANY({}::bigint[])"
WRITE = """WITH written AS (
               INSERT INTO bench_write (k, payload)
               SELECT (x ->> 0)::bigint, x -> 1 FROM jsonb_array_elements({}::jsonb) AS x RETURNING 1)
           SELECT count(*) FROM written"""


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _batch(size: int) -> tuple[list[int], str]:
    keys = sorted(random.sample(range(ROWS), size))
    payload = json.dumps([[k, {"order": f"ord-{k}", "amount": 196, "currency": "CNY"}] for k in keys])
    return keys, payload


async def _asyncpg_batch(db: asyncpg.Connection, keys: list[int], payload: str) -> None:
    literal = "'{" + ",".join(map(str, keys)) + "}'"
    await db.execute("BEGIN;" + LOCKS.format(literal))
    rows = await db.fetch(READ.format("$1"), keys)
    assert len(rows) == len(keys)
    written = await db.fetchval(WRITE.format("$1"), payload)
    assert written == len(keys)
    await db.execute("COMMIT")


async def _psycopg_batch(db: psycopg.AsyncConnection[Any], keys: list[int], payload: str) -> None:
    await db.execute("BEGIN")
    await db.execute(LOCKS.format("%s"), (keys,))
    rows = await (await db.execute(READ.format("%s"), (keys,))).fetchall()
    assert len(rows) == len(keys)
    written = await (await db.execute(WRITE.format("%s"), (payload,))).fetchone()
    assert written is not None and written[0] == len(keys)
    await db.execute("COMMIT")


async def _pipelined_batch(db: psycopg.AsyncConnection[Any], keys: list[int], payload: str) -> None:
    async with db.pipeline() as pipeline:
        await db.execute("BEGIN")
        await db.execute(LOCKS.format("%s"), (keys,))
        read = await db.execute(READ.format("%s"), (keys,))
        await pipeline.sync()  # round trip 1: BEGIN, the locks, the read
        rows = await read.fetchall()
        assert len(rows) == len(keys)
        write = await db.execute(WRITE.format("%s"), (payload,))
        await db.execute("COMMIT")
        await pipeline.sync()  # round trip 2: the write and COMMIT
        written = await write.fetchone()
        assert written is not None and written[0] == len(keys)


async def _connect(way: str, url: str) -> Any:
    if way == "asyncpg":
        return await asyncpg.connect(url)
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


WAYS: dict[str, Callable[[Any, list[int], str], Awaitable[None]]] = {
    "asyncpg, 4 round trips": _asyncpg_batch,
    "psycopg, 4 round trips": _psycopg_batch,
    "psycopg pipeline, 2": _pipelined_batch,
}


async def _busy(stop: asyncio.Event, counter: list[int]) -> None:
    """Request-like work: 0.2 ms of Python at a time, then back to the loop."""
    while not stop.is_set():
        deadline = time.perf_counter() + 0.0002
        while time.perf_counter() < deadline:
            pass
        counter[0] += 1
        await asyncio.sleep(0)


async def _measure(way: str, url: str, args: argparse.Namespace, busy: bool) -> tuple[float, float, float]:
    """(batches a second, process CPU µs a batch, slices of other work a second)."""
    run = WAYS[way]
    connections = [await _connect(way.split(",")[0].split()[0], url) for _ in range(args.connections)]
    try:
        for db in connections:  # warm up: statements prepared, plans made
            for _ in range(10):
                await run(db, *_batch(args.size))
        stop = asyncio.Event()
        batches = [0]
        slices = [0]

        async def loop(db: Any) -> None:
            while not stop.is_set():
                await run(db, *_batch(args.size))
                batches[0] += 1

        workers = [asyncio.create_task(loop(db)) for db in connections]
        others = [asyncio.create_task(_busy(stop, slices)) for _ in range(8 if busy else 0)]
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.seconds)
        stop.set()
        await asyncio.gather(*workers, *others)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        for db in connections:
            await db.close()
    return batches[0] / wall, cpu / batches[0] * 1e6, slices[0] / wall


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    name = f"g4g_bench_round_trips_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(SERVER_URL, name)
    try:
        setup = await asyncpg.connect(url)
        await setup.execute(
            """CREATE TABLE bench_read (k bigint PRIMARY KEY, v text NOT NULL, at timestamptz NOT NULL);
               CREATE TABLE bench_write (id bigserial PRIMARY KEY, k bigint NOT NULL, payload jsonb NOT NULL);
               CREATE INDEX ON bench_write (k);"""
        )
        await setup.execute(
            f"INSERT INTO bench_read SELECT g, md5(g::text), now() FROM generate_series(0, {ROWS - 1}) g; ANALYZE"
        )
        await setup.close()
        for busy in (False, True):
            print(
                f"{'loop shared with 8 tasks of 0.2 ms slices' if busy else 'quiet loop'}: "
                f"{args.connections} connections, {args.size} keys a batch, {args.seconds:g} s a run"
            )
            got: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
            for round_ in range(args.rounds):
                order = list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))
                for way in order:
                    rate, cpu, slices = await _measure(way, url, args, busy)
                    got[way].append((rate, cpu, slices))
                    extra = (
                        f"  other work {slices:7,.0f} slices/s" if busy else f"  CPU {cpu:6.0f} µs a batch"
                    )
                    print(f"  {way:24} {rate:7,.0f} batches/s{extra}", flush=True)
            base_rate = statistics.median(r for r, _, _ in got["asyncpg, 4 round trips"])
            base_cpu = statistics.median(c for _, c, _ in got["asyncpg, 4 round trips"])
            base_slices = statistics.median(s for _, _, s in got["asyncpg, 4 round trips"]) or 1
            for way, runs in got.items():
                rate = statistics.median(r for r, _, _ in runs)
                cpu = statistics.median(c for _, c, _ in runs)
                slices = statistics.median(s for _, _, s in runs)
                extra = (
                    f"other work {slices / base_slices:.2f}×"
                    if busy
                    else f"CPU a batch {cpu / base_cpu:.2f}×"
                )
                print(f"  median {way:24} batches/s {rate / base_rate:.2f}× asyncpg's, {extra}")
            print()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(uvloop.run(main()))
