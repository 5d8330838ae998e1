"""A driver with a phone: Debian's Chromium at 360 px, driven by Playwright, on a real `g4g serve` seeded through
the API. Signs in with the partner's key, opens a shipment, loses the network at the school gate, records the
whole delivery (a real JPEG taken there, the phone's GPS, one box damaged), reloads while still offline, and when
the network is back the service holds exactly those events, once each, with the photo's SHA-256 and the money
moved. Also: another partner's shipment is out of reach, a refusal is shown with the service's reason until
dismissed, and every page is screenshotted."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from tests.conftest import DATA_KEY
from tests.evidence.photos import photo
from tests.helpers import order_paid, signed_headers
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import roster_codes
from tests.web.conftest import _screenshots

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

COST = 2500
PHONE = {"width": 360, "height": 780}
WIDE = {"width": 1280, "height": 900}
GPS = {"latitude": 27.6710, "longitude": 85.4298}


@dataclass
class Field:
    url: str
    admin: dict[str, str]
    key: str  # the partner's logistics key
    mine: str  # its shipment of three boxes
    second: str  # its shipment of one box (the refusal)
    theirs: str  # another partner's shipment


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


async def _seed(http: httpx.AsyncClient) -> tuple[str, str, str, str]:
    """An order paid and settled ($150), three schools (two served by Himalaya Express, one by Mekong Cargo), one
    allocation run: shipments of 3, 1 and 1 boxes at $25."""
    platform = _ok(await http.post("/v1/platforms", json={"name": "Tmall"}))
    merchant = _ok(
        await http.post(
            "/v1/merchants",
            json={"external_id": "tea", "name": "Tea", "country": "CN", "platform_id": platform["id"]},
        )
    )
    _ok(await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 10_000}))
    _ok(await http.put(f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}))
    items = [{"sku": "X", "quantity": 1, "amount": 15000}]
    body = json.dumps(
        order_paid("TM-1", merchant="tea", currency="USD", items=items, placed_at=datetime.now(UTC))
    ).encode()
    sent = await http.post(
        f"/v1/webhooks/orders/{platform['id']}",
        content=body,
        headers=signed_headers(platform["webhook_secret"], body),
    )
    assert sent.json() == {"status": "applied"}, sent.text
    run_id = _ok(await http.post("/v1/settlement-runs", json={}))["id"]
    deadline = time.monotonic() + 60
    while (run := _ok(await http.get(f"/v1/settlement-runs/{run_id}")))["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
    [statement] = run["statements"]
    _ok(
        await http.post(
            f"/v1/statements/{statement['id']}/payments",
            json={"reference": "TT-1", "amount": statement["total"]},
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
    himalaya = _ok(await http.post("/v1/logistics-partners", json={"name": "Himalaya Express"}))
    mekong = _ok(await http.post("/v1/logistics-partners", json={"name": "Mekong Cargo"}))
    schools = []
    for name, partner, students in (
        ("Shree Janata School", himalaya, 3),
        ("Gyan Jyoti School", himalaya, 1),
        ("Other carrier's school", mekong, 1),
    ):
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
    run = _ok(await http.post("/v1/allocation-runs", json={"term": "2027-T1", "package_kind_id": kind["id"]}))
    assert run["packages"] == 5, run
    shipment_of = {s["school_id"]: s["shipment_id"] for s in run["schools"]}
    key = _ok(
        await http.post(
            "/v1/api-keys",
            json={"role": "logistics", "name": "phone", "logistics_partner_id": himalaya["id"]},
        )
    )
    return key["token"], shipment_of[schools[0]], shipment_of[schools[1]], shipment_of[schools[2]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def field(
    pg_server: TestServer, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> AsyncIterator[Field]:
    name = f"{pg_server.prefix}_field_app"
    database = await pg_server.create_database(name, template=pg_server.template)
    tmp = tmp_path_factory.mktemp("field-app")
    env = g4g_env(
        DATABASE_URL=database, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp), G4G_RETURN_WINDOW_DAYS="0"
    )
    token = run_g4g("create-api-key", "--role", "admin", "--name", "field app", env=env).stdout.strip()
    server = LiveServer(env, tmp / "serve.log")
    try:
        admin = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as http:
            key, mine, second, theirs = await _seed(http)
        yield Field(server.url, admin, key, mine, second, theirs)
    finally:
        server.stop()
        await pg_server.drop_database(name)


@pytest_asyncio.fixture(loop_scope="session")
async def phone(browser: Browser, field: Field) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        viewport=PHONE,  # type: ignore[arg-type]
        locale="en-US",
        geolocation=GPS,
        permissions=["geolocation"],
        base_url=field.url,
    )
    try:
        yield context
    finally:
        await context.close()


async def watched(context: BrowserContext) -> tuple[Page, list[str]]:
    """A page whose CSP violations and script errors are collected."""
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.add_init_script(
        """document.addEventListener('securitypolicyviolation', e => {
             console.error('CSP ' + e.violatedDirective + ' ' + e.blockedURI);
           });"""
    )
    return page, problems


async def shoot(page: Page, folder: Path, name: str) -> None:
    """The page at 360 px and at 1280 px, whole length; nothing may stick out sideways at either."""
    for label, size in (("360", PHONE), ("1280", WIDE)):
        await page.set_viewport_size(size)  # type: ignore[arg-type]
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], f"{name} is {width}px wide at {label}"
        path = folder / f"partner-{name}-{label}.png"
        await page.screenshot(path=str(path), full_page=True)
        _screenshots.append(path)
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]


async def sign_in(page: Page, key: str) -> None:
    await page.goto("/partner")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("My shipments")
    # The service worker controls the app from now on (it keeps the pages for offline).
    await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    # Polled from here (Playwright's polled string predicate needs eval, which the pages' CSP forbids); a page
    # loaded before the worker took over is controlled once reloaded.
    for attempt in range(100):
        if await page.evaluate("() => navigator.serviceWorker.controller !== null"):
            break
        if attempt == 50:
            await page.reload()
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the service worker never took over the page")


async def press(page: Page, status: str) -> None:
    await page.click(f"button.next[data-next={status}]")


async def waiting(page: Page) -> list[str]:
    return await page.eval_on_selector_all("#queue-items li", "items => items.map(i => i.dataset.eventId)")


async def test_a_delivery_recorded_offline_reaches_the_service_once_with_its_photo_and_moves_the_money(
    field: Field, phone: BrowserContext, screenshot_dir: Path
) -> None:
    page, problems = await watched(phone)
    await sign_in(page, field.key)
    await shoot(page, screenshot_dir, "shipments-en")
    await page.click(f"a[href='/partner/shipments/{field.mine}']")
    await expect(page.locator("#status")).to_have_text("Planned")
    await shoot(page, screenshot_dir, "shipment-en")

    await phone.set_offline(True)  # the school gate: no signal from here on
    await expect(page.locator("#network")).to_contain_text("Offline")
    for status, shown in (
        ("handed_over", "Picked up"),
        ("in_transit", "In transit"),
        ("out_for_delivery", "Out"),
    ):
        await press(page, status)
        await expect(page.locator("#status")).to_contain_text(shown)
    await press(page, "delivered")
    jpeg = photo("JPEG", size=(640, 480))
    await page.set_input_files(
        "#photo", files=[{"name": "note.jpg", "mimeType": "image/jpeg", "buffer": jpeg}]
    )
    await expect(page.locator("#gps")).to_contain_text("27.67100, 85.42980")
    await expect(page.locator("#photo-preview")).to_be_visible()
    await page.fill("#receiver_name", "Sita Sharma")
    await shoot(page, screenshot_dir, "delivered-form-en")
    await page.click("#delivered-form button[type=submit]")
    await expect(page.locator("#status")).to_have_text("Delivered")

    await press(page, "receipt_confirmed")
    boxes = page.locator("#receipt-form fieldset.box")
    assert await boxes.count() == 3
    assert await page.locator("#receipt-form input[value=accepted]:checked").count() == 3  # pre-selected
    damaged_box = await boxes.first.get_attribute("data-package")
    await boxes.first.locator("input[value=damaged]").check()
    await page.click("#receipt-form button[type=submit]")  # no reason yet: the form asks for one
    assert len(await waiting(page)) == 4
    await boxes.first.locator("textarea").fill("carton soaked, notebooks ruined")
    await shoot(page, screenshot_dir, "receipt-form-en")
    await page.click("#receipt-form button[type=submit]")
    await expect(page.locator("#status")).to_have_text("Receipt confirmed")
    queued = await waiting(page)
    assert len(queued) == 5 and len(set(queued)) == 5

    await page.reload()  # still offline: the page comes from the service worker, the queue from IndexedDB
    await expect(page.locator("h1")).to_have_text("Shree Janata School")
    await expect(page.locator("#queue-items li")).to_have_count(len(queued))  # drawn once IndexedDB answers
    assert await waiting(page) == queued
    await expect(page.locator("#status")).to_have_text("Receipt confirmed")
    await expect(page.locator("#pending-note")).to_be_visible()
    await shoot(page, screenshot_dir, "offline-queue-en")
    await page.goto("/partner")  # the list, as last seen, is readable offline too
    await expect(page.locator("h1")).to_have_text("My shipments")
    await expect(page.locator("#queue-items li")).to_have_count(len(queued))
    assert await waiting(page) == queued
    await page.goto(f"/partner/shipments/{field.mine}")
    await expect(page.locator("#status")).to_have_text("Receipt confirmed")
    async with httpx.AsyncClient(base_url=field.url, headers=field.admin) as http:
        nothing_yet = _ok(await http.get(f"/v1/shipments/{field.mine}"))
        assert nothing_yet["status"] == "planned" and nothing_yet["events"] == []

        await phone.set_offline(False)  # back in town
        await expect(page.locator("#queue")).to_be_hidden(timeout=30_000)
        await expect(page.locator("#status")).to_have_text("Receipt confirmed")
        shipment = _ok(await http.get(f"/v1/shipments/{field.mine}"))
        events = shipment["events"]
        assert [e["event_id"] for e in events] == queued  # exactly those, once each, in the order pressed
        assert [e["status"] for e in events] == [
            "handed_over",
            "in_transit",
            "out_for_delivery",
            "delivered",
            "receipt_confirmed",
        ]
        assert all(e["result"] == "applied" for e in events)
        proof = events[3]["proof"]
        assert proof["receiver_name"] == "Sita Sharma"
        assert proof["gps"] == {"lat": GPS["latitude"], "lon": GPS["longitude"]}
        assert proof["evidence"]["sha256"] == hashlib.sha256(jpeg).hexdigest()
        kept = await http.get(proof["evidence"]["url"])
        assert kept.content == jpeg
        outcomes = {p["package_id"]: p["outcome"] for p in events[4]["packages"]}
        assert outcomes.pop(damaged_box) == "damaged" and set(outcomes.values()) == {"accepted"}
        # SPEC §8: accepted boxes are delivered (disbursed), the damaged one written off.
        funds = _ok(await http.get("/v1/funds"))["packages"]
        assert funds["delivered"]["amount"] == 2 * COST
        assert funds["written_off"]["amount"] == COST
        assert _ok(await http.get("/v1/audit"))["ok"]
    assert problems == [], problems


async def test_a_refusal_is_shown_with_the_reason_until_dismissed(
    field: Field, phone: BrowserContext, screenshot_dir: Path
) -> None:
    page, problems = await watched(phone)
    await sign_in(page, field.key)
    await page.goto(f"/partner/shipments/{field.second}")
    await phone.set_offline(True)
    async with httpx.AsyncClient(base_url=field.url, headers=field.admin) as http:
        # Meanwhile the programme cancels the shipment, which the phone can't know without a network.
        cancel = {"event_id": "C-1", "status": "cancelled", "occurred_at": datetime.now(UTC).isoformat()}
        _ok(await http.post(f"/v1/shipments/{field.second}/events", json=cancel))
    await press(page, "handed_over")
    await phone.set_offline(False)
    refused = page.locator("#queue-items li.refused")
    await expect(refused).to_contain_text("Refused by the service")
    await expect(refused).to_contain_text("is cancelled; it can't go to handed_over")
    await page.reload()
    await expect(refused).to_contain_text("it can't go to handed_over")  # kept until dismissed
    await shoot(page, screenshot_dir, "refused-en")
    await refused.locator("button.dismiss").click()
    await expect(page.locator("#queue")).to_be_hidden()
    assert [p for p in problems if "409" not in p] == [], problems


async def test_another_partners_shipment_is_out_of_reach(field: Field, phone: BrowserContext) -> None:
    page, _ = await watched(phone)
    await sign_in(page, field.key)
    assert field.theirs not in await page.content()
    answer = await page.goto(f"/partner/shipments/{field.theirs}")
    assert answer is not None and answer.status == 404


async def test_the_pages_kept_for_offline_go_when_the_phones_session_does(
    field: Field, phone: BrowserContext
) -> None:
    # A phone of its own key: revoking it must not sign the other tests out.
    async with httpx.AsyncClient(base_url=field.url, headers=field.admin) as http:
        partner_id = _ok(await http.get(f"/v1/shipments/{field.mine}"))["logistics_partner_id"]
        key = _ok(
            await http.post(
                "/v1/api-keys",
                json={"role": "logistics", "name": "lost phone", "logistics_partner_id": partner_id},
            )
        )
    page, _ = await watched(phone)
    await sign_in(page, key["token"])
    await page.goto(f"/partner/shipments/{field.mine}")
    await expect(page.locator("h1")).to_have_text("Shree Janata School")  # kept for offline from now on
    async with httpx.AsyncClient(base_url=field.url, headers=field.admin) as http:
        assert (await http.delete(f"/v1/api-keys/{key['id']}")).status_code == 204  # the phone is lost
    await page.goto("/partner")  # the next time it has signal: the sign-in page
    await expect(page.locator("#api_key")).to_be_visible()
    kept = f"/partner/shipments/{field.mine}"
    assert await page.evaluate("url => caches.match(url, {ignoreVary: true}).then(Boolean)", kept) is False
    await phone.set_offline(True)
    try:
        with contextlib.suppress(PlaywrightError):
            await page.goto(kept)  # offline, nothing kept: the browser's own error page
        html = ""
        for _ in range(50):  # read once the browser has settled on whatever it shows
            try:
                html = await page.content()
                break
            except PlaywrightError:
                await asyncio.sleep(0.1)
        assert "Sita Sharma" not in html  # the teacher's name is no longer on the phone
    finally:
        await phone.set_offline(False)


SCRIPTS = {"ne": "Devanagari", "km": "Khmer", "my": "Myanmar"}
HEADINGS = {
    "en": "My shipments",
    "id": "Pengiriman saya",
    "ne": "मेरा ढुवानीहरू",
    "km": "ការដឹកជញ្ជូនរបស់ខ្ញុំ",
    "my": "ကျွန်ုပ်၏ ပို့ဆောင်မှုများ",
}


SCRIPT_RANGES = {"ne": (0x0900, 0x097F), "km": (0x1780, 0x17FF), "my": (0x1000, 0x109F)}


async def assert_drawn_in_its_script(page: Page, selector: str, language: str) -> None:
    """Chromium drew the element's text with a font for the language's script, and used other fonts only for
    what is not of that script (spaces, digits, punctuation): no character fell back to an empty box."""
    fonts = await fonts_of(page, selector)
    text = await page.inner_text(selector)
    low, high = SCRIPT_RANGES[language]
    others = sum(1 for c in text if not low <= ord(c) <= high)
    script_fonts = {f: n for f, n in fonts.items() if SCRIPTS[language] in f}
    assert script_fonts and sum(script_fonts.values()) > 0, (selector, fonts)
    assert sum(n for f, n in fonts.items() if f not in script_fonts) <= others, (selector, text, fonts)


async def fonts_of(page: Page, selector: str) -> dict[str, int]:
    """The fonts Chromium drew an element's text with, and how many glyphs from each (DevTools' CSS domain)."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("DOM.enable")
    await cdp.send("CSS.enable")
    root = await cdp.send("DOM.getDocument")
    node = await cdp.send("DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector})
    fonts = await cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
    await cdp.detach()
    return {f["familyName"]: f["glyphCount"] for f in fonts["fonts"]}


async def test_every_page_in_every_language_at_360_and_1280_px(
    field: Field, browser: Browser, screenshot_dir: Path
) -> None:
    for language, heading in HEADINGS.items():
        context = await browser.new_context(viewport=PHONE, locale="en-US", base_url=field.url)  # type: ignore[arg-type]
        try:
            page, problems = await watched(context)
            await page.goto(f"/language/{language}?next=/partner")
            await expect(page.locator("html")).to_have_attribute("lang", language)
            await shoot(page, screenshot_dir, f"sign-in-{language}")
            await page.fill("#api_key", field.key)
            await page.click("button[type=submit]")
            await expect(page.locator("h1")).to_have_text(heading)
            if language in SCRIPTS:
                # Every glyph of the heading comes from a font for its script: no empty boxes.
                await assert_drawn_in_its_script(page, "h1", language)
            await shoot(page, screenshot_dir, f"shipments-{language}")
            await page.goto(f"/partner/shipments/{field.mine}")
            await shoot(page, screenshot_dir, f"shipment-{language}")
            for form in ("delivered-form", "receipt-form"):
                await page.evaluate(f"document.getElementById('{form}').hidden = false")
                await expect(page.locator(f"#{form} h2")).to_be_visible()
                if language in SCRIPTS:
                    await assert_drawn_in_its_script(page, f"#{form} h2", language)
                await shoot(page, screenshot_dir, f"{form}-{language}")
                await page.evaluate(f"document.getElementById('{form}').hidden = true")
            assert problems == [], problems
        finally:
            await context.close()
