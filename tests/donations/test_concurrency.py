"""Whatever the network does, one donation: concurrent duplicates on separate connections and transactions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.donations import ingest
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import (
    audit_ok,
    create_merchant,
    create_platform,
    create_token_directly,
    order_paid,
    order_refunded,
    row_counts,
    set_rule,
    signed_headers,
)


@pytest.fixture(params=["one transaction per delivery", "batched"])
async def world(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """The service with every delivery in its own transaction on its own connection (so 20 concurrent
    deliveries race in PostgreSQL), or with its default grouping of concurrent deliveries."""
    overrides = (
        {"ingest_max_batch": 1, "ingest_concurrency": 20, "db_pool_size": 25}
        if request.param == "one transaction per delivery"
        else {}
    )
    app = create_app(make_settings(database_url, tmp_path, **overrides))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://g4g.test"
        ) as client:
            admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
            platform = await create_platform(client, admin)
            merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="shop-88")
            await set_rule(client, admin, merchant["id"], rate_bps=150)
            yield {"app": app, "client": client, "admin": admin, "platform": platform}


async def _counts(app: Any) -> dict[str, int]:
    return await row_counts(
        app, "orders", "order_refunds", "ledger_entries", "ledger_postings", "webhook_deliveries"
    )


async def _post_all(
    world: dict[str, Any], deliveries: list[tuple[bytes, dict[str, str]]]
) -> list[httpx.Response]:
    url = f"/v1/webhooks/orders/{world['platform']['id']}"
    return await asyncio.gather(*(world["client"].post(url, content=b, headers=h) for b, h in deliveries))


async def test_the_same_delivery_twenty_times_at_once(world: dict[str, Any]) -> None:
    body = json.dumps(order_paid("RACE-1", merchant="shop-88")).encode()
    headers = signed_headers(world["platform"]["webhook_secret"], body, webhook_id="msg_race")
    responses = await _post_all(world, [(body, headers)] * 20)
    assert {(r.status_code, r.json()["status"]) for r in responses} == {(200, "applied")}
    counts = await _counts(world["app"])
    assert counts == {
        "orders": 1,
        "order_refunds": 0,
        "ledger_entries": 1,
        "ledger_postings": 2,
        "webhook_deliveries": 1,
    }
    await audit_ok(world["client"], world["admin"])


async def test_the_same_order_under_twenty_webhook_ids_at_once(world: dict[str, Any]) -> None:
    body = json.dumps(order_paid("RACE-2", merchant="shop-88")).encode()
    secret = world["platform"]["webhook_secret"]
    responses = await _post_all(world, [(body, signed_headers(secret, body)) for _ in range(20)])
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["applied"] + ["duplicate"] * 19
    counts = await _counts(world["app"])
    assert (counts["orders"], counts["ledger_entries"], counts["ledger_postings"]) == (1, 1, 2)
    assert counts["webhook_deliveries"] == 20  # every delivery is kept, with its answer

    # And twenty copies of one refund, racing the same way, reverse once.
    refund = json.dumps(order_refunded("RACE-2", "R-1", 6400, merchant="shop-88")).encode()
    responses = await _post_all(world, [(refund, signed_headers(secret, refund)) for _ in range(20)])
    assert sorted(r.json()["status"] for r in responses) == ["applied"] + ["duplicate"] * 19
    counts = await _counts(world["app"])
    assert (counts["order_refunds"], counts["ledger_entries"]) == (1, 2)
    await audit_ok(world["client"], world["admin"])


async def test_payment_racing_its_merchants_registration_is_never_stranded(world: dict[str, Any]) -> None:
    """An order for a merchant being registered at the same moment is either applied or parked and then
    applied by the registration; never left parked."""
    client, admin, platform = world["client"], world["admin"], world["platform"]
    secret = platform["webhook_secret"]
    bodies = [json.dumps(order_paid(f"REG-{n}", merchant="shop-late")).encode() for n in range(10)]
    registration = client.post(
        "/v1/merchants",
        json={"platform_id": platform["id"], "external_id": "shop-late", "name": "Late", "country": "NP"},
        headers=admin,
    )
    results = await asyncio.gather(
        registration, *(_post_all(world, [(b, signed_headers(secret, b))]) for b in bodies)
    )
    assert results[0].status_code == 201
    assert (await client.get("/v1/parked-events", headers=admin)).json()["data"] == []
    assert (await _counts(world["app"]))["orders"] == 10
    await audit_ok(client, admin)


async def test_platforms_that_hang_up_while_their_batch_waits_lose_nothing_and_stall_nothing(
    world: dict[str, Any], database_url: str
) -> None:
    """Half the callers give up while their deliveries wait in a batch (held here by the merchant's registration
    lock). Each delivery is still applied once with its batch, the inbox goes on serving, and the same webhook
    again gets its first answer."""
    client, platform = world["client"], world["platform"]
    url = f"/v1/webhooks/orders/{platform['id']}"
    deliveries = []
    for n in range(12):
        body = json.dumps(order_paid(f"GONE-{n}", merchant="shop-88")).encode()
        deliveries.append(
            (body, signed_headers(platform["webhook_secret"], body, webhook_id=f"msg_gone_{n}"))
        )
    registering = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with registering.transaction():
            await ingest.lock_merchant(registering, platform["id"], "shop-88")
            calls = [asyncio.create_task(client.post(url, content=b, headers=h)) for b, h in deliveries]
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            inbox = world["app"].state.order_inbox
            for _ in range(500):  # until all twelve are submitted and unsettled, and their batches wait
                if inbox._queue._unfinished_tasks == 12 and await registering.fetchval(waiting):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the batches never reached the merchant's lock")
            await asyncio.sleep(0.1)
            for call in calls[::2]:
                call.cancel()
        answered = await asyncio.gather(*calls[1::2])
    finally:
        await registering.close()
    assert {(r.status_code, r.json()["status"]) for r in answered} == {(200, "applied")}
    assert all(call.cancelled() for call in calls[::2])
    again = await _post_all(world, deliveries)
    assert {(r.status_code, r.json()["status"]) for r in again} == {(200, "applied")}
    counts = await _counts(world["app"])
    assert (counts["orders"], counts["ledger_entries"], counts["webhook_deliveries"]) == (12, 12, 12)
    await audit_ok(client, world["admin"])
