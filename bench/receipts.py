"""Receipt pages benchmark: buyers opening `/r/{token}` for 100,000 orders with receipt links.

    .venv/bin/python bench/receipts.py [--orders 100000] [--duration 20] [--concurrency 32] [--workers 1]

Makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it and bulk-loads with set-based SQL: `--orders` USD orders from 100 merchants, four in five billed and
paid with their money in the pool (one funding source each, $1 to $4), that money packed into $25 Love Packages
for 300 schools in Nepal and Cambodia at every stage (allocated, handed over, delivered, confirmed), and one
receipt link per order (tokens derived as the service derives them, under a lookup key this script sets). Then
starts the service as an operator does (`g4g serve`, `--workers` processes) and, over `--concurrency` keep-alive
connections from a separate process (bench/loadgen.py), for `--duration` seconds each:

- `GET /r/{token}` (the page, in English) for 20,000 different orders, round and round,
- `GET /v1/receipts/{token}` (the JSON) for the same orders,
- `GET /r/{token}` with tokens never issued (the 404 path, which must cost what a hit costs),

and prints throughput and p50/p99 latency against the target p99 <= 50 ms. Drops the database at the end.
Exit status 1 if a request failed (a 5xx, no answer, a hit that was not 200) or the target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.secrets import decode_lookup_key
from app.receipts.service import receipt_key, token_for, token_hash
from bench.inprocess import scratch_database
from bench.loadgen import run_load
from tests.live import LiveServer, g4g_env, run_g4g

SAMPLE = 20_000
TARGET_P99_MS = 50.0


async def load(dsn: str, orders: int, lookup_key: str) -> list[str]:
    """The programme, and the tokens of every order's receipt link."""
    db = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await db.execute(
            """
            INSERT INTO platforms (id, name) VALUES ('plt_bench', 'Bench');
            INSERT INTO logistics_partners (id, name) VALUES ('lgp_bench', 'Bench Express');
            INSERT INTO api_keys (id, role, name, token_hash, token_prefix, logistics_partner_id)
            VALUES ('key_bench', 'logistics', 'bench', sha256('bench'), 'g4g_bench', 'lgp_bench');
            INSERT INTO merchants (id, platform_id, external_id, name, country, billing_method)
            SELECT 'mer_' || lpad(n::text, 3, '0'), 'plt_bench', 'm' || n, 'Shop ' || n, 'CN', 'bank_transfer'
            FROM generate_series(1, 100) AS n;
            INSERT INTO settlement_runs (id, as_of, summary) VALUES ('stl_bench', '2026-11-01', '{}');
            INSERT INTO statements (id, run_id, merchant_id, currency, as_of, total, billing_method, status,
                                    payment_attempts, paid_at, paid_via)
            SELECT 'stm_' || lpad(n::text, 3, '0'), 'stl_bench', 'mer_' || lpad(n::text, 3, '0'), 'USD',
                   '2026-11-01', 100000, 'bank_transfer', 'paid', 0, '2026-11-03', 'bank_transfer'
            FROM generate_series(1, 100) AS n;
            """
        )
        # Orders 1..N; four in five billed (n % 5 <> 0) with donation 100..400 cents.
        await db.execute(
            """
            INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                                donation_amount, refunded_amount, reversed_amount, content_hash, statement_id,
                                settled_reversed)
            SELECT 'ord_' || lpad(n::text, 9, '0'), 'plt_bench', 'O-' || n, 'mer_' || lpad((n % 100 + 1)::text, 3, '0'),
                   'USD', timestamptz '2026-09-01' + (n % 60) * interval '1 day', '[]'::jsonb, 10000,
                   100 * (1 + n % 4), 0, 0, '\\x00'::bytea,
                   CASE WHEN n % 5 <> 0 THEN 'stm_' || lpad((n % 100 + 1)::text, 3, '0') END, 0
            FROM generate_series(1, $1::int) AS n
            """,
            orders,
        )
        # The pool: each billed order's donation, one after another.
        await db.execute(
            """
            INSERT INTO funding_sources (kind, statement_id, order_id, merchant_id, currency, amount, start_offset,
                                         end_offset)
            SELECT 'collected', statement_id, id, merchant_id, 'USD', donation_amount,
                   sum(donation_amount) OVER w - donation_amount, sum(donation_amount) OVER w
            FROM orders WHERE statement_id IS NOT NULL
            WINDOW w AS (ORDER BY id ROWS UNBOUNDED PRECEDING)
            """
        )
        pooled = await db.fetchval("SELECT max(end_offset) FROM funding_sources")
        packages = pooled // 2500
        await db.execute(
            """
            INSERT INTO schools (id, name, country, region, logistics_partner_id, teacher_contact_encrypted)
            SELECT 'sch_' || lpad(n::text, 3, '0'), 'School ' || n, (ARRAY['NP', 'KH'])[n % 2 + 1],
                   'Region ' || (n % 5), 'lgp_bench', 'encrypted'
            FROM generate_series(1, 300) AS n;
            INSERT INTO package_kinds (id) VALUES ('pkk_bench');
            INSERT INTO package_kind_versions (id, kind_id, version, name, contents, unit_cost, currency, countries,
                                               grades)
            VALUES ('pkv_bench', 'pkk_bench', 1, 'Primary box', '[{"item": "Notebook", "quantity": 4}]', 2500,
                    'USD', ARRAY['KH', 'NP'], ARRAY['1', '2', '3', '4', '5', '6']);
            INSERT INTO allocation_runs (id, term, kind_id, kind_version_id, summary)
            VALUES ('alr_bench', '2026-T1', 'pkk_bench', 'pkv_bench', '{}');
            INSERT INTO shipments (id, run_id, school_id, logistics_partner_id, status, status_changed_at,
                                   last_event_at)
            SELECT 'shp_' || lpad(n::text, 3, '0'), 'alr_bench', 'sch_' || lpad(n::text, 3, '0'), 'lgp_bench',
                   (ARRAY['planned', 'in_transit', 'delivered', 'receipt_confirmed'])[n % 4 + 1], now(), now()
            FROM generate_series(1, 300) AS n;
            INSERT INTO shipment_events (id, shipment_id, event_id, status, occurred_at, recorded_at, result,
                                         status_before, status_after, posted_by, api_key_id, content_hash)
            SELECT 'sev_' || id, id, 'E-' || id, 'handed_over', timestamptz '2026-11-20', now(), 'applied',
                   'planned', 'handed_over', 'logistics_partner', 'key_bench', sha256(id::bytea)
            FROM shipments WHERE status <> 'planned';
            """
        )
        await db.execute(
            """
            INSERT INTO love_packages (id, kind_id, kind_version_id, cost, currency, run_id, status, school_id, grade,
                                       shipment_id, funding_start, funding_end, delivered_at, receipt_confirmed_at)
            SELECT 'pkg_' || lpad(n::text, 6, '0'), 'pkk_bench', 'pkv_bench', 2500, 'USD', 'alr_bench',
                   (ARRAY['allocated', 'shipped', 'delivered', 'accepted'])[s % 4 + 1],
                   'sch_' || lpad(s::text, 3, '0'), ((n % 6) + 1)::text, 'shp_' || lpad(s::text, 3, '0'),
                   (n - 1) * 2500, n * 2500,
                   CASE WHEN s % 4 >= 2 THEN timestamptz '2026-11-25' END,
                   CASE WHEN s % 4 = 3 THEN timestamptz '2026-11-27' END
            FROM (SELECT n, n % 300 + 1 AS s FROM generate_series(1, $1::int) AS n) x
            """,
            packages,
        )
        # One link per order: the nonce stored, the token derived as the service derives it, only its hash kept.
        key = receipt_key(decode_lookup_key(lookup_key))
        ids = [row["id"] for row in await db.fetch("SELECT id FROM orders ORDER BY id")]
        nonces = [os.urandom(16) for _ in ids]
        tokens = [token_for(key, order_id, nonce) for order_id, nonce in zip(ids, nonces, strict=True)]
        await db.copy_records_to_table(
            "receipt_links",
            columns=["id", "order_id", "nonce", "token_hash", "show_merchant", "order_reference"],
            records=[
                (f"rcl_{n:09d}", order_id, nonce, token_hash(token), True, None)
                for n, (order_id, nonce, token) in enumerate(zip(ids, nonces, tokens, strict=True))
            ],
        )
        await db.execute("ANALYZE")
        print(
            f"  {len(ids):,} orders with receipt links, {packages:,} packages, loaded in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        return tokens
    finally:
        await db.close()


def request(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Language: en\r\n\r\n".encode()


def percentiles(latencies_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(latencies_ns)
    return statistics.median(ordered) / 1e6, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6


def measure(dsn: str, tokens: list[str], lookup_key: str, args: argparse.Namespace, workdir: Path) -> bool:
    """Serve the loaded database and measure; True if a request failed or the target was missed."""
    env = g4g_env(
        DATABASE_URL=dsn,
        G4G_DATA_KEY=Fernet.generate_key().decode(),
        G4G_LOOKUP_KEY=lookup_key,
        G4G_DATA_DIR=str(workdir),
        G4G_LOG_LEVEL="warning",
        G4G_WORKERS=str(args.workers),
    )
    run_g4g("migrate", env=env)
    server = LiveServer(env, workdir / "serve.log")
    failed = False
    try:
        sample = random.Random(7).sample(tokens, min(SAMPLE, len(tokens)))
        never = [base64.urlsafe_b64encode(os.urandom(18)).decode() for _ in range(1000)]
        runs = {
            "GET /r/{token}": ([request(server.port, f"/r/{t}") for t in sample], 200),
            "GET /v1/receipts/{token}": ([request(server.port, f"/v1/receipts/{t}") for t in sample], 200),
            "GET /r/{never issued}": ([request(server.port, f"/r/{t}") for t in never], 404),
        }
        # Warm up: the first request computes the public report the receipts read their regions from.
        run_load(
            runs["GET /r/{token}"][0][:200], host="127.0.0.1", port=server.port, duration_s=5, concurrency=4
        )
        print(
            f"\n{args.concurrency} connections, {args.duration:.0f} s each, {args.workers} server process(es):"
        )
        for label, (requests, expected) in runs.items():
            result = run_load(
                requests,
                host="127.0.0.1",
                port=server.port,
                duration_s=args.duration,
                concurrency=args.concurrency,
                cycle=True,
            )
            p50, p99 = percentiles(list(result.latencies_ns))
            statuses = sorted(set(result.statuses))
            missed = p99 > TARGET_P99_MS
            wrong = statuses != [expected] or result.error_count > 0
            print(
                f"  {label:<26} {len(result.latencies_ns) / args.duration:8,.0f} req/s  p50 {p50:6.1f} ms  "
                f"p99 {p99:6.1f} ms  (target p99 <= {TARGET_P99_MS:.0f} ms: {'MISSED' if missed else 'met'})  "
                f"statuses {statuses}{'  WRONG' if wrong else ''}"
            )
            failed |= missed or wrong
    finally:
        server.stop()
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    lookup_key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    with scratch_database("g4g_bench_receipts") as dsn:
        print(f"Loading {args.orders:,} orders:")
        tokens = asyncio.run(load(dsn, args.orders, lookup_key))
        with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
            failed = measure(dsn, tokens, lookup_key, args, Path(workdir))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
