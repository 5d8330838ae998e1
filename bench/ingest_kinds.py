"""Each kind of order event alone, against the service over HTTP: what each costs its process and PostgreSQL.

    .venv/bin/python bench/ingest_kinds.py [--duration 10] [--concurrency 32] [--workers 1]

`bench/ingest.py`'s `mixed` phase blends new orders (~70 %), refunds (~15 %) and duplicates (~15 %). When it costs
more than `paid`, this says which kind does. It sets the service up as `bench/ingest.py` does (a fresh database on
`DATABASE_URL`'s server, dropped at the end; `g4g serve`; a platform, merchant `shop-1` and its rule), then runs,
one after another, `--duration` seconds each from `--concurrency` keep-alive connections:

1. `paid`: new `order.paid` events;
2. `paid again`: more of them (the two differ only by the machine's drift and the tables' growth);
3. `refunds`: a refund of half its amount for each order answered in run 1, in turn, then a second one;
4. `redeliveries`: run 1's webhooks again under their own webhook ids (answered from the stored answer);
5. `replays`: run 1's orders again under new webhook ids (answered `duplicate`).

It prints each run as `bench/ingest.py` does (throughput, p50/p99, where the CPU went) and the service's and
PostgreSQL's CPU an event, then a summary. Exit status 1 if the service could not be set up, or a request got
anything but 200 (a refund past its order's amount would be a 200 with an anomaly: none is sent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import ingest  # bench/ingest.py: its events, signing, servers and CPU accounting


def _kinds_after_paid(
    builder: ingest.StreamBuilder, size: int, paid: Sequence[ingest.Event], ok: Sequence[int]
) -> list[tuple[str, list[ingest.Event]]]:
    now = datetime.now(UTC)
    draw = builder._random  # the builder's seeded draw: the same picks on every invocation
    # Each order in turn, then each again: two refunds of half its amount at most (REFUNDS_PER_ORDER).
    refunds = [builder._refund(now, paid[i].order_id) for _ in range(ingest.REFUNDS_PER_ORDER) for i in ok]
    redeliveries, replays = [], []
    for _ in range(size):
        origin = ok[draw.randrange(len(ok))]
        original = paid[origin]
        redeliveries.append(
            ingest.Event(
                ingest.Kind.REDELIVERY, original.webhook_id, original.body, original.order_id, origin=origin
            )
        )
        origin = ok[draw.randrange(len(ok))]
        original = paid[origin]
        replays.append(
            ingest.Event(
                ingest.Kind.REPLAY, builder._webhook_id(), original.body, original.order_id, origin=origin
            )
        )
    return [("refunds", refunds), ("redeliveries", redeliveries), ("replays", replays)]


def bench(args: argparse.Namespace, server_url: str, workdir: Path) -> int:
    database = f"g4g_bench_{os.getpid()}_{secrets.token_hex(3)}_kinds"
    size = args.max_rate * args.duration
    builder = ingest.StreamBuilder(args.seed)
    runs: list[ingest.Run] = []
    asyncio.run(ingest._create_databases(server_url, [database]))
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: asyncio.run(ingest._drop_databases(server_url, [database])))
        service, setup = stack.enter_context(
            ingest.service_target(
                args.g4g, ingest._with_database(server_url, database), args.workers, workdir
            )
        )
        paid = builder.paid_phase(size, ingest._placed_at(setup))
        print("\npaid: new order.paid events")
        runs.append(ingest.measure(service, "paid", paid, args))
        print("\npaid again: more new order.paid events")
        runs.append(
            ingest.measure(service, "paid again", builder.paid_phase(size, ingest._placed_at(setup)), args)
        )
        ok = ingest._ok_indices(runs[0])
        for label, events in _kinds_after_paid(builder, size, paid, ok):
            print(f"\n{label}")
            runs.append(ingest.measure(service, label, events, args))
    print("\nper event, by kind")
    problems = 0
    for run in runs:
        sent = max(1, run.result.sent)
        others = sum(count for status, count in run.statuses().items() if status != 200)
        problems += others + run.result.connection_failures
        print(
            f"  {run.phase:<13} {run.throughput():7,.0f} req/s  service {run.server_cpu_s / sent * 1e6:5.0f} µs"
            f"  PostgreSQL {run.postgres_cpu_s / sent * 1e6:5.0f} µs  p99 {run.percentile_ms(0.99):5.1f} ms"
            + (f"  ! {others} answers other than 200" if others else "")
        )
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds a run (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    parser.add_argument("--max-rate", type=int, default=12_000, help="requests pre-built a second of run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the duplicates' draw (default 1)")
    parser.add_argument(
        "--g4g",
        type=Path,
        default=Path(sys.executable).parent / "g4g",
        help="the service's CLI (default: .venv's)",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.concurrency, args.workers, args.max_rate) < 1:
        parser.error("--duration, --concurrency, --workers and --max-rate must be positive")
    server_url = ingest._asyncpg_url(os.environ.get("DATABASE_URL") or ingest.DEFAULT_SERVER_URL)
    ingest._print_machine(server_url, args)
    with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
        try:
            return bench(args, server_url, Path(workdir))
        except ingest.SetupError as exc:
            print(f"\nSETUP FAILED: {exc}")
            return 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main())
