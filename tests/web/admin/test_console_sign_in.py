"""Signing in to the console through the ASGI app: an admin key and a TOTP second factor (enrolled on first use,
a code never accepted twice, recovery codes once each), short sliding sessions, CSRF on every form, and no way in
with another role's key or after the key is revoked."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
from sqlalchemy import text

from app.core.clock import FrozenClock
from tests.helpers import create_key
from tests.web.admin.conftest import Operator, enrol, give_key, secret_on, sign_in
from tests.web.conftest import csrf_token

START = datetime(2026, 12, 6, 9, 0, 5, tzinfo=UTC)  # 5 s into a 30-second TOTP step


def assert_console_page(page: httpx.Response) -> None:
    """A private page under the strict policy: no inline script or style, never cached."""
    assert page.headers["content-type"].startswith("text/html")
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script" not in page.text and "<style" not in page.text and " style=" not in page.text


def frozen(app: Any) -> FrozenClock:
    clock = FrozenClock(START)
    app.state.clock = clock
    return clock


async def test_first_sign_in_enrols_a_factor_shown_once_then_codes_sign_in(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    clock = frozen(app)
    page = await give_key(client, admin_token)
    assert page.status_code == 200
    assert_console_page(page)
    assert "<svg" in page.text and 'class="segno"' in page.text  # the QR code, inline, drawn here
    secret = secret_on(page)
    assert len(secret) == 32
    # The QR code is shown once: coming back gives the key form again, and a new key entry a new secret.
    assert "Admin API key" in (await client.get("/admin")).text
    page = await give_key(client, admin_token)
    assert secret_on(page) != secret
    secret = secret_on(page)
    wrong = await client.post("/admin/enrol", data={"code": "000000", "csrf_token": csrf_token(page)})
    assert wrong.status_code == 401 and "not right" in wrong.text

    page = await give_key(client, admin_token)
    secret = secret_on(page)
    done = await client.post(
        "/admin/enrol", data={"code": pyotp.TOTP(secret).at(clock.now()), "csrf_token": csrf_token(page)}
    )
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-9-]+)</code></li>", done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    overview = await client.get("/admin")
    assert overview.status_code == 200 and "Ledger audit" in overview.text
    assert_console_page(overview)

    # Stored: the secret encrypted, the recovery codes hashed.
    async with app.state.engine.connect() as db:
        stored = (await db.execute(text("SELECT secret_encrypted FROM admin_factors"))).scalar_one()
        hashes = (await db.execute(text("SELECT code_hash FROM admin_recovery_codes"))).scalars().all()
    assert secret not in stored and len(hashes) == 10
    assert all(code.encode() not in bytes(h) for h in hashes for code in codes)

    # Signing in again needs a code, not a new enrolment.
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(overview)})
    clock.advance(timedelta(seconds=30))
    operator = Operator(admin_token, secret, codes)
    answer = await sign_in(client, operator, operator.code(clock.now()))
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    assert "Ledger audit" in (await client.get("/admin")).text


async def test_a_code_is_never_accepted_twice(client: httpx.AsyncClient, app: Any, admin_token: str) -> None:
    clock = frozen(app)
    operator = await enrol(client, admin_token, clock.now())
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    # The code that confirmed the factor is spent: the same one, within its window, is refused.
    replay = await sign_in(client, operator, operator.code(clock.now()))
    assert replay.status_code == 401 and "already used" in replay.text
    # So is an older one (the step before); the next step's code works, once.
    assert (
        await sign_in(client, operator, operator.code(clock.now() - timedelta(seconds=30)))
    ).status_code == 401
    clock.advance(timedelta(seconds=30))
    assert (await sign_in(client, operator, operator.code(clock.now()))).status_code == 303
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    again = await sign_in(client, operator, operator.code(clock.now()))
    assert again.status_code == 401 and "already used" in again.text


async def test_a_recovery_code_works_once(client: httpx.AsyncClient, app: Any, admin_token: str) -> None:
    clock = frozen(app)
    operator = await enrol(client, admin_token, clock.now())
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    code = operator.recovery_codes[3]
    used = await sign_in(client, operator, code.upper().replace("-", " "))  # typed loosely
    assert used.status_code == 303 and used.headers["location"] == "/admin?recovery_codes_left=9"
    assert "9 are left" in (await client.get(used.headers["location"])).text
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    assert (await sign_in(client, operator, code)).status_code == 401


async def test_wrong_codes_end_the_pending_session_and_count_like_wrong_keys(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    clock = frozen(app)
    operator = await enrol(client, admin_token, clock.now())
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    answers = [await sign_in(client, operator, "123456") for _ in range(1)]
    form = await client.get("/admin")
    for _ in range(3):
        answers.append(
            await client.post("/admin/second-factor", data={"code": "1", "csrf_token": csrf_token(form)})
        )
    assert [a.status_code for a in answers] == [401] * 4
    last = await client.post("/admin/second-factor", data={"code": "1", "csrf_token": csrf_token(form)})
    assert last.status_code == 401 and "Sign in with your key again" in last.text
    # The pending session is gone: the right code no longer helps without the key again.
    late = await client.post(
        "/admin/second-factor",
        data={"code": operator.code(clock.now() + timedelta(seconds=30)), "csrf_token": csrf_token(form)},
    )
    assert late.status_code == 303 and late.headers["location"] == "/admin"
    assert "Admin API key" in (await client.get("/admin")).text
    # Five more on a new pending session: ten wrong codes in a minute and the key's prefix is over its limit,
    # the key itself refused (429) until the minute has passed. The tenth in a row also locks the factor.
    await give_key(client, admin_token)
    form = await client.get("/admin")
    answers = []
    for _ in range(5):
        answers.append(
            await client.post("/admin/second-factor", data={"code": "1", "csrf_token": csrf_token(form)})
        )
    assert [a.status_code for a in answers] == [401] * 4 + [403]
    assert "second factor is locked" in answers[-1].text
    limited = await give_key(client, admin_token)
    assert limited.status_code == 429 and "retry-after" in limited.headers
    clock.advance(timedelta(minutes=1))
    assert (await give_key(client, admin_token)).status_code == 403


async def test_sessions_slide_and_end_after_the_configured_minutes(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    assert app.state.settings.admin_session_minutes == 30
    clock = frozen(app)
    await enrol(client, admin_token, clock.now())
    for _ in range(3):  # an hour and a half of work, a page every 25 minutes
        clock.advance(timedelta(minutes=25))
        assert "Ledger audit" in (await client.get("/admin")).text
    clock.advance(timedelta(minutes=30, seconds=1))
    assert "Admin API key" in (await client.get("/admin")).text


async def test_every_form_needs_its_csrf_token_and_this_origin(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    clock = frozen(app)
    await enrol(client, admin_token, clock.now())
    token = csrf_token(await client.get("/admin"))
    for data in ({}, {"csrf_token": "forged"}):
        refused = await client.post("/admin/fx-rates", data={"currency": "CNY", "rate": "0.14", **data})
        assert refused.status_code == 403 and "expired" in refused.text
    cross = await client.post(
        "/admin/fx-rates",
        data={"currency": "CNY", "rate": "0.14", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert "0.14" not in (await client.get("/admin/fx-rates")).text
    unknown = await client.post(
        "/admin/fx-rates", data={"currency": "ZZZ", "rate": "0.14", "csrf_token": token}
    )
    assert unknown.status_code == 409 and "Nothing was changed" in unknown.text
    done = await client.post("/admin/fx-rates", data={"currency": "CNY", "rate": "0.14", "csrf_token": token})
    assert done.status_code == 303
    assert "0.14 USD" in (await client.get("/admin/fx-rates")).text
    # The sign-in form too: its token is a cookie's.
    client.cookies.clear()
    assert (await client.post("/admin/sign-in", data={"api_key": admin_token})).status_code == 403


async def test_other_roles_keys_do_not_open_the_console(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Any
) -> None:
    merchant = await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"])
    platform = await create_key(client, admin, role="platform", platform_id=shop.platform["id"])
    for key in (merchant, platform):
        refused = await give_key(client, key["token"])
        assert refused.status_code == 401 and "not a valid admin API key" in refused.text
        assert "g4g_admin" not in refused.headers.get("set-cookie", "")
    for path in ("/admin/schools", "/admin/api-keys", "/admin/statements"):
        assert (await client.get(path)).headers.get("location") == "/admin"
    assert (await client.get("/admin/shipments/shp_1/evidence/evd_1")).status_code == 404


async def test_revoking_the_key_ends_its_sessions(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str]
) -> None:
    clock = frozen(app)
    second = await create_key(client, admin, role="admin")
    await enrol(client, second["token"], clock.now())
    assert "Ledger audit" in (await client.get("/admin")).text
    assert (await client.delete(f"/v1/api-keys/{second['id']}", headers=admin)).status_code == 204
    assert "Admin API key" in (await client.get("/admin")).text
    assert (await client.get("/admin/schools")).headers["location"] == "/admin"


async def test_no_console_form_is_accepted_without_its_csrf_token(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    """Every POST under /admin, signed in, with everything but the token: refused before anything is done."""
    from fastapi.routing import APIRoute

    from app.web.admin.endpoints import router

    clock = frozen(app)
    await enrol(client, admin_token, clock.now())
    posts = [r.path for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods]
    assert len(posts) >= 15
    for path in posts:
        if path in ("/admin/sign-in", "/admin/enrol", "/admin/second-factor"):
            continue  # the sign-in forms: checked above (the session is verified, so these go back to /admin)
        url = re.sub(r"\{[a-z_]+\}", "x_1", path)
        files = (
            {"csv_file": ("class.csv", b"roster_code,grade\nA-1,1\n", "text/csv")}
            if "import" in path
            else None
        )
        answer = await client.post(
            url, data={"csrf_token": "forged", "currency": "CNY", "rate": "1"}, files=files
        )
        assert answer.status_code == 403 and "This form has expired" in answer.text, (
            path,
            answer.status_code,
        )
    assert "Ledger audit" in (await client.get("/admin")).text  # still signed in: sign-out was refused too


async def test_waiting_for_the_code_one_can_start_again_with_another_key(
    client: httpx.AsyncClient, app: Any, admin_token: str
) -> None:
    clock = frozen(app)
    await enrol(client, admin_token, clock.now())
    await client.post("/admin/sign-out", data={"csrf_token": csrf_token(await client.get("/admin"))})
    await give_key(client, admin_token)
    waiting = await client.get("/admin")
    assert "Use another key" in waiting.text
    again = await client.post("/admin/sign-out", data={"csrf_token": csrf_token(waiting)})
    assert again.status_code == 303
    assert "Admin API key" in (await client.get("/admin")).text
