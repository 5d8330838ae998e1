"""Small keyword-only builders for test data, through the API wherever the API can build it."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

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
        "external_id": external_id or f"shop-{next(_seq)}",
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
