"""The console's tests: signing in with a key and a TOTP code computed here (pyotp), as an authenticator app would."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import httpx
import pyotp

from tests.web.conftest import csrf_token

_SECRET = re.compile(r'<code id="totp-secret">([A-Z2-7 ]+)</code>')
_RECOVERY = re.compile(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>")


@dataclass
class Operator:
    """An admin key with its enrolled second factor."""

    token: str
    secret: str
    recovery_codes: list[str]

    def code(self, at: datetime) -> str:
        return pyotp.TOTP(self.secret).at(at)


def secret_on(page: httpx.Response) -> str:
    found = _SECRET.search(page.text)
    assert found, "no TOTP secret on the enrolment page"
    return found.group(1).replace(" ", "")


async def give_key(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """The key on a fresh sign-in form (a session waiting for its code, if any, forgotten)."""
    for cookie in list(client.cookies.jar):
        if cookie.name == "g4g_admin":
            client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    form = await client.get("/admin")
    return await client.post("/admin/sign-in", data={"api_key": token, "csrf_token": csrf_token(form)})


async def enrol(client: httpx.AsyncClient, token: str, at: datetime) -> Operator:
    """First sign-in: the key, the QR code's secret, its first code; the recovery codes shown once."""
    page = await give_key(client, token)
    assert page.status_code == 200 and "<svg" in page.text
    secret = secret_on(page)
    done = await client.post(
        "/admin/enrol", data={"code": pyotp.TOTP(secret).at(at), "csrf_token": csrf_token(page)}
    )
    assert done.status_code == 200, done.text
    codes = _RECOVERY.findall(done.text)
    assert len(codes) == 10
    return Operator(token, secret, codes)


async def sign_in(client: httpx.AsyncClient, operator: Operator, code: str) -> httpx.Response:
    """A later sign-in: the key, then a code (TOTP or recovery)."""
    page = await give_key(client, operator.token)
    assert page.status_code == 303, page.text
    form = await client.get("/admin")
    assert "Second factor" in form.text
    return await client.post("/admin/second-factor", data={"code": code, "csrf_token": csrf_token(form)})
