"""Shipments made the way they really are: money collected, an allocation run, a partner with its own key."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import bearer, create_key, create_partner
from tests.packages.conftest import Pool
from tests.packages.conftest import pool as pool  # the fixture, for this folder too

_events = itertools.count(1)
PHOTO = b"a photo of the signed delivery note"


def proof(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "receiver_name": "Sita Sharma",
        "receiver_role": "teacher",
        "evidence": {
            "url": "https://evidence.example.org/pod/1.jpg",
            "sha256": hashlib.sha256(PHOTO).hexdigest(),
        },
        "gps": {"lat": 27.7172, "lon": 85.324},
    }
    body.update(overrides)
    return body


@dataclass
class Shipping:
    """A pool, one partner with its key, and helpers to make shipments and post their events."""

    pool: Pool
    partner: dict[str, Any]
    partner_key: dict[str, str]

    @property
    def client(self) -> httpx.AsyncClient:
        return self.pool.client

    @property
    def admin(self) -> dict[str, str]:
        return self.pool.admin

    def now(self) -> datetime:
        return self.pool.clock.now()

    async def shipment(
        self,
        grades: list[str],
        *,
        cost: int = 500,
        term: str = "2027-T1",
        kind: dict[str, Any] | None = None,
        codes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Money for one package per student, a school of the pool's partner with students in `grades` (with
        roster codes `codes`, or new ones), and a run: the school's planned shipment, as the programme reads it."""
        shop = await self.pool.merchant()
        await self.pool.collect([(shop, f"O-{next(_events)}", cost * len(grades))])
        kind = kind or await self.pool.kind(unit_cost={"amount": cost, "currency": "USD"})
        school, _ = await self.pool.school(grades, codes=codes)
        run = await self.pool.run(term=term, package_kind_id=kind["id"])
        [served] = [s for s in run["schools"] if s["school_id"] == school["id"]]
        return await self.read(served["shipment_id"], self.admin)

    async def read(self, shipment_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.client.get(f"/v1/shipments/{shipment_id}", headers=headers or self.partner_key)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def post(
        self,
        shipment_id: str,
        status: str,
        *,
        at: datetime | None = None,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {
            "event_id": event_id or f"E-{next(_events)}",
            "status": status,
            "occurred_at": (at or self.now()).isoformat(),
            **extra,
        }
        if status == "delivered" and "proof" not in extra:
            body["proof"] = proof()
        return await self.client.post(
            f"/v1/shipments/{shipment_id}/events", json=body, headers=headers or self.partner_key
        )

    async def walk(
        self, shipment_id: str, statuses: list[str], *, step: timedelta = timedelta(hours=1)
    ) -> None:
        """Post each status in turn, an hour apart (the clock follows), each one applied."""
        for status in statuses:
            self.pool.clock.advance(step)
            answer = await self.post(shipment_id, status)
            assert answer.status_code == 201, answer.text
            assert answer.json()["result"] == "applied", answer.json()

    async def count(self, sql: str, **params: Any) -> int:
        async with self.pool.app.state.engine.connect() as connection:
            return int((await connection.execute(text(sql), params)).scalar_one())

    async def balances(self) -> dict[str, int]:
        packages = (await self.pool.funds())["packages"]
        return {stage: money["amount"] for stage, money in packages.items()}


@pytest.fixture
async def shipping(pool: Pool) -> AsyncIterator[Shipping]:
    partner = await create_partner(pool.client, pool.admin, name="Himalaya Express")
    pool.partner = partner
    key = await create_key(pool.client, pool.admin, role="logistics", logistics_partner_id=partner["id"])
    yield Shipping(pool, partner, bearer(key["token"]))
