"""The billing page through the ASGI app: Stripe.js allowed on it alone, and its script's calls guarded like forms.
(Adding a card end to end, in a browser with localstripe's Stripe.js, is in test_browser.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.web.security import DEFAULT_CSP
from tests.conftest import make_settings
from tests.helpers import assert_problem, create_key, create_merchant, create_platform, create_token_directly
from tests.settlement.conftest import local_stripe
from tests.stripe_server import LocalStripe
from tests.web.conftest import csrf_token, sign_in

__all__ = ["local_stripe"]


@pytest.fixture
async def card_site(
    database_url: str, tmp_path: Path, local_stripe: LocalStripe
) -> AsyncIterator[dict[str, Any]]:
    """The service with Stripe at localstripe and a publishable key; two merchants with keys."""
    settings = make_settings(
        database_url,
        tmp_path,
        stripe_api_key="sk_test_g4g",
        stripe_api_base=local_stripe.url,
        stripe_publishable_key="pk_test_g4g",
        stripe_js_url=f"{local_stripe.url}/js.stripe.com/v3/",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
            platform = await create_platform(client, admin)
            shops = [
                await create_merchant(client, admin, platform_id=platform["id"], external_id=name, name=name)
                for name in ("tea", "rival")
            ]
            keys = [await create_key(client, admin, role="merchant", merchant_id=m["id"]) for m in shops]
            yield {
                "client": client,
                "transport": transport,
                "admin": admin,
                "shops": shops,
                "keys": keys,
                "stripe": local_stripe.url,
            }


async def test_only_the_billing_page_may_load_stripe_js(card_site: dict[str, Any]) -> None:
    client = card_site["client"]
    await sign_in(client, card_site["keys"][0]["token"])
    page = await client.get("/merchant/billing")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    stripe = card_site["stripe"]
    assert f"script-src 'self' {stripe};" in policy
    assert f"frame-src {stripe} https://hooks.stripe.com;" in policy
    assert f"connect-src 'self' {stripe};" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert f'<script src="{stripe}/js.stripe.com/v3/"></script>' in page.text
    assert '<script src="/static/billing.js" defer></script>' in page.text
    assert 'data-publishable-key="pk_test_g4g"' in page.text
    assert "No card added yet." in page.text
    for elsewhere in ("/", "/merchant"):
        assert (await client.get(elsewhere)).headers["content-security-policy"] == DEFAULT_CSP


async def test_the_pages_script_is_guarded_like_a_form(card_site: dict[str, Any]) -> None:
    client: httpx.AsyncClient = card_site["client"]
    assert_problem(await client.post("/merchant/billing/setup-intent"), 401, "unauthorized")
    await sign_in(client, card_site["keys"][0]["token"])
    token = csrf_token(await client.get("/merchant"))
    assert_problem(await client.post("/merchant/billing/setup-intent"), 403, "forbidden")
    wrong = await client.post("/merchant/billing/setup-intent", headers={"X-CSRF-Token": "guess"})
    assert_problem(wrong, 403, "forbidden")
    cross = await client.post(
        "/merchant/billing/setup-intent", headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert_problem(cross, 403, "forbidden")

    setup = await client.post("/merchant/billing/setup-intent", headers={"X-CSRF-Token": token})
    assert setup.status_code == 200, setup.text
    seti = setup.json()["setup_intent_id"]
    assert seti.startswith("seti_") and setup.json()["client_secret"].startswith(seti + "_secret_")
    # Not confirmed in a browser yet: nothing to complete.
    early = await client.post(
        f"/merchant/billing/setup-intent/{seti}/complete", headers={"X-CSRF-Token": token}
    )
    assert_problem(early, 409, "setup-not-complete")

    # Another merchant cannot complete this merchant's setup.
    async with httpx.AsyncClient(transport=card_site["transport"], base_url="http://g4g.test") as rival:
        await sign_in(rival, card_site["keys"][1]["token"])
        rival_token = csrf_token(await rival.get("/merchant"))
        taken = await rival.post(
            f"/merchant/billing/setup-intent/{seti}/complete", headers={"X-CSRF-Token": rival_token}
        )
        assert_problem(taken, 404, "not-found")
    bad = await client.post(
        "/merchant/billing/setup-intent/not-a-seti/complete", headers={"X-CSRF-Token": token}
    )
    assert bad.status_code == 422


async def test_without_stripe_the_page_offers_no_card_and_loads_no_script(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str]
) -> None:
    platform = await create_platform(client, admin)
    merchant = await create_merchant(client, admin, platform_id=platform["id"])
    key = await create_key(client, admin, role="merchant", merchant_id=merchant["id"])
    assert (await client.get("/merchant/billing")).headers["location"] == "/merchant"  # not signed in
    await sign_in(client, key["token"])
    page = await client.get("/merchant/billing")
    assert page.headers["content-security-policy"] == DEFAULT_CSP
    assert (
        "<script" not in page.text
        and "Cards are not set up on this service" in page.text
        and "STRIPE_PUBLISHABLE_KEY" in page.text
    )
    token = csrf_token(await client.get("/merchant"))
    refused = await client.post("/merchant/billing/setup-intent", headers={"X-CSRF-Token": token})
    assert_problem(refused, 503, "stripe-not-configured")
