from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import assert_problem, bearer, create_key, create_platform


async def test_same_key_and_body_returns_the_first_answer(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    platform = await create_platform(client, admin)
    headers = admin | {"Idempotency-Key": "create-shop-1"}
    body = {"platform_id": platform["id"], "external_id": "tea", "name": "Tea", "country": "CN"}
    first = await client.post("/v1/merchants", json=body, headers=headers)
    # Same body written differently is the same request.
    again = await client.post(
        "/v1/merchants",
        content=b'{ "country": "CN", "name" :  "Tea", "external_id": "tea", "platform_id": "%s" }'
        % platform["id"].encode(),
        headers=headers | {"content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    listed = await client.get("/v1/merchants", params={"platform_id": platform["id"]}, headers=admin)
    assert [m["id"] for m in listed.json()["data"]] == [first.json()["id"]]


async def test_same_key_with_another_body_or_path_is_409(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = admin | {"Idempotency-Key": "k-1"}
    assert (await client.post("/v1/platforms", json={"name": "Tmall"}, headers=headers)).status_code == 201
    assert_problem(
        await client.post("/v1/platforms", json={"name": "JD"}, headers=headers),
        409,
        "idempotency-key-reused",
    )
    platform = await create_platform(client, admin)
    assert_problem(
        await client.post(
            "/v1/merchants",
            json={"platform_id": platform["id"], "external_id": "s", "name": "s", "country": "MM"},
            headers=headers,
        ),
        409,
        "idempotency-key-reused",
    )
    assert len((await client.get("/v1/platforms", headers=admin)).json()["data"]) == 2


async def test_failed_request_does_not_burn_the_key(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    headers = admin | {"Idempotency-Key": "k-2"}
    body = {"platform_id": "plt_missing", "external_id": "s", "name": "s", "country": "MM"}
    assert_problem(await client.post("/v1/merchants", json=body, headers=headers), 404, "not-found")
    platform = await create_platform(client, admin)
    ok = await client.post("/v1/merchants", json=body | {"platform_id": platform["id"]}, headers=headers)
    assert ok.status_code == 201


async def test_concurrent_retries_create_one_resource(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    platform = await create_platform(client, admin)
    headers = admin | {"Idempotency-Key": "burst"}
    body = {"platform_id": platform["id"], "external_id": "s", "name": "s", "country": "MM"}
    responses = await asyncio.gather(
        *(client.post("/v1/merchants", json=body, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9


async def test_concurrent_retries_of_a_secret_create_one_and_show_it_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = admin | {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/platforms", json={"name": "Shopee"}, headers=headers) for _ in range(10))
    )
    [created] = [r for r in responses if r.status_code == 201]
    for refused in (r for r in responses if r is not created):
        assert assert_problem(refused, 409, "secret-shown-once")["resource_id"] == created.json()["id"]
        assert created.json()["webhook_secret"] not in refused.text
    assert [p["id"] for p in (await client.get("/v1/platforms", headers=admin)).json()["data"]] == [
        created.json()["id"]
    ]


async def test_keys_belong_to_one_api_key(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    one, two = await create_platform(client, admin), await create_platform(client, admin)
    key_one = bearer((await create_key(client, admin, role="platform", platform_id=one["id"]))["token"])
    key_two = bearer((await create_key(client, admin, role="platform", platform_id=two["id"]))["token"])
    body = {"external_id": "shop", "name": "Shop", "country": "KH"}
    a = await client.post("/v1/merchants", json=body, headers=key_one | {"Idempotency-Key": "same"})
    b = await client.post("/v1/merchants", json=body, headers=key_two | {"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 201
    assert a.json()["platform_id"] == one["id"] and b.json()["platform_id"] == two["id"]


SECRET_CREATES = [
    pytest.param("/v1/api-keys", {"role": "admin", "name": "second operator"}, "token", id="api-key"),
    pytest.param("/v1/platforms", {"name": "Lazada"}, "webhook_secret", id="platform"),
    pytest.param(
        "/v1/webhook-endpoints",
        {"url": "https://hooks.example.org/g4g", "events": ["donation.recorded"]},
        "secret",
        id="webhook-endpoint",
    ),
]


@pytest.mark.parametrize(("path", "body", "secret_field"), SECRET_CREATES)
async def test_a_secret_is_shown_once_even_to_a_retry(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    app: Any,
    path: str,
    body: dict[str, Any],
    secret_field: str,
) -> None:
    headers = admin | {"Idempotency-Key": "lost-answer"}
    first = await client.post(path, json=body, headers=headers)
    assert first.status_code == 201, first.text
    created, secret = first.json()["id"], first.json()[secret_field]

    retry = await client.post(path, json=body, headers=headers)
    problem = assert_problem(retry, 409, "secret-shown-once")
    assert problem["resource_id"] == created and created in problem["detail"]
    assert secret not in retry.text and secret_field not in problem
    # Nothing was created twice, and what is kept for the retry is the id alone.
    listed = (await client.get(path, params={"limit": 100}, headers=admin)).json()["data"]
    assert [r["id"] for r in listed].count(created) == 1
    assert len(listed) == (2 if path == "/v1/api-keys" else 1)  # the test's own admin key, then the new one
    async with app.state.engine.connect() as connection:
        kept = (
            await connection.execute(
                text("SELECT response_body_encrypted, shown_once_resource_id FROM idempotency_records")
            )
        ).all()
    assert kept == [(None, created)]
    # Another body under the key is still the other error, which tells nothing about the secret.
    other = body | ({"name": "other"} if "name" in body else {"events": ["donation.reversed"]})
    assert_problem(await client.post(path, json=other, headers=headers), 409, "idempotency-key-reused")


async def test_another_admin_key_under_the_same_idempotency_key_is_a_request_of_its_own(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    second_admin = bearer((await create_key(client, admin, role="admin", name="second operator"))["token"])
    body = {"role": "admin", "name": "night shift"}
    mine = await client.post("/v1/api-keys", json=body, headers=admin | {"Idempotency-Key": "shared"})
    theirs = await client.post(
        "/v1/api-keys", json=body, headers=second_admin | {"Idempotency-Key": "shared"}
    )
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"] and theirs.json()["token"] != mine.json()["token"]
    assert mine.json()["token"] not in theirs.text
    # Each admin's retry is refused for its own key, naming its own.
    again = await client.post("/v1/api-keys", json=body, headers=second_admin | {"Idempotency-Key": "shared"})
    assert assert_problem(again, 409, "secret-shown-once")["resource_id"] == theirs.json()["id"]


async def test_a_revoked_key_is_never_shown_as_live(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    headers = admin | {"Idempotency-Key": "new-partner-key"}
    body = {"role": "admin", "name": "temp"}
    created = (await client.post("/v1/api-keys", json=body, headers=headers)).json()
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204

    retry = await client.post("/v1/api-keys", json=body, headers=headers)
    assert assert_problem(retry, 409, "secret-shown-once")["resource_id"] == created["id"]
    assert created["token"] not in retry.text and "revoked_at" not in retry.text
    assert (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()["revoked_at"] is not None
    assert_problem(await client.get("/v1/platforms", headers=bearer(created["token"])), 401, "unauthorized")
