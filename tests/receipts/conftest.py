"""Receipts over a real programme: orders in, settled, pooled, packed, shipped and confirmed by schools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import bearer, create_key, create_partner, order_paid, send_event, settle
from tests.logistics.conftest import Shipping
from tests.packages.conftest import Pool, open_pool


@dataclass
class Buyers:
    """A programme whose public report is recomputed on every read, a platform key, a partner with its key."""

    shipping: Shipping
    platform_key: dict[str, str]

    @property
    def pool(self) -> Pool:
        return self.shipping.pool

    @property
    def client(self) -> httpx.AsyncClient:
        return self.pool.client

    async def order(self, merchant: dict[str, Any], order_id: str, amount: int) -> None:
        """A USD order whose donation is `amount` (the pool's merchants give 100 %)."""
        event = order_paid(
            order_id,
            merchant=str(merchant["external_id"]),
            currency="USD",
            items=[{"sku": "X", "quantity": 1, "amount": amount}],
            placed_at=self.pool.clock.now(),
        )
        assert (await send_event(self.client, self.pool.platform, event)).json() == {"status": "applied"}

    async def settle_and_pay(self) -> None:
        """Past the return window, settle, and pay every statement by bank transfer."""
        self.pool.clock.advance(timedelta(days=31))
        run = await settle(self.client, self.pool.admin, app=self.pool.app)
        for statement in run["statements"]:
            paid = await self.client.post(
                f"/v1/statements/{statement['id']}/payments",
                json={"reference": f"TT-{statement['id']}", "amount": statement["total"]},
                headers=self.pool.admin,
            )
            assert paid.status_code == 200, paid.text

    async def link(self, order_id: str, *, expect: int = 201, **choices: Any) -> dict[str, Any]:
        response = await self.client.post(
            f"/v1/orders/{order_id}/receipt-link", json=choices or None, headers=self.platform_key
        )
        assert response.status_code == expect, response.text
        return dict(response.json())

    async def receipt(self, url: str) -> dict[str, Any]:
        token = url.rsplit("/", 1)[1]
        response = await self.client.get(f"/v1/receipts/{token}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
async def buyers(database_url: str, tmp_path: Path) -> AsyncIterator[Buyers]:
    async with open_pool(
        database_url,
        tmp_path,
        transparency_refresh_seconds=0,
        public_url="https://give.example.org",
        settlement_schedule="0 3 * * *",  # daily at 03:00 UTC: receipts say when the next run bills an order
    ) as pool:
        partner = await create_partner(pool.client, pool.admin, name="Himalaya Express")
        pool.partner = partner
        partner_key = await create_key(
            pool.client, pool.admin, role="logistics", logistics_partner_id=partner["id"]
        )
        platform_key = await create_key(
            pool.client, pool.admin, role="platform", platform_id=pool.platform["id"]
        )
        yield Buyers(Shipping(pool, partner, bearer(partner_key["token"])), bearer(platform_key["token"]))
