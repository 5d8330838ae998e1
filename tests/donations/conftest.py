from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.helpers import create_merchant, create_platform, set_rule


@dataclass
class Shop:
    """A platform with one registered merchant whose rule is 150 bps plus ¥0.02 a unit on CNY orders."""

    platform: dict[str, Any]
    merchant: dict[str, Any]

    @property
    def external_id(self) -> str:
        return str(self.merchant["external_id"])


# TEA-01 × 2 at 12800: 12800 × 150 / 10000 + 2 × 2 = 196.
DEFAULT_DONATION = 196


@pytest.fixture
async def shop(client: httpx.AsyncClient, admin: dict[str, str]) -> Shop:
    platform = await create_platform(client, admin, name="Tmall")
    merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="shop-88")
    await set_rule(
        client, admin, merchant["id"], rate_bps=150, fixed_per_unit=[{"amount": 2, "currency": "CNY"}]
    )
    return Shop(platform, merchant)
