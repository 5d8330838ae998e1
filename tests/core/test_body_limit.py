"""Bodies are bounded while they stream: too large is a 413 problem before the rest is read (from the declared
length alone, with or without credentials), and a server fed a huge body keeps its memory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil

from tests.conftest import DATA_KEY, Shop
from tests.helpers import assert_problem, send_event
from tests.live import LiveServer, g4g_env

MIB = 1024 * 1024


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


async def test_a_declared_length_over_the_limit_is_refused_before_reading(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/platforms",
        content=b"{}",
        headers={"content-length": str(200 * MIB), "content-type": "application/json"},
    )
    body = assert_problem(response, 413, "payload-too-large")
    assert str(MIB) in body["detail"]
    assert response.headers["x-request-id"]


async def test_a_streamed_body_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # Without a key, not a byte is read: the answer is 401, whatever the body.
    unauthenticated = await client.post("/v1/platforms", content=_chunks(3 * MIB))
    assert_problem(unauthenticated, 401, "unauthorized")
    authenticated = await client.post("/v1/platforms", content=_chunks(3 * MIB), headers=admin)
    assert_problem(authenticated, 413, "payload-too-large")
    # Just under the limit the request is read and judged on its merits.
    padded = json.dumps({"name": "Tokopedia", "pad": "x" * (MIB - 100)}).encode()
    assert len(padded) < MIB
    assert_problem(await client.post("/v1/platforms", content=padded, headers=admin), 422, "invalid-request")


async def test_order_webhooks_take_at_most_256_kib(client: httpx.AsyncClient, shop: Shop) -> None:
    event = {"type": "order.paid", "pad": "x" * (300 * 1024)}
    assert_problem(await send_event(client, shop.platform, event), 413, "payload-too-large")


def _stream(total: int) -> Iterator[bytes]:
    chunk = b"x" * MIB
    for _ in range(total // MIB):
        yield chunk


def test_a_huge_body_does_not_grow_the_server(database_url: str, tmp_path: Path) -> None:
    env = g4g_env(
        DATABASE_URL=database_url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        STRIPE_WEBHOOK_SECRET="whsec_limits",
    )
    server = LiveServer(env, tmp_path / "serve.log")
    try:
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        for path in ("/v1/platforms", "/v1/webhooks/stripe", "/v1/merchants"):
            try:
                response = httpx.post(server.url + path, content=_stream(100 * MIB), timeout=30)
                status = response.status_code
            except httpx.TransportError:
                status = 413  # the server answered and closed while we were still sending
            assert status == 413
        grown = process.memory_info().rss - before
        assert grown < 30 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"
    finally:
        server.stop()
