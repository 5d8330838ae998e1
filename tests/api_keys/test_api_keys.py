from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import text

from tests.helpers import assert_problem, bearer, create_key, create_merchant, create_platform


async def test_token_is_shown_once_and_stored_only_as_a_hash(
    client: httpx.AsyncClient, admin: dict[str, str], app: object
) -> None:
    created = await create_key(client, admin, role="admin", name="second operator")
    token = created["token"]
    assert created["id"].startswith("key_") and token.startswith("g4g_")
    assert created["token_prefix"] == token[:12]

    listed = (await client.get("/v1/api-keys", headers=admin)).json()["data"]
    assert all("token" not in row for row in listed)
    assert (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json().get("token") is None

    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        stored = (
            await connection.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": created["id"]})
        ).one()
        dump = " ".join(str(value) for value in stored)
    assert token not in dump
    assert stored.token_hash == hashlib.sha256(token.encode()).digest()

    assert (await client.get("/v1/platforms", headers=bearer(token))).status_code == 200


async def test_revoked_key_is_refused_from_the_next_request(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await create_key(client, admin, role="admin", name="temp")
    assert (await client.get("/v1/platforms", headers=bearer(created["token"]))).status_code == 200

    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204
    assert_problem(await client.get("/v1/platforms", headers=bearer(created["token"])), 401, "unauthorized")
    revoked_at = (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()["revoked_at"]
    assert revoked_at is not None

    # Revoking again changes nothing.
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204
    assert (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()[
        "revoked_at"
    ] == revoked_at
    assert_problem(await client.delete("/v1/api-keys/key_missing", headers=admin), 404, "not-found")


async def test_missing_malformed_or_unknown_credentials_are_401(client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer g4g_not-a-real-token"},
        {"Authorization": "Bearer " + "x" * 5000},
    ):
        response = await client.get("/v1/platforms", headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_each_role_needs_exactly_its_scope(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    platform = await create_platform(client, admin)
    merchant = await create_merchant(client, admin, platform_id=platform["id"])

    bad_bodies = [
        {"role": "platform", "name": "p"},
        {"role": "merchant", "name": "m", "platform_id": platform["id"]},
        {"role": "admin", "name": "a", "merchant_id": merchant["id"]},
        {"role": "logistics", "name": "l"},
        {"role": "auditor", "name": "x"},
        {"role": "platform", "name": "", "platform_id": platform["id"]},
    ]
    for body in bad_bodies:
        assert_problem(await client.post("/v1/api-keys", json=body, headers=admin), 422, "invalid-request")
    assert_problem(
        await client.post(
            "/v1/api-keys", json={"role": "platform", "name": "p", "platform_id": "plt_nope"}, headers=admin
        ),
        404,
        "not-found",
    )
    assert (
        len((await client.get("/v1/api-keys", headers=admin)).json()["data"]) == 1
    )  # only the test's own key

    key = await create_key(client, admin, role="merchant", merchant_id=merchant["id"])
    assert key["merchant_id"] == merchant["id"] and key["platform_id"] is None


async def test_only_admins_manage_keys(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    platform = await create_platform(client, admin)
    platform_key = await create_key(client, admin, role="platform", platform_id=platform["id"])
    response = await client.post(
        "/v1/api-keys", json={"role": "admin", "name": "escalate"}, headers=bearer(platform_key["token"])
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await client.get("/v1/api-keys", headers=bearer(platform_key["token"])), 403, "forbidden")
