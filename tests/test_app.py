"""What every client and operator relies on, whatever the endpoint: problem+json, request ids, health."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.settings import Settings
from app.main import create_app
from tests.conftest import Shop
from tests.helpers import assert_problem, bearer, create_key, create_token_directly, order_paid, send_event


async def test_framework_errors_are_problem_json(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(await client.put("/v1/platforms", headers=admin), 405, "method-not-allowed")
    response = await client.post("/v1/platforms", json={"name": 7}, headers=admin)
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["body", "name"]


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) >= 16
    echoed = await client.get("/v1/platforms", headers={"X-Request-ID": "trace-abc-123"})
    assert echoed.status_code == 401 and echoed.headers["x-request-id"] == "trace-abc-123"
    # A caller cannot inject arbitrary text into our logs through the id.
    replaced = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert replaced.headers["x-request-id"] != "bad id\twith tab"


async def test_health_and_readiness(
    client: httpx.AsyncClient, app: object, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    caplog.set_level(logging.DEBUG)
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == app.state.schema_head  # type: ignore[attr-defined]
    # Probed every few seconds by an orchestrator: its request line, and nothing of Alembic's each time.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []

    async with app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.execute(text("UPDATE alembic_version SET version_num = 'somewhere-else'"))
    assert_problem(await client.get("/readyz"), 503, "not-ready")


async def test_metrics_are_prometheus_text_for_an_admin_only(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    platform_key = await create_key(client, admin, role="platform", platform_id=shop.platform["id"])
    await client.get("/healthz")
    assert_problem(await client.get("/metrics"), 401, "unauthorized")
    assert_problem(await client.get("/metrics", headers=bearer(platform_key["token"])), 403, "forbidden")
    response = await client.get("/metrics", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'g4g_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text


def test_every_api_route_reads_json_exactly(app: object) -> None:
    """A route outside `ExactJsonRoute` would read `999999999999999.99` as the float 1e15 again."""
    from fastapi.routing import APIRoute

    from app.core.json_body import ExactJsonRoute

    def api_routes(routes: list[Any]) -> list[APIRoute]:
        found: list[APIRoute] = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):  # FastAPI keeps an included router whole
                found += api_routes(route.original_router.routes)
        return found

    routes = api_routes(app.router.routes)  # type: ignore[attr-defined]
    assert len(routes) > 20
    assert all(isinstance(r, ExactJsonRoute) for r in routes), [
        r.path for r in routes if not isinstance(r, ExactJsonRoute)
    ]


def _sample(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


async def test_metrics_count_order_webhook_outcomes(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    applied = 'g4g_order_webhooks_total{outcome="applied"}'
    duplicate = 'g4g_order_webhooks_total{outcome="duplicate"}'
    before = (await client.get("/metrics", headers=admin)).text
    event = order_paid("TM-77", merchant=shop.external_id)
    await send_event(client, shop.platform, event, webhook_id="msg_metrics_1")
    await send_event(client, shop.platform, event, webhook_id="msg_metrics_1")  # a redelivery
    after = (await client.get("/metrics", headers=admin)).text
    assert _sample(after, applied) == _sample(before, applied) + 1
    assert _sample(after, duplicate) == _sample(before, duplicate) + 1
    assert 'g4g_statements{status="pending_payment"} 0.0' in after


async def test_with_a_metrics_address_the_main_port_has_no_metrics(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(settings.model_copy(update={"metrics_address": "127.0.0.1:9100"}))
    async with app.router.lifespan_context(app):
        token = await create_token_directly(app, role="admin", name="ops")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            assert_problem(await client.get("/metrics", headers=bearer(token)), 404, "not-found")


async def test_a_receipts_token_never_reaches_the_log(client: httpx.AsyncClient) -> None:
    log = Path(os.environ["G4G_TEST_LOGS_DIR"]) / f"service-{os.getpid()}.log"  # this process's service log
    start = log.stat().st_size
    token = "Tok3nThatOpensAReceipt" + "x" * 6
    for path in (f"/r/{token}", f"/r/{token}/qr.svg", f"/v1/receipts/{token}", f"/r/{token}/elsewhere"):
        await client.get(path)
    await client.get("/healthz")
    # The service's own lines: not the test client's (httpx logs each request it sends, the token included).
    logged = "\n".join(
        line for line in log.read_bytes()[start:].decode().splitlines() if "HTTP Request:" not in line
    )
    assert '"/healthz"' in logged and '"/r/{token}"' in logged  # the requests are logged, by their routes
    assert token not in logged
