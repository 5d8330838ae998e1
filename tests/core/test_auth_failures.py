"""Wrong API keys are counted in PostgreSQL, by client address and by key prefix: past the limit a caller gets 429
with `Retry-After` before its key is looked at, whichever server process it reaches."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.core.auth_failures import client_address
from app.core.clock import FrozenClock
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import assert_problem, bearer, create_token_directly

ADDRESS_LIMIT = 20  # the defaults
KEY_LIMIT = 10
ATTACKER = ("203.0.113.7", 50000)
SOMEONE_ELSE = ("198.51.100.20", 50000)


def wrong_key() -> str:
    return "g4g_" + secrets.token_urlsafe(32)  # a fresh prefix each time: only the address limit applies


class Site:
    """Two app instances on one database, as two server processes are: counts must hold across them."""

    def __init__(self, apps: list[object], clock: FrozenClock) -> None:
        self.apps = apps
        self.clock = clock

    def client(self, app: int, address: tuple[str, int]) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.apps[app], client=address)  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://g4g.test")


@pytest.fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    clock = FrozenClock(datetime(2026, 12, 1, 9, 0, 55, tzinfo=UTC))  # five seconds before a minute ends
    # No key cache: every request of the right key goes to the database (and past the limits), as a cache miss does.
    settings = make_settings(database_url, tmp_path, api_key_cache_seconds=0)
    apps = [create_app(settings, clock=clock), create_app(settings, clock=clock)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        yield Site(apps, clock)


async def test_two_hundred_wrong_keys_across_two_processes_get_twenty_401s_then_429s(site: Site) -> None:
    admin = await create_token_directly(site.apps[0], role="admin", name="ops")
    clients = [site.client(0, ATTACKER), site.client(1, ATTACKER)]
    statuses: list[int] = []
    for attempt in range(200):
        response = await clients[attempt % 2].get("/v1/platforms", headers=bearer(wrong_key()))
        statuses.append(response.status_code)
        if attempt == 20:  # over a minute boundary, which gives no fresh allowance
            site.clock.advance(timedelta(seconds=10))
        if response.status_code == 429:
            assert_problem(response, 429, "too-many-attempts")
            assert 1 <= int(response.headers["retry-after"]) <= 60
    assert statuses[:ADDRESS_LIMIT] == [401] * ADDRESS_LIMIT
    assert set(statuses[ADDRESS_LIMIT:]) == {429}

    # The attacker's address is refused even with a right key; another address is not.
    assert (await clients[0].get("/v1/platforms", headers=bearer(admin))).status_code == 429
    async with site.client(1, SOMEONE_ELSE) as other:
        assert (await other.get("/v1/platforms", headers=bearer(admin))).status_code == 200

    # Once the failures have left the window, the address may try again.
    wait = int((await clients[0].get("/v1/platforms", headers=bearer(wrong_key()))).headers["retry-after"])
    site.clock.advance(timedelta(seconds=wait))
    assert (await clients[1].get("/v1/platforms", headers=bearer(admin))).status_code == 200
    for client in clients:
        await client.aclose()


async def test_racing_wrong_keys_still_get_no_more_than_the_limit(site: Site) -> None:
    clients = [site.client(0, ATTACKER), site.client(1, ATTACKER)]
    answers = await asyncio.gather(
        *(clients[i % 2].get("/v1/platforms", headers=bearer(wrong_key())) for i in range(60))
    )
    counted = Counter(response.status_code for response in answers)
    assert counted[401] <= ADDRESS_LIMIT and counted[401] + counted[429] == 60, counted
    for client in clients:
        await client.aclose()


async def test_one_key_prefix_is_limited_from_every_address(site: Site) -> None:
    admin = await create_token_directly(site.apps[0], role="admin", name="ops")
    near_miss = admin[:12] + "x" * (len(admin) - 12)  # the right prefix, the rest wrong
    statuses = []
    for attempt in range(KEY_LIMIT + 5):
        async with site.client(attempt % 2, (f"192.0.2.{attempt}", 40000)) as client:
            statuses.append((await client.get("/v1/platforms", headers=bearer(near_miss))).status_code)
    assert statuses == [401] * KEY_LIMIT + [429] * 5
    async with site.client(0, SOMEONE_ELSE) as other:
        # Another key is unaffected; this prefix's own key waits out the minute like its guesser.
        assert (await other.get("/v1/platforms", headers=bearer(wrong_key()))).status_code == 401
        assert (await other.get("/v1/platforms", headers=bearer(admin))).status_code == 429
        site.clock.advance(timedelta(minutes=1))
        assert (await other.get("/v1/platforms", headers=bearer(admin))).status_code == 200


async def test_right_keys_and_missing_credentials_never_count(site: Site) -> None:
    admin = await create_token_directly(site.apps[0], role="admin", name="ops")
    async with site.client(0, ATTACKER) as client:
        for _ in range(ADDRESS_LIMIT * 2):
            assert (await client.get("/v1/platforms", headers=bearer(admin))).status_code == 200
            assert (await client.get("/v1/platforms")).status_code == 401
        assert (await client.get("/v1/platforms", headers=bearer(wrong_key()))).status_code == 401


async def test_the_quote_fast_path_counts_and_refuses_the_same_way(site: Site) -> None:
    quote = {"merchant_id": "mer_x", "currency": "CNY", "items": [{"sku": "A", "quantity": 1, "amount": 100}]}
    async with site.client(0, ATTACKER) as client:
        statuses = [
            (await client.post("/v1/quotes", json=quote, headers=bearer(wrong_key()))).status_code
            for _ in range(ADDRESS_LIMIT + 3)
        ]
        assert statuses == [401] * ADDRESS_LIMIT + [429] * 3
        refused = await client.post("/v1/quotes", json=quote, headers=bearer(wrong_key()))
        assert_problem(refused, 429, "too-many-attempts")
        assert refused.headers["retry-after"]


def test_an_ipv6_host_is_counted_with_its_whole_slash_64() -> None:
    assert client_address(("2001:db8:1:2::5", 1)) == client_address(("2001:db8:1:2:ffff::1", 1))
    assert client_address(("2001:db8:1:2::5", 1)) == "2001:db8:1:2::/64"
    assert client_address(("2001:db8:1:3::5", 1)) != client_address(("2001:db8:1:2::5", 1))
    assert client_address(("::ffff:203.0.113.7", 1)) == "203.0.113.7"
    assert client_address(None) == "unknown"
