"""Jepsen-style: the primary PostgreSQL is killed (`kill -9` of its postmaster) under load, three times in a row,
back and forth between the nodes (tests/ha/cluster.py), while two `g4g serve` processes take signed order
webhooks (new orders, duplicates, refunds) and quotes on 32 connections, and a `g4g worker` runs jobs.

Then (SPEC §17): no answer other than 2xx or 503 with `Retry-After`, none later than the bound; every order
answered 2xx is stored exactly once with the right donation, every refund answered 2xx applied once, nothing
answered 503 half-applied (whatever exists is whole: its ledger entry and its event with it), and after the
platform's retries of what failed, nothing is missing; `g4g audit` passes; a settlement run queued just before
each kill finishes after it. Each failover prints its unavailability window (first 503 to the first 2xx of a
request sent after it) and the p99 latency of the requests sent during the switch."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import DATA_KEY
from tests.ha.cluster import HaCluster
from tests.helpers import order_paid, order_refunded, signed_headers
from tests.live import G4G, LiveServer, g4g_env, run_g4g

ROUNDS = 3
CONNECTIONS = 32
LOAD_BEFORE_KILL_S = 3.0
LOAD_AFTER_PROMOTION_S = 3.0
ANSWER_BOUND_S = 10.0  # no request may take longer, failover or not
DONATION = 196  # 150 bps of 12800 + CNY 0.02 × 2 units
REFUND = 6400  # half the order: half its donation reversed
REVERSED = DONATION // 2


@dataclass
class Sent:
    kind: str  # paid, duplicate, refund, quote
    order: str
    webhook_id: str
    body: bytes
    round: int
    started: float = 0.0
    finished: float = 0.0
    status: int = 0  # 0: no answer
    answer: Any = None
    retry_after: str | None = None


@dataclass
class Load:
    server_urls: list[str]
    platform: dict[str, Any]
    quote_token: str
    sent: list[Sent] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # orders whose payment was answered 2xx
    refunded: set[str] = field(default_factory=set)
    bodies: dict[str, bytes] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def path(self) -> str:
        return f"/v1/webhooks/orders/{self.platform['id']}"

    def next_request(self, round_: int) -> Sent:
        n = next(self.counter)
        choice = n % 8
        if choice == 4 and self.bodies:
            order = f"O-{n // 2}" if f"O-{n // 2}" in self.bodies else next(iter(self.bodies))
            return Sent("duplicate", order, f"dup_{n}", self.bodies[order], round_)
        if choice == 5:
            candidates = [order for order in self.acknowledged[-200:] if order not in self.refunded]
            if candidates:
                order = candidates[n % len(candidates)]
                self.refunded.add(order)
                body = json.dumps(order_refunded(order, f"R-{order}", REFUND, merchant="shop-1")).encode()
                return Sent("refund", order, f"refund_{order}", body, round_)
        if choice in (6, 7):
            quote = {
                "platform_id": self.platform["id"],
                "merchant_id": "shop-1",
                "currency": "CNY",
                "items": [{"sku": "TEA-01", "quantity": 2, "amount": 12800}],
            }
            return Sent("quote", "", f"quote_{n}", json.dumps(quote).encode(), round_)
        order = f"O-{n}"
        body = json.dumps(order_paid(order, merchant="shop-1")).encode()
        self.bodies[order] = body
        return Sent("paid", order, f"paid_{order}", body, round_)

    async def send(self, client: httpx.AsyncClient, request: Sent, server: int) -> Sent:
        url = self.server_urls[server % len(self.server_urls)]
        if request.kind == "quote":
            path, headers = "/v1/quotes", {"Authorization": f"Bearer {self.quote_token}"}
            headers["content-type"] = "application/json"
        else:
            path = self.path()
            headers = signed_headers(
                self.platform["webhook_secret"], request.body, webhook_id=request.webhook_id
            )
        request.started = time.monotonic()
        try:
            response = await client.post(url + path, content=request.body, headers=headers)
        except httpx.HTTPError:
            request.status = 0
        else:
            request.status = response.status_code
            request.answer = response.json()
            request.retry_after = response.headers.get("retry-after")
        request.finished = time.monotonic()
        if 200 <= request.status < 300 and request.kind in ("paid", "duplicate"):
            self.acknowledged.append(request.order)
        return request

    async def run(self, round_: int, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(timeout=ANSWER_BOUND_S + 5, limits=limits) as client:

            async def connection(index: int) -> None:
                while not stop.is_set():
                    request = self.next_request(round_)
                    self.sent.append(await self.send(client, request, index))

            await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))

    async def retry_failed(self, round_: int) -> list[Sent]:
        """What a platform does: deliver again, under the same webhook id, every webhook not answered 2xx."""
        failed = [
            s for s in self.sent if s.round == round_ and s.kind != "quote" and not 200 <= s.status < 300
        ]
        retried = []
        async with httpx.AsyncClient(timeout=ANSWER_BOUND_S + 5) as client:
            for request in failed:
                again = Sent(request.kind, request.order, request.webhook_id, request.body, round_)
                deadline = time.monotonic() + 60
                while not 200 <= (await self.send(client, again, 0)).status < 300:
                    assert time.monotonic() < deadline, (again.status, again.answer)
                    await asyncio.sleep(0.5)
                retried.append(again)
        return retried


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`g4g worker`, once it has started (its start-up checks need a primary: not during a failover)."""
    with log_path.open("ab") as log:
        worker = subprocess.Popen([G4G, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "worker_started" not in log_path.read_text():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "g4g worker did not start"
        time.sleep(0.1)
    return worker


def _post(url: str, token: str, document: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url, json=document, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


def _set_up(server: str, admin_token: str) -> tuple[dict[str, Any], str]:
    """A platform with merchant shop-1 (150 bps + CNY 0.02 a unit); the platform and a platform key's token."""
    platform = _post(server + "/v1/platforms", admin_token, {"name": "Tmall"})
    merchant = _post(
        server + "/v1/merchants",
        admin_token,
        {"platform_id": platform["id"], "external_id": "shop-1", "name": "Shop 1", "country": "CN"},
    )
    rule = {"rate_bps": 150, "fixed_per_unit": [{"amount": 2, "currency": "CNY"}]}
    response = httpx.put(
        f"{server}/v1/merchants/{merchant['id']}/donation-rule",
        json=rule,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 200, response.text
    key = _post(
        server + "/v1/api-keys",
        admin_token,
        {"role": "platform", "name": "tmall", "platform_id": platform["id"]},
    )
    time.sleep(1.1)  # the rule took effect at its creation; orders are placed after it
    return platform, key["token"]


async def _whole(dsn: str) -> dict[str, Any]:
    """What the database holds, checked to be whole: each order with its one ledger entry and one event, each
    refund likewise."""
    db = await asyncpg.connect(dsn)
    try:
        orders = await db.fetch("SELECT external_id, donation_amount FROM orders")
        refunds = await db.fetch(
            "SELECT o.external_id, r.refund_id, r.reversed_amount FROM order_refunds r JOIN orders o ON o.id = r.order_id"
        )
        entries = Counter(
            (row["cause_type"], row["cause_id"])
            for row in await db.fetch("SELECT cause_type, cause_id FROM ledger_entries")
        )
        events = Counter(
            (row["type"], row["order_id"])
            for row in await db.fetch("SELECT type, data->>'order_id' AS order_id FROM events")
        )
    finally:
        await db.close()
    assert set(entries.values()) <= {1}, "a ledger entry written twice"
    assert Counter(cause for cause, _ in entries) == {
        **({"order_paid": len(orders)} if orders else {}),
        **({"order_refunded": len(refunds)} if refunds else {}),
    }, "an order or refund without its ledger entry (half-applied)"
    assert set(events.values()) <= {1}, "an event written twice"
    return {"orders": orders, "refunds": refunds}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@pytest.fixture
def service(ha_cluster: HaCluster, tmp_path: Path) -> Iterator[tuple[list[LiveServer], dict[str, str], str]]:
    admin_dsn = ha_cluster.database_url("postgres")

    async def create_database() -> None:
        db = await asyncpg.connect(admin_dsn)
        try:
            await db.execute("DROP DATABASE IF EXISTS g4g WITH (FORCE)")
            await db.execute("CREATE DATABASE g4g")
        finally:
            await db.close()

    asyncio.run(create_database())
    env = g4g_env(
        DATABASE_URL=ha_cluster.database_url("g4g"),
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_EMBEDDED_WORKER="false",  # a `g4g worker` process runs the jobs
        G4G_JOB_HEARTBEAT_SECONDS="3",
    )
    migrated = run_g4g("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    admin_token = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    servers: list[LiveServer] = []
    try:
        for name in ("first", "second"):
            servers.append(LiveServer(env, tmp_path / f"{name}.log"))
        yield servers, env, admin_token
    finally:
        for server in servers:
            server.stop()


async def test_killing_the_primary_under_load_loses_no_acknowledged_order_three_times(
    ha_cluster: HaCluster,
    service: tuple[list[LiveServer], dict[str, str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers, env, admin_token = service
    platform, quote_token = _set_up(servers[0].url, admin_token)
    load = Load([s.url for s in servers], platform, quote_token)
    worker = _start_worker(env, tmp_path / "worker.log")
    admin = {"Authorization": f"Bearer {admin_token}"}
    figures = []
    try:
        for round_ in range(ROUNDS):
            ha_cluster.wait_healthy()
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(round_, stop))
            await asyncio.sleep(LOAD_BEFORE_KILL_S)

            # A settlement run queued just before the kill, while the worker is frozen: it runs after it.
            worker.send_signal(signal.SIGSTOP)
            # (Blocking calls in a thread: the load's event loop keeps running, so its latencies are the service's.)
            run = await asyncio.to_thread(_post, servers[1].url + "/v1/settlement-runs", admin_token, {})
            killed_at = time.monotonic()
            old = await asyncio.to_thread(ha_cluster.kill_primary)
            worker.send_signal(signal.SIGCONT)
            new = await asyncio.to_thread(ha_cluster.wait_for_primary, other_than=old)
            promoted_at = time.monotonic()
            await asyncio.sleep(LOAD_AFTER_PROMOTION_S)
            stop.set()
            await running

            this_round = [s for s in load.sent if s.round == round_]
            statuses = Counter(s.status for s in this_round)
            assert set(statuses) <= {200, 202, 503}, statuses  # never a 500, never no answer
            assert all(s.retry_after for s in this_round if s.status == 503)
            assert max(s.finished - s.started for s in this_round) <= ANSWER_BOUND_S
            unavailable = [s for s in this_round if s.status == 503]
            first_503 = min((s.finished for s in unavailable), default=killed_at)
            recovered = min(s.finished for s in this_round if s.started >= first_503 and s.status < 300)
            switch = [s.finished - s.started for s in this_round if killed_at <= s.started <= recovered]
            figures.append(
                {
                    "round": round_ + 1,
                    "killed": old.name,
                    "promoted": new.name,
                    "promotion_s": round(promoted_at - killed_at, 2),
                    "unavailable_s": round(recovered - first_503, 2),
                    "p99_switch_ms": round(_percentile(switch, 0.99) * 1000),
                    "max_ms": round(max(s.finished - s.started for s in this_round) * 1000),
                    "slowest": [
                        (s.kind, s.status, round(s.started - killed_at, 2), round(s.finished - s.started, 2))
                        for s in sorted(this_round, key=lambda s: s.started - s.finished)[:3]
                    ],
                    "requests": len(this_round),
                    "503": len(unavailable),
                }
            )
            with capsys.disabled():
                print("\nfailover", json.dumps(figures[-1]))

            # Nothing half-applied, before the platform retries anything.
            await _whole(ha_cluster.database_url("g4g"))
            for retried in await load.retry_failed(round_):
                assert retried.answer["status"] in ("applied", "duplicate"), retried.answer

            # The run queued before the kill finishes after it, on the new primary.
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as client:
                while True:
                    status = (await client.get(f"/v1/settlement-runs/{run['id']}", headers=admin)).json()
                    if status["status"] in ("done", "failed"):
                        break
                    assert time.monotonic() < deadline, status
                    await asyncio.sleep(0.2)
            assert status["status"] == "done", status
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=30)
        if worker.poll() is None:
            worker.kill()

    whole = await _whole(ha_cluster.database_url("g4g"))
    # Every order a platform sent is stored once (acknowledged, or retried until it was), with its donation.
    stored = Counter(row["external_id"] for row in whole["orders"])
    assert stored == Counter(dict.fromkeys(load.bodies, 1))
    assert {row["donation_amount"] for row in whole["orders"]} == {DONATION}
    assert set(load.acknowledged) <= set(stored)
    refunded = Counter(row["refund_id"] for row in whole["refunds"])
    acknowledged_refunds = {f"R-{s.order}" for s in load.sent if s.kind == "refund" and s.status < 300}
    assert acknowledged_refunds <= set(refunded)
    assert refunded == Counter({f"R-{order}": 1 for order in load.refunded})
    assert {row["reversed_amount"] for row in whole["refunds"]} <= {REVERSED}
    # Duplicates answered as such, never applied again.
    for sent in load.sent:
        if sent.kind == "duplicate" and sent.status < 300:
            assert sent.answer["status"] in ("duplicate", "applied"), sent.answer
    audit = run_g4g("audit", env=env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert len(figures) == ROUNDS
    with capsys.disabled():
        print("\nfailovers", json.dumps(figures))
