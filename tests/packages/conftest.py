"""A programme with money in its pool, made the way it really is: orders in, settled, paid by bank transfer."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import FrozenClock
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import (
    create_kind,
    create_merchant,
    create_partner,
    create_platform,
    create_school,
    create_token_directly,
    import_students,
    order_paid,
    send_event,
    set_rule,
    settle,
)
from tests.roster_codes import roster_codes

_names = itertools.count(1)


@dataclass
class Pool:
    """The service on a frozen clock, with helpers to put attributed money in the pool and to make schools."""

    app: Any
    client: httpx.AsyncClient
    admin: dict[str, str]
    clock: FrozenClock
    platform: dict[str, Any]
    partner: dict[str, Any] = field(default_factory=dict)

    async def merchant(self, name: str | None = None) -> dict[str, Any]:
        """A merchant giving 100 % of USD order lines (so a donation is the line amount), paying by transfer."""
        merchant = await create_merchant(
            self.client, self.admin, platform_id=self.platform["id"], external_id=name or f"m{next(_names)}"
        )
        await set_rule(self.client, self.admin, merchant["id"], rate_bps=10_000)
        billing = await self.client.put(
            f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}, headers=self.admin
        )
        assert billing.status_code == 200, billing.text
        return merchant

    async def collect(self, orders: list[tuple[dict[str, Any], str, int]]) -> list[dict[str, Any]]:
        """Pay (merchant, order id, USD cents) orders, settle them and pay every statement by transfer, in the
        order their merchants first appear: money enters the pool in that order."""
        for merchant, order_id, amount in orders:
            event = order_paid(
                order_id,
                merchant=str(merchant["external_id"]),
                currency="USD",
                items=[{"sku": "X", "quantity": 1, "amount": amount}],
                placed_at=self.clock.now(),
            )
            assert (await send_event(self.client, self.platform, event)).json() == {"status": "applied"}
        self.clock.advance(timedelta(days=31))
        run = await settle(self.client, self.admin, app=self.app)
        statements = {s["merchant_id"]: s for s in run["statements"]}
        order = list(dict.fromkeys(m["id"] for m, _, _ in orders))
        for merchant_id in order:
            statement = statements[merchant_id]
            paid = await self.client.post(
                f"/v1/statements/{statement['id']}/payments",
                json={"reference": f"TT-{statement['id']}", "amount": statement["total"]},
                headers=self.admin,
            )
            assert paid.status_code == 200, paid.text
        return [statements[m] for m in order]

    async def school(
        self, students: list[str], *, codes: list[str] | None = None, **overrides: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A school with students in the given grades (registered in that order), with the given roster codes or
        new ones."""
        if not self.partner:
            self.partner = await create_partner(self.client, self.admin)
        school = await create_school(self.client, self.admin, partner_id=self.partner["id"], **overrides)
        codes = codes or roster_codes(len(students))
        imported = await import_students(
            self.client, self.admin, school["id"], list(zip(codes, students, strict=True))
        )
        assert imported.status_code == 200, imported.text
        listed = await self.client.get(
            f"/v1/schools/{school['id']}/students", params={"limit": 100}, headers=self.admin
        )
        return school, listed.json()["data"]

    async def kind(self, **overrides: Any) -> dict[str, Any]:
        return await create_kind(self.client, self.admin, **overrides)

    async def run(self, *, expect: int = 201, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/allocation-runs", json=body, headers=self.admin)
        assert response.status_code == expect, response.text
        return dict(response.json())

    async def funds(self) -> dict[str, Any]:
        return dict((await self.client.get("/v1/funds", headers=self.admin)).json())

    async def package(self, package_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.get(f"/v1/packages/{package_id}", headers=headers or self.admin)


@contextlib.asynccontextmanager
async def open_pool(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Pool]:
    clock = FrozenClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    app = create_app(make_settings(database_url, tmp_path, **settings), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
            platform = await create_platform(client, admin)
            yield Pool(app, client, admin, clock, platform)


@pytest.fixture
async def pool(database_url: str, tmp_path: Path) -> AsyncIterator[Pool]:
    async with open_pool(database_url, tmp_path) as opened:
        yield opened
