"""Checkout-quote benchmark: `POST /v1/quotes` against a bare "verify the token + one indexed select" baseline.

Run from the repository root:

    .venv/bin/python bench/quotes.py [--duration 10] [--concurrency 32] [--workers 1]

What it does, in one invocation (both sides in the same run, one after the other, on the shared machine):

1. Creates two fresh databases on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres)
   and drops them at the end.
2. Starts the baseline (bench/quotes_baseline.py: raw ASGI on uvicorn; SHA-256 of the bearer token looked up in
   memory, one raw asyncpg select on a unique index, a small JSON answer) and the service as an operator would
   (bench/ingest.py's set-up: `g4g migrate`, `g4g serve`, platform, merchant `shop-1`, rule 150 bps + CNY 0.02 a
   unit), then a platform API key through the admin API.
3. Sends the same quote over `--concurrency` keep-alive connections for `--duration` seconds to each (the
   generator of bench/ingest.py, requests built before the timed window).
4. Prints throughput, p50/p99 and where the CPU went for each, then service/baseline against the targets
   (ratio >= 0.5, service p99 <= 50 ms).
5. Verifies the service's answers: every one 200 with the donation the SPEC's formula gives (196 CNY minor
   units for the line below).

Exit status: 1 if a server could not be set up, a request got a 5xx or no answer, or an answer was wrong; missing
a speed target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from ingest import (
    DEFAULT_SERVER_URL,
    HOST,
    LINE_AMOUNT,
    LINE_QUANTITY,
    Run,
    SetupError,
    Target,
    _asyncpg_url,
    _cpu_delta,
    _cpu_jiffies,
    _create_databases,
    _database_name,
    _drop_databases,
    _expect,
    _free_port,
    _placed_at,
    _print_machine,
    _print_run,
    _rfc3339,
    _server,
    _server_and_postgres_jiffies,
    _wait_until_ok,
    _with_database,
    expected_donation,
    service_target,
)
from loadgen import TRANSPORT_ERROR, run_load

BENCH_DIR = Path(__file__).resolve().parent
MIN_RATIO, MAX_P99_MS = 0.5, 50.0


def _quote_request(port: int, token: str, body: bytes) -> bytes:
    return (
        b"POST /v1/quotes HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
        % (HOST.encode(), port, token.encode(), len(body), body)
    )


def _quote_body(placed_at: str) -> bytes:
    line = {"sku": "TEA-01", "quantity": LINE_QUANTITY, "amount": LINE_AMOUNT}
    document = {"merchant_id": "shop-1", "currency": "CNY", "placed_at": placed_at, "items": [line]}
    return json.dumps(document, separators=(",", ":")).encode()


async def _create_baseline_table(database_url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE bench_merchants (id text PRIMARY KEY, platform_id text NOT NULL, external_id text NOT NULL,"
            " rate_bps int NOT NULL, UNIQUE (platform_id, external_id))"
        )
        await connection.execute(
            "INSERT INTO bench_merchants SELECT 'mer_' || g, 'plt_baseline', 'shop-' || g, 150"
            " FROM generate_series(1, 1000) g"
        )
        await connection.execute("ANALYZE bench_merchants")
    finally:
        await connection.close()


@contextlib.contextmanager
def baseline_target(database_url: str, workers: int, workdir: Path, token: str) -> Iterator[Target]:
    port = _free_port()
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": database_url,
        "BENCH_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest(),
    }
    command = [
        sys.executable, "-m", "uvicorn", "quotes_baseline:app", "--app-dir", str(BENCH_DIR),
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log", "--no-server-header", "--lifespan", "on",
    ]  # fmt: skip
    log = workdir / "baseline.log"
    with _server(command, env, log) as process:
        _wait_until_ok(process, f"http://{HOST}:{port}/healthz", log)
        yield Target("baseline", process, port, "plt_baseline", "", _database_name(database_url), log)


def measure(target: Target, request: bytes, args: argparse.Namespace) -> Run:
    server_before, postgres_before = _server_and_postgres_jiffies(target.pid, target.database)
    busy_before, total_before = _cpu_jiffies()
    result = run_load(
        [request],
        host=HOST,
        port=target.port,
        duration_s=args.duration,
        concurrency=args.concurrency,
        cycle=True,
    )
    busy_after, total_after = _cpu_jiffies()
    server_after, postgres_after = _server_and_postgres_jiffies(target.pid, target.database)
    run = Run(
        target=target.name,
        phase="quotes",
        events=[],
        result=result,
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        server_cpu_s=_cpu_delta(server_before, server_after),
        postgres_cpu_s=_cpu_delta(postgres_before, postgres_after),
    )
    _print_run(run)
    return run


def _wrong_answers(run: Run) -> list[str]:
    """Service answers that are not 200 with the expected donation (at most a few, with their bodies)."""
    want = expected_donation()
    problems = []
    for body_id, body in enumerate(run.result.bodies):
        statuses = {
            s for s, b in zip(run.result.statuses, run.result.body_ids, strict=True) if b == body_id and s
        }
        try:
            donation = json.loads(body)["donation"]
            right = statuses == {200} and donation == {"amount": want, "currency": "CNY"}
        except (ValueError, KeyError, TypeError):
            right = False
        if not right:
            problems.append(f"HTTP {sorted(statuses)}: {body[:300].decode(errors='replace')}")
    return problems[:5]


def bench(args: argparse.Namespace, server_url: str, workdir: Path) -> int:
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    baseline_db, service_db = f"g4g_bench_{tag}_qbaseline", f"g4g_bench_{tag}_qservice"
    names = [baseline_db, service_db]
    problems: list[str] = []
    asyncio.run(_create_databases(server_url, names))
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: asyncio.run(_drop_databases(server_url, names)))
        baseline_url, service_url = (
            _with_database(server_url, baseline_db),
            _with_database(server_url, service_db),
        )
        asyncio.run(_create_baseline_table(baseline_url))
        baseline_token = "g4g_" + secrets.token_urlsafe(32)
        baseline = stack.enter_context(baseline_target(baseline_url, args.workers, workdir, baseline_token))
        service, setup = stack.enter_context(service_target(args.g4g, service_url, args.workers, workdir))
        with httpx.Client(
            base_url=f"http://{HOST}:{service.port}",
            headers={"Authorization": f"Bearer {setup.admin_token}"},
            timeout=30,
        ) as api:
            key = _expect(
                api.post(
                    "/v1/api-keys",
                    json={"role": "platform", "name": "bench", "platform_id": service.platform_id},
                ),
                201,
            )
        body = _quote_body(_rfc3339(_placed_at(setup)))
        print(f"\nquotes: {body.decode()}")
        runs = {
            "baseline": measure(baseline, _quote_request(baseline.port, baseline_token, body), args),
            "service": measure(service, _quote_request(service.port, key["token"], body), args),
        }
        ratio = (
            runs["service"].throughput() / runs["baseline"].throughput()
            if runs["baseline"].throughput()
            else math.nan
        )
        p99 = runs["service"].percentile_ms(0.99)
        print(
            f"  service/baseline throughput {ratio:.2f}  (target >= {MIN_RATIO:g})  {'PASS' if ratio >= MIN_RATIO else 'MISS'}"
        )
        print(
            f"  service p99 {p99:.1f} ms  (target <= {MAX_P99_MS:g} ms)  {'PASS' if p99 <= MAX_P99_MS else 'MISS'}"
        )

        print("\nverification")
        for run in runs.values():
            failed = sum(1 for s in run.result.statuses if s == TRANSPORT_ERROR or s >= 500)
            if failed or run.result.connection_failures:
                problems.append(
                    f"{run.target}: {failed} 5xx or unanswered, {run.result.connection_failures} connection failures"
                )
        wrong = _wrong_answers(runs["service"])
        problems.extend(f"service answered {w}" for w in wrong)
        print(
            f"  service answers: {runs['service'].result.sent:,}, each 200 with donation {expected_donation()} CNY"
            if not wrong
            else "  service answers: some wrong (below)"
        )
    for problem in problems:
        print(f"  FAIL {problem}")
    print(f"  verification {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per run, at least 10 (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of both servers (default 1)")
    parser.add_argument(
        "--max-rate", type=int, default=0, help=argparse.SUPPRESS
    )  # read by the shared printer
    parser.add_argument(
        "--g4g",
        type=Path,
        default=Path(sys.executable).parent / "g4g",
        help="the service's CLI (default: g4g beside this Python, i.e. .venv/bin/g4g)",
    )
    args = parser.parse_args(argv)
    if args.duration < 10:
        parser.error("--duration must be at least 10 seconds")
    if args.concurrency < 1 or args.workers < 1:
        parser.error("--concurrency and --workers must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server_url = _asyncpg_url(os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL)
    _print_machine(server_url, args)
    with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
        try:
            return bench(args, server_url, Path(workdir))
        except SetupError as exc:
            print(f"\nSETUP FAILED: {exc}")
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: servers stopped, databases dropped")
            return 130


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main())
