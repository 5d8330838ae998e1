"""A buyer follows an order's donation from pledge to the classroom with a link and no account; a refunded one
reads as reversed; links can't be guessed, and a receipt never names a student or a small school."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.helpers import assert_problem, bearer, create_key, create_platform
from tests.receipts.conftest import Buyers


def _steps(receipt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in receipt["timeline"]}


async def _deliver(buyers: Buyers, shipment_id: str) -> None:
    shipping = buyers.shipping
    await shipping.walk(shipment_id, ["handed_over", "in_transit", "out_for_delivery", "delivered"])
    shipment = await shipping.read(shipment_id)
    buyers.pool.clock.advance(timedelta(days=1))
    outcomes = [{"package_id": p["id"], "outcome": "accepted"} for p in shipment["packages"]]
    confirmed = await shipping.post(shipment_id, "receipt_confirmed", packages=outcomes)
    assert confirmed.status_code == 201, confirmed.text


async def test_a_buyer_follows_the_donation_from_pledge_to_the_school_confirming_it(buyers: Buyers) -> None:
    pool = buyers.pool
    tea = await pool.merchant("tea")
    await buyers.order(tea, "T-1", 1400)

    # The platform asks for the link at order confirmation; asking again gives the same link.
    link = await buyers.link("T-1", order_reference="…4821")
    assert link["url"].startswith("/r/") and len(link["url"]) == len("/r/") + 24
    assert link["full_url"] == "https://give.example.org" + link["url"]
    assert (link["qr_svg"], link["qr_png"]) == (link["url"] + "/qr.svg", link["url"] + "/qr.png")
    again = await buyers.link("T-1", expect=200, order_reference="…4821")
    assert again["url"] == link["url"]
    read = await buyers.client.get("/v1/orders/T-1/receipt-link", headers=buyers.platform_key)
    assert read.status_code == 200 and read.json() == link

    pledged = await buyers.receipt(link["url"])
    assert (pledged["merchant"], pledged["order_reference"]) == ("Tea House", "…4821")
    assert pledged["donation"] == {"amount": 1400, "currency": "USD"} and pledged["step"] == "pledged"
    assert pledged["next"]["step"] == "final"
    assert pledged["next"]["expected_by"].startswith("2026-12-31")  # placed Dec 1 + the 30-day return window
    assert [s["step"] for s in pledged["timeline"] if s["done"]] == ["pledged"]
    # Settlement runs daily at 03:00 UTC here: billed (and paid) from the first run after the window.
    assert _steps(pledged)["collected"]["expected_by"].startswith("2027-01-01T03:00:00")

    # Settled and paid: collected, in the pool; then packed for three schools in Nepal.
    await buyers.settle_and_pay()
    collected = await buyers.receipt(link["url"])
    assert collected["step"] == "in_pool" and collected["next"] == {"step": "packaged", "expected_by": None}
    assert _steps(collected)["in_pool"]["amount"] == {"amount": 1400, "currency": "USD"}

    kind = await pool.kind(unit_cost={"amount": 100, "currency": "USD"}, grades=["4"])
    gandaki, gandaki_students = await pool.school(["4"] * 6, region="Gandaki")
    small, small_students = await pool.school(["4"] * 3, region="Gandaki", name="Tiny Hill School")
    bagmati, bagmati_students = await pool.school(["4"] * 5, region="Bagmati")
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert run["packages"] == 14
    packed = await buyers.receipt(link["url"])
    assert packed["step"] == "packaged" and _steps(packed)["packaged"]["packages"] == 14
    assert sum(p["share"]["amount"] for p in packed["packages"]) == 1400
    # Nothing reached yet: no region is named, only the country.
    assert {(p["country"], p["region"], p["grade"]) for p in packed["packages"]} == {("NP", None, "4")}

    for served in run["schools"]:
        await _deliver(buyers, served["shipment_id"])
    confirmed = await buyers.receipt(link["url"])
    assert confirmed["step"] == "confirmed" and confirmed["next"] is None
    steps = _steps(confirmed)
    assert all(step["done"] for step in confirmed["timeline"])
    assert steps["delivered"]["packages"] == steps["confirmed"]["packages"] == 14
    assert (
        steps["pledged"]["at"] < steps["collected"]["at"] <= steps["shipped"]["at"] < steps["confirmed"]["at"]
    )
    # 14 students reached in Nepal, 9 in Gandaki, 5 in Bagmati: the public report names both regions.
    assert {p["region"] for p in confirmed["packages"]} == {"Gandaki", "Bagmati"}

    page = await buyers.client.get(link["url"])
    assert page.status_code == 200
    html = page.text
    assert "Delivered to a grade-4 class in" in html and "Nepal" in html and "Gandaki" in html
    assert "Confirmed by the school" in html and "$14.00" in html and "…4821" in html
    students = gandaki_students + small_students + bagmati_students
    for secret in [s["id"] for s in students] + [s["roster_code"] for s in students]:
        assert secret not in html and secret not in str(confirmed)
    for school in (gandaki, small, bagmati):
        assert school["name"] not in html and school["id"] not in html and school["id"] not in str(confirmed)
    assert "stu_" not in html and "Tiny Hill" not in html


async def test_a_refunded_order_reads_as_reversed_with_the_amount(buyers: Buyers) -> None:
    from tests.helpers import order_refunded, send_event

    shop = await buyers.pool.merchant("cake")
    await buyers.order(shop, "C-1", 900)
    link = await buyers.link("C-1", show_merchant=False)
    refund = order_refunded("C-1", "R-1", 900, merchant="cake", currency="USD")
    assert (await send_event(buyers.client, buyers.pool.platform, refund)).status_code == 200
    receipt = await buyers.receipt(link["url"])
    assert receipt["merchant"] is None and receipt["order_reference"] is None
    assert receipt["step"] == "refunded" and receipt["next"] is None
    assert receipt["net"] == {"amount": 0, "currency": "USD"}
    assert [s["step"] for s in receipt["timeline"]] == ["pledged", "refunded"]
    assert _steps(receipt)["refunded"]["amount"] == {"amount": 900, "currency": "USD"}
    html = (await buyers.client.get(link["url"])).text
    assert "Refunded: the donation was reversed ($9.00)." in html
    assert "Tea House" not in html


async def test_links_are_the_platforms_own_unguessable_and_revocable(buyers: Buyers) -> None:
    client = buyers.client
    shop = await buyers.pool.merchant("pens")
    await buyers.order(shop, "P-1", 500)
    link = await buyers.link("P-1")
    token = link["url"].removeprefix("/r/")

    # Another platform, a merchant, the public: the order is not theirs to link.
    rival = await create_platform(client, buyers.pool.admin, name="Rival")
    rival_key = bearer(
        (await create_key(client, buyers.pool.admin, role="platform", platform_id=rival["id"]))["token"]
    )
    assert_problem(await client.post("/v1/orders/P-1/receipt-link", headers=rival_key), 404, "not-found")
    assert_problem(await client.delete("/v1/orders/P-1/receipt-link", headers=rival_key), 404, "not-found")
    assert (await client.post("/v1/orders/P-1/receipt-link")).status_code == 401
    assert_problem(
        await client.post("/v1/orders/P-1/receipt-link", json={"colour": "red"}, headers=buyers.platform_key),
        422,
        "invalid-request",
    )

    # The page and its QR codes: no cookie, no referrer, not indexed, the pages' CSP.
    page = await client.get(link["url"], headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200 and "set-cookie" not in page.headers
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-robots-tag"] == "noindex"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<meta name="robots" content="noindex, nofollow">' in page.text
    assert page.headers["content-language"] == "zh-Hans"
    svg = await client.get(link["qr_svg"])
    assert svg.headers["content-type"] == "image/svg+xml" and svg.text.startswith("<svg")
    png = await client.get(link["qr_png"])
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")

    # Revoked: every way in answers exactly as for a token never issued.
    assert (
        await client.delete("/v1/orders/P-1/receipt-link", headers=buyers.platform_key)
    ).status_code == 204
    assert (
        await client.delete("/v1/orders/P-1/receipt-link", headers=buyers.platform_key)
    ).status_code == 204
    never = "A" * 24
    for path in ("/v1/receipts/{}", "/r/{}", "/r/{}/qr.svg", "/r/{}/qr.png"):
        revoked, unknown = await asyncio.gather(
            client.get(path.format(token)), client.get(path.format(never))
        )
        assert revoked.status_code == unknown.status_code == 404
        assert revoked.content.replace(token.encode(), b"") == unknown.content.replace(never.encode(), b"")
    assert_problem(await client.get(f"/v1/receipts/{token}"), 404, "not-found")
    assert_problem(
        await client.get("/v1/orders/P-1/receipt-link", headers=buyers.platform_key), 404, "not-found"
    )
    assert (
        await client.get("/v1/orders/P-1", headers=buyers.platform_key)
    ).status_code == 200  # the order itself
    fresh = await buyers.link("P-1")
    assert fresh["url"] != link["url"]
    assert (await client.get(fresh["url"])).status_code == 200


async def test_links_are_the_same_for_repeated_and_concurrent_asks(buyers: Buyers) -> None:
    shop = await buyers.pool.merchant("ink")
    await buyers.order(shop, "I-1", 500)
    answers = await asyncio.gather(
        *[buyers.client.post("/v1/orders/I-1/receipt-link", headers=buyers.platform_key) for _ in range(4)]
    )
    assert len({a.json()["url"] for a in answers}) == 1
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]


async def test_the_platform_hears_when_a_linked_receipt_reaches_a_new_step(buyers: Buyers) -> None:
    from tests.jobs import drain_jobs
    from tests.receiver import Receiver

    pool, client = buyers.pool, buyers.client
    shop = await pool.merchant("soap")
    await buyers.order(shop, "S-1", 200)
    await buyers.order(shop, "S-2", 200)  # no link: nothing is said about it
    await buyers.link("S-1")
    receiver = await Receiver().start()
    try:
        created = await client.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url, "events": ["receipt.updated"]},
            headers=buyers.platform_key,
        )
        assert created.status_code == 201, created.text
        receiver.secrets.append(created.json()["secret"])
        await buyers.settle_and_pay()
        kind = await pool.kind(unit_cost={"amount": 100, "currency": "USD"})
        await pool.school(["1"] * 4)
        run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
        await _deliver(buyers, run["schools"][0]["shipment_id"])
        await drain_jobs(pool.app)
    finally:
        await receiver.stop()
    order = ["pledged", "final", "collected", "in_pool", "packaged", "shipped", "delivered", "confirmed"]
    steps = sorted(
        ((r.body["data"]["previous_step"], r.body["data"]["step"]) for r in receiver.received),
        key=lambda change: order.index(change[1]),
    )
    assert all(r.body["type"] == "receipt.updated" and r.verified_with == [0] for r in receiver.received)
    assert {r.body["data"]["order_id"] for r in receiver.received} == {"S-1"}
    assert steps == [
        ("pledged", "in_pool"),
        ("in_pool", "packaged"),
        ("packaged", "shipped"),
        ("shipped", "delivered"),
        ("delivered", "confirmed"),
    ]


async def test_a_revoked_token_takes_as_long_as_one_never_issued(buyers: Buyers) -> None:
    """Both are one lookup of a hash that finds nothing (revoking deletes the row): interleaved, their median
    times agree (within noise), so timing can't tell a once-valid link from a guess."""
    import statistics
    import time

    shop = await buyers.pool.merchant("time")
    await buyers.order(shop, "X-1", 100)
    revoked = (await buyers.link("X-1"))["url"].removeprefix("/r/")
    assert (
        await buyers.client.delete("/v1/orders/X-1/receipt-link", headers=buyers.platform_key)
    ).status_code == 204
    never = "B" * 24
    timings: dict[str, list[float]] = {revoked: [], never: []}
    for _ in range(60):
        for token in (revoked, never):
            started = time.perf_counter()
            assert (await buyers.client.get(f"/v1/receipts/{token}")).status_code == 404
            timings[token].append(time.perf_counter() - started)
    a, b = statistics.median(timings[revoked]), statistics.median(timings[never])
    assert abs(a - b) < max(0.002, 0.5 * min(a, b)), (a, b)
