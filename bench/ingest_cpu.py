"""CPU per order webhook, in-process: the app called directly as ASGI by 32 concurrent callers.

    .venv/bin/python bench/ingest_cpu.py [--events 20000] [--concurrency 32] [--rounds 2]

`bench/ingest.py` compares the service with a baseline over HTTP, and its ratio moves by ±0.05 between runs of the
same code on a shared machine: a lever worth a few percent of the service's CPU does not show there. This measures
that CPU directly. It makes a fresh database on `DATABASE_URL`'s server, migrates it, creates an admin key
(`g4g create-api-key`), builds the app as `g4g serve` does (`app_factory`) and sets up a platform, merchant `shop-1`
and its rule through the API (in-process). Then, for each round, it sends signed `order.paid` events (the `paid`
phase), then ~70 % new orders, ~15 % refunds and ~15 % duplicates (`mixed`) — the events of `bench/ingest.py` —
from `--concurrency` callers at once, so the inbox batches them as it does under load, and prints the CPU this
process spent per event (`process_time`: the request path, the inbox, asyncpg's client side; no HTTP parsing) and
what PostgreSQL's backends spent for this database. Rounds repeat the phases with new events, so the spread
between rounds shows the machine's drift. Exit status 1 if an event was not answered 2xx. Drops the database at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # bench/ingest.py: its events, signing and CPU accounting

from bench.inprocess import call, scratch_database, served_app
from tests.live import g4g_env, run_g4g


def _asgi_request(raw: bytes) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """A request as `ingest.render` writes it for the wire: its path, headers and body."""
    head, body = raw.split(b"\r\n\r\n", 1)
    request_line, *lines = head.split(b"\r\n")
    _, path, _ = request_line.split(b" ")
    headers = [(name.lower(), value) for name, value in (line.split(b": ", 1) for line in lines)]
    return path.decode(), headers, body


async def _phase(
    app: Any, label: str, events: Sequence[ingest.Event], path: str, secret: str, args: argparse.Namespace
) -> list[int]:
    """Sends the phase's events; prints CPU per event; returns the indices answered 2xx."""
    requests = [_asgi_request(raw) for raw in ingest.render(events, port=8000, path=path, secret=secret)]
    statuses: list[int] = [0] * len(requests)
    next_index = iter(range(len(requests)))

    async def caller() -> None:
        for index in next_index:  # shared by every caller: each takes the next request
            path_, headers, body = requests[index]
            start, _ = await call(app, "POST", path_, headers, body)
            statuses[index] = start["status"]

    database = ingest._database_name(args.database_url)
    _, postgres_before = ingest._server_and_postgres_jiffies(os.getpid(), database)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    cpu_s, wall_s = time.process_time() - cpu_started, time.perf_counter() - wall_started
    _, postgres_after = ingest._server_and_postgres_jiffies(os.getpid(), database)
    postgres_s = ingest._cpu_delta(postgres_before, postgres_after)
    count = len(requests)
    answered = Counter(statuses)
    print(
        f"  {label:<6} {count:7,} events  this process {cpu_s / count * 1e6:6.0f} µs of CPU an event  "
        f"PostgreSQL {postgres_s / count * 1e6:5.0f} µs  ({count / wall_s:6,.0f} events/s in-process)  "
        f"answers {dict(sorted(answered.items()))}"
    )
    return [i for i, status in enumerate(statuses) if 200 <= status < 300]


async def measure(args: argparse.Namespace, workdir: str) -> int:
    data_key = Fernet.generate_key().decode()
    env = g4g_env(DATABASE_URL=args.database_url, G4G_DATA_KEY=data_key, G4G_DATA_DIR=workdir)
    created = run_g4g("create-api-key", "--role", "admin", "--name", "bench", env=env)
    if created.returncode != 0:
        raise SystemExit(created.stderr)
    token = created.stdout.strip()
    os.environ.update(
        DATABASE_URL=args.database_url, G4G_DATA_KEY=data_key, G4G_DATA_DIR=workdir, G4G_LOG_LEVEL="warning"
    )
    app, served = served_app()
    failed = False
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as api:
            platform = ingest._expect(await api.post("/v1/platforms", json={"name": "Bench"}), 201)
            merchant = ingest._expect(
                await api.post(
                    "/v1/merchants",
                    json={
                        "platform_id": platform["id"],
                        "external_id": "shop-1",
                        "name": "Shop",
                        "country": "CN",
                    },
                ),
                201,
            )
            rule = ingest._expect(
                await api.put(
                    f"/v1/merchants/{merchant['id']}/donation-rule",
                    json={
                        "rate_bps": ingest.RATE_BPS,
                        "fixed_per_unit": [{"amount": ingest.FIXED_PER_UNIT, "currency": "CNY"}],
                    },
                ),
                200,
            )
        setup = ingest.ServiceSetup(
            merchant["id"], datetime.fromisoformat(rule["effective_from"]).astimezone(UTC)
        )
        placed_at = ingest._placed_at(setup)
        path, secret = f"/v1/webhooks/orders/{platform['id']}", platform["webhook_secret"]
        builder = ingest.StreamBuilder(args.seed)
        await _phase(served, "warmup", builder.paid_phase(500, placed_at), path, secret, args)
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}:")
            paid = builder.paid_phase(args.events, placed_at)
            paid_ok = await _phase(served, "paid", paid, path, secret, args)
            mixed = builder.mixed_phase(args.events, placed_at, paid, paid_ok)
            mixed_ok = await _phase(served, "mixed", mixed, path, secret, args)
            failed |= len(paid_ok) < len(paid) or len(mixed_ok) < len(mixed)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per phase and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with scratch_database("g4g_bench_ingest_cpu") as dsn:
        args.database_url = dsn
        print(
            f"{args.events:,} events per phase, {args.concurrency} concurrent callers, {args.rounds} round(s)"
        )
        with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
            import uvloop

            return uvloop.run(measure(args, workdir))


if __name__ == "__main__":
    raise SystemExit(main())
