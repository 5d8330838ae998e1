"""An operator in a real browser (Debian's Chromium, driven by Playwright) on a real `g4g serve` seeded through the
API: enrols a second factor from the QR code's key with a code computed here (pyotp), signs in again with a code
and with a recovery code (once), imports a class list with an error, fixes it and confirms, cancels a planned
shipment, sees a delivery's photo, records a bank transfer, revokes a key and sees its session end; a merchant
key does not open the console. Every page is screenshotted at 1280 and 390 px; no page breaks its CSP."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.conftest import DATA_KEY
from tests.evidence.photos import photo
from tests.helpers import order_paid, signed_headers
from tests.live import LiveServer, free_port, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import roster_codes
from tests.web.conftest import screenshot
from tests.web.test_browser import Watched

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

COST = 2500


@dataclass
class Console:
    url: str
    admin: dict[str, str]
    token: str  # the operator's admin key
    second_token: str  # another operator's admin key (revoked in a test)
    second_key_id: str
    merchant_token: str
    planned: str  # a planned shipment (cancelled in a test)
    delivered: str  # a delivered shipment with a photo
    statement: str  # a statement waiting for a bank transfer of $12.34
    partner_id: str
    school_id: str  # Gyan Jyoti School (a student joins it between a dry run and its run)
    kind_id: str
    secret: str = ""
    recovery_codes: list[str] = field(default_factory=list)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


async def _seed(http: httpx.AsyncClient) -> dict[str, Any]:
    """Two bank-transfer merchants: tea's $150 paid into the pool, pens' $12.34 billed and waiting for its
    transfer. A $25 box for grades 1-2 in Nepal; two schools of Himalaya Express with 3 and 1 students; one
    allocation run. The 3-box shipment is delivered with a photo; the 1-box one stays planned."""
    platform = _ok(await http.post("/v1/platforms", json={"name": "Tmall"}))
    merchants = {}
    for slug, amount in (("tea", 15000), ("pens", 1234)):
        merchant = _ok(
            await http.post(
                "/v1/merchants",
                json={
                    "external_id": slug,
                    "name": slug.title(),
                    "country": "CN",
                    "platform_id": platform["id"],
                },
            )
        )
        _ok(await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 10_000}))
        _ok(await http.put(f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}))
        items = [{"sku": "X", "quantity": 1, "amount": amount}]
        body = json.dumps(
            order_paid(f"{slug}-1", merchant=slug, currency="USD", items=items, placed_at=datetime.now(UTC))
        ).encode()
        sent = await http.post(
            f"/v1/webhooks/orders/{platform['id']}",
            content=body,
            headers=signed_headers(platform["webhook_secret"], body),
        )
        assert sent.json() == {"status": "applied"}, sent.text
        merchants[slug] = merchant
    run_id = _ok(await http.post("/v1/settlement-runs", json={}))["id"]
    deadline = time.monotonic() + 60
    while (run := _ok(await http.get(f"/v1/settlement-runs/{run_id}")))["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
    statements = {s["merchant_id"]: s for s in run["statements"]}
    tea = statements[merchants["tea"]["id"]]
    _ok(
        await http.post(
            f"/v1/statements/{tea['id']}/payments", json={"reference": "TT-1", "amount": tea["total"]}
        )
    )
    kind = _ok(
        await http.post(
            "/v1/package-kinds",
            json={
                "name": "Primary box",
                "contents": [{"item": "Notebook", "quantity": 4}, {"item": "Pencil", "quantity": 6}],
                "unit_cost": {"amount": COST, "currency": "USD"},
                "countries": ["NP"],
                "grades": ["1", "2"],
            },
        )
    )
    partner = _ok(await http.post("/v1/logistics-partners", json={"name": "Himalaya Express"}))
    schools = []
    for name, students in (("Shree Janata School", 3), ("Gyan Jyoti School", 1)):
        school = _ok(
            await http.post(
                "/v1/schools",
                json={
                    "name": name,
                    "country": "NP",
                    "region": "Bagmati",
                    "logistics_partner_id": partner["id"],
                    "teacher_contact": {"name": "Sita Sharma", "phone": "+97714412345"},
                },
            )
        )
        rows = [{"roster_code": code, "grade": "1"} for code in roster_codes(students)]
        _ok(await http.post(f"/v1/schools/{school['id']}/students", json={"students": rows}))
        schools.append(school["id"])
    # The programme's own event endpoint, on a port nobody listens on: its deliveries fail.
    endpoint = _ok(
        await http.post(
            "/v1/webhook-endpoints",
            json={"url": f"http://127.0.0.1:{free_port()}/hook", "events": ["shipment.status_changed"]},
        )
    )
    # An order for a merchant the platform hasn't registered yet: parked until it is.
    body = json.dumps(
        order_paid(
            "ghost-1", merchant="ghost", currency="USD", items=[{"sku": "X", "quantity": 1, "amount": 500}]
        )
    ).encode()
    parked = await http.post(
        f"/v1/webhooks/orders/{platform['id']}",
        content=body,
        headers=signed_headers(platform["webhook_secret"], body),
    )
    assert parked.json()["status"] == "parked", parked.text
    run = _ok(await http.post("/v1/allocation-runs", json={"term": "2027-T1", "package_kind_id": kind["id"]}))
    shipment_of = {s["school_id"]: s["shipment_id"] for s in run["schools"]}
    carrier_key = _ok(
        await http.post(
            "/v1/api-keys", json={"role": "logistics", "name": "phone", "logistics_partner_id": partner["id"]}
        )
    )
    carrier = {"Authorization": f"Bearer {carrier_key['token']}"}
    delivered = shipment_of[schools[0]]
    at = datetime.now(UTC) - timedelta(hours=2)
    for n, status in enumerate(("handed_over", "in_transit", "out_for_delivery")):
        _ok(
            await http.post(
                f"/v1/shipments/{delivered}/events",
                json={
                    "event_id": f"E-{n}",
                    "status": status,
                    "occurred_at": (at + timedelta(minutes=n)).isoformat(),
                },
                headers=carrier,
            )
        )
    stored = _ok(
        await http.post(
            f"/v1/shipments/{delivered}/evidence",
            content=photo("JPEG", size=(480, 320)),
            headers={**carrier, "Content-Type": "image/jpeg"},
        )
    )
    proof = {
        "receiver_name": "Sita Sharma",
        "receiver_role": "teacher",
        "evidence": {"evidence_id": stored["evidence_id"]},
    }
    _ok(
        await http.post(
            f"/v1/shipments/{delivered}/events",
            json={
                "event_id": "E-9",
                "status": "delivered",
                "occurred_at": (at + timedelta(minutes=9)).isoformat(),
                "proof": proof,
            },
            headers=carrier,
        )
    )
    deadline = time.monotonic() + 60  # the server's worker tries the endpoint and records the failure
    while _ok(await http.get(f"/v1/webhook-endpoints/{endpoint['id']}"))["failing_since"] is None:
        assert time.monotonic() < deadline, "the endpoint's deliveries never failed"
        await asyncio.sleep(0.2)
    second = _ok(await http.post("/v1/api-keys", json={"role": "admin", "name": "second operator"}))
    merchant_key = _ok(
        await http.post(
            "/v1/api-keys", json={"role": "merchant", "name": "tea", "merchant_id": merchants["tea"]["id"]}
        )
    )
    return {
        "second_token": second["token"],
        "second_key_id": second["id"],
        "merchant_token": merchant_key["token"],
        "planned": shipment_of[schools[1]],
        "delivered": delivered,
        "statement": statements[merchants["pens"]["id"]]["id"],
        "partner_id": partner["id"],
        "school_id": schools[1],
        "kind_id": kind["id"],
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(
    pg_server: TestServer, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> AsyncIterator[Console]:
    name = f"{pg_server.prefix}_console"
    database = await pg_server.create_database(name, template=pg_server.template)
    tmp = tmp_path_factory.mktemp("console")
    env = g4g_env(
        DATABASE_URL=database, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp), G4G_RETURN_WINDOW_DAYS="0"
    )
    token = run_g4g(
        "create-api-key", "--role", "admin", "--name", "Ayu (programme officer)", env=env
    ).stdout.strip()
    server = LiveServer(env, tmp / "serve.log")
    try:
        admin = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as http:
            seeded = await _seed(http)
        yield Console(server.url, admin, token, **seeded)
    finally:
        server.stop()
        await pg_server.drop_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def operator(browser: Browser, site: Console) -> AsyncIterator[BrowserContext]:
    """The operator's browser, kept across this module's tests (signed in by the first)."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US", base_url=site.url
    )
    try:
        yield context
    finally:
        await context.close()


_pages: dict[str, Watched] = {}


async def the_page(context: BrowserContext) -> Page:
    """One watched tab per browser context, for the whole module."""
    key = str(id(context))
    if key not in _pages:
        _pages[key] = await Watched.open(context)
    return _pages[key].page


async def assert_clean(context: BrowserContext) -> None:
    """No CSP violation and no script error on the operator's tab. A refused form answers with its page and a
    4xx status on purpose (401, 403, 404, 409, 422), which Chromium logs as a failed load: those are expected."""
    watched = _pages[str(id(context))]
    violations = await watched.page.evaluate("window.__violations || []")
    problems = [p for p in watched.problems if not re.search(r"status of 4(01|03|04|09|22)", p)]
    assert violations == [] and problems == [], (violations, problems)


async def give_key(page: Page, token: str) -> None:
    await page.goto("/admin")
    await page.fill("#api_key", token)
    await page.click("main button[type=submit]")


async def give_code(page: Page, code: str) -> None:
    await expect(page.locator("h1")).to_have_text("Second factor")
    await page.fill("#code", code)
    await page.click("main button[type=submit]")


async def sign_out(page: Page) -> None:
    await page.click("form.sign-out button")
    await expect(page.locator("#api_key")).to_be_visible()


async def test_an_operator_enrols_a_second_factor_and_signs_in_with_codes(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)
    await page.goto("/admin")
    await screenshot(page, screenshot_dir, "admin-sign-in")
    await give_key(page, site.token)
    await expect(page.locator("h1")).to_have_text("Set up your second factor")
    await expect(page.locator("#totp-qr svg")).to_be_visible()
    site.secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    # The QR code encodes the same key the page spells out (an authenticator app reads the otpauth URI).
    await screenshot(page, screenshot_dir, "admin-enrol")
    totp = pyotp.TOTP(site.secret)
    await page.fill("#code", totp.now())
    await page.click("main button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Your recovery codes")
    site.recovery_codes = await page.locator("#recovery-codes code").all_inner_texts()
    assert len(site.recovery_codes) == 10
    await screenshot(page, screenshot_dir, "admin-recovery-codes")
    await page.click("#continue")
    await expect(page.locator("h1")).to_have_text("Overview")
    await sign_out(page)

    # Again with a code: the next one (the one that confirmed the factor is spent).
    await give_key(page, site.token)
    await give_code(page, totp.at(datetime.now(UTC) + timedelta(seconds=30)))
    await expect(page.locator("h1")).to_have_text("Overview")
    await sign_out(page)

    # A recovery code works once.
    await give_key(page, site.token)
    await give_code(page, site.recovery_codes[0])
    await expect(page.locator("h1")).to_have_text("Overview")
    await expect(page.locator("main")).to_contain_text("9 are left")
    await sign_out(page)
    await give_key(page, site.token)
    await give_code(page, site.recovery_codes[0])
    await expect(page.locator(".error")).to_contain_text("That code is not right")
    await screenshot(page, screenshot_dir, "admin-second-factor")
    await page.fill("#code", site.recovery_codes[1])
    await page.click("main button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Overview")
    await assert_clean(operator)


async def test_the_overview_shows_money_jobs_and_what_needs_attention(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)
    await page.goto("/admin")
    # $150 collected from tea, 4 boxes at $25 allocated: $50 in the pool, $100 in packages.
    await expect(page.locator("#pool dd")).to_have_text("$50.00")
    await expect(page.locator("#in-packages dd")).to_have_text("$100.00")
    await expect(page.locator("#attention-statements dd")).to_have_text("1")
    await page.click("#run-audit")
    await expect(page.locator("#audit-result")).to_contain_text("Every check passed")
    await screenshot(page, screenshot_dir, "admin-overview")
    for code, heading in (("id", "Ringkasan"), ("zh-Hans", "概览")):
        await page.goto(f"/language/{code}?next=/admin")
        await expect(page.locator("h1")).to_have_text(heading)
        await screenshot(page, screenshot_dir, f"admin-overview-{code}")
    await page.goto("/language/en?next=/admin")
    await assert_clean(operator)


async def test_a_class_list_with_an_error_is_fixed_and_imported(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)
    await page.goto("/admin/schools")
    await page.fill("#name", "Bal Bikas School")
    await page.fill("#country", "NP")
    await page.fill("#region", "Gandaki")
    await page.fill("#teacher_name", "Ram Thapa")
    await page.fill("#email", "ram@example.org")
    await page.click("#new-school button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Bal Bikas School")
    await expect(page.locator("#done")).to_have_text("Created.")
    codes = roster_codes(3)

    async def upload(lines: list[str]) -> None:
        body = ("roster_code,grade\n" + "\n".join(lines) + "\n").encode()
        await page.set_input_files(
            "#csv_file", files=[{"name": "class.csv", "mimeType": "text/csv", "buffer": body}]
        )
        await page.click("#preview-import")

    await upload([f"{codes[0]},1", f"{codes[1]},13", f"{codes[2]},2"])
    await expect(page.locator("#import-problems")).to_contain_text("row 2, line 3, grade")
    html = await page.content()
    assert not any(code in html for code in codes)
    await screenshot(page, screenshot_dir, "admin-import-error")
    await upload([f"{codes[0]},1", f"{codes[1]},2", f"{codes[2]},2"])
    await expect(page.locator("#preview-summary")).to_contain_text("3 new students, 0 with a new grade")
    await expect(page.locator("#students")).to_contain_text("No students yet.")
    await screenshot(page, screenshot_dir, "admin-import-preview")
    await page.click("#confirm-import")
    await expect(page.locator("#done")).to_contain_text("Class list imported: 3 new, 0 updated, 0 unchanged.")
    await expect(page.locator("#students tbody tr")).to_have_count(3)
    html = await page.content()
    assert not any(code in html for code in codes)
    await screenshot(page, screenshot_dir, "admin-school")
    await page.locator("#students a", has_text="Erase").first.click()
    await expect(page.locator("#confirm-erase")).to_be_visible()
    await screenshot(page, screenshot_dir, "admin-erase")
    await page.click("#confirm-erase")
    await expect(page.locator("#done")).to_have_text("The student was erased.")
    await expect(page.locator("#students tbody tr").first).to_contain_text("Erased")
    await page.goto("/admin/schools")
    await screenshot(page, screenshot_dir, "admin-schools")
    await assert_clean(operator)


async def test_shipments_a_photo_and_a_planned_shipment_cancelled(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)
    await page.goto("/admin/shipments")
    await expect(page.locator("#shipments-planned")).to_contain_text("Gyan Jyoti School")
    await expect(page.locator("#shipments-delivered")).to_contain_text("Shree Janata School")
    await screenshot(page, screenshot_dir, "admin-shipments")
    await page.goto(f"/admin/shipments/{site.delivered}")
    photo_shown = page.locator("img.evidence")
    await expect(photo_shown).to_be_visible()
    assert await photo_shown.evaluate("img => img.complete && img.naturalWidth") == 480
    await screenshot(page, screenshot_dir, "admin-shipment-delivered")

    await page.goto(f"/admin/shipments/{site.planned}")
    await expect(page.locator("#shipment-status dd")).to_have_text("Planned")
    await page.fill("#note", "School closed for the monsoon")
    await screenshot(page, screenshot_dir, "admin-shipment-planned")
    await page.click("#cancel-shipment button")
    await expect(page.locator("#done")).to_contain_text("The shipment was cancelled")
    await expect(page.locator("#shipment-status dd")).to_have_text("Cancelled")
    await expect(page.locator("#history")).to_contain_text("School closed for the monsoon")
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        shipment = _ok(await http.get(f"/v1/shipments/{site.planned}"))
        funds = _ok(await http.get("/v1/funds"))
    assert shipment["status"] == "cancelled" and shipment["events"][-1]["posted_by"] == "programme"
    assert funds["pool"]["amount"] == 7500  # the cancelled box's $25 is back
    await assert_clean(operator)


async def test_a_bank_transfer_is_recorded(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)
    await page.goto("/admin/statements")
    statement = page.locator(f"#statement-{site.statement}")
    await expect(statement).to_contain_text("Waiting for a bank transfer")
    await screenshot(page, screenshot_dir, "admin-statements")
    await statement.locator("input[name=reference]").fill("BCA-2026-1206")
    await statement.locator("input[name=amount]").fill("12.30")
    await statement.locator("button[type=submit]").first.click()
    await expect(page.locator("h1")).to_have_text("Not done")
    await expect(page.locator("#reason")).to_contain_text("open amount")
    await screenshot(page, screenshot_dir, "admin-not-done")
    await page.goto("/admin/statements")
    await statement.locator("input[name=reference]").fill("BCA-2026-1206")
    await statement.locator("input[name=amount]").fill("12.34")
    await statement.locator("button[type=submit]").first.click()
    await expect(page.locator("#done")).to_contain_text("The bank transfer was recorded")
    await expect(page.locator("#no-statements")).to_be_visible()
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        paid = _ok(await http.get(f"/v1/statements/{site.statement}"))
    assert (paid["status"], paid["paid_via"], paid["payment_reference"]) == (
        "paid",
        "bank_transfer",
        "BCA-2026-1206",
    )
    await assert_clean(operator)


async def test_the_other_pages(site: Console, operator: BrowserContext, screenshot_dir: Path) -> None:
    page = await the_page(operator)
    await page.goto("/admin/package-kinds")
    await expect(page.locator("main")).to_contain_text("Primary box")
    await screenshot(page, screenshot_dir, "admin-package-kinds")
    await page.goto("/admin/fx-rates")
    await page.fill("#currency", "CNY")
    await page.fill("#rate", "0.1385")
    await page.click("#set-rate button")
    await expect(page.locator("#rates")).to_contain_text("0.1385 USD")
    await screenshot(page, screenshot_dir, "admin-fx-rates")
    await page.goto("/admin/webhooks")
    await expect(page.locator("h1")).to_have_text("Order events from platforms")
    await expect(page.locator("main table[id^=parked-]")).to_contain_text("merchant:")
    failing = page.locator("main table[id^=deliveries-]")
    await expect(failing).to_contain_text("shipment.status_changed")
    await screenshot(page, screenshot_dir, "admin-webhooks")
    await failing.locator("button").first.click()
    await expect(page.locator("#done")).to_have_text("The event will be sent again now.")
    await page.goto("/admin/shipments/shp_nothing")
    await expect(page.locator("h1")).to_have_text("Not found")
    await screenshot(page, screenshot_dir, "admin-not-found")
    # A form whose token no longer matches (another site's, or an old tab's): refused, nothing done.
    await page.goto("/admin/fx-rates")
    await page.evaluate("document.querySelector('#set-rate input[name=csrf_token]').value = 'stale'")
    await page.fill("#currency", "IDR")
    await page.fill("#rate", "0.000063")
    await page.click("#set-rate button")
    await expect(page.locator("h1")).to_have_text("This form has expired")
    await screenshot(page, screenshot_dir, "admin-expired")
    await assert_clean(operator)


async def test_a_dry_runs_plan_is_run_and_a_changed_plan_refused(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    page = await the_page(operator)

    async def dry_run() -> None:
        await page.goto("/admin/allocation")
        await page.fill("#term", "2027-T1")
        await page.select_option("#package_kind_id", site.kind_id)
        await page.click("#dry-run button")
        await expect(page.locator("#plan-students tbody tr").first).to_contain_text("stu_")

    # $75 in the pool (the cancelled box's $25 came back): three $25 boxes for the students still waiting.
    await dry_run()
    await expect(page.locator("#plan-packages dd")).to_have_text("3")
    await expect(page.locator("#plan-spends dd")).to_have_text("$75.00")
    rows = page.locator("#plan-students tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text("$25.00")
    await expect(page.locator("#plan-students")).to_contain_text("Never received a package")
    await screenshot(page, screenshot_dir, "admin-allocation-plan")

    # A student joins a school between the dry run and the run: refused, saying so, nothing made.
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        joined = [{"roster_code": roster_codes(1)[0], "grade": "1"}]
        _ok(await http.post(f"/v1/schools/{site.school_id}/students", json={"students": joined}))
        runs_before = len(_ok(await http.get("/v1/allocation-runs"))["data"])
    await page.click("#allocate button")
    await expect(page.locator("h1")).to_have_text("Not done")
    await expect(page.locator("#reason")).to_contain_text("the students (who is eligible")
    await screenshot(page, screenshot_dir, "admin-allocation-refused")
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        assert len(_ok(await http.get("/v1/allocation-runs"))["data"]) == runs_before

    # Back to a fresh dry run (the new student is in it), then exactly that plan.
    await page.click("main a:has-text('Back')")
    await expect(page.locator("#plan-students tbody tr")).to_have_count(3)
    await page.click("#allocate button")
    await expect(page.locator("#done")).to_contain_text("Allocated: the plan was made")
    await expect(page.locator("#runs tbody tr").first).to_contain_text("2027-T1")
    await screenshot(page, screenshot_dir, "admin-allocation")
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        runs = _ok(await http.get("/v1/allocation-runs"))["data"]
    assert len(runs) == runs_before + 1 and runs[-1]["packages"] == 3
    await assert_clean(operator)


async def test_a_revoked_key_ends_its_sessions(
    site: Console, operator: BrowserContext, browser: Browser, screenshot_dir: Path
) -> None:
    other = await browser.new_context(
        viewport={"width": 390, "height": 844}, locale="en-US", base_url=site.url
    )
    try:
        second = await other.new_page()
        await give_key(second, site.second_token)
        secret = (await second.locator("#totp-secret").inner_text()).replace(" ", "")
        await second.fill("#code", pyotp.TOTP(secret).now())
        await second.click("main button[type=submit]")
        await second.click("#continue")
        await expect(second.locator("h1")).to_have_text("Overview")

        page = await the_page(operator)
        await page.goto("/admin/api-keys")
        await page.fill("#key-name", "Mekong Cargo phone")
        await page.select_option("#role", "logistics")
        await page.select_option("#scope_id", f"logistics:{site.partner_id}")
        await page.click("#new-key button[type=submit]")
        await expect(page.locator("#new-token")).to_contain_text("g4g_")
        await screenshot(page, screenshot_dir, "admin-api-keys-created")
        await page.goto("/admin/api-keys")
        await expect(page.locator("#new-token")).to_have_count(0)  # shown once
        await page.locator(f"#key-{site.second_key_id} button").click()
        await expect(page.locator("#done")).to_contain_text("The key was revoked")
        await expect(page.locator(f"#key-{site.second_key_id}")).to_contain_text("Revoked")
        await screenshot(page, screenshot_dir, "admin-api-keys")

        await second.reload()
        await expect(second.locator("#api_key")).to_be_visible()
        await second.goto("/admin/schools")
        await expect(second.locator("#api_key")).to_be_visible()
    finally:
        await other.close()
    await assert_clean(operator)


async def test_a_merchant_key_does_not_open_the_console(site: Console, browser: Browser) -> None:
    context = await browser.new_context(locale="en-US", base_url=site.url)
    try:
        page = await context.new_page()
        await give_key(page, site.merchant_token)
        await expect(page.locator(".error")).to_contain_text("not a valid admin API key")
        await page.goto("/admin/statements")
        await expect(page.locator("#api_key")).to_be_visible()
    finally:
        await context.close()


async def test_every_console_action_is_on_the_activity_page_with_the_operators_key(
    site: Console, operator: BrowserContext, screenshot_dir: Path
) -> None:
    async with httpx.AsyncClient(base_url=site.url, headers=site.admin) as http:
        keys = _ok(await http.get("/v1/api-keys", params={"limit": 100}))["data"]
    [key] = [k for k in keys if site.token.startswith(k["token_prefix"])]
    page = await the_page(operator)
    await page.goto("/admin/activity")
    await page.select_option("#key_id", key["id"])
    await page.fill("#action", "")
    await page.click("#activity-filters button")
    rows = page.locator("#activity tbody tr")
    done_here = [
        "school.create",
        "students.import",
        "student.erase",
        "shipment.post_event",
        "statement.record_bank_transfer",
        "fx_rate.set",
        "webhook_endpoint.retry_delivery",
        "allocation.run",
        "api_key.create",
        "api_key.revoke",
    ]
    for action in done_here:
        row = rows.filter(has=page.locator("td[data-label=Action] code.action", has_text=action)).filter(
            has_text="Console"
        )
        await expect(row.first).to_contain_text("Ayu (programme officer)")
        await expect(row.first).to_contain_text(key["id"])
    # Nothing the operator did was refused into the log: the wrong transfer and the stale form left no entry.
    await expect(
        rows.filter(
            has=page.locator("td[data-label=Action] code.action", has_text="statement.record_bank_transfer")
        )
    ).to_have_count(2)  # the seed's transfer (through the API) and the console's
    html = await page.content()
    assert site.token not in html and site.second_token not in html
    await screenshot(page, screenshot_dir, "admin-activity")
    await page.select_option("#key_id", "")
    await page.fill("#action", "api_key.revoke")
    await page.click("#activity-filters button")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(site.second_key_id)
    await assert_clean(operator)
