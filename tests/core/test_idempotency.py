from __future__ import annotations

import asyncio

import httpx

from tests.helpers import assert_problem, create_platform


async def test_same_key_and_body_returns_the_first_answer(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = admin | {"Idempotency-Key": "create-tmall-1"}
    first = await client.post("/v1/platforms", json={"name": "Tmall"}, headers=headers)
    # Same body written differently is the same request.
    again = await client.post(
        "/v1/platforms",
        content=b'{ "name" :  "Tmall" }',
        headers=headers | {"content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the secret too: a retry after a lost answer still gets it
    assert again.headers["idempotent-replayed"] == "true"
    assert len((await client.get("/v1/platforms", headers=admin)).json()["data"]) == 1


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
    headers = admin | {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/platforms", json={"name": "Shopee"}, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len((await client.get("/v1/platforms", headers=admin)).json()["data"]) == 1


async def test_keys_belong_to_one_tenant(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    from tests.helpers import bearer, create_key

    one, two = await create_platform(client, admin), await create_platform(client, admin)
    key_one = bearer((await create_key(client, admin, role="platform", platform_id=one["id"]))["token"])
    key_two = bearer((await create_key(client, admin, role="platform", platform_id=two["id"]))["token"])
    body = {"external_id": "shop", "name": "Shop", "country": "KH"}
    a = await client.post("/v1/merchants", json=body, headers=key_one | {"Idempotency-Key": "same"})
    b = await client.post("/v1/merchants", json=body, headers=key_two | {"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 201
    assert a.json()["platform_id"] == one["id"] and b.json()["platform_id"] == two["id"]
