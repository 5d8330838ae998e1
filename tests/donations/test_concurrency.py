"""Whatever the network does, one donation: concurrent duplicates on separate connections and transactions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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
