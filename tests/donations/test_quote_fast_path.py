"""`POST /v1/quotes` is served by a lean ASGI path (`QuoteFastPath`) beside its FastAPI route. Both answer every
request alike: the same requests sent to the app and to a copy of it without the lean path get the same status,
body and headers. The lean path answers valid quotes itself (and their key, role and merchant errors); anything
else goes on to the route."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.clock import FrozenClock
from app.core.settings import Settings
from app.donations.endpoints import QuoteFastPath
from app.main import create_app
from tests.conftest import Shop
from tests.helpers import bearer, create_key

QUOTE = {
    "merchant_id": "shop-88",
    "currency": "CNY",
    "items": [{"sku": "TEA-01", "quantity": 2, "amount": 12800}],
}
PLACED_AT = "2030-01-01T00:00:00Z"  # at or after the rule's start


@dataclass
class PassedOn:
    """The quote requests the lean path hands on to the FastAPI route."""

    app: ASGIApp
    requests: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/quotes":
            self.requests.append(scope["path"])
        await self.app(scope, receive, send)


def _lean_path_of(app: Any) -> QuoteFastPath:
    layer = app.build_middleware_stack()
    app.middleware_stack = layer
    while not isinstance(layer, QuoteFastPath):
        layer = layer.app
    return layer


@pytest.fixture
async def route_only(settings: Settings, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The same service on the same database, without the lean path; both on one stopped clock, so a quote
    "at now" is answered alike."""
    application = create_app(settings, clock=FrozenClock(datetime.fromisoformat(PLACED_AT)))
    app.state.clock = application.state.clock
    application.user_middleware = [m for m in application.user_middleware if m.cls is not QuoteFastPath]
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as http:
            yield http


@pytest.fixture
def passed_on(app: Any) -> PassedOn:
    lean = _lean_path_of(app)
    lean.app = PassedOn(lean.app)
    return lean.app


async def _both(
    client: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    *,
    headers: dict[str, str],
    content: bytes | Callable[[], AsyncIterator[bytes]],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """Sends one request to both apps (a streamed body made afresh for each) and checks they answer alike."""
    headers = {"X-Request-ID": "req-" + secrets.token_hex(8), **headers}
    lean, routed = [
        await http.post(
            "/v1/quotes", headers=headers, content=content() if callable(content) else content, params=params
        )
        for http in (client, route_only)
    ]
    assert (lean.status_code, lean.content) == (routed.status_code, routed.content)
    assert sorted(lean.headers.multi_items()) == sorted(routed.headers.multi_items())
    return lean


def _body(**changes: Any) -> bytes:
    return json.dumps({**QUOTE, "placed_at": PLACED_AT, **changes}).encode()


async def test_both_paths_answer_alike(
    client: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    passed_on: PassedOn,
    admin: dict[str, str],
    shop: Shop,
) -> None:
    platform_id = shop.platform["id"]
    platform = bearer((await create_key(client, admin, role="platform", platform_id=platform_id))["token"])
    merchant = bearer(
        (await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"]))["token"]
    )
    revoked = await create_key(client, admin, role="platform", platform_id=platform_id)
    assert (await client.delete(f"/v1/api-keys/{revoked['id']}", headers=admin)).status_code == 204
    json_type = {"Content-Type": "application/json"}

    async def streamed_too_big() -> AsyncIterator[bytes]:
        for _ in range(17):  # 17 × 64 KiB: over the 1 MiB limit, with no Content-Length
            yield b" " * 65536

    # Answered by the lean path itself: (what, status, headers, body)
    lean_cases: list[tuple[str, int, dict[str, str], bytes]] = [
        ("a platform's quote", 200, platform, _body()),
        ("an admin's quote for a platform", 200, admin, _body(platform_id=platform_id)),
        ("at now, not at a given time", 200, platform, json.dumps(QUOTE).encode()),
        (
            "JSON with a charset",
            200,
            {**platform, "Content-Type": "application/json; charset=utf-8"},
            _body(),
        ),
        ("an unknown merchant", 404, platform, _body(merchant_id="nobody")),
        ("another platform", 404, platform, _body(platform_id="plt_someone_else")),
        ("an admin naming no platform", 422, admin, _body()),
        ("an unknown key", 401, bearer("g4g_" + secrets.token_urlsafe(32)), _body()),
        ("not one of our tokens", 401, bearer("abc"), _body()),
        ("a revoked key", 401, bearer(revoked["token"]), _body()),
        ("a merchant's key", 403, merchant, _body()),
        # The key comes before the body, in both paths: a body from an unknown key is never read.
        ("bad JSON, unknown key", 401, bearer("g4g_x"), b"{"),
        ("an invalid quote, unknown key", 401, bearer("g4g_x"), b"[]"),
        ("a deep body, unknown key", 401, bearer("g4g_x"), b"[" * 100_000),
    ]
    for what, status, headers, content in lean_cases:
        lean = await _both(client, route_only, headers={**json_type, **headers}, content=content)
        assert lean.status_code == status, (what, lean.text)
        if status == 200:
            assert lean.json()["donation"] == {"amount": 196, "currency": "CNY"}  # 150 bps + CNY 0.02 a unit
        if status == 401:
            assert lean.headers["WWW-Authenticate"] == "Bearer"
    assert passed_on.requests == []

    # Passed on to the route, which answers them in its own order (the key, then the body).
    fractional = _body(items=[{"sku": "A", "quantity": 1, "amount": 999999999999999.99}])
    routed_cases: list[tuple[str, int, dict[str, str], bytes]] = [
        ("bad JSON", 422, {**json_type, **platform}, b'{"merchant_id": '),
        ("an empty body", 422, {**json_type, **platform}, b""),
        ("no items", 422, {**json_type, **platform}, _body(items=[])),
        ("an amount with a fraction", 422, {**json_type, **platform}, fractional),
        ("too many values", 413, {**json_type, **platform}, b"[" + b"[]," * 100_000 + b"[]]"),
        ("too deep", 422, {**json_type, **platform}, b"[" * 33 + b"]" * 33),
        ("another content type", 422, {**platform, "Content-Type": "text/plain"}, _body()),
        ("no content type", 422, platform, _body()),
        ("another content type, no key", 401, {"Content-Type": "text/plain"}, _body()),
        ("no credentials", 401, json_type, _body()),
        ("another scheme", 401, {**json_type, "Authorization": "Basic YTpi"}, _body()),
    ]
    for what, status, headers, content in routed_cases:
        lean = await _both(client, route_only, headers=headers, content=content)
        assert lean.status_code == status, (what, lean.text)
    lean = await _both(
        client, route_only, headers={**json_type, **platform}, content=_body(), params={"x": "1"}
    )
    assert lean.status_code == 422  # an unknown query parameter
    assert len(passed_on.requests) == len(routed_cases) + 1

    # Too big a body: refused from its Content-Length before either path, or while it streams.
    for too_big in (b" " * (1024 * 1024 + 1), streamed_too_big):
        lean = await _both(client, route_only, headers={**json_type, **platform}, content=too_big)
        assert lean.status_code == 413
