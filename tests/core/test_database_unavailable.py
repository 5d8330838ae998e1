"""When the database goes away (a failover, SPEC §17): requests are answered 503 with `Retry-After` and change
nothing, never 2xx and never 500; once a server answers again every pool has reconnected by itself. Plus which
failures count as "the database is unavailable", and libpq's multi-host URLs."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import sqlalchemy.exc

from app.core.database import asyncpg_url, database_unavailable, driver_dsn
from app.main import create_app
from tests.conftest import make_settings
from tests.db_proxy import CuttableProxy
from tests.helpers import (
    assert_problem,
    create_key,
    create_merchant,
    create_platform,
    create_token_directly,
    order_paid,
    send_event,
    set_rule,
    settle,
)
from tests.live import free_port


def _wrapped_by_sqlalchemy(error: Exception) -> Exception:
    """How SQLAlchemy's asyncpg dialect raises a driver error: a DBAPIError caused by the dialect's error, caused
    by asyncpg's."""
    try:
        try:
            raise error
        except Exception as driver_error:
            raise RuntimeError("adapted") from driver_error
    except RuntimeError as adapted:
        return sqlalchemy.exc.OperationalError("SELECT 1", None, adapted)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.exceptions.TargetServerAttributeNotMatched("none of the hosts match read-write"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ],
    ids=type,
)
def test_losing_the_primary_counts_as_unavailable_however_it_is_wrapped(error: Exception) -> None:
    assert database_unavailable(error)
    assert database_unavailable(_wrapped_by_sqlalchemy(error))
    assert database_unavailable(ExceptionGroup("runs", [ValueError(), error]))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("a bug"),
    ],
    ids=type,
)
def test_other_failures_are_not_unavailability(error: Exception) -> None:
    assert not database_unavailable(error)
    assert not database_unavailable(_wrapped_by_sqlalchemy(error))


def test_libpq_multi_host_urls_reach_sqlalchemy_and_asyncpg_whole() -> None:
    url = "postgresql://g4g:s%40cret@10.0.0.1:5432,10.0.0.2:5433/g4g?target_session_attrs=read-write"
    sqlalchemy_url = asyncpg_url(url)
    assert sqlalchemy_url == (
        "postgresql+asyncpg://g4g:s%40cret@/g4g?host=10.0.0.1:5432&host=10.0.0.2:5433"
        "&target_session_attrs=read-write"
    )
    assert sqlalchemy.make_url(sqlalchemy_url).query["host"] == ("10.0.0.1:5432", "10.0.0.2:5433")
    assert driver_dsn(sqlalchemy_url) == url
    single = "postgresql://g4g@127.0.0.1:5432/g4g"
    assert driver_dsn(asyncpg_url(single)) == single


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[CuttableProxy]:
    upstream = urlsplit(database_url)
    socket_dir = parse_qs(upstream.query).get("host", [None])[0]  # the embedded server's Unix socket
    proxy = CuttableProxy(socket_dir or upstream.hostname or "127.0.0.1", upstream.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.cut()
    # Rarely, a connection that broke in the cut is left for the garbage collector to close (with a
    # ResourceWarning; where it is dropped was not found): collect it here, not in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
async def app_via_proxy(database_url: str, proxy: CuttableProxy, tmp_path: Path) -> AsyncIterator[Any]:
    """The service given two hosts, the first of which never answers, the second the proxy."""
    parts = urlsplit(database_url)
    user = parts.netloc.rpartition("@")[0]
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{proxy.port}"
    url = urlunsplit(parts._replace(netloc=f"{user}@{hosts}", query="target_session_attrs=read-write"))
    application = create_app(make_settings(url, tmp_path, api_key_cache_seconds=0))
    async with application.router.lifespan_context(application):
        yield application


async def test_requests_while_the_database_is_gone_get_503_and_change_nothing(
    app_via_proxy: Any, proxy: CuttableProxy
) -> None:
    transport = httpx.ASGITransport(app=app_via_proxy)
    async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
        admin = {
            "Authorization": f"Bearer {await create_token_directly(app_via_proxy, role='admin', name='ops')}"
        }
        platform = await create_platform(client, admin, name="Tmall")
        merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="shop-1")
        await set_rule(client, admin, merchant["id"], rate_bps=150, fixed_per_unit=[])
        key = {
            "Authorization": f"Bearer {(await create_key(client, admin, role='admin', name='q'))['token']}"
        }
        quote = {"platform_id": platform["id"], "merchant_id": "shop-1", "currency": "CNY"}
        quote["items"] = [{"sku": "A", "quantity": 1, "amount": 10000}]
        paid = order_paid("TM-1", merchant="shop-1")
        assert (await client.post("/v1/quotes", json=quote, headers=key)).status_code == 200
        assert (await send_event(client, platform, order_paid("TM-0", merchant="shop-1"))).status_code == 200

        await proxy.cut()
        answers = [
            await send_event(client, platform, paid, webhook_id="msg_during_cut"),
            await client.post("/v1/quotes", json=quote, headers=key),
            await client.get("/v1/platforms", headers=admin),
            await client.post("/v1/platforms", json={"name": "JD"}, headers=admin),
        ]
        for answer in answers:
            assert_problem(answer, 503, "database-unavailable")
            assert answer.headers["Retry-After"] == "2"

        await proxy.restore()
        # Every pool reconnects by itself: the retried delivery is applied now (it was not before), once.
        retried = await send_event(client, platform, paid, webhook_id="msg_during_cut")
        assert (retried.status_code, retried.json()) == (200, {"status": "applied"})
        assert (await client.post("/v1/quotes", json=quote, headers=key)).status_code == 200
        listed = await client.get("/v1/platforms", headers=admin)
        assert listed.status_code == 200
        assert [p["name"] for p in listed.json()["data"]] == ["Tmall"]  # the cut POST created nothing
        orders = await client.get("/v1/orders/TM-1", params={"platform_id": platform["id"]}, headers=admin)
        assert orders.status_code == 200


async def test_the_embedded_worker_reconnects_after_the_database_comes_back(
    database_url: str, proxy: CuttableProxy, tmp_path: Path
) -> None:
    parts = urlsplit(database_url)
    netloc = parts.netloc.rpartition("@")[0] + f"@127.0.0.1:{proxy.port}"
    url = urlunsplit(
        parts._replace(netloc=netloc, query="")
    )  # through the proxy, not a socket named in `host`
    # A job whose end could not be recorded (its connection broke) is picked again once its heartbeat is this old.
    application = create_app(make_settings(url, tmp_path, embedded_worker=True, job_heartbeat_seconds=2))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            token = await create_token_directly(application, role="admin", name="ops")
            admin = {"Authorization": f"Bearer {token}"}
            await settle(client, admin)  # the worker runs jobs
            await proxy.cut()  # its listening connection and every pooled one break
            await asyncio.sleep(0.5)
            await proxy.restore()
            # A connection pooled before the cut fails when next used (503; SQLAlchemy then renews its pool).
            assert (await client.get("/v1/settlement-runs", headers=admin)).status_code in (200, 503)
            # A run queued after the database came back is run by the same worker, reconnected by itself.
            assert (await settle(client, admin))["status"] == "done"
