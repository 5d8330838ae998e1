"""Events out, end to end: endpoints registered through the API, events emitted by real order webhooks, sent by
the real worker to a real receiver on 127.0.0.1 that verifies signatures with the `standardwebhooks` library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import FrozenClock
from app.main import create_app
from tests.conftest import DEFAULT_DONATION, Shop, make_settings
from tests.helpers import (
    assert_problem,
    bearer,
    create_key,
    create_merchant,
    create_platform,
    order_paid,
    order_refunded,
    send_event,
)
from tests.jobs import drain_jobs, run_task
from tests.receiver import Receiver


@pytest.fixture
def app(app_on_clock: Any) -> Any:
    return app_on_clock


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


async def platform_key(client: httpx.AsyncClient, admin: dict[str, str], shop: Shop) -> dict[str, str]:
    key = await create_key(client, admin, role="platform", platform_id=shop.platform["id"])
    return bearer(key["token"])


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], receiver: Receiver, events: list[str]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhook-endpoints", json={"url": receiver.url, "events": events}, headers=headers
    )
    assert response.status_code == 201, response.text
    endpoint = dict(response.json())
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    receiver.secrets.append(endpoint["secret"])
    return endpoint


async def deliveries(
    client: httpx.AsyncClient, headers: dict[str, str], endpoint_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_a_platform_and_its_merchant_receive_signed_donation_events(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any, receiver: Receiver
) -> None:
    platform = await platform_key(client, admin, shop)
    endpoint = await register(client, platform, receiver, ["donation.recorded", "donation.reversed"])
    merchant_receiver = await Receiver().start()
    try:
        merchant_key = await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"])
        await register(client, bearer(merchant_key["token"]), merchant_receiver, ["donation.recorded"])

        assert (
            await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
        ).status_code == 200
        refund = order_refunded("TM-1", "R-1", 6400, merchant=shop.external_id)
        assert (await send_event(client, shop.platform, refund)).status_code == 200
        await drain_jobs(app)
    finally:
        await merchant_receiver.stop()

    # Deliveries run concurrently and at least once, so they may arrive in either order (as Standard Webhooks
    # allows); a receiver orders them by their timestamps.
    by_type = {r.body["type"]: r.body for r in receiver.received}
    assert len(receiver.received) == 2 and set(by_type) == {"donation.recorded", "donation.reversed"}
    assert all(r.verified_with == [0] for r in receiver.received)
    recorded, reversed_ = by_type["donation.recorded"], by_type["donation.reversed"]
    assert datetime.fromisoformat(recorded["timestamp"]) <= datetime.fromisoformat(reversed_["timestamp"])
    assert recorded["data"]["order_id"] == "TM-1"
    assert recorded["data"]["donation"] == {"amount": DEFAULT_DONATION, "currency": "CNY"}
    assert recorded["data"]["merchant_id"] == shop.merchant["id"]
    assert (
        reversed_["data"]["cause"] == "refund" and reversed_["data"]["net"]["amount"] == DEFAULT_DONATION - 98
    )
    assert set(recorded) == {"type", "timestamp", "data"}
    # The merchant's endpoint got only what it subscribed to, signed with its own secret.
    assert [(r.body["type"], r.verified_with) for r in merchant_receiver.received] == [
        ("donation.recorded", [0])
    ]

    listed = await deliveries(client, platform, endpoint["id"])
    assert [d["status"] for d in listed] == ["delivered", "delivered"]
    assert {d["id"] for d in listed} == {r.webhook_id for r in receiver.received}
    attempt = listed[0]["attempts"][0]
    assert attempt["succeeded"] and attempt["status_code"] == 200 and attempt["duration_ms"] >= 0

    # A redelivered order webhook emits nothing new; running the queue again sends nothing twice.
    await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
    await run_task(app, "events.retry_due")
    await drain_jobs(app)
    assert len(receiver.received) == 2


async def test_a_failing_receiver_is_retried_with_growing_delays_until_it_recovers(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    app: Any,
    receiver: Receiver,
    clock: FrozenClock,
) -> None:
    platform = await platform_key(client, admin, shop)
    endpoint = await register(client, platform, receiver, ["donation.recorded"])
    receiver.answers = [500, 503]
    await send_event(client, shop.platform, order_paid("TM-2", merchant=shop.external_id))
    await drain_jobs(app)

    [delivery] = await deliveries(client, platform, endpoint["id"])
    assert delivery["status"] == "pending" and delivery["attempt_count"] == 1
    first_retry = datetime.fromisoformat(delivery["next_attempt_at"])
    assert first_retry == clock.now() + timedelta(seconds=5)

    await run_task(app, "events.retry_due")  # not due yet
    await drain_jobs(app)
    assert len(receiver.received) == 1

    clock.advance(timedelta(seconds=5))
    await run_task(app, "events.retry_due")
    await drain_jobs(app)
    [delivery] = await deliveries(client, platform, endpoint["id"])
    assert datetime.fromisoformat(delivery["next_attempt_at"]) == clock.now() + timedelta(minutes=5)

    clock.advance(timedelta(minutes=5))
    await run_task(app, "events.retry_due")
    await drain_jobs(app)

    [delivery] = await deliveries(client, platform, endpoint["id"])
    assert delivery["status"] == "delivered" and delivery["next_attempt_at"] is None
    assert [a["status_code"] for a in delivery["attempts"]] == [200, 503, 500]  # newest first
    assert delivery["attempts"][1]["error"] == "HTTP 503"
    assert all(
        len(a["response_body"] or "") <= 1000 for a in delivery["attempts"]
    )  # receivers' bodies bounded
    # Every attempt is the same message: one webhook-id, one body, each signature valid.
    assert {r.webhook_id for r in receiver.received} == {delivery["id"]}
    assert len({str(r.body) for r in receiver.received}) == 1
    assert all(r.verified_with == [0] for r in receiver.received)
    endpoint_now = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=platform)).json()
    assert endpoint_now["failing_since"] is None


async def test_an_endpoint_failing_for_five_days_is_disabled_with_the_reason_shown(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    app: Any,
    receiver: Receiver,
    clock: FrozenClock,
) -> None:
    platform = await platform_key(client, admin, shop)
    endpoint = await register(client, platform, receiver, ["donation.recorded"])
    receiver.answers = [500] * 100
    first_failure = clock.now()
    await send_event(client, shop.platform, order_paid("TM-3", merchant=shop.external_id))
    await drain_jobs(app)
    # About three days of retries, each failing: then the delivery gives up; the endpoint is still on.
    while (delivery := (await deliveries(client, platform, endpoint["id"]))[0])["status"] == "pending":
        clock.set(datetime.fromisoformat(delivery["next_attempt_at"]))
        await run_task(app, "events.retry_due")
        await drain_jobs(app)
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 10
    assert timedelta(hours=75) < clock.now() - first_failure < timedelta(hours=76)
    read = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=platform)).json()
    assert read["status"] == "enabled" and read["failing_since"] is not None

    clock.set(first_failure + timedelta(days=5))
    await send_event(client, shop.platform, order_paid("TM-4", merchant=shop.external_id))
    await drain_jobs(app)
    read = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=platform)).json()
    assert read["status"] == "disabled"
    assert "5 days" in read["disabled_reason"] and "HTTP 500" in read["disabled_reason"]

    sent = len(receiver.received)
    await send_event(client, shop.platform, order_paid("TM-5", merchant=shop.external_id))
    await drain_jobs(app)
    assert len(receiver.received) == sent  # nothing goes to a disabled endpoint
    assert len(await deliveries(client, platform, endpoint["id"])) == 2

    enabled = await client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}, headers=platform
    )
    assert enabled.status_code == 200 and enabled.json()["status"] == "enabled"
    assert enabled.json()["disabled_reason"] is None


async def test_a_delivery_can_be_replayed_and_a_rotated_secret_signs_beside_the_old_one(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any, receiver: Receiver
) -> None:
    platform = await platform_key(client, admin, shop)
    endpoint = await register(client, platform, receiver, ["donation.recorded"])
    await send_event(client, shop.platform, order_paid("TM-6", merchant=shop.external_id))
    await drain_jobs(app)
    [delivery] = await deliveries(client, platform, endpoint["id"])

    rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=platform)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != endpoint["secret"]
    receiver.secrets.append(rotated.json()["secret"])

    replay = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry", headers=platform
    )
    assert replay.status_code == 202 and replay.json()["status"] == "pending"
    await drain_jobs(app)

    first, again = receiver.received
    assert again.webhook_id == first.webhook_id == delivery["id"]
    assert again.body == first.body
    assert first.verified_with == [0]
    assert again.verified_with == [0, 1]  # old and new secret both sign during the grace period
    [delivery] = await deliveries(client, platform, endpoint["id"])
    assert [a["trigger"] for a in delivery["attempts"]] == ["replay", "scheduled"]
    assert delivery["status"] == "delivered"


async def test_another_tenants_endpoint_is_not_found_and_subscriptions_follow_the_audience(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any, receiver: Receiver
) -> None:
    platform = await platform_key(client, admin, shop)
    endpoint = await register(client, platform, receiver, ["donation.recorded"])
    other_platform = await create_platform(client, admin, name="Other")
    other = bearer(
        (await create_key(client, admin, role="platform", platform_id=other_platform["id"]))["token"]
    )
    other_merchant = await create_merchant(client, admin, platform_id=other_platform["id"])
    merchant = bearer(
        (await create_key(client, admin, role="merchant", merchant_id=other_merchant["id"]))["token"]
    )
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    for headers in (other, merchant):
        assert_problem(await client.get(path, headers=headers), 404, "not-found")
        assert_problem(await client.patch(path, json={"enabled": False}, headers=headers), 404, "not-found")
        assert_problem(await client.delete(path, headers=headers), 404, "not-found")
        assert_problem(await client.post(path + "/rotate-secret", headers=headers), 404, "not-found")
        assert_problem(await client.get(path + "/deliveries", headers=headers), 404, "not-found")
        assert (await client.get("/v1/webhook-endpoints", headers=headers)).json()["data"] == []
    assert (await client.get(path, headers=admin)).status_code == 200

    # Statements are the merchant's business: a platform can't subscribe to them; a merchant can.
    body = {"url": receiver.url, "events": ["statement.paid"]}
    refused = assert_problem(
        await client.post("/v1/webhook-endpoints", json=body, headers=other), 422, "invalid-request"
    )
    assert "statement.paid" in refused["detail"]
    assert (await client.post("/v1/webhook-endpoints", json=body, headers=merchant)).status_code == 201
    unknown = {"url": receiver.url, "events": ["order.exploded"]}
    assert_problem(
        await client.post("/v1/webhook-endpoints", json=unknown, headers=other), 422, "invalid-request"
    )
    logistics = await create_key(
        client, admin, role="logistics", logistics_partner_id=await _partner(client, admin)
    )
    assert_problem(
        await client.post("/v1/webhook-endpoints", json=body, headers=bearer(logistics["token"])),
        403,
        "forbidden",
    )

    assert (await client.delete(path, headers=platform)).status_code == 204
    assert_problem(await client.get(path, headers=platform), 404, "not-found")


async def _partner(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    response = await client.post("/v1/logistics-partners", json={"name": "Courier"}, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_in_production_private_addresses_are_refused_at_registration_and_at_send_time(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    app: Any,
    receiver: Receiver,
    database_url: str,
    tmp_path: Path,
) -> None:
    platform = await platform_key(client, admin, shop)
    # Registered while allowed (as if its name resolved to a public address then)...
    endpoint = await register(client, platform, receiver, ["donation.recorded"])
    await send_event(client, shop.platform, order_paid("TM-7", merchant=shop.external_id))

    production = create_app(make_settings(database_url, tmp_path, environment="production"))
    async with production.router.lifespan_context(production):
        transport = httpx.ASGITransport(app=production)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as prod:
            for url in ("https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://169.254.169.254/latest"):
                body = {"url": url, "events": ["donation.recorded"]}
                refused = assert_problem(
                    await prod.post("/v1/webhook-endpoints", json=body, headers=platform),
                    422,
                    "invalid-request",
                )
                assert "is not a public internet address" in refused["detail"]
            plain = {"url": "http://example.org/hook", "events": ["donation.recorded"]}
            assert_problem(
                await prod.post("/v1/webhook-endpoints", json=plain, headers=platform), 422, "invalid-request"
            )
        # ...and at send time the address is checked again: nothing reaches it.
        await drain_jobs(production)
    assert receiver.received == []
    [delivery] = await deliveries(client, platform, endpoint["id"])
    assert delivery["attempts"][0]["error"].startswith("refused: 127.0.0.1 is not a public internet address")
