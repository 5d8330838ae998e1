"""The field app over HTTP: signing a device in with a logistics key, what the pages show, and the two calls the
page's script makes with the device's session."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.web.partner import service as partner_service
from tests.evidence.photos import photo
from tests.helpers import assert_problem, create_key, create_partner, row_counts
from tests.logistics.conftest import Shipping, proof

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PAGE_CSRF = re.compile(r'data-csrf="([^"]+)"')


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    form = await client.get("/partner")
    found = _CSRF.search(form.text)
    assert found
    return await client.post("/partner/sign-in", data={"api_key": api_key, "csrf_token": found.group(1)})


async def page_csrf(client: httpx.AsyncClient) -> str:
    found = _PAGE_CSRF.search((await client.get("/partner")).text)
    assert found
    return found.group(1)


async def test_a_partner_signs_in_with_its_key_and_sees_its_shipments_open_first(shipping: Shipping) -> None:
    client = shipping.client
    first = await shipping.shipment(["1", "2"])
    second = await shipping.shipment(["3"])
    await shipping.walk(second["id"], ["handed_over", "in_transit", "out_for_delivery", "delivered"])
    await shipping.post(
        second["id"],
        "receipt_confirmed",
        packages=[{"package_id": p["id"], "outcome": "accepted"} for p in second["packages"]],
    )
    shipping.pool.clock.advance(timedelta(days=15))  # the first one now has no news for longer than 14 days

    signed = await sign_in(client, token_of(shipping.partner_key))
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert "g4g_partner=" in cookie and "HttpOnly" in cookie and "Path=/partner" in cookie
    assert f"Max-Age={30 * 24 * 3600}" in cookie  # G4G_PARTNER_SESSION_DAYS, 30 by default

    page = await client.get("/partner")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "blob:" in page.headers["content-security-policy"]
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert "geolocation=(self)" in page.headers["permissions-policy"]
    text = page.text
    open_part, done_part = text.split("Finished", 1)
    assert first["id"] in open_part and "No news for a long time" in open_part
    assert second["id"] in done_part and "Receipt confirmed" in done_part
    assert '<link rel="manifest" href="/partner/manifest.webmanifest">' in text
    assert "<script>" not in text  # no inline script: the CSP forbids it


async def test_only_a_live_logistics_key_signs_in(shipping: Shipping) -> None:
    client = shipping.client
    merchant = await shipping.pool.merchant()
    merchant_key = await create_key(client, shipping.admin, role="merchant", merchant_id=merchant["id"])
    before = await row_counts(shipping.pool.app, "partner_sessions")
    refused = await sign_in(client, merchant_key["token"])
    assert refused.status_code == 401
    assert "not a valid logistics partner key" in refused.text
    wrong_form = await client.post(
        "/partner/sign-in", data={"api_key": token_of(shipping.partner_key), "csrf_token": "forged"}
    )
    assert wrong_form.status_code == 403
    assert await row_counts(shipping.pool.app, "partner_sessions") == before
    assert merchant_key["token"] not in refused.text


async def test_a_device_stays_signed_in_until_the_days_run_out_or_the_key_is_revoked(
    shipping: Shipping,
) -> None:
    client = shipping.client
    key = await create_key(
        client, shipping.admin, role="logistics", logistics_partner_id=shipping.partner["id"], name="phone"
    )
    assert (await sign_in(client, key["token"])).status_code == 303
    shipping.pool.clock.advance(timedelta(days=29))
    assert "My shipments" in (await client.get("/partner")).text
    shipping.pool.clock.advance(timedelta(days=2))
    assert "Logistics partner key" in (await client.get("/partner")).text  # 31 days: signed out

    assert (await sign_in(client, key["token"])).status_code == 303
    assert "My shipments" in (await client.get("/partner")).text
    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=shipping.admin)
    assert revoked.status_code in (200, 204)
    assert "Logistics partner key" in (await client.get("/partner")).text


async def test_signing_out_ends_the_devices_session(shipping: Shipping) -> None:
    client = shipping.client
    await sign_in(client, token_of(shipping.partner_key))
    assert await row_counts(shipping.pool.app, "partner_sessions") == {"partner_sessions": 1}
    forged = await client.post("/partner/sign-out", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert await row_counts(shipping.pool.app, "partner_sessions") == {"partner_sessions": 1}
    out = await client.post("/partner/sign-out", data={"csrf_token": await page_csrf(client)})
    assert out.status_code == 303
    assert await row_counts(shipping.pool.app, "partner_sessions") == {"partner_sessions": 0}
    assert "Logistics partner key" in (await client.get("/partner")).text


async def test_the_shipment_page_shows_the_school_the_boxes_the_history_and_the_next_steps(
    shipping: Shipping,
) -> None:
    client = shipping.client
    shipment = await shipping.shipment(["1", "2"])
    await shipping.post(shipment["id"], "handed_over", location="Kathmandu depot")
    await sign_in(client, token_of(shipping.partner_key))
    page = await client.get(f"/partner/shipments/{shipment['id']}")
    assert page.status_code == 200
    text = page.text
    assert shipment["school"]["name"] in text and shipment["school"]["region"] in text
    assert shipment["teacher_contact"]["name"] in text
    for box in shipment["packages"]:
        assert box["id"] in text
    assert "Kathmandu depot" in text  # the history
    assert 'data-status="handed_over"' in text
    assert 'data-next="in_transit"' in text and 'data-next="cancelled"' not in text  # the programme's alone
    assert 'id="delivered-form"' in text and 'id="receipt-form"' in text
    assert text.count('value="accepted" checked') == len(shipment["packages"])


async def test_another_partners_shipment_is_not_reachable(shipping: Shipping) -> None:
    client = shipping.client
    other_partner = await create_partner(client, shipping.admin, name="Mekong Cargo")
    shipping.pool.partner = other_partner
    theirs = await shipping.shipment(["3"])
    await sign_in(client, token_of(shipping.partner_key))
    assert (await client.get(f"/partner/shipments/{theirs['id']}")).status_code == 404
    csrf = await page_csrf(client)
    event = {"event_id": "X-1", "status": "handed_over", "occurred_at": shipping.now().isoformat()}
    sent = await client.post(
        f"/partner/api/shipments/{theirs['id']}/events", json=event, headers={"X-CSRF-Token": csrf}
    )
    assert_problem(sent, 404, "not-found")
    assert (await shipping.read(theirs["id"], shipping.admin))["events"] == []


async def test_the_pages_script_sends_events_and_photos_with_the_devices_session(shipping: Shipping) -> None:
    client = shipping.client
    shipment = await shipping.shipment(["1"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    url = f"/partner/api/shipments/{shipment['id']}"
    event: dict[str, Any] = {
        "event_id": "P-1",
        "status": "delivered",
        "occurred_at": shipping.now().isoformat(),
    }

    # Without a session, or without the page's CSRF token: refused, nothing recorded.
    assert_problem(await client.post(f"{url}/events", json=event), 401, "unauthorized")
    await sign_in(client, token_of(shipping.partner_key))
    assert_problem(await client.post(f"{url}/events", json=event), 403, "forbidden")
    csrf = {"X-CSRF-Token": await page_csrf(client)}

    stored = await client.post(
        f"{url}/evidence", content=photo("WEBP"), headers={**csrf, "Content-Type": "image/webp"}
    )
    assert stored.status_code == 201, stored.text
    event["proof"] = proof(evidence={"evidence_id": stored.json()["evidence_id"]})
    first = await client.post(f"{url}/events", json=event, headers=csrf)
    assert first.status_code == 201, first.text
    again = await client.post(f"{url}/events", json=event, headers=csrf)  # the queue sent it twice
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    late = await client.post(
        f"{url}/events",
        json={"event_id": "P-2", "status": "in_transit", "occurred_at": shipping.now().isoformat()},
        headers=csrf,
    )
    refusal = assert_problem(late, 409, "illegal-transition")
    assert "can't go to in_transit" in refusal["detail"]
    history = (await shipping.read(shipment["id"]))["events"]
    assert [e["event_id"] for e in history].count("P-1") == 1
    assert history[-1]["proof"]["evidence"]["evidence_id"] == stored.json()["evidence_id"]
    # The key that signed the device in posted it, as the API would have recorded it.
    assert history[-1]["posted_by"] == "logistics_partner"


async def test_the_app_is_installable(shipping: Shipping) -> None:
    client = shipping.client
    manifest = await client.get("/partner/manifest.webmanifest")
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    assert manifest.json()["start_url"] == "/partner"
    worker = await client.get("/partner/sw.js")
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["service-worker-allowed"] == "/partner"
    assert "/partner/api/" in worker.text  # never cached: the page's queue sends those


async def test_an_open_shipment_is_listed_however_many_finished_ones_came_before(
    shipping: Shipping, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two finished shipments made before the open one, and a list page of one (500 in real life): the open one
    # still shows, and of the finished ones the latest.
    finished = []
    for grade in ("1", "2"):
        shipment = await shipping.shipment([grade])
        await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery", "delivered"])
        await shipping.post(
            shipment["id"],
            "receipt_confirmed",
            packages=[{"package_id": p["id"], "outcome": "accepted"} for p in shipment["packages"]],
        )
        finished.append(shipment["id"])
    still_open = [(await shipping.shipment(["3"]))["id"]]
    monkeypatch.setattr(partner_service, "LIST_LIMIT", 1)
    assert (await sign_in(shipping.client, token_of(shipping.partner_key))).status_code == 303
    open_part, done_part = (await shipping.client.get("/partner")).text.split("Finished", 1)
    assert all(s in open_part for s in still_open)  # not hidden behind the older finished ones
    assert finished[1] in done_part and finished[0] not in done_part  # the latest finished one
