"""The pages through the ASGI app: what they show, their headers, languages, and the merchant's session."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.clock import FrozenClock
from app.core.csv_export import inert
from app.web.security import DEFAULT_CSP, csp
from tests.conftest import Shop
from tests.helpers import (
    create_key,
    create_merchant,
    formula_cells,
    get_order,
    order_paid,
    order_refunded,
    send_event,
    set_rule,
    settle,
)
from tests.web.conftest import csrf_token, sign_in


def assert_strict_page(response: httpx.Response) -> None:
    """HTML under the strict policy, with no inline script or style that it would block."""
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == DEFAULT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    html = response.text
    assert "<script" not in html and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert "Traceback" not in html


async def pay(client: httpx.AsyncClient, shop: Shop, order_id: str, **kwargs: Any) -> None:
    event = order_paid(order_id, merchant=shop.external_id, **kwargs)
    assert (await send_event(client, shop.platform, event)).json() == {"status": "applied"}


@pytest.fixture
async def two_shops(client: httpx.AsyncClient, admin: dict[str, str], shop: Shop) -> dict[str, Any]:
    """`shop` (tea, CNY) with three orders and a merchant key; a rival on the same platform with its own order."""
    rival = await create_merchant(client, admin, platform_id=shop.platform["id"], external_id="rival-1")
    await set_rule(client, admin, rival["id"], rate_bps=300)
    for n in (1, 2, 3):
        await pay(client, shop, f"TEA-ORDER-{n}")
    event = order_paid(
        "RIVAL-ORDER-1",
        merchant="rival-1",
        currency="USD",
        items=[{"sku": "X", "quantity": 1, "amount": 5000}],
    )
    assert (await send_event(client, shop.platform, event)).json() == {"status": "applied"}
    key = await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"])
    rival_key = await create_key(client, admin, role="merchant", merchant_id=rival["id"])
    return {"key": key, "rival": rival, "rival_key": rival_key}


async def test_the_public_page_shows_the_programme(
    client: httpx.AsyncClient, two_shops: dict[str, Any]
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert_strict_page(page)
    assert page.headers["content-language"] == "en"
    html = page.text
    assert "Where the money goes" in html
    assert re.search(r'id="total-orders">\s*<dt>Orders that gave</dt>\s*<dd>&lt;5</dd>', html)  # four orders
    assert re.search(r'id="total-merchants">\s*<dt>Merchants taking part</dt>\s*<dd>&lt;5</dd>', html)
    # Nothing is final yet: nothing raised; the pledged CNY is not valued without a rate.
    assert re.search(r'id="total-raised">\s*<dt>Money raised</dt>\s*<dd>\$0.00</dd>', html)
    assert "No exchange rate yet for CNY, USD" not in html and "No exchange rate yet for CNY" in html
    assert html.count("<svg") == 3 and html.count("<table") >= 5
    assert "Nothing to draw yet." in html  # nothing raised: the way to the pool has no steps yet
    assert "CN¥5.88" in html  # 3 × 196 fen pledged, in the table by currency

    css = await client.get("/static/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["content-security-policy"] == DEFAULT_CSP


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/v1/transparency", "/v1/nothing-here", "/docs", "/openapi.json"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path


async def test_the_language_follows_the_browser_and_the_switch(client: httpx.AsyncClient) -> None:
    indonesian = await client.get("/", headers={"Accept-Language": "id-ID,id;q=0.9,en;q=0.5"})
    assert indonesian.headers["content-language"] == "id"
    assert "Ke mana uangnya mengalir" in indonesian.text and "Where the money goes" not in indonesian.text
    assert '<html lang="id">' in indonesian.text
    assert "Accept-Language" in indonesian.headers["vary"]
    assert (await client.get("/", headers={"Accept-Language": "fr-FR, de"})).headers[
        "content-language"
    ] == "en"
    assert (await client.get("/", headers={"Accept-Language": "id;q=0, en"})).headers[
        "content-language"
    ] == "en"
    assert (await client.get("/", headers={"Accept-Language": ";;q=x,"})).status_code == 200

    switch = await client.get("/language/id", params={"next": "/merchant"})
    assert switch.status_code == 303 and switch.headers["location"] == "/merchant"
    assert re.search(r"g4g_lang=id; .*Max-Age=31536000", switch.headers["set-cookie"])
    # The choice beats the browser's.
    chosen = await client.get("/", headers={"Accept-Language": "en"})
    assert chosen.headers["content-language"] == "id"
    back = await client.get("/language/en", params={"next": "/"})
    assert back.headers["location"] == "/"
    assert (await client.get("/", headers={"Accept-Language": "id"})).headers["content-language"] == "en"

    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil", "javascript:alert(1)"):
        away = await client.get("/language/en", params={"next": elsewhere})
        assert away.headers["location"] == "/", elsewhere
    unknown = await client.get("/language/xx")
    assert unknown.status_code == 303 and "set-cookie" not in unknown.headers


async def test_a_merchant_signs_in_sees_only_its_own_data_and_signs_out(
    client: httpx.AsyncClient, app: Any, two_shops: dict[str, Any], shop: Shop
) -> None:
    form = await client.get("/merchant")
    assert form.status_code == 200 and 'action="/merchant/sign-in"' in form.text
    assert_strict_page(form)
    assert form.headers["cache-control"] == "no-store"

    signed = await sign_in(client, two_shops["key"]["token"])
    assert signed.status_code == 303 and signed.headers["location"] == "/merchant"
    cookie = signed.headers["set-cookie"]
    assert re.search(r"g4g_session=[A-Za-z0-9_-]{40,};", cookie)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie and "Secure" not in cookie
    token = client.cookies["g4g_session"]

    async with app.state.sessionmaker() as session:
        stored = (await session.execute(text("SELECT * FROM web_sessions"))).mappings().one()
    assert bytes(stored["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in str(dict(stored))

    board = await client.get("/merchant")
    assert board.status_code == 200
    assert_strict_page(board)
    assert board.headers["cache-control"] == "no-store"
    html = board.text
    assert "Tea House" in html and "TEA-ORDER-1" in html and "TEA-ORDER-3" in html
    assert "RIVAL-ORDER-1" not in html and two_shops["rival"]["id"] not in html
    assert re.search(r'id="current-rule">1.5% of each sale, CN¥0.02 per unit on CNY orders', html)
    assert "CN¥5.88" in html  # pledged: 3 × 196

    refused = await client.post("/merchant/sign-out", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert "TEA-ORDER-1" in (await client.get("/merchant")).text  # still signed in

    out = await client.post("/merchant/sign-out", data={"csrf_token": csrf_token(board)})
    assert out.status_code == 303 and 'g4g_session=""' in out.headers["set-cookie"]
    async with app.state.sessionmaker() as session:
        assert await session.scalar(text("SELECT count(*) FROM web_sessions")) == 0
    # The old cookie opens nothing any more.
    replay = httpx.AsyncClient(
        transport=client._transport, base_url="http://g4g.test", cookies={"g4g_session": token}
    )
    again = await replay.get("/merchant")
    assert 'action="/merchant/sign-in"' in again.text and "TEA-ORDER-1" not in again.text
    assert (await replay.get("/merchant/donations.csv")).status_code == 303


async def test_sign_in_refuses_wrong_keys_forged_forms_and_other_sites(
    client: httpx.AsyncClient, admin_token: str, two_shops: dict[str, Any]
) -> None:
    for wrong in ("g4g_not-a-real-key", "", "x" * 400, admin_token, "' OR 1=1 --"):
        page = await sign_in(client, wrong)
        assert page.status_code == 401, wrong
        assert "That is not a valid merchant API key" in page.text
        assert_strict_page(page)
        assert "g4g_session" not in client.cookies

    form = await client.get("/merchant")
    token = two_shops["key"]["token"]
    forged = await client.post("/merchant/sign-in", data={"api_key": token, "csrf_token": "guess"})
    assert forged.status_code == 403 and "This form has expired" in forged.text
    missing = await client.post("/merchant/sign-in", data={"api_key": token})
    assert missing.status_code == 403
    cross = await client.post(
        "/merchant/sign-in",
        data={"api_key": token, "csrf_token": csrf_token(form)},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert "g4g_session" not in client.cookies
    rubbish = await client.post(
        "/merchant/sign-in",
        content=b"\xff\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert rubbish.status_code in (403, 422)


async def test_sign_in_stops_a_guesser_with_429_and_retry_after(app: Any, two_shops: dict[str, Any]) -> None:
    def visitor(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://g4g.test")

    right = two_shops["key"]["token"]
    async with visitor("203.0.113.7") as guesser, visitor("198.51.100.20") as merchant:
        for _ in range(25):  # signing in with the right key never counts
            assert (await sign_in(guesser, right)).status_code == 303
            guesser.cookies.clear()
        statuses = []
        for _ in range(200):
            page = await sign_in(guesser, "g4g_" + secrets.token_urlsafe(32))
            statuses.append(page.status_code)
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        assert 1 <= int(page.headers["retry-after"]) <= 60
        assert "Too many wrong keys from here" in page.text
        assert_strict_page(page)
        guesser.cookies.set("g4g_lang", "id")
        assert "Terlalu banyak kunci yang salah" in (await sign_in(guesser, "g4g_guess")).text
        assert "g4g_session" not in guesser.cookies
        # The merchant, elsewhere, signs in with its key.
        assert (await sign_in(merchant, right)).status_code == 303


async def test_the_session_cookie_is_secure_over_https(app: Any, two_shops: dict[str, Any]) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://g4g.test"
    ) as client:
        signed = await sign_in(client, two_shops["key"]["token"])
        assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]
        assert "strict-transport-security" in signed.headers


async def test_revoking_the_key_or_expiry_ends_the_session(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], two_shops: dict[str, Any]
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    app.state.clock = clock
    await sign_in(client, two_shops["key"]["token"])
    assert "TEA-ORDER-1" in (await client.get("/merchant")).text
    clock.advance(timedelta(hours=8, seconds=1))
    assert "TEA-ORDER-1" not in (await client.get("/merchant")).text

    clock.set(datetime.now(UTC))
    await sign_in(client, two_shops["key"]["token"])
    assert "TEA-ORDER-1" in (await client.get("/merchant")).text
    assert (await client.delete(f"/v1/api-keys/{two_shops['key']['id']}", headers=admin)).status_code in (
        200,
        204,
    )
    assert "TEA-ORDER-1" not in (await client.get("/merchant")).text


async def test_the_csv_export_has_the_apis_figures_and_is_spreadsheet_safe(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, two_shops: dict[str, Any]
) -> None:
    await pay(client, shop, '=HYPERLINK("http://evil.example")')
    await pay(client, shop, "@SUM(A1)")
    await pay(client, shop, "INV-7;=cmd|'/Ccalc'!A0;")  # a formula where Excel splits on semicolons
    refund = order_refunded("TEA-ORDER-2", "R-1", 6400, merchant=shop.external_id)
    assert (await send_event(client, shop.platform, refund)).json() == {"status": "applied"}
    await sign_in(client, two_shops["key"]["token"])

    download = await client.get("/merchant/donations.csv")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert (
        download.headers["content-disposition"]
        == f'attachment; filename="donations-{shop.merchant["id"]}.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(download.text)))

    api: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get(f"/v1/merchants/{shop.merchant['id']}/donations", params=params, headers=admin)
        ).json()
        api += page["data"]
        if not (cursor := page["next_cursor"]):
            break
    assert len(rows) == len(api) == 6
    assert formula_cells(download.text) == []
    for row, expected in zip(rows, api, strict=True):
        assert row["order_id"] == inert(expected["order_id"])
        assert (row["stage"], row["currency"], row["placed_at"]) == (
            expected["stage"],
            expected["currency"],
            expected["placed_at"],
        )
        for field in ("donation", "reversed", "net"):
            assert int(row[f"{field}_minor_units"]) == expected[field]["amount"]
            # A bare number in major units (CNY: two places), as a spreadsheet adds it up.
            assert re.fullmatch(r"-?\d+\.\d\d", row[field])
            assert Decimal(row[field]) == Decimal(expected[field]["amount"]) / 100
    assert (
        sum(int(r["net_minor_units"]) for r in rows) == sum(e["net"]["amount"] for e in api) == 6 * 196 - 98
    )  # half of TEA-ORDER-2 refunded
    by_id = {r["order_id"]: r for r in rows}
    assert '\'=HYPERLINK("http://evil.example")' in by_id and "'@SUM(A1)" in by_id
    assert "INV-7;'=cmd|'/Ccalc'!A0;" in by_id
    assert by_id["TEA-ORDER-2"]["reversed"] == "0.98" and by_id["TEA-ORDER-2"]["net"] == "0.98"
    assert "RIVAL-ORDER-1" not in download.text


async def test_the_api_reference_is_served_from_here_under_the_pages_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy == csp(data_images=True) and "http" not in policy  # no other origin, no inline script
    assert "<script>" not in page.text and not re.search(r"\son[a-z]+=", page.text)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 4 and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
    assert "swagger-ui-5.35.0" in page.text  # pinned
    assert (await client.get(re.findall(r'data-openapi-url="([^"]+)"', page.text)[0])).json()["openapi"]
    old = await client.get("/redoc")
    assert old.status_code == 308 and old.headers["location"] == "/docs"


def _links(html: str, prefix: str) -> list[str]:
    return re.findall(rf'href="({re.escape(prefix)}[^"#]+)"', html)


async def test_a_statement_opens_its_lines_and_an_order_its_trail_as_the_api_shows_them(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], shop: Shop, two_shops: dict[str, Any]
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    app.state.clock = clock
    refund = order_refunded("TEA-ORDER-2", "R-1", 6400, merchant=shop.external_id)
    assert (await send_event(client, shop.platform, refund)).json() == {"status": "applied"}
    billing = await client.put(
        f"/v1/merchants/{shop.merchant['id']}/billing", json={"method": "bank_transfer"}, headers=admin
    )
    assert billing.status_code == 200, billing.text
    clock.advance(timedelta(days=app.state.settings.return_window_days, hours=1))
    run = await settle(client, admin, app=app)
    [statement_id] = [s["id"] for s in run["statements"] if s["merchant_id"] == shop.merchant["id"]]
    merchant_key = {"Authorization": f"Bearer {two_shops['key']['token']}"}
    api = (await client.get(f"/v1/statements/{statement_id}", headers=merchant_key)).json()

    await sign_in(client, two_shops["key"]["token"])
    board = (await client.get("/merchant")).text
    assert _links(board, "/merchant/statements/") == [f"/merchant/statements/{statement_id}"]
    page = await client.get(f"/merchant/statements/{statement_id}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert_strict_page(page)
    html = page.text
    assert re.search(r'id="statement-total"><dt>Amount</dt><dd>CN¥4.90</dd>', html)  # 196 + 98 + 196 fen
    assert api["total"] == {"amount": 490, "currency": "CNY"}
    assert re.search(r'id="statement-status"><dt>Status</dt><dd>Awaiting payment</dd>', html)
    rows = re.findall(
        r'<tr><th scope="row"><a href="/merchant/orders/[^"]+">([^<]+)</a></th><td data-label="Line">([^<]+)</td>'
        r'<td data-label="Amount">([^<]+)</td></tr>',
        html,
    )
    expected = [
        (line["order_id"], "Donation", f"CN¥{line['amount']['amount'] / 100:.2f}") for line in api["lines"]
    ]
    assert sorted(rows) == sorted(expected) and len(rows) == 3
    assert "CN¥0.98" in dict((r[0], r[2]) for r in rows)["TEA-ORDER-2"]

    # Each line opens its order's page.
    assert sorted(_links(html, "/merchant/orders/")) == sorted(_links(board, "/merchant/orders/"))

    # Every order on the dashboard opens its page, with the figures of GET /v1/orders/{order_id}.
    order_links = _links(board, "/merchant/orders/")
    assert len(order_links) == 3
    for link in order_links:
        order = await client.get(link)
        assert order.status_code == 200
        assert_strict_page(order)
        external = re.search(r"<h1>Order ([^<]+)</h1>", order.text)
        assert external is not None
        expected_order = (await get_order(client, admin, shop.platform["id"], external[1])).json()
        for field in ("donation", "reversed", "net"):
            amount = f"CN¥{expected_order[field]['amount'] / 100:.2f}"
            assert re.search(rf'id="order-{field}"><dt>[^<]+</dt><dd>{re.escape(amount)}</dd>', order.text)
        assert (
            expected_order["stage"] == "billed"
            and 'id="order-stage"><dt>Stage</dt><dd>Billed</dd>' in order.text
        )
        assert (
            expected_order["trail"] == []
            and 'id="order-trail"' in order.text
            and "Nothing yet." in order.text
        )
    indonesian = await client.get(order_links[0], headers={"Accept-Language": "id"})
    assert "Ke mana donasinya mengalir" in indonesian.text

    # Another merchant's statement and order are not found, as unknown ones are; and signed out, nothing opens.
    async with app.state.sessionmaker() as session:
        rival_order = await session.scalar(text("SELECT id FROM orders WHERE external_id = 'RIVAL-ORDER-1'"))
    rival = httpx.AsyncClient(transport=client._transport, base_url="http://g4g.test")
    await sign_in(rival, two_shops["rival_key"]["token"])
    assert (await rival.get(f"/merchant/statements/{statement_id}")).status_code == 404
    assert (await rival.get(order_links[0])).status_code == 404
    assert (await rival.get(f"/merchant/orders/{rival_order}")).status_code == 200
    assert (await client.get(f"/merchant/orders/{rival_order}")).status_code == 404
    assert (await client.get("/merchant/statements/stm_nothing")).status_code == 404
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://g4g.test")
    assert (await anonymous.get(f"/merchant/statements/{statement_id}")).status_code == 303
    assert (await anonymous.get(order_links[0])).status_code == 303


async def test_the_orders_list_pages_back_to_the_oldest_order(
    client: httpx.AsyncClient, shop: Shop, two_shops: dict[str, Any]
) -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    for n in range(1, 58):  # with the fixture's three: 60 orders, the oldest placed first
        await pay(client, shop, f"OLD-{n:02}", placed_at=start + timedelta(minutes=n))
    await sign_in(client, two_shops["key"]["token"])
    seen: list[str] = []
    url = "/merchant"
    pages = 0
    while True:
        page = await client.get(url)
        assert page.status_code == 200
        pages += 1
        seen += re.findall(r'href="/merchant/orders/[^"]+">([^<]+)</a>', page.text)
        older = re.search(r'id="older-orders" href="([^"]+)"', page.text)
        if older is None:
            break
        url = older[1].replace("&amp;", "&")
        assert 'id="newest-orders"' not in page.text or pages > 1
    assert pages == 2
    assert len(seen) == len(set(seen)) == 60
    assert seen[:3] == ["TEA-ORDER-3", "TEA-ORDER-2", "TEA-ORDER-1"] and seen[-1] == "OLD-01"
    assert 'id="newest-orders"' in page.text
    bad = await client.get("/merchant", params={"orders_before": "not an id!"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


async def test_the_switch_remembers_every_pages_language(client: httpx.AsyncClient) -> None:
    for code in ("zh-Hans", "id", "ne", "en"):
        switch = await client.get(f"/language/{code}", params={"next": "/"})
        assert f"g4g_lang={code};" in switch.headers["set-cookie"], code
    assert "g4g_lang" not in (await client.get("/language/fr")).headers.get("set-cookie", "")
