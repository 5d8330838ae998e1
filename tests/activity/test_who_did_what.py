"""Each kind of change is in the log under the key that made it; merchants and platforms see their part."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Shop
from tests.helpers import (
    assert_problem,
    bearer,
    create_key,
    create_merchant,
    create_partner,
    create_platform,
    create_school,
    import_students,
    kind_body,
    order_paid,
    send_event,
    set_rule,
)
from tests.roster_codes import roster_codes


async def entries(client: httpx.AsyncClient, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    """Every entry the caller may see with these filters, oldest first, read page by page."""
    found: list[dict[str, Any]] = []
    params = {"limit": "7", **filters}
    while True:
        response = await client.get("/v1/activity", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["data"])
        if page["next_cursor"] is None:
            return found[::-1]
        params["cursor"] = page["next_cursor"]


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    return dict(response.json()) if response.content else {}


async def test_every_kind_of_admin_change_is_recorded_with_the_key_that_made_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    alice_key = await create_key(client, admin, role="admin", name="Alice (programme officer)")
    bob_key = await create_key(client, admin, role="admin", name="Bob (finance)")
    alice, bob = bearer(alice_key["token"]), bearer(bob_key["token"])
    codes = roster_codes(3)

    platform = await create_platform(client, alice, name="Tmall")
    merchant = await create_merchant(client, alice, platform_id=platform["id"])
    ok(await client.patch(f"/v1/merchants/{merchant['id']}", json={"public_profile": True}, headers=alice))
    await set_rule(client, alice, merchant["id"], rate_bps=150)
    ok(
        await client.put(
            f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}, headers=bob
        )
    )
    ok(await client.put("/v1/fx-rates/CNY", json={"rate": "0.14"}, headers=bob))
    partner = await create_partner(client, alice)
    kind = ok(await client.post("/v1/package-kinds", json=kind_body(), headers=alice))
    ok(await client.put(f"/v1/package-kinds/{kind['id']}", json=kind_body(name="Starter box"), headers=alice))
    school = await create_school(client, alice, partner_id=partner["id"])
    ok(await client.patch(f"/v1/schools/{school['id']}", json={"region": "Gandaki"}, headers=alice))
    ok(await import_students(client, alice, school["id"], [(code, "2") for code in codes]))
    students = ok(await client.get(f"/v1/schools/{school['id']}/students", headers=alice))["data"]
    ok(await client.patch(f"/v1/students/{students[0]['id']}", json={"grade": "3"}, headers=alice))
    ok(await client.delete(f"/v1/students/{students[1]['id']}", headers=alice))
    lookup = await client.post(
        f"/v1/schools/{school['id']}/students/lookup", json={"roster_code": codes[2]}, headers=alice
    )
    assert lookup.status_code == 200, lookup.text  # a lookup is no change: not recorded
    endpoint = ok(
        await client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "events": ["donation.recorded"]},
            headers=bob,
        )
    )
    ok(await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": False}, headers=bob))
    ok(await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=bob))
    ok(await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=bob))
    ok(await client.post(f"/v1/platforms/{platform['id']}/rotate-webhook-secret", headers=bob))
    ok(await client.post(f"/v1/package-kinds/{kind['id']}/retire", headers=alice))
    run = ok(await client.post("/v1/settlement-runs", json={}, headers=bob))
    ok(await client.delete(f"/v1/api-keys/{alice_key['id']}", headers=bob))

    recorded = [
        (e["action"], e["key_name"], e["resource_id"])
        for e in await entries(client, admin)
        if e["key_id"] in (alice_key["id"], bob_key["id"])
    ]
    a, b = "Alice (programme officer)", "Bob (finance)"
    assert recorded == [
        ("platform.create", a, platform["id"]),
        ("merchant.create", a, merchant["id"]),
        ("merchant.update", a, merchant["id"]),
        ("donation_rule.set", a, merchant["id"]),
        ("billing.set_profile", b, merchant["id"]),
        ("fx_rate.set", b, "CNY"),
        ("logistics_partner.create", a, partner["id"]),
        ("package_kind.create", a, kind["id"]),
        ("package_kind.replace", a, kind["id"]),
        ("school.create", a, school["id"]),
        ("school.update", a, school["id"]),
        ("students.import", a, school["id"]),
        ("student.update", a, students[0]["id"]),
        ("student.erase", a, students[1]["id"]),
        ("webhook_endpoint.create", b, endpoint["id"]),
        ("webhook_endpoint.update", b, endpoint["id"]),
        ("webhook_endpoint.rotate_secret", b, endpoint["id"]),
        ("webhook_endpoint.delete", b, endpoint["id"]),
        ("platform.rotate_webhook_secret", b, platform["id"]),
        ("package_kind.retire", a, kind["id"]),
        ("settlement_run.create", b, run["id"]),
        ("api_key.revoke", b, alice_key["id"]),
    ]

    log = await entries(client, admin)
    text = str(log)
    for code in codes:  # never a roster code …
        assert code not in text
    for secret in (alice_key["token"], bob_key["token"], endpoint["secret"], platform["webhook_secret"]):
        assert secret not in text  # … nor a token or a secret
    assert "Sita" not in text  # nor the teacher's contact
    [imported] = [e for e in log if e["action"] == "students.import"]
    assert imported["details"] == {"received": 3, "created": 3, "updated": 0, "unchanged": 0}
    [updated] = [e for e in log if e["action"] == "school.update"]
    assert updated["details"] == {"changed": ["region"]}

    # The filters an operator reaches for: one key's doings, one resource's history, one action.
    assert {e["key_name"] for e in await entries(client, admin, key_id=bob_key["id"])} == {b}
    school_history = await entries(client, admin, resource_type="school", resource_id=school["id"])
    assert [e["action"] for e in school_history] == ["school.create", "school.update", "students.import"]
    assert len(await entries(client, admin, action="webhook_endpoint.delete")) == 1


async def test_an_idempotent_retry_is_not_a_second_change(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    partner = await create_partner(client, admin)
    for _ in range(2):
        response = await client.post(
            "/v1/schools",
            json={
                "name": "Shree Janata School",
                "country": "NP",
                "region": "Bagmati",
                "logistics_partner_id": partner["id"],
                "teacher_contact": {"name": "Sita Sharma", "email": "sita@example.org"},
            },
            headers=admin | {"Idempotency-Key": "school-1"},
        )
        assert response.status_code == 201, response.text
    assert len(await entries(client, admin, action="school.create")) == 1


async def test_merchants_see_their_own_and_their_platforms_actions_on_their_resources(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    platform = await create_platform(client, admin, name="Tmall")
    other_platform = await create_platform(client, admin, name="Shopee")
    platform_key = await create_key(
        client, admin, role="platform", name="Tmall backend", platform_id=platform["id"]
    )
    tmall = bearer(platform_key["token"])
    tea = await create_merchant(client, tmall, external_id="tea")
    silk = await create_merchant(client, tmall, external_id="silk")
    tea_key = await create_key(client, admin, role="merchant", name="Tea House staff", merchant_id=tea["id"])
    silk_key = await create_key(client, admin, role="merchant", name="Silk staff", merchant_id=silk["id"])
    tea_headers, silk_headers = bearer(tea_key["token"]), bearer(silk_key["token"])

    await set_rule(client, tea_headers, tea["id"], rate_bps=200)
    await set_rule(client, silk_headers, silk["id"], rate_bps=300)
    ok(await client.patch(f"/v1/merchants/{tea['id']}", json={"public_profile": True}, headers=tmall))
    ok(
        await client.put(
            f"/v1/merchants/{tea['id']}/billing", json={"method": "bank_transfer"}, headers=admin
        )
    )
    other_key = await create_key(
        client, admin, role="platform", name="Shopee backend", platform_id=other_platform["id"]
    )
    await create_merchant(client, bearer(other_key["token"]), external_id="tea")

    seen_by_tea = [(e["action"], e["key_name"]) for e in await entries(client, tea_headers)]
    assert seen_by_tea == [
        ("merchant.create", "Tmall backend"),
        ("donation_rule.set", "Tea House staff"),
        ("merchant.update", "Tmall backend"),
    ]  # not Silk's rule, not the programme's own work on its billing, not another platform's merchant
    assert all(e["merchant_id"] == tea["id"] for e in await entries(client, tea_headers))

    seen_by_tmall = [(e["action"], e["resource_id"]) for e in await entries(client, tmall)]
    assert seen_by_tmall == [
        ("merchant.create", tea["id"]),
        ("merchant.create", silk["id"]),
        ("merchant.update", tea["id"]),
    ]  # what its own keys did, nothing else
    assert [e["key_name"] for e in await entries(client, bearer(other_key["token"]))] == ["Shopee backend"]

    partner = await create_partner(client, admin)
    logistics = await create_key(client, admin, role="logistics", logistics_partner_id=partner["id"])
    assert_problem(await client.get("/v1/activity", headers=bearer(logistics["token"])), 403, "forbidden")
    assert_problem(await client.get("/v1/activity"), 401, "unauthorized")


async def test_time_window_and_bad_filters(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_platform(client, admin, name="Tmall")
    [entry] = await entries(client, admin)
    at = datetime.fromisoformat(entry["occurred_at"])
    assert (
        len(await entries(client, admin, since=at.isoformat(), until=(at + timedelta(seconds=1)).isoformat()))
        == 1
    )
    assert await entries(client, admin, since=(at + timedelta(seconds=1)).isoformat()) == []
    assert await entries(client, admin, until=at.isoformat()) == []
    assert (
        await entries(client, admin, since=at.isoformat(), until=(at - timedelta(days=1)).isoformat()) == []
    )

    for params in (
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "many"},
        {"since": "yesterday"},
        {"since": "2026-12-06T10:00:00"},  # no time zone: which 10 o'clock?
        {"until": "1765000000"},  # a number is not read as a Unix time
        {"action": "DROP TABLE"},
        {"resource_type": "School"},
        {"key_id": "key_01;--"},
        {"cursor": "not a cursor!"},
        {"who": "alice"},
    ):
        response = await client.get("/v1/activity", params=params, headers=admin)
        assert_problem(response, 422, "invalid-request")


async def test_a_platforms_receipt_links_show_in_its_merchants_log_but_order_events_do_not(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    assert (
        await send_event(client, shop.platform, order_paid("TM-1", merchant=shop.external_id))
    ).json() == {"status": "applied"}
    platform_key = await create_key(
        client, admin, role="platform", name="Tmall checkout", platform_id=shop.platform["id"]
    )
    merchant_key = await create_key(
        client, admin, role="merchant", name="Tea staff", merchant_id=shop.merchant["id"]
    )
    tmall = bearer(platform_key["token"])
    made = await client.post("/v1/orders/TM-1/receipt-link", json={"show_merchant": False}, headers=tmall)
    assert made.status_code == 201, made.text
    assert (await client.delete("/v1/orders/TM-1/receipt-link", headers=tmall)).status_code == 204

    seen = await entries(client, bearer(merchant_key["token"]))
    assert [(e["action"], e["key_name"], e["details"]) for e in seen[-2:]] == [
        ("receipt_link.create", "Tmall checkout", {"new": True, "show_merchant": False}),
        ("receipt_link.revoke", "Tmall checkout", {}),
    ]
    assert made.json()["url"].rsplit("/", 1)[-1] not in str(seen)  # never the link's token
    # The order event itself is not in the log: the order inbox and the ledger are its record.
    assert {e["resource_type"] for e in await entries(client, admin)} == {
        "api_key",
        "merchant",
        "order",
        "platform",
    }
    assert {e["action"] for e in await entries(client, admin, resource_type="order")} == {
        "receipt_link.create",
        "receipt_link.revoke",
    }
