"""Order-webhook ingest benchmark: the service against a bare "verify + one insert" baseline.

Run from the repository root:

    .venv/bin/python bench/ingest.py [--duration 10] [--concurrency 32] [--workers 1]
    .venv/bin/python bench/ingest.py --baseline-only [--calibrate]   # no service: the baseline and the generator

What it does, in one invocation (the machine is shared and noisy, so both sides run in it, alternating):

1. Creates two fresh databases on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres)
   and drops them at the end.
2. Starts the baseline (bench/baseline_app.py: raw ASGI on uvicorn; Standard Webhooks verification with the
   `standardwebhooks` package, one asyncpg insert, then 200) and the service as an operator would
   (`g4g migrate`, `g4g create-api-key --role admin`, `g4g serve`), each with `--workers` uvicorn workers, and
   sets the service up through its API: a platform, merchant `shop-1`, a donation rule (150 bps + CNY 0.02/unit).
3. Runs two phases against each, same generator and same event stream: `paid` (new order.paid events only) and
   `mixed` (~70 % new order.paid, ~15 % partial refunds of orders paid in `paid`, ~15 % duplicates: half exact
   redeliveries of an earlier webhook id, half the same order.paid under a new webhook id). Each run lasts
   `--duration` seconds with `--concurrency` keep-alive connections from a separate process (bench/loadgen.py);
   every request is built and signed before the timed window.
4. Prints per run: requests, throughput, p50/p99 latency, status codes, and where the CPU went (generator,
   server processes, PostgreSQL); then service/baseline throughput against the targets (ratio >= 0.5,
   service p99 <= 100 ms).
5. Verifies the service's database: one `orders` row per order id answered 2xx (none other, no duplicates),
   each with the expected donation, one `order_refunds` row per refund id answered 2xx; and the answers
   themselves (new -> applied, same order under a new id -> duplicate, redelivery -> the first answer).

Exit status: 1 if the service could not be set up, a request got a 5xx or no answer, or verification failed;
missing a speed target is reported, not fatal.

The generator (bench/loadgen.py) is an asyncio Protocol on uvloop writing the pre-built bytes: about 16 us of
client CPU per request against a no-op route, where aiohttp, measured as the alternative, spent about 75 us (and
on 2 cores every client cycle is taken from the server). `--calibrate` first runs it against the baseline's no-op
and verify-only routes, to show what the HTTP layer and the generator alone reach on this machine. Each run also
prints where the CPU went: the generator, the server's processes, PostgreSQL's (the backends of the target's
database and the server's own processes), and the rest ("other": the kernel, and anything else running on the
shared machine, such as someone's test suite, which makes that run's figures noisy).
Environment: `DATABASE_URL` (the server to make the databases on), `BENCH_POOL_SIZE` (baseline's asyncpg
connections per worker, default 10 like the service's pool).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import json
import math
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from loadgen import TRANSPORT_ERROR, LoadResult, run_load

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The merchant's rule and the one order line every order.paid carries.
RATE_BPS = 150
FIXED_PER_UNIT = 2  # CNY minor units
LINE_AMOUNT = 12800
LINE_QUANTITY = 2
REFUND_AMOUNT = 6400  # half the order (base = the line amount): at most 2 refunds per order
REFUNDS_PER_ORDER = LINE_AMOUNT // REFUND_AMOUNT


def expected_donation() -> int:
    """SPEC §3: round_half_even(sum of amount * rate_bps / 10000 + fixed * quantity); here 192 + 4 = 196."""
    exact = Fraction(LINE_AMOUNT * RATE_BPS, 10000) + FIXED_PER_UNIT * LINE_QUANTITY
    return round(exact)  # Fraction rounds half to even


# --------------------------------------------------------------------------------------------- the event stream


class Kind(enum.StrEnum):
    PAID = "new order.paid"
    REFUND = "new refund"
    REDELIVERY = "redelivery (same webhook id)"
    REPLAY = "same order.paid, new webhook id"


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    webhook_id: str
    body: bytes
    order_id: str
    refund_id: str | None = None
    origin: int | None = None  # REDELIVERY / REPLAY: index of the original in the `paid` phase


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class StreamBuilder:
    """Builds the events of each phase; order, refund and webhook ids never repeat within one invocation."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._tag = secrets.token_hex(3)
        self._orders = 0
        self._refunds = 0
        self._messages = 0

    def _webhook_id(self) -> str:
        self._messages += 1
        return f"msg_{self._tag}{self._messages:07d}"

    def _paid(self, now: datetime, placed_at: datetime) -> Event:
        self._orders += 1
        order_id = f"B-{self._orders}"
        data = {
            "order_id": order_id,
            "merchant_id": "shop-1",
            "currency": "CNY",
            "placed_at": _rfc3339(placed_at),
            "items": [{"sku": "TEA-01", "quantity": LINE_QUANTITY, "amount": LINE_AMOUNT}],
        }
        body = _compact({"type": "order.paid", "timestamp": _rfc3339(now), "data": data})
        return Event(Kind.PAID, self._webhook_id(), body, order_id)

    def _refund(self, now: datetime, order_id: str) -> Event:
        self._refunds += 1
        refund_id = f"R-{self._refunds}"
        data = {
            "order_id": order_id,
            "merchant_id": "shop-1",
            "refund_id": refund_id,
            "currency": "CNY",
            "amount": REFUND_AMOUNT,
        }
        body = _compact({"type": "order.refunded", "timestamp": _rfc3339(now), "data": data})
        return Event(Kind.REFUND, self._webhook_id(), body, order_id, refund_id=refund_id)

    def paid_phase(self, count: int, placed_at: datetime) -> list[Event]:
        now = datetime.now(UTC)
        return [self._paid(now, placed_at) for _ in range(count)]

    def mixed_phase(
        self, count: int, placed_at: datetime, paid: Sequence[Event], paid_ok: Sequence[int]
    ) -> list[Event]:
        """~70 % new orders, ~15 % refunds of `paid[paid_ok]`, ~15 % duplicates of them.

        `paid_ok` are the indices of `paid` events the reference target answered 2xx; a refund goes to each
        of them in turn, at most REFUNDS_PER_ORDER times, so no order is refunded beyond its amount.
        """
        now = datetime.now(UTC)
        events: list[Event] = []
        refunds = 0
        for _ in range(count):
            draw = self._random.random()
            if not paid_ok or draw < 0.70 or (draw < 0.85 and refunds >= REFUNDS_PER_ORDER * len(paid_ok)):
                events.append(self._paid(now, placed_at))
            elif draw < 0.85:
                events.append(self._refund(now, paid[paid_ok[refunds % len(paid_ok)]].order_id))
                refunds += 1
            else:
                origin = paid_ok[self._random.randrange(len(paid_ok))]
                original = paid[origin]
                if draw < 0.925:
                    events.append(
                        Event(
                            Kind.REDELIVERY,
                            original.webhook_id,
                            original.body,
                            original.order_id,
                            origin=origin,
                        )
                    )
                else:
                    events.append(
                        Event(
                            Kind.REPLAY, self._webhook_id(), original.body, original.order_id, origin=origin
                        )
                    )
        return events


def render(events: Sequence[Event], *, port: int, path: str, secret: str) -> list[bytes]:
    """The exact bytes of each request, signed now (Standard Webhooks: HMAC-SHA256 of "{id}.{ts}.{body}")."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    timestamp = str(int(time.time())).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-type: application/json\r\n".encode()
    requests: list[bytes] = []
    for event in events:
        webhook_id = event.webhook_id.encode()
        signed = b"%s.%s.%s" % (webhook_id, timestamp, event.body)
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        requests.append(
            b"%scontent-length: %d\r\nwebhook-id: %s\r\nwebhook-timestamp: %s\r\nwebhook-signature: v1,%s\r\n\r\n%s"
            % (head, len(event.body), webhook_id, timestamp, signature, event.body)
        )
    return requests


def _check_signing(secret: str) -> None:
    """Our signer agrees with the standardwebhooks package (guards render() against drift)."""
    from standardwebhooks.webhooks import Webhook

    event = Event(Kind.PAID, "msg_check", b'{"type":"order.paid"}', "B-0")
    request = render([event], port=1, path="/", secret=secret)[0]
    head, body = request.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    Webhook(secret).verify(body, headers)


# ------------------------------------------------------------------------------------------------ measurements


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def _process_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, user + system jiffies) for every process we can read."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _serves_us(pid: int, database: str) -> bool:
    """A PostgreSQL process working for `database`, or one of the server's own (WAL writer, checkpointer...).

    Client backends of other databases (someone else's tests on the shared machine) are left out.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read().decode(errors="replace")
    except OSError:
        return False
    if f" {database} " in title:
        return True
    is_client_backend = "(" in title or "[local]" in title  # "user db 127.0.0.1(port) state"
    return not is_client_backend and "autovacuum worker" not in title


def _server_and_postgres_jiffies(server_pid: int, database: str) -> tuple[dict[int, int], dict[int, int]]:
    """CPU jiffies per process: the server and its descendants, and PostgreSQL's processes working for it."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    server: dict[int, int] = {}
    pending = [server_pid]
    while pending:
        pid = pending.pop()
        if pid in table:
            server[pid] = table[pid][2]
            pending.extend(children.get(pid, []))
    postgres = {
        pid: cpu
        for pid, (_, name, cpu) in table.items()
        if name.startswith("postgres") and pid not in server and _serves_us(pid, database)
    }
    return server, postgres


def _cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(cpu - before.get(pid, 0) for pid, cpu in after.items()) / ticks


@dataclass
class Run:
    target: str
    phase: str
    events: Sequence[Event]
    result: LoadResult
    machine_busy: float  # share of all cores busy during the run, 0..1
    server_cpu_s: float
    postgres_cpu_s: float

    def statuses(self) -> Counter[int]:
        return Counter(self.result.statuses)

    def throughput(self) -> float:
        return self.result.sent / self.result.elapsed_s if self.result.elapsed_s else 0.0

    def percentile_ms(self, share: float) -> float:
        latencies = sorted(
            latency
            for latency, status in zip(self.result.latencies_ns, self.result.statuses, strict=True)
            if status != TRANSPORT_ERROR
        )
        if not latencies:
            return math.nan
        nearest_rank: int = latencies[min(len(latencies) - 1, math.ceil(share * len(latencies)) - 1)]
        return nearest_rank / 1e6

    def answers(self) -> dict[int, tuple[int, str | None]]:
        """Request index -> (HTTP status, the body's "status" field if any)."""
        result = self.result
        parsed = [_answer_status(body) for body in result.bodies]
        return {
            index: (status, parsed[body_id])
            for index, status, body_id in zip(result.indices, result.statuses, result.body_ids, strict=True)
        }

    def failures(self) -> int:
        """Requests answered 5xx or not at all, plus connections that could not be opened."""
        statuses = self.statuses()
        failed = sum(
            count for status, count in statuses.items() if status == TRANSPORT_ERROR or status >= 500
        )
        return failed + self.result.connection_failures


def _answer_status(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    status = document.get("status") if isinstance(document, dict) else None
    return status if isinstance(status, str) else None


def measure(
    target: Target,
    phase: str,
    events: Sequence[Event],
    args: argparse.Namespace,
    *,
    path: str | None = None,
    cycle: bool = False,
) -> Run:
    requests = render(events, port=target.port, path=path or target.webhook_path, secret=target.secret)
    server_before, postgres_before = _server_and_postgres_jiffies(target.pid, target.database)
    busy_before, total_before = _cpu_jiffies()
    result = run_load(
        requests,
        host=HOST,
        port=target.port,
        duration_s=args.duration,
        concurrency=args.concurrency,
        cycle=cycle,
    )
    busy_after, total_after = _cpu_jiffies()
    server_after, postgres_after = _server_and_postgres_jiffies(target.pid, target.database)
    del requests
    run = Run(
        target=target.name,
        phase=phase,
        events=events,
        result=result,
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        server_cpu_s=_cpu_delta(server_before, server_after),
        postgres_cpu_s=_cpu_delta(postgres_before, postgres_after),
    )
    _print_run(run)
    return run


# --------------------------------------------------------------------------------------------------- reporting


def _fmt_statuses(run: Run) -> str:
    parts = []
    for status, count in sorted(run.statuses().items()):
        parts.append(f"{'error' if status == TRANSPORT_ERROR else status}: {count:,}")
    return " ".join(parts) or "none"


def _print_run(run: Run) -> None:
    result = run.result
    elapsed = result.elapsed_s or math.nan
    cores = len(os.sched_getaffinity(0))
    print(
        f"  {run.target:<9} {result.sent:>8,} sent  {run.throughput():>8,.0f} req/s  "
        f"p50 {run.percentile_ms(0.50):6.1f} ms  p99 {run.percentile_ms(0.99):6.1f} ms  [{_fmt_statuses(run)}]"
    )
    busy = run.machine_busy * cores
    generator, server, postgres = (
        cpu / elapsed for cpu in (result.client_cpu_s, run.server_cpu_s, run.postgres_cpu_s)
    )
    # "other": the rest of the machine (other processes, e.g. someone's tests, which make the run noisy) and the kernel.
    print(
        f"  {'':<9} cores busy over {elapsed:.1f} s: {busy:.2f}/{cores} = generator {generator:.2f}"
        f" + server {server:.2f} + PostgreSQL {postgres:.2f} + other {busy - generator - server - postgres:.2f}"
    )
    notes = []
    if result.exhausted:
        notes.append("the pre-built stream ran out before the deadline (raise --max-rate)")
    if result.reconnects:
        notes.append(f"{result.reconnects} reconnects")
    notes.extend(result.errors[:3])
    first_body: dict[int, bytes] = {}
    for status, body_id in zip(result.statuses, result.body_ids, strict=True):
        if status != TRANSPORT_ERROR and not 200 <= status < 300 and status not in first_body:
            first_body[status] = result.bodies[body_id]
    for status, body in sorted(first_body.items()):
        notes.append(f"first {status} body: {body[:300].decode(errors='replace')}")
    for note in notes:
        print(f"  {'':<9} ! {note}")


def _print_comparison(baseline: Run, service: Run, min_ratio: float, max_p99_ms: float) -> None:
    ratio = service.throughput() / baseline.throughput() if baseline.throughput() else math.nan
    p99 = service.percentile_ms(0.99)
    print(
        f"  service/baseline throughput {ratio:.2f}  (target >= {min_ratio:g})  {'PASS' if ratio >= min_ratio else 'MISS'}"
    )
    print(
        f"  service p99 {p99:.1f} ms  (target <= {max_p99_ms:g} ms)  {'PASS' if p99 <= max_p99_ms else 'MISS'}"
    )


# --------------------------------------------------------------------------------------------------- processes


@dataclass
class Target:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    platform_id: str
    secret: str
    database: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def webhook_path(self) -> str:
        return f"/v1/webhooks/orders/{self.platform_id}"


class SetupError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 20, chars: int = 6000) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])[-chars:]
    except OSError:
        return "(no log)"


def _wait_until_ok(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupError(
                f"{url}: the server exited with status {process.returncode}; its log:\n{_log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise SetupError(f"{url} not ready after {timeout_s:.0f} s ({last}); server log:\n{_log_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL to the process group we created for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server process while in the block, stopped after it; its output goes to `log`."""
    with log.open("wb") as output:  # a file, not a pipe: a pipe nobody reads would stall the server
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop(process)


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@contextlib.contextmanager
def baseline_target(database_url: str, workers: int, workdir: Path) -> Iterator[Target]:
    port = _free_port()
    secret = _whsec()
    env = {**os.environ, "BENCH_DATABASE_URL": database_url, "BENCH_WEBHOOK_SECRET": secret}
    command = [
        sys.executable, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(BENCH_DIR),
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log", "--no-server-header", "--lifespan", "on",
    ]  # fmt: skip
    log = workdir / "baseline.log"
    with _server(command, env, log) as process:
        _wait_until_ok(process, f"http://{HOST}:{port}/healthz", log)
        yield Target("baseline", process, port, "plt_baseline", secret, _database_name(database_url), log)


def _expect(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON answer, or a loud SetupError naming the call, the status and the body."""
    if answer.status_code != status:
        raise SetupError(
            f"{answer.request.method} {answer.request.url.path} answered {answer.status_code} "
            f"(expected {status}): {answer.text[:1000]}"
        )
    document: dict[str, Any] = answer.json()
    return document


def _run_cli(g4g: Path, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([str(g4g), *args], env=env, capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SetupError(
            f"g4g {' '.join(args)} exited with {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}"
        )
    return done.stdout.decode()


@dataclass
class ServiceSetup:
    merchant_id: str
    rule_effective_from: datetime
    admin_token: str = ""  # for other benchmarks that set up more through the API (bench/quotes.py)


@contextlib.contextmanager
def service_target(
    g4g: Path, database_url: str, workers: int, workdir: Path
) -> Iterator[tuple[Target, ServiceSetup]]:
    """The service started as an operator would, with one platform, merchant `shop-1` and its donation rule."""
    from cryptography.fernet import Fernet

    # The service's own tuning knobs pass through (e.g. G4G_INGEST_CONCURRENCY=8); nothing else of ours does.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("G4G_") or key.startswith(("G4G_INGEST_", "G4G_DB_POOL_SIZE"))
    }
    env |= {
        "DATABASE_URL": database_url,
        "G4G_DATA_KEY": Fernet.generate_key().decode(),
        "G4G_LOG_LEVEL": "warning",
        "G4G_WORKERS": str(workers),
        "G4G_DATA_DIR": str(workdir / "g4g-data"),
    }
    _run_cli(g4g, ["migrate"], env)
    token = _run_cli(g4g, ["create-api-key", "--role", "admin", "--name", "bench"], env).strip()
    port = _free_port()
    log = workdir / "service.log"
    with _server([str(g4g), "serve", "--port", str(port)], env, log) as process:
        _wait_until_ok(process, f"http://{HOST}:{port}/readyz", log)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://{HOST}:{port}", headers=headers, timeout=30) as api:
            try:
                platform_id, secret, setup = _set_up(api)
            except SetupError as exc:
                raise SetupError(f"{exc}\nservice log, last lines:\n{_log_tail(log)}") from None
        target = Target("service", process, port, platform_id, secret, _database_name(database_url), log)
        setup.admin_token = token
        yield target, setup


def _set_up(api: httpx.Client) -> tuple[str, str, ServiceSetup]:
    """(platform id, its webhook secret, the merchant and its rule), through the admin API."""
    platform_ = _expect(api.post("/v1/platforms", json={"name": "Bench"}), 201)
    merchant = _expect(
        api.post(
            "/v1/merchants",
            json={"platform_id": platform_["id"], "external_id": "shop-1", "name": "Shop 1", "country": "CN"},
        ),
        201,
    )
    rule = _expect(
        api.put(
            f"/v1/merchants/{merchant['id']}/donation-rule",
            json={"rate_bps": RATE_BPS, "fixed_per_unit": [{"amount": FIXED_PER_UNIT, "currency": "CNY"}]},
        ),
        200,
    )
    try:
        effective_from = datetime.fromisoformat(rule["effective_from"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        raise SetupError(f"the donation rule's answer has no usable effective_from: {rule}") from None
    return platform_["id"], platform_["webhook_secret"], ServiceSetup(merchant["id"], effective_from)


# ---------------------------------------------------------------------------------------------------- database


def _asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _with_database(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


async def _create_databases(server_url: str, names: Sequence[str]) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        for name in names:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_databases(server_url: str, names: Sequence[str]) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _create_baseline_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE webhook_events (id bigserial PRIMARY KEY, webhook_id text NOT NULL, body text NOT NULL,"
            " received_at timestamptz NOT NULL DEFAULT now())"
        )
    finally:
        await connection.close()


async def _count_baseline_rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM webhook_events")
        return count
    finally:
        await connection.close()


@dataclass
class StoredRows:
    orders: list[tuple[str, int]]  # (platform's order id, donation_amount), one per row
    refunds: list[tuple[str, str]]  # (platform's order id, refund id), one per row


async def fetch_service_rows(database_url: str, platform_id: str) -> StoredRows:
    """The service's stored orders and refunds of one platform. The only place that knows its table names."""
    connection = await asyncpg.connect(database_url)
    try:
        orders = await connection.fetch(
            "SELECT external_id, donation_amount FROM orders WHERE platform_id = $1", platform_id
        )
        refunds = await connection.fetch(
            "SELECT o.external_id, r.refund_id FROM order_refunds r JOIN orders o ON o.id = r.order_id"
            " WHERE o.platform_id = $1",
            platform_id,
        )
    finally:
        await connection.close()
    return StoredRows(
        orders=[(row["external_id"], int(row["donation_amount"])) for row in orders],
        refunds=[(row["external_id"], row["refund_id"]) for row in refunds],
    )


# ------------------------------------------------------------------------------------------------ verification


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def _sample(items: Iterable[str], limit: int = 5) -> str:
    listed = sorted(items)
    more = f" … (+{len(listed) - limit})" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


def _expected_answer(
    event: Event, first_answers: dict[int, tuple[int, str | None]]
) -> tuple[int, str | None] | None:
    if event.kind in (Kind.PAID, Kind.REFUND):
        return (200, "applied")
    if event.kind is Kind.REPLAY:
        return (200, "duplicate")
    assert event.origin is not None
    return first_answers.get(event.origin)


def verify_service(runs: Sequence[Run], paid_run: Run, stored: StoredRows, verdict: Verdict) -> None:
    """The database holds exactly what the answers promised, and the answers follow SPEC §4."""
    order_answers: dict[str, set[int]] = {}
    refund_answers: dict[str, set[int]] = {}
    first_answers = paid_run.answers()
    wrong_answers: Counter[str] = Counter()
    wrong_examples: dict[str, str] = {}
    for run in runs:
        for index, answer in run.answers().items():
            event = run.events[index]
            status = answer[0]
            if event.refund_id is None:
                order_answers.setdefault(event.order_id, set()).add(status)
            else:
                refund_answers.setdefault(event.refund_id, set()).add(status)
            expected = _expected_answer(event, first_answers)
            if status != TRANSPORT_ERROR and answer != expected:
                wrong_answers[event.kind.value] += 1
                wrong_examples.setdefault(event.kind.value, f"got {answer}, expected {expected}")

    def must_and_may(answers: dict[str, set[int]]) -> tuple[set[str], set[str]]:
        # Applied (200) must be stored; parked (202) may not be applied yet, so it may or may not be.
        must = {key for key, statuses in answers.items() if 200 in statuses}
        may = {key for key, statuses in answers.items() if any(200 <= s < 300 for s in statuses)}
        return must, may

    orders_must, orders_may = must_and_may(order_answers)
    order_rows = Counter(order_id for order_id, _ in stored.orders)
    doubled = {order_id for order_id, count in order_rows.items() if count > 1}
    missing = orders_must - set(order_rows)
    extra = set(order_rows) - orders_may
    verdict.check(not doubled, f"orders stored more than once: {_sample(doubled)}")
    verdict.check(not missing, f"orders answered 200 but not stored: {len(missing)} ({_sample(missing)})")
    verdict.check(
        not extra, f"orders stored without a 2xx answer (or never sent): {len(extra)} ({_sample(extra)})"
    )
    want = expected_donation()
    wrong = {f"{order_id}={amount}" for order_id, amount in stored.orders if amount != want}
    verdict.check(not wrong, f"orders whose donation_amount is not {want}: {len(wrong)} ({_sample(wrong)})")

    refunds_must, refunds_may = must_and_may(refund_answers)
    refund_rows = Counter(refund_id for _, refund_id in stored.refunds)
    doubled = {refund_id for refund_id, count in refund_rows.items() if count > 1}
    missing = refunds_must - set(refund_rows)
    extra = set(refund_rows) - refunds_may
    verdict.check(not doubled, f"refunds stored more than once: {_sample(doubled)}")
    verdict.check(not missing, f"refunds answered 200 but not stored: {len(missing)} ({_sample(missing)})")
    verdict.check(
        not extra, f"refunds stored without a 2xx answer (or never sent): {len(extra)} ({_sample(extra)})"
    )

    for kind, count in sorted(wrong_answers.items()):
        verdict.problems.append(f"{count} answers to {kind} not as SPEC §4 says, e.g. {wrong_examples[kind]}")
    parked_orders, parked_refunds = len(orders_may - orders_must), len(refunds_may - refunds_must)
    if parked_orders or parked_refunds:
        verdict.notes.append(
            f"parked only (202, not required to be stored): {parked_orders} orders, {parked_refunds} refunds"
        )
    verdict.notes.append(
        f"service database: {len(stored.orders):,} orders (expected {len(orders_must):,}"
        f"{'' if orders_must == orders_may else f'..{len(orders_may):,}'}), "
        f"{len(stored.refunds):,} refunds (expected {len(refunds_must):,}); expected donation {want} each"
    )


# -------------------------------------------------------------------------------------------------------- main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per run, at least 10 (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of both servers (default 1)")
    parser.add_argument("--baseline-only", action="store_true", help="measure the baseline alone, no service")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="first measure the generator against the baseline's no-op and verify-only routes",
    )
    parser.add_argument(
        "--max-rate",
        type=int,
        default=12_000,
        help="requests pre-built per second of run (default 12000); a run that exhausts them says so",
    )
    parser.add_argument(
        "--g4g",
        type=Path,
        default=Path(sys.executable).parent / "g4g",
        help="the service's CLI (default: g4g beside this Python, i.e. .venv/bin/g4g)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the mixed phase's draw (default 1)")
    args = parser.parse_args(argv)
    if args.duration < 10:
        parser.error("--duration must be at least 10 seconds")
    if args.concurrency < 1 or args.workers < 1 or args.max_rate < 1:
        parser.error("--concurrency, --workers and --max-rate must be positive")
    return args


def _print_machine(server_url: str, args: argparse.Namespace) -> None:
    load1, load5, load15 = os.getloadavg()
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))}, load average {load1:.2f} {load5:.2f} {load15:.2f}; "
        f"Python {platform.python_version()}; PostgreSQL server {_redacted(server_url)}"
    )
    print(
        f"runs: {args.duration:g} s each, {args.concurrency} connections, {args.workers} uvicorn worker(s) per server, "
        f"{args.max_rate:,} requests pre-built per second of run"
    )


def _placed_at(setup: ServiceSetup | None) -> datetime:
    """A minute ago, but not before the donation rule took effect (SPEC §3: rules can't start in the past)."""
    now = datetime.now(UTC).replace(microsecond=0)
    placed_at = now - timedelta(minutes=1)
    if setup is not None and placed_at <= setup.rule_effective_from:
        placed_at = setup.rule_effective_from.replace(microsecond=0) + timedelta(seconds=1)
        # Wait until then: an order placed in the future would be refused.
        time.sleep(max(0.0, (placed_at - datetime.now(UTC)).total_seconds() + 0.1))
    return placed_at


def _ok_indices(run: Run) -> list[int]:
    return sorted(index for index, (status, _) in run.answers().items() if 200 <= status < 300)


def bench(args: argparse.Namespace, server_url: str, workdir: Path) -> int:
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    baseline_db = f"g4g_bench_{tag}_baseline"
    service_db = f"g4g_bench_{tag}_service"
    names = [baseline_db] if args.baseline_only else [baseline_db, service_db]
    baseline_url = _with_database(server_url, baseline_db)
    service_url = _with_database(server_url, service_db)
    size = math.ceil(args.max_rate * args.duration)
    builder = StreamBuilder(args.seed)
    runs: list[Run] = []
    verdict = Verdict()

    asyncio.run(_create_databases(server_url, names))
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: asyncio.run(_drop_databases(server_url, names)))
        asyncio.run(_create_baseline_table(baseline_url))
        baseline = stack.enter_context(baseline_target(baseline_url, args.workers, workdir))
        _check_signing(baseline.secret)
        service: Target | None = None
        setup: ServiceSetup | None = None
        if not args.baseline_only:
            try:
                service, setup = stack.enter_context(
                    service_target(args.g4g, service_url, args.workers, workdir)
                )
            except SetupError as exc:
                print(
                    f"\nSERVICE SETUP FAILED: {exc}\n(run with --baseline-only to measure the baseline alone)"
                )
                return 1
        targets = [baseline] if service is None else [baseline, service]

        if args.calibrate:
            print(
                "\ncalibration: the generator against the baseline without a database write (requests cycled)"
            )
            sample = builder.paid_phase(20_000, _placed_at(None))
            for route in ("/bench/noop", "/bench/verify"):
                run = measure(baseline, f"calibrate {route}", sample, args, path=route, cycle=True)
                print(f"  {'':<9} ^ {route}")
                verdict.check(
                    run.failures() == 0, f"calibration {route}: {run.failures()} 5xx or transport errors"
                )

        print(f"\nphase paid: new order.paid events only (up to {size:,} pre-built)")
        paid = builder.paid_phase(size, _placed_at(setup))
        paid_runs = {target.name: measure(target, "paid", paid, args) for target in targets}
        if service is not None:
            _print_comparison(paid_runs["baseline"], paid_runs["service"], 0.5, 100.0)

        reference = paid_runs["service" if service is not None else "baseline"]
        print(f"\nphase mixed: ~70% new order.paid, ~15% refunds, ~15% duplicates (up to {size:,} pre-built)")
        mixed = builder.mixed_phase(size, _placed_at(setup), paid, _ok_indices(reference))
        mixed_runs = {target.name: measure(target, "mixed", mixed, args) for target in targets}
        if service is not None:
            _print_comparison(mixed_runs["baseline"], mixed_runs["service"], 0.5, 100.0)
        for phase_runs in (paid_runs, mixed_runs):
            runs.extend(phase_runs.values())
        sent_kinds = Counter(mixed[index].kind.value for index in mixed_runs[reference.target].result.indices)
        print(
            f"  mixed as sent to the {reference.target}: "
            + ", ".join(f"{k} {v:,}" for k, v in sent_kinds.items())
        )

        print("\nverification")
        for run in runs:
            verdict.check(
                run.failures() == 0, f"{run.target} {run.phase}: {run.failures()} 5xx or transport errors"
            )
        applied = sum(run.statuses()[200] for run in runs if run.target == "baseline")
        stored = asyncio.run(_count_baseline_rows(baseline_url))
        verdict.check(stored == applied, f"baseline: {stored} rows stored for {applied} answers 200")
        verdict.notes.append(f"baseline database: {stored:,} rows for {applied:,} answers 200")
        if service is not None:
            try:
                rows = asyncio.run(fetch_service_rows(service_url, service.platform_id))
            except (asyncpg.PostgresError, OSError) as exc:
                verdict.problems.append(f"could not read the service's orders: {exc!r}")
            else:
                service_runs = [run for run in runs if run.target == "service"]
                verify_service(service_runs, paid_runs["service"], rows, verdict)

    for note in verdict.notes:
        print(f"  {note}")
    for problem in verdict.problems:
        print(f"  FAIL {problem}")
    print(f"  verification {'FAILED' if verdict.problems else 'passed'}")
    load1, load5, load15 = os.getloadavg()
    print(f"\nload average at the end: {load1:.2f} {load5:.2f} {load15:.2f}")
    return 1 if verdict.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped and the databases dropped.
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
