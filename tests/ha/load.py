"""Load for the HA tests: signed order webhooks (new orders, duplicates, refunds) and quotes on many connections
against `g4g serve` processes, every request and answer recorded (`Load`), and what the database holds afterwards,
checked to be whole (`whole`). Used by tests/ha/test_failover.py and tests/ha/test_pgbouncer.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.helpers import order_paid, order_refunded, signed_headers
from tests.live import G4G

CONNECTIONS = 32
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


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`g4g worker`, once it has started (its start-up checks need a primary: not during a failover)."""
    with log_path.open("ab") as log:
        worker = subprocess.Popen([G4G, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "worker_started" not in log_path.read_text():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "g4g worker did not start"
        time.sleep(0.1)
    return worker


def post(url: str, token: str, document: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url, json=document, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


def set_up(server: str, admin_token: str) -> tuple[dict[str, Any], str]:
    """A platform with merchant shop-1 (150 bps + CNY 0.02 a unit); the platform and a platform key's token."""
    platform = post(server + "/v1/platforms", admin_token, {"name": "Tmall"})
    merchant = post(
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
    key = post(
        server + "/v1/api-keys",
        admin_token,
        {"role": "platform", "name": "tmall", "platform_id": platform["id"]},
    )
    time.sleep(1.1)  # the rule took effect at its creation; orders are placed after it
    return platform, key["token"]


async def whole(dsn: str) -> dict[str, Any]:
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


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0
