from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from app.core.clock import FrozenClock
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import create_merchant, create_platform, create_token_directly, set_rule, settle
from tests.stripe_server import LocalStripe, close_stripe_client, stripe_client

STRIPE_WEBHOOK_SECRET = "whsec_settlement_tests"
# Past the default return window: what was placed before it is final.
WINDOW = timedelta(days=30, seconds=1)


@pytest.fixture(scope="session")
def local_stripe() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@dataclass
class Programme:
    """The service with a frozen clock, Stripe pointed at localstripe, and a platform to send orders from."""

    app: Any
    client: httpx.AsyncClient
    admin: dict[str, str]
    clock: FrozenClock
    stripe: stripe.StripeClient
    platform: dict[str, Any]
    database_url: str

    async def shop(self, external_id: str, *, customer: str | None) -> dict[str, Any]:
        merchant = await create_merchant(
            self.client, self.admin, platform_id=self.platform["id"], external_id=external_id
        )
        await set_rule(
            self.client,
            self.admin,
            merchant["id"],
            rate_bps=150,
            fixed_per_unit=[{"amount": 2, "currency": "CNY"}],
        )
        if customer is not None:
            await link_customer(self.client, self.admin, self.stripe, merchant["id"], customer)
        return merchant

    async def settle(self, **body: Any) -> dict[str, Any]:
        return await settle(self.client, self.admin, app=self.app, **body)

    async def funds(self) -> dict[str, Any]:
        return dict((await self.client.get("/v1/funds", headers=self.admin)).json())

    async def stripe_event(
        self, event: dict[str, Any], *, secret: str = STRIPE_WEBHOOK_SECRET, at: int | None = None
    ) -> httpx.Response:
        body = json.dumps(event).encode()
        return await self.client.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={
                "Stripe-Signature": stripe_signature(body, secret, at=at),
                "content-type": "application/json",
            },
        )


async def link_customer(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    stripe_client: stripe.StripeClient,
    merchant_id: str,
    customer_id: str,
) -> None:
    """What an operator does to bill a merchant through an existing customer: the customer's metadata names the
    merchant (in Stripe), then an admin links it."""
    await stripe_client.v1.customers.update_async(customer_id, {"metadata": {"g4g_merchant_id": merchant_id}})
    response = await client.put(
        f"/v1/merchants/{merchant_id}/billing",
        json={"method": "stripe", "stripe_customer_id": customer_id},
        headers=admin,
    )
    assert response.status_code == 200, response.text


def stripe_signature(body: bytes, secret: str, *, at: int | None = None) -> str:
    timestamp = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def payment_intent_event(
    event_id: str,
    kind: str,
    statement_id: str,
    *,
    attempt: int = 1,
    amount: int = 0,
    currency: str = "cny",
    intent_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": intent_id or f"pi_{event_id}",
                "object": "payment_intent",
                "currency": currency,
                "status": "succeeded" if kind.endswith("succeeded") else "requires_payment_method",
                "amount": amount,
                "metadata": {"statement_id": statement_id, "attempt": str(attempt)},
                "last_payment_error": None
                if kind.endswith("succeeded")
                else {"message": "Your card was declined."},
            }
        },
    }


async def open_programme(
    database_url: str, tmp_path: Path, local_stripe: LocalStripe, *, api_base: str | None = None
) -> tuple[Any, Any]:
    settings = make_settings(
        database_url,
        tmp_path,
        stripe_api_key="sk_test_g4g",
        stripe_api_base=api_base or local_stripe.url,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
        stripe_timeout_seconds=3,
    )
    clock = FrozenClock(datetime.now(UTC))
    app = create_app(settings, clock=clock)
    return app, clock


@pytest.fixture
async def programme(database_url: str, tmp_path: Path, local_stripe: LocalStripe) -> AsyncIterator[Programme]:
    app, clock = await open_programme(database_url, tmp_path, local_stripe)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://g4g.test"
        ) as client:
            admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
            platform = await create_platform(client, admin)
            sc = stripe_client(local_stripe.url)
            try:
                yield Programme(app, client, admin, clock, sc, platform, database_url)
            finally:
                await close_stripe_client(sc)
