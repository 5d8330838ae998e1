"""What a person sees in a real browser (Debian's Chromium, driven by Playwright) on a real `g4g serve`, seeded
through the API: the public page's figures and charts, the language switch, a merchant's dashboard, its CSV and
signing out; no page breaks its Content-Security-Policy. Screenshots of every page land in the run's temp dir."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.conftest import DATA_KEY
from tests.helpers import order_paid, order_refunded, settle, signed_headers
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import roster_codes
from tests.stripe_server import LocalStripe, create_chargeable_customer, open_stripe_client
from tests.web.conftest import screenshot

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEA = [{"sku": "TEA-01", "quantity": 2, "amount": 12800}]  # 196 fen each
BOOK = [{"sku": "BOOK", "quantity": 1, "amount": 10000}]  # 150 cents each
# The one order still pledged: ahead of the clock (the return window is zero days), by less than the day the
# service accepts. Near the end of a month it falls in the next one.
PLEDGED_AT = datetime.now(UTC) + timedelta(hours=12)
PLEDGED_NEXT_MONTH = (PLEDGED_AT.year, PLEDGED_AT.month) != (datetime.now(UTC).year, datetime.now(UTC).month)


@dataclass
class Site:
    url: str
    admin: dict[str, str]
    stripe_url: str
    merchants: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] = field(default_factory=dict)


async def _seed(site: Site) -> None:
    """Three merchants on one platform; a return window of zero days makes orders final at once.

    tea (CNY, card on file): 6 orders, billed, charged and converted into the pool at 0.14;
    books (USD, card on file): 5 orders, billed, charged, in the pool;
    pens (CNY, no billing profile): 5 final orders, not billed;
    tea again: one order placed later today (less than a day ahead, as the service accepts), still pledged."""
    async with (
        open_stripe_client(site.stripe_url) as stripe,
        httpx.AsyncClient(base_url=site.url, headers=site.admin, timeout=30) as http,
    ):
        platform = site.platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
        for slug, name, country, card_on_file in (
            ("tea", "Tea House", "CN", True),
            ("books", "Book Nook", "US", True),
            ("pens", "Pen Pals", "CN", False),
        ):
            body = {"external_id": slug, "name": name, "country": country, "platform_id": platform["id"]}
            merchant = (await http.post("/v1/merchants", json=body)).json()
            rule = {"rate_bps": 150, "fixed_per_unit": [{"amount": 2, "currency": "CNY"}]}
            assert (
                await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json=rule)
            ).status_code == 200
            if (
                card_on_file
            ):  # an existing Stripe customer whose metadata names the merchant, linked by the operator
                customer = (await create_chargeable_customer(stripe)).customer_id
                await stripe.v1.customers.update_async(
                    customer, {"metadata": {"g4g_merchant_id": merchant["id"]}}
                )
                billing = await http.put(
                    f"/v1/merchants/{merchant['id']}/billing",
                    json={"method": "stripe", "stripe_customer_id": customer},
                )
                assert billing.status_code == 200, billing.text
            key = await http.post(
                "/v1/api-keys", json={"role": "merchant", "name": slug, "merchant_id": merchant["id"]}
            )
            site.merchants[slug] = merchant
            site.keys[slug] = key.json()["token"]

        async def pay(
            order_id: str, merchant: str, currency: str, items: Any, placed_at: datetime | None = None
        ) -> None:
            event = order_paid(
                order_id, merchant=merchant, currency=currency, items=items, placed_at=placed_at
            )
            body = json.dumps(event).encode()
            answer = await http.post(
                f"/v1/webhooks/orders/{platform['id']}",
                content=body,
                headers=signed_headers(platform["webhook_secret"], body),
            )
            assert answer.json() == {"status": "applied"}, answer.text

        for n in range(1001, 1007):
            await pay(f"TEA-{n}", "tea", "CNY", TEA)
        for n in range(2001, 2006):
            await pay(f"BOOK-{n}", "books", "USD", BOOK)
        for n in range(3001, 3006):
            await pay(f"PEN-{n}", "pens", "CNY", TEA)
        run = await settle(http, {})
        statements = sorted((s["total"]["amount"], s["status"]) for s in run["statements"])
        assert statements == [(750, "paid"), (1176, "paid")]
        assert (await http.put("/v1/fx-rates/CNY", json={"rate": "0.14"})).status_code == 200
        await pay("TEA-1007", "tea", "CNY", TEA, placed_at=PLEDGED_AT)
        await _boxes(http)


async def _boxes(http: httpx.AsyncClient) -> None:
    """The pool ($9.15) becomes 18 boxes at $0.50: 10 for a school in Nepal, 8 for one in Cambodia. The Nepali
    school's shipment is delivered and confirmed (9 boxes accepted, 1 damaged); the Cambodian one is on its way."""
    partner = (await http.post("/v1/logistics-partners", json={"name": "Himalaya Express"})).json()
    key = await http.post(
        "/v1/api-keys", json={"role": "logistics", "name": "carrier", "logistics_partner_id": partner["id"]}
    )
    carrier = {"Authorization": f"Bearer {key.json()['token']}"}
    kind = {
        "name": "Starter box",
        "contents": [{"item": "notebook", "quantity": 4}],
        "unit_cost": {"amount": 50, "currency": "USD"},
        "countries": ["NP", "KH"],
        "grades": ["1", "2"],
    }
    kind_id = (await http.post("/v1/package-kinds", json=kind)).json()["id"]
    for country, region, students in (("NP", "Bagmati", 10), ("KH", "Siem Reap", 8)):
        school = {
            "name": f"School in {region}",
            "country": country,
            "region": region,
            "logistics_partner_id": partner["id"],
            "teacher_contact": {"name": "Teacher", "email": "teacher@example.org"},
        }
        school_id = (await http.post("/v1/schools", json=school)).json()["id"]
        rows = [{"roster_code": code, "grade": "1"} for code in roster_codes(students)]
        imported = await http.post(f"/v1/schools/{school_id}/students", json={"students": rows})
        assert imported.status_code == 200, imported.text
    run = await http.post("/v1/allocation-runs", json={"term": "2027-T1", "package_kind_id": kind_id})
    assert run.status_code == 201 and run.json()["packages"] == 18, run.text
    shipments = {s["packages"]: s["shipment_id"] for s in run.json()["schools"]}

    at = datetime.now(UTC) - timedelta(hours=1)

    async def event(shipment_id: str, status: str, **extra: Any) -> None:
        nonlocal at
        at += timedelta(minutes=1)
        body = {
            "event_id": f"{shipment_id}-{status}",
            "status": status,
            "occurred_at": at.isoformat(),
            **extra,
        }
        answer = await http.post(f"/v1/shipments/{shipment_id}/events", json=body, headers=carrier)
        assert answer.status_code == 201 and answer.json()["result"] == "applied", answer.text

    for status in ("handed_over", "in_transit", "out_for_delivery"):
        await event(shipments[10], status)
    proof = {
        "receiver_name": "Teacher",
        "receiver_role": "teacher",
        "evidence": {"url": "https://evidence.example.org/pod.jpg", "sha256": "ab" * 32},
    }
    await event(shipments[10], "delivered", proof=proof)
    boxes = (await http.get(f"/v1/shipments/{shipments[10]}", headers=carrier)).json()["packages"]
    outcomes = [{"package_id": box["id"], "outcome": "accepted"} for box in boxes[1:]]
    outcomes.append({"package_id": boxes[0]["id"], "outcome": "damaged", "reason": "soaked in the rain"})
    await event(shipments[10], "receipt_confirmed", packages=outcomes)
    await event(shipments[8], "handed_over")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(
    pg_server: TestServer, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> AsyncIterator[Site]:
    name = f"{pg_server.prefix}_browser"
    database = await pg_server.create_database(name, template=pg_server.template)
    tmp = tmp_path_factory.mktemp("browser")
    with LocalStripe() as stripe:
        env = g4g_env(
            DATABASE_URL=database,
            G4G_DATA_KEY=DATA_KEY,
            G4G_DATA_DIR=str(tmp),
            G4G_RETURN_WINDOW_DAYS="0",
            G4G_TRANSPARENCY_REFRESH_SECONDS="0",
            STRIPE_API_KEY="sk_test_g4g",
            STRIPE_API_BASE=stripe.url,
            STRIPE_PUBLISHABLE_KEY="pk_test_g4g",
            # The billing page loads localstripe's stand-in for Stripe.js instead of Stripe's.
            G4G_STRIPE_JS_URL=f"{stripe.url}/js.stripe.com/v3/",
        )
        token = run_g4g(
            "create-api-key", "--role", "admin", "--name", "browser tests", env=env
        ).stdout.strip()
        server = LiveServer(env, tmp / "serve.log")
        try:
            site = Site(server.url, {"Authorization": f"Bearer {token}"}, stripe.url)
            await _seed(site)
            yield site
        finally:
            server.stop()
            await pg_server.drop_database(name)


class Watched:
    """A page whose console errors and CSP violations are collected, so a test can require there were none."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))

    @classmethod
    async def open(cls, context: BrowserContext) -> Watched:
        page = await context.new_page()
        # Init scripts run through the DevTools protocol, outside the page's CSP.
        await page.add_init_script(
            """document.addEventListener('securitypolicyviolation', e => {
                 window.__violations = window.__violations || [];
                 window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
               });"""
        )
        return cls(page)

    async def assert_clean(self) -> None:
        """No CSP violation, no script error, no resource that failed to load (the sign-in form's answer to a
        wrong key is a 401 on purpose, and Chromium logs it)."""
        violations = await self.page.evaluate("window.__violations || []")
        problems = [p for p in self.problems if "status of 401" not in p]
        assert violations == [] and problems == [], (violations, problems)


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US", accept_downloads=True
    )
    try:
        yield context
    finally:
        await context.close()


async def cell(page: Page, table_id: str, row: str, column: int) -> str:
    """The text of a cell: the row whose header is `row`, the `column`-th data cell in it (1-based)."""
    rows = page.locator(f"#{table_id} tbody tr, #{table_id} tfoot tr")
    header = rows.filter(has=page.locator("th", has_text=row))
    return await header.first.locator("td").nth(column - 1).inner_text()


async def test_the_public_page_shows_the_programme(
    site: Site, context: BrowserContext, screenshot_dir: Path
) -> None:
    watched = await Watched.open(context)
    page = watched.page
    response = await page.goto(site.url + "/")
    assert response is not None and response.status == 200
    policy = response.headers["content-security-policy"]
    assert (
        "default-src 'self'" in policy
        and "frame-ancestors 'none'" in policy
        and "'unsafe-inline'" not in policy
    )

    assert await page.locator("h1").inner_text() == "Where the money goes"
    # 915 cents reached the pool (1176 fen at 0.14 = 164.64, plus $7.50, rounded once); raised adds the pens'
    # final 980 fen (137.2): 1052 cents. The order placed later today is pledged, not raised.
    assert await page.locator("#total-raised dd").inner_text() == "$10.52"
    assert await page.locator("#total-pool dd").inner_text() == "$9.15"
    assert await page.locator("#total-share dd").inner_text() == "87%"
    assert await page.locator("#total-merchants dd").inner_text() == "<5"
    assert await page.locator("#total-orders dd").inner_text() == "15"  # 17, in bands of five

    # Money by stage over time: this month (and the next, if the pledged order falls in it), the table beside
    # the chart with the same figures.
    over_time = page.locator("#money-over-time")
    titles = await over_time.locator("svg rect title").all_text_contents()
    assert any(t.endswith("In the pool: $9.15") for t in titles), titles
    assert any(t.endswith("Final: $1.37") for t in titles), titles
    months = page.locator("#money-over-time-table tbody tr")
    assert await months.count() == (2 if PLEDGED_NEXT_MONTH else 1)
    assert await months.first.locator("td").nth(4).inner_text() == "$9.15"  # in the pool
    assert await months.first.locator("td").nth(1).inner_text() == "$1.37"  # final: the pens' orders
    assert await months.last.locator("td").nth(0).inner_text() == "$0.27"  # pledged: TEA-1007

    # Orders by stage: counts in bands of five (11 collected, 1 pledged, 5 final), in the chart and its table alike.
    assert await cell(page, "orders-by-stage-table", "Collected", 1) == "10"
    assert await cell(page, "orders-by-stage-table", "Pledged", 1) == "<5"
    assert await cell(page, "orders-by-stage-table", "Final", 1) == "5"
    assert await cell(page, "orders-by-stage-table", "Total", 1) == "15"
    assert await page.locator("#orders-by-stage svg rect title").all_text_contents() == [
        "Final: 5",
        "Collected: 10",
    ]

    assert await cell(page, "money-by-currency", "CNY", 4) == "CN¥11.76"  # collected
    assert await cell(page, "money-by-currency", "USD", 5) == "$7.50"  # in the pool
    in_pool = page.locator("#to-the-pool-table tbody tr").nth(3)
    assert await in_pool.locator("td").all_inner_texts() == ["$9.15", "87%"]

    # Where the money went: 18 boxes, 9 of the Nepali school's accepted (one damaged), Cambodia's on the way —
    # shown in bands of five, and the money in them in steps of five boxes' worth ($2.50).
    assert await page.locator("#total-packages dd").inner_text() == "15"
    assert await page.locator("#total-students dd").inner_text() == "5"
    assert await page.locator("#total-schools-share dd").inner_text() == "23.8%"  # 5 × $0.50 of $10.52
    assert await page.locator("#total-cost dd").inner_text() == "$0.50"
    bars = await page.locator("#packages-by-country svg title").all_text_contents()
    assert "Nepal: 10" in bars and "Cambodia: 5" in bars, bars
    assert await cell(page, "packages-by-country-table", "Nepal", 2) == "10"  # allocated
    assert await cell(page, "packages-by-country-table", "Nepal", 3) == "5"  # delivered (accepted): 9
    assert await cell(page, "packages-by-country-table", "Cambodia", 4) == "<5"  # none reached yet
    assert await cell(page, "packages-by-country-table", "Total", 4) == "5"
    funnel = {
        step: await cell(page, "delivery-funnel-table", step, 1)
        for step in ("Allocated to a student", "Shipped", "Delivered to the school", "Accepted by the school")
    }
    assert list(funnel.values()) == ["15", "15", "10", "5"]  # 18, 18, 10, 9

    await watched.assert_clean()
    await screenshot(page, screenshot_dir, "public-en")


async def test_the_language_switch_changes_the_page_and_is_remembered(
    site: Site, context: BrowserContext, screenshot_dir: Path
) -> None:
    watched = await Watched.open(context)
    page = watched.page
    await page.goto(site.url + "/")
    await page.get_by_role("link", name="Bahasa Indonesia").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "Ke mana uangnya mengalir"
    assert await page.locator("html").get_attribute("lang") == "id"
    assert await page.locator("#total-raised dt").inner_text() == "Dana terkumpul"
    assert await page.locator("#total-raised dd").inner_text() == "US$10,52"
    assert await page.get_by_role("link", name="Transparansi").is_visible()
    await page.goto(site.url + "/merchant")  # remembered on the next page
    assert await page.get_by_role("button", name="Masuk").is_visible()
    await page.goto(site.url + "/")
    await screenshot(page, screenshot_dir, "public-id")
    await page.get_by_role("link", name="English").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "Where the money goes"
    await watched.assert_clean()


async def test_a_merchant_signs_in_sees_its_own_data_exports_csv_and_signs_out(
    site: Site, browser: Browser, context: BrowserContext, screenshot_dir: Path, tmp_path: Path
) -> None:
    watched = await Watched.open(context)
    page = watched.page
    await page.goto(site.url + "/merchant")
    await screenshot(page, screenshot_dir, "merchant-sign-in")

    await page.get_by_label("Merchant API key").fill("g4g_this-is-not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    alert = await page.get_by_role("alert").inner_text()
    assert alert == "That is not a valid merchant API key. Check the key and try again."
    assert "Traceback" not in await page.content()

    await page.get_by_label("Merchant API key").fill(site.keys["tea"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(site.url + "/merchant")
    assert await page.locator("h1").inner_text() == "Tea House"
    text = await page.locator("main").inner_text()
    assert "TEA-1001" in text and "TEA-1007" in text
    assert "BOOK-2001" not in text and "PEN-3001" not in text and "Book Nook" not in text
    rule = await page.locator("#current-rule").inner_text()
    assert rule == "1.5% of each sale, CN¥0.02 per unit on CNY orders."
    assert await cell(page, "money-by-stage", "CNY", 1) == "CN¥1.96"  # pledged: TEA-1007
    assert await cell(page, "money-by-stage", "CNY", 5) == "CN¥11.76"  # in the pool
    assert await page.locator("#statements tbody tr").count() == 1
    assert await page.locator("#statements tbody td").nth(1).inner_text() == "CN¥11.76"
    session_cookie = next(c for c in await context.cookies() if c["name"] == "g4g_session")
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
    await screenshot(page, screenshot_dir, "merchant-dashboard")

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download donations (CSV)").click()
    saved = tmp_path / "donations.csv"
    await (await download_info.value).save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    async with httpx.AsyncClient() as http:
        api = (
            await http.get(
                f"{site.url}/v1/merchants/{site.merchants['tea']['id']}/donations",
                headers={"Authorization": f"Bearer {site.keys['tea']}"},
            )
        ).json()["data"]
    assert [r["order_id"] for r in rows] == [a["order_id"] for a in api]
    assert [r["stage"] for r in rows] == [a["stage"] for a in api]
    assert sum(int(r["net_minor_units"]) for r in rows) == sum(a["net"]["amount"] for a in api) == 7 * 196

    await watched.assert_clean()
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(site.url + "/merchant")
    assert await page.get_by_role("button", name="Sign in").is_visible()

    # The cookie of the ended session opens nothing any more.
    replay = await browser.new_context()
    try:
        await replay.add_cookies([session_cookie])  # type: ignore[list-item]
        stolen = await replay.new_page()
        await stolen.goto(site.url + "/merchant")
        assert await stolen.get_by_role("button", name="Sign in").is_visible()
        assert "TEA-1001" not in await stolen.content()
    finally:
        await replay.close()


async def test_a_merchant_adds_its_card_and_its_statements_are_charged_to_it(
    site: Site, context: BrowserContext, screenshot_dir: Path
) -> None:
    """Pens had no way to pay, so its final donations waited. It adds a card through Stripe.js (localstripe's
    stand-in here); the next settlement run charges that card."""
    watched = await Watched.open(context)
    page = watched.page
    await page.goto(site.url + "/merchant")
    await page.get_by_label("Merchant API key").fill(site.keys["pens"])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("link", name="Billing").click()
    await page.wait_for_url(site.url + "/merchant/billing")
    assert await page.locator("#card-on-file").inner_text() == "No card added yet."
    policy = (await page.request.get(site.url + "/merchant/billing")).headers["content-security-policy"]
    assert f"script-src 'self' {site.stripe_url};" in policy
    await screenshot(page, screenshot_dir, "merchant-billing")

    for placeholder, value in (
        ("number", "4242424242424242"),
        ("exp_month", "12"),
        ("exp_year", "34"),
        ("cvc", "123"),
        ("postal_code", "10110"),
    ):
        await page.locator("#card-element").get_by_placeholder(placeholder, exact=True).fill(value)
    await page.get_by_role("button", name="Save card").click()
    # (expect polls the DOM; a predicate string would be eval'd in the page, which its CSP rightly forbids)
    await expect(page.locator("#card-on-file")).to_contain_text("4242", timeout=15_000)
    assert (await page.locator("#card-on-file").inner_text()).startswith("Card on file: ")
    await screenshot(page, screenshot_dir, "merchant-billing-card-saved")
    await watched.assert_clean()

    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        profile = (await http.get(f"/v1/merchants/{site.merchants['pens']['id']}/billing")).json()
        assert profile["method"] == "stripe" and "4242" in profile["payment_method"]["label"]
        run = await settle(http, {})
    [statement] = run["statements"]
    assert (statement["merchant_id"], statement["total"], statement["status"]) == (
        site.merchants["pens"]["id"],
        {"amount": 980, "currency": "CNY"},
        "paid",
    )
    await page.goto(site.url + "/merchant")
    assert await page.locator("#statements tbody td").nth(2).inner_text() == "Paid"


async def test_the_api_reference_runs_from_this_origin_alone(site: Site, context: BrowserContext) -> None:
    watched = await Watched.open(context)
    page = watched.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(site.url + "/docs")
    await expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    await expect(page.get_by_text("/v1/quotes", exact=True).first).to_be_visible()
    await watched.assert_clean()
    assert requested and all(url.startswith(site.url + "/") for url in requested), requested


async def test_a_buyer_follows_a_receipt_in_three_languages(
    site: Site, context: BrowserContext, screenshot_dir: Path
) -> None:
    """The platform asks for receipt links; the buyer opens one (no account, no cookie) and reads where the
    money went, in English, Bahasa Indonesia and 简体中文; a refunded order reads as reversed."""
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin, timeout=30) as http:
        key = await http.post(
            "/v1/api-keys", json={"role": "platform", "name": "Tmall", "platform_id": site.platform["id"]}
        )
        platform = {"Authorization": f"Bearer {key.json()['token']}"}
        links = {}
        for order_id in [f"TEA-{n}" for n in range(1001, 1008)] + ["PEN-3001"]:
            answer = await http.post(f"/v1/orders/{order_id}/receipt-link", headers=platform)
            assert answer.status_code == 201, answer.text
            links[order_id] = answer.json()["url"]
        steps = {}
        for order_id, url in links.items():
            steps[order_id] = (await http.get("/v1/receipts/" + url.removeprefix("/r/"))).json()["step"]
        refund = order_refunded("PEN-3001", "R-1", 12800 * 2, merchant="pens")
        body = json.dumps(refund).encode()
        answer = await http.post(
            f"/v1/webhooks/orders/{site.platform['id']}",
            content=body,
            headers=signed_headers(site.platform["webhook_secret"], body),
        )
        assert answer.status_code == 200, answer.text
    assert steps["TEA-1007"] == "pledged"
    # The Nepali school's boxes were delivered and confirmed: some tea order's money is in them.
    confirmed = [order_id for order_id, step in steps.items() if step == "confirmed"]
    assert confirmed, steps

    watched = await Watched.open(context)
    page = watched.page
    await page.goto(site.url + links[confirmed[0]])
    assert await page.locator("h1").inner_text() == "Your donation"
    assert await page.locator("#receipt-amount").inner_text() == "CN¥1.96"
    assert await page.locator("#receipt-merchant").inner_text() == "From your order at Tea House."
    delivered = await page.locator('li[data-step="delivered"] .detail').inner_text()
    assert delivered.startswith("Delivered to a grade-1 class in Bagmati, Nepal on ")
    assert await page.locator('li[data-step="confirmed"]').get_attribute("class") == "done"
    assert await context.cookies() == []
    await screenshot(page, screenshot_dir, "receipt-en")

    await page.get_by_role("link", name="Bahasa Indonesia").click()
    await page.wait_for_load_state()
    assert await page.locator("html").get_attribute("lang") == "id"
    assert await page.locator("h1").inner_text() == "Donasi Anda"
    assert await page.locator("#receipt-amount").inner_text() == "CN¥1,96"
    await screenshot(page, screenshot_dir, "receipt-id")

    await page.get_by_role("link", name="简体中文").click()
    await page.wait_for_load_state()
    assert await page.locator("html").get_attribute("lang") == "zh-Hans"
    assert await page.locator("h1").inner_text() == "您的捐款"
    assert await page.locator("#receipt-amount").inner_text() == "¥1.96"
    delivered = await page.locator('li[data-step="delivered"] .detail').inner_text()
    assert delivered.startswith("已于") and "尼泊尔 Bagmati的一个1年级班级" in delivered
    assert await context.cookies() == []
    await screenshot(page, screenshot_dir, "receipt-zh-Hans")

    # Still pledged: what comes next, and roughly when; refunded: reversed, with the amount.
    await page.goto(site.url + links["TEA-1007"] + "?lang=zh-Hans")
    assert (await page.locator("#receipt-next").inner_text()).startswith("下一步：确定。")
    await screenshot(page, screenshot_dir, "receipt-pledged-zh-Hans")
    await page.goto(site.url + links["PEN-3001"] + "?lang=en")
    assert await page.locator("#receipt-next").inner_text() == "Nothing more will happen to this donation."
    assert (
        "Refunded: the donation was reversed (CN¥1.96)."
        in await page.locator("#receipt-timeline").inner_text()
    )
    await screenshot(page, screenshot_dir, "receipt-refunded-en")
    await watched.assert_clean()


async def test_a_merchant_opens_a_statements_lines_and_an_orders_trail(
    site: Site, context: BrowserContext, screenshot_dir: Path
) -> None:
    """From the dashboard, Tea House opens its statement (the lines GET /v1/statements/{id} lists) and an order
    (where its donation went: the trail of GET /v1/orders/{order_id}), in each language, at both widths."""
    watched = await Watched.open(context)
    page = watched.page
    await page.goto(site.url + "/merchant")
    await page.get_by_label("Merchant API key").fill(site.keys["tea"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(site.url + "/merchant")

    await page.locator("#statements tbody a").first.click()
    statement_id = page.url.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        statement = (await http.get(f"/v1/statements/{statement_id}")).json()
        order = (await http.get("/v1/orders/TEA-1001", params={"platform_id": site.platform["id"]})).json()
    assert await page.locator("#statement-total dd").inner_text() == "CN¥11.76"
    assert statement["total"] == {"amount": 1176, "currency": "CNY"}
    assert await page.locator("#statement-lines tbody tr").count() == len(statement["lines"]) == 6
    for line in statement["lines"]:
        assert await cell(page, "statement-lines", line["order_id"], 2) == "CN¥1.96"
        assert line["amount"]["amount"] == 196
    assert await page.locator("#statement-lines tfoot td").nth(1).inner_text() == "CN¥11.76"
    statement_url = page.url

    await page.get_by_role(
        "link", name="TEA-1001", exact=True
    ).click()  # the statement's line opens its order
    order_url = page.url
    await page.get_by_role("link", name="Back to your dashboard").click()
    dashboard_link = await page.get_by_role("link", name="TEA-1001", exact=True).get_attribute("href")
    assert site.url + str(dashboard_link) == order_url  # and so does the dashboard's row
    await page.goto(order_url)
    assert await page.locator("h1").inner_text() == "Order TEA-1001"
    assert await page.locator("#order-net dd").inner_text() == "CN¥1.96" and order["net"]["amount"] == 196
    assert await page.locator("#order-stage dd").inner_text() == "Collected" and order["stage"] == "collected"
    assert order["trail"], "the seeded boxes are paid for by the pool, TEA-1001's money among it"
    rows = page.locator("#order-trail tbody tr")
    assert await rows.count() == len(order["trail"])
    for item in order["trail"]:
        share = f"${item['share']['amount'] / 100:.2f}" if item["share"]["amount"] else "$0.00"
        assert await cell(page, "order-trail", item["package_id"], 1) == share
    await watched.assert_clean()

    for language in ("en", "id", "zh-Hans"):
        await context.add_cookies([{"name": "g4g_lang", "value": language, "url": site.url}])
        await page.goto(statement_url)
        assert await page.locator("html").get_attribute("lang") == language
        await screenshot(page, screenshot_dir, f"merchant-statement-{language}")
        await page.goto(order_url)
        await screenshot(page, screenshot_dir, f"merchant-order-{language}")
    await watched.assert_clean()


@pytest.mark.parametrize("language", ["en", "id", "zh-Hans"])
async def test_a_merchants_public_page_reads_in_each_language(
    site: Site, context: BrowserContext, screenshot_dir: Path, language: str
) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        opted = await http.patch(
            f"/v1/merchants/{site.merchants['tea']['id']}",
            json={"public_profile": True},
            headers={"Authorization": f"Bearer {site.keys['tea']}"},
        )
    assert opted.status_code == 200, opted.text
    watched = await Watched.open(context)
    page = watched.page
    await page.goto(f"{site.url}/language/{language}?next=/m/{opted.json()['public_slug']}")
    await page.wait_for_load_state()
    assert await page.locator("html").get_attribute("lang") == language
    assert await page.locator("h1").inner_text() == "Tea House"
    await screenshot(page, screenshot_dir, f"merchant-public-{language}")
    await watched.assert_clean()


@pytest.mark.parametrize("language", ["id", "zh-Hans"])
async def test_every_page_reads_in_each_language_on_a_phone_and_a_desktop(
    site: Site, context: BrowserContext, screenshot_dir: Path, language: str
) -> None:
    """The public page and a merchant's pages in each language beside English: the page says it is in that
    language, no English heading is left, and (through `screenshot`) nothing is off-screen at 390 px."""
    watched = await Watched.open(context)
    page = watched.page
    english = {"/": "Where the money goes", "/merchant": "Sign in"}
    for path, name in (("/", "public"), ("/merchant", "merchant-sign-in")):
        await page.goto(f"{site.url}/language/{language}?next={path}")
        await page.wait_for_load_state()
        assert await page.locator("html").get_attribute("lang") == language
        assert english[path] not in await page.locator("main").inner_text()
        await screenshot(page, screenshot_dir, f"{name}-{language}-every-page")
    await page.fill("#api_key", site.keys["tea"])
    await page.click("main button[type=submit]")
    await page.wait_for_url(site.url + "/merchant")
    assert await page.locator("h1").inner_text() == "Tea House"
    assert "Your donation rule" not in await page.locator("main").inner_text()
    await screenshot(page, screenshot_dir, f"merchant-dashboard-{language}")
    await page.goto(site.url + "/merchant/billing")
    assert "How you pay" not in await page.locator("main").inner_text()
    await screenshot(page, screenshot_dir, f"merchant-billing-{language}")
    await watched.assert_clean()
