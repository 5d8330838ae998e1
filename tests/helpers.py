"""Small keyword-only builders for test data, through the API wherever the API can build it."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from app.api_keys.service import create_api_key
from app.core.auth import Role

_seq = itertools.count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_token_directly(app: Any, *, role: str, name: str, **scope: str | None) -> str:
    """A key made the way `g4g create-api-key` makes one: straight through the service, no HTTP."""
    async with app.state.sessionmaker() as session, session.begin():
        _, token = await create_api_key(session, role=Role(role), name=name, **scope)
    return token


async def create_platform(
    client: httpx.AsyncClient, admin: dict[str, str], *, name: str | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/platforms", json={"name": name or f"Platform {next(_seq)}"}, headers=admin
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_merchant(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    platform_id: str | None = None,
    external_id: str | None = None,
    name: str = "Tea House",
    country: str = "CN",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        # Never "shop-<n>": the `shop` fixture's merchant is "shop-88", which the counter would reach in a long run.
        "external_id": external_id or f"merchant-{next(_seq)}",
        "name": name,
        "country": country,
    }
    if platform_id is not None:
        body["platform_id"] = platform_id
    response = await client.post("/v1/merchants", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_key(
    client: httpx.AsyncClient, admin: dict[str, str], *, role: str, name: str = "key", **scope: str
) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json={"role": role, "name": name, **scope}, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """An RFC 9457 problem of the given status and stable type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["status"] == status
    assert body["type"].endswith("/" + kind), body
    assert body["title"]
    return body


def signed_headers(
    secret: str, body: bytes, *, webhook_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers, signed the way a platform signs."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, at, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def order_paid(
    order_id: str,
    *,
    merchant: str,
    currency: str = "CNY",
    items: list[dict[str, Any]] | None = None,
    placed_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "type": "order.paid",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "order_id": order_id,
            "merchant_id": merchant,
            "currency": currency,
            "placed_at": (placed_at or datetime.now(UTC)).isoformat(),
            "items": items if items is not None else [{"sku": "TEA-01", "quantity": 2, "amount": 12800}],
        },
    }


def order_refunded(
    order_id: str, refund_id: str, amount: int, *, merchant: str, currency: str = "CNY"
) -> dict[str, Any]:
    return {
        "type": "order.refunded",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "order_id": order_id,
            "merchant_id": merchant,
            "refund_id": refund_id,
            "currency": currency,
            "amount": amount,
        },
    }


def order_cancelled(order_id: str, *, merchant: str) -> dict[str, Any]:
    return {
        "type": "order.cancelled",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"order_id": order_id, "merchant_id": merchant},
    }


async def send_event(
    client: httpx.AsyncClient,
    platform: dict[str, Any],
    event: dict[str, Any] | bytes,
    *,
    webhook_id: str | None = None,
    secret: str | None = None,
) -> httpx.Response:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = signed_headers(secret or platform["webhook_secret"], body, webhook_id=webhook_id)
    return await client.post(f"/v1/webhooks/orders/{platform['id']}", content=body, headers=headers)


async def set_rule(
    client: httpx.AsyncClient, headers: dict[str, str], merchant_id: str, **rule: Any
) -> dict[str, Any]:
    response = await client.put(f"/v1/merchants/{merchant_id}/donation-rule", json=rule, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def get_order(
    client: httpx.AsyncClient, admin: dict[str, str], platform_id: str, order_id: str
) -> httpx.Response:
    return await client.get(f"/v1/orders/{order_id}", params={"platform_id": platform_id}, headers=admin)


async def audit_ok(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    report = (await client.get("/v1/audit", headers=admin)).json()
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    return dict(report)


# ---- Love Packages: kinds, schools, students ----


async def create_partner(
    client: httpx.AsyncClient, admin: dict[str, str], *, name: str = "Himalaya Express"
) -> dict[str, Any]:
    response = await client.post("/v1/logistics-partners", json={"name": name}, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def kind_body(**overrides: Any) -> dict[str, Any]:
    """A package kind definition: a primary school box for Nepal, grades 1 to 3, at $25.00."""
    body: dict[str, Any] = {
        "name": "Primary starter box",
        "contents": [{"item": "Notebook", "quantity": 4}, {"item": "Pencil", "quantity": 6}],
        "unit_cost": {"amount": 2500, "currency": "USD"},
        "countries": ["NP"],
        "grades": ["1", "2", "3"],
    }
    body.update(overrides)
    return body


async def create_kind(client: httpx.AsyncClient, admin: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/package-kinds", json=kind_body(**overrides), headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def school_body(partner_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"Shree Janata School {next(_seq)}",
        "country": "NP",
        "region": "Bagmati",
        "logistics_partner_id": partner_id,
        "teacher_contact": {"name": "Sita Sharma", "phone": "+977 1-4412345", "email": "sita@example.org"},
    }
    body.update(overrides)
    return body


async def create_school(
    client: httpx.AsyncClient, admin: dict[str, str], *, partner_id: str, **overrides: Any
) -> dict[str, Any]:
    response = await client.post("/v1/schools", json=school_body(partner_id, **overrides), headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def roster_csv(rows: list[tuple[str, str]], *, header: str = "roster_code,grade") -> bytes:
    """A CSV import body, quoted where needed, with CRLF line ends as spreadsheets write them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header.split(","))
    writer.writerows(rows)
    return out.getvalue().encode()


async def import_students(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    school_id: str,
    rows: list[tuple[str, str]],
    *,
    as_csv: bool = False,
) -> httpx.Response:
    """Import (roster code, grade) rows. Take roster codes from `tests.roster_codes`, so the session can check
    that none reached a log."""
    if as_csv:
        return await client.post(
            f"/v1/schools/{school_id}/students",
            content=roster_csv(rows),
            headers=admin | {"content-type": "text/csv"},
        )
    body = {"students": [{"roster_code": code, "grade": grade} for code, grade in rows]}
    return await client.post(f"/v1/schools/{school_id}/students", json=body, headers=admin)


async def all_students(
    client: httpx.AsyncClient, admin: dict[str, str], school_id: str, **filters: str
) -> list[dict[str, Any]]:
    """Every student of a school, following the cursor."""
    students: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100, **filters}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"/v1/schools/{school_id}/students", params=params, headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        students += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return students


async def settle(
    client: httpx.AsyncClient, admin: dict[str, str], *, app: Any = None, **body: Any
) -> dict[str, Any]:
    """A settlement run started through the API and waited for. With `app` (an in-process service, whose tests
    turn the embedded worker off) its job runs here; otherwise the server's own worker runs it."""
    started = await client.post("/v1/settlement-runs", json=body, headers=admin)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    if app is not None:
        from tests.jobs import drain_jobs

        await drain_jobs(app)
    deadline = time.monotonic() + 60
    while True:
        run = (await client.get(f"/v1/settlement-runs/{run_id}", headers=admin)).json()
        if run["status"] in ("done", "failed") or time.monotonic() > deadline:
            assert run["status"] == "done", run
            return dict(run)
        await asyncio.sleep(0.05)


# Spreadsheet formula starts (with the full-width forms some locales accept), and a bare number, which is no formula.
_FORMULA_START = "=+-@\uff1d\uff0b\uff0d\uff20"
_BARE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def formula_cells(csv_file: str) -> list[str]:
    """Every piece of a CSV file that a spreadsheet could take for a formula, whichever separator (comma,
    semicolon, tab, pipe) it splits the lines on, with quotes honoured or not, spaces trimmed or not: [] when
    the file is safe to open."""
    found = []
    for line in re.split(r"\r\n|\r|\n", csv_file):
        for piece in re.split(r"[,;\t|]", line):
            start = piece.lstrip(' \u00a0"')
            if start and start[0] in _FORMULA_START and not _BARE_NUMBER.fullmatch(start.rstrip('"')):
                found.append(piece)
    return found


async def row_counts(app: Any, *tables: str) -> dict[str, int]:
    """How many rows each table holds: compared before and after a request to show what it changed."""
    async with app.state.engine.connect() as connection:
        return {
            table: (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
            for table in tables
        }
