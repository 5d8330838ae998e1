from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.core.clock import FrozenClock
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import create_platform, create_token_directly
from tests.settlement.conftest import STRIPE_WEBHOOK_SECRET, Programme, local_stripe
from tests.stripe_server import LocalStripe, close_stripe_client, stripe_client

__all__ = ["local_stripe", "reported_programme"]


@pytest.fixture
async def reported_programme(
    database_url: str, tmp_path: Path, local_stripe: LocalStripe
) -> AsyncIterator[Programme]:
    """The settlement tests' programme (frozen clock, Stripe at localstripe) with the public report recomputed on
    every read."""
    settings = make_settings(
        database_url,
        tmp_path,
        stripe_api_key="sk_test_g4g",
        stripe_api_base=local_stripe.url,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
        stripe_timeout_seconds=3,
        transparency_refresh_seconds=0,
    )
    clock = FrozenClock(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
            platform = await create_platform(client, admin)
            sc = stripe_client(local_stripe.url)
            try:
                yield Programme(app, client, admin, clock, sc, platform, database_url)
            finally:
                await close_stripe_client(sc)
