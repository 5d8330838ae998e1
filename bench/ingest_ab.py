"""Two versions of the service over HTTP, one against the other: which serves order webhooks faster.

    .venv/bin/python bench/ingest_ab.py A B [--rounds 6] [--duration 8] [--workers 1] [--b-env NAME=VALUE ...]

A and B are checkouts of this repository (a `git worktree`, say; the same one twice with `--b-env` compares
settings such as G4G_INGEST_CONCURRENCY=2). Each is started as `g4g serve` with its own code (PYTHONPATH) and its
own fresh database on `DATABASE_URL`'s server, and set up as `bench/ingest.py` sets up the service. Then, each
round, the same new `order.paid` events go to both, one after the other, alternating which goes first. It prints
each run (throughput, p50/p99, where the CPU went), then per version the median throughput, the server's and
PostgreSQL's CPU per event, and the B/A throughput ratio of each round with their geometric mean.

Why: `bench/ingest.py`'s ratio moves by ±0.05 between runs of the same code, and the machine's speed drifts by a
quarter within minutes, so two versions measured in separate runs cannot be told apart. Here both meet the same
drift, round by round. Still, a single round's ratio moves by ±15 % on this shared machine and the geometric mean of
eight rounds by ±5 % (an A/A run gave 0.95): run it both ways, A and B swapped, and read the two together. `bench/ingest_cpu.py` (in-process CPU per event) is the
finer measure for a lever that only saves CPU; this one also sees latency (round trips, the batches' waits).

Both versions get orders placed after both of their donation rules took effect: an order placed before its
merchant's first rule is recorded with no donation and no ledger entry, which is cheaper and would favour the
version set up last. The end checks that (no order without a donation) along with the answers.

Exit status 1 if a service could not be set up, a request got a 5xx or no answer, or an order has no donation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # bench/ingest.py: the events, the generator, the set-up and the CPU accounting

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    """`service_target` starts `g4g serve` with this process's environment: changed for one start only."""
    saved = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (its app/ is what A runs)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of each service (default 1)")
    parser.add_argument(
        "--b-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for B only (repeatable)"
    )
    args = parser.parse_args(argv)
    for tree in (args.a, args.b):
        if not (tree / "app" / "main.py").is_file():
            parser.error(f"{tree} is not a checkout of this repository")
    if min(args.rounds, args.duration, args.concurrency, args.workers) < 1:
        parser.error("--rounds, --duration, --concurrency and --workers must be positive")
    if any("=" not in setting for setting in args.b_env):
        parser.error("--b-env takes NAME=VALUE")
    args.max_rate = 12_000  # what `ingest.measure` reads besides `workers`
    return args


async def _orders_without_donation(database_url: str) -> tuple[int, int]:
    db = await asyncpg.connect(database_url)
    try:
        row = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE donation_amount = 0) AS zero, count(*) AS total FROM orders"
        )
        assert row is not None
        return row["zero"], row["total"]
    finally:
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    server_url = ingest._asyncpg_url(os.environ.get("DATABASE_URL") or ingest.DEFAULT_SERVER_URL)
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    versions = {
        "A": (args.a.resolve(), {}),
        "B": (args.b.resolve(), dict(s.split("=", 1) for s in args.b_env)),
    }
    databases = {label: f"g4g_bench_{tag}_{label.lower()}_service" for label in versions}
    for label, (tree, settings) in versions.items():
        print(f"{label}: {tree}" + (f" with {settings}" if settings else ""))
    asyncio.run(ingest._create_databases(server_url, list(databases.values())))
    results: dict[str, list[ingest.Run]] = {label: [] for label in versions}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir, contextlib.ExitStack() as stack:
        stack.callback(lambda: asyncio.run(ingest._drop_databases(server_url, list(databases.values()))))
        targets = {}
        for label, (tree, settings) in versions.items():
            (Path(workdir) / label).mkdir()
            try:
                with _environment({"PYTHONPATH": str(tree), **settings}):
                    target, setup = stack.enter_context(
                        ingest.service_target(
                            ROOT / ".venv" / "bin" / "g4g",
                            ingest._with_database(server_url, databases[label]),
                            args.workers,
                            Path(workdir) / label,
                        )
                    )
            except ingest.SetupError as exc:
                print(f"\nSETUP OF {label} FAILED: {exc}")
                return 1
            target.name = label
            targets[label] = (target, setup)
        latest_rule = max((setup for _, setup in targets.values()), key=lambda s: s.rule_effective_from)
        builder = ingest.StreamBuilder(1)
        for round_ in range(args.rounds):
            events = builder.paid_phase(
                math.ceil(args.max_rate * args.duration), ingest._placed_at(latest_rule)
            )
            print(f"\nround {round_ + 1}")
            for label in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                run = ingest.measure(targets[label][0], "paid", events, args)
                results[label].append(run)
                if run.failures():
                    problems.append(f"{label} round {round_ + 1}: {run.failures()} 5xx or transport errors")
        for label, database in databases.items():
            zero, total = asyncio.run(_orders_without_donation(ingest._with_database(server_url, database)))
            if zero or not total:
                problems.append(f"{label}: {zero} of {total} orders recorded without a donation")

    print()
    for label, runs in results.items():
        print(
            f"{label}: median {statistics.median(r.throughput() for r in runs):,.0f} req/s "
            f"({', '.join(f'{r.throughput():,.0f}' for r in runs)}); per event: server "
            f"{statistics.median(r.server_cpu_s / r.result.sent for r in runs) * 1e6:.0f} µs, PostgreSQL "
            f"{statistics.median(r.postgres_cpu_s / r.result.sent for r in runs) * 1e6:.0f} µs"
        )
    ratios = [b.throughput() / a.throughput() for a, b in zip(results["A"], results["B"], strict=True)]
    print(
        f"B/A throughput by round: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"geometric mean {statistics.geometric_mean(ratios):.3f}"
    )
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main())
