"""CPU per receipt request, in-process: the app called directly as ASGI, one request after another.

    .venv/bin/python bench/receipts_cpu.py [--orders 5000] [--requests 3000] [--rounds 3]

Loads `--orders` receipts into a fresh database on `DATABASE_URL`'s server as `bench/receipts.py` does, builds the
app as `g4g serve` does (`app_factory`: logging, frozen heap), and for each round times `--requests` page requests
(`GET /r/{token}`, English) and as many JSON ones (`GET /v1/receipts/{token}`) with `time.process_time()`. No HTTP,
no concurrency: the figure is what one request costs this process (its database round trip's client side
included), the quantity that decides how many a core serves. Rounds alternate page and JSON, so a shared machine's
drift shows as spread between rounds. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inprocess import call, scratch_database, served_app
from bench.receipts import load

PATHS = {"page": "/r/{}", "JSON": "/v1/receipts/{}"}
HEADERS = [(b"host", b"127.0.0.1"), (b"accept-language", b"en")]


async def measure(args: argparse.Namespace, dsn: str, lookup_key: str, workdir: str) -> None:
    tokens = await load(dsn, args.orders, lookup_key)
    os.environ.update(
        DATABASE_URL=dsn,
        G4G_DATA_KEY=Fernet.generate_key().decode(),
        G4G_LOOKUP_KEY=lookup_key,
        G4G_DATA_DIR=workdir,
        G4G_LOG_LEVEL="warning",
    )
    app, served = served_app()
    sample = random.Random(7).sample(tokens, min(args.requests, len(tokens)))
    async with app.router.lifespan_context(app):
        for path in PATHS.values():  # warm up: statement caches, templates, the public report
            for token in sample[:200]:
                await call(served, "GET", path.format(token), HEADERS)
        for round_ in range(1, args.rounds + 1):
            for label, path in PATHS.items():
                started = time.process_time()
                for token in sample:
                    start, body = await call(served, "GET", path.format(token), HEADERS)
                    if start["status"] != 200:
                        raise SystemExit(f"{label}: status {start['status']}")
                cpu_us = (time.process_time() - started) / len(sample) * 1e6
                size = len(body.get("body", b""))
                print(f"  round {round_}  {label:<5} {cpu_us:7.1f} µs of CPU a request  ({size:,} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lookup_key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    with scratch_database("g4g_bench_receipts_cpu") as dsn:
        print(
            f"{args.orders:,} orders with receipt links; {args.requests:,} requests of each kind per round:"
        )
        with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
            import uvloop

            uvloop.run(measure(args, dsn, lookup_key, workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
