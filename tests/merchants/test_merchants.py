from __future__ import annotations

import httpx

from tests.helpers import assert_problem, bearer, create_key, create_merchant, create_platform


async def test_platform_registers_its_merchant(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    platform = await create_platform(client, admin)
    key = bearer((await create_key(client, admin, role="platform", platform_id=platform["id"]))["token"])
    response = await client.post(
        "/v1/merchants", json={"external_id": "shop-88", "name": "Shop 88", "country": "CN"}, headers=key
    )
    assert response.status_code == 201, response.text
    merchant = response.json()
    assert merchant["id"].startswith("mer_")
    assert {k: merchant[k] for k in ("platform_id", "external_id", "name", "country")} == {
        "platform_id": platform["id"],
        "external_id": "shop-88",
        "name": "Shop 88",
        "country": "CN",
    }
    assert (await client.get(f"/v1/merchants/{merchant['id']}", headers=key)).json() == merchant


async def test_admin_names_the_platform(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    platform = await create_platform(client, admin)
    merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="a-1")
    assert merchant["platform_id"] == platform["id"]
    body = {"external_id": "a-2", "name": "n", "country": "NP"}
    assert_problem(await client.post("/v1/merchants", json=body, headers=admin), 422, "invalid-request")
    assert_problem(
        await client.post("/v1/merchants", json=body | {"platform_id": "plt_nope"}, headers=admin),
        404,
        "not-found",
    )


async def test_duplicate_external_id_on_one_platform_is_409_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    one, two = await create_platform(client, admin), await create_platform(client, admin)
    first = await create_merchant(client, admin, platform_id=one["id"], external_id="shop-88", name="First")
    again = await client.post(
        "/v1/merchants",
        json={"platform_id": one["id"], "external_id": "shop-88", "name": "Second", "country": "CN"},
        headers=admin,
    )
    assert_problem(again, 409, "already-exists")
    # Another platform may use the same external id for its own merchant.
    other = await create_merchant(client, admin, platform_id=two["id"], external_id="shop-88")
    listed = (await client.get("/v1/merchants", headers=admin)).json()["data"]
    assert [m["id"] for m in listed] == [first["id"], other["id"]]
    assert listed[0]["name"] == "First"


async def test_invalid_merchant_bodies_are_422_and_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    platform = await create_platform(client, admin)
    base = {"platform_id": platform["id"], "external_id": "s1", "name": "Shop", "country": "NP"}
    for bad in (
        base | {"country": "ZZ"},
        base | {"country": "np"},
        base | {"country": "NPL"},
        base | {"name": "   "},
        base | {"external_id": ""},
        base | {"external_id": "has space"},
        base | {"unexpected": 1},
        {k: v for k, v in base.items() if k != "country"},
    ):
        response = await client.post("/v1/merchants", json=bad, headers=admin)
        body = assert_problem(response, 422, "invalid-request")
        assert body["errors"] and body["detail"]
    assert_problem(
        await client.post(
            "/v1/merchants", content=b"{not json", headers=admin | {"content-type": "application/json"}
        ),
        422,
        "invalid-request",
    )
    assert (await client.get("/v1/merchants", headers=admin)).json()["data"] == []


async def test_tenants_see_only_their_own_merchants(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    platform_a, platform_b = await create_platform(client, admin), await create_platform(client, admin)
    a1 = await create_merchant(client, admin, platform_id=platform_a["id"])
    a2 = await create_merchant(client, admin, platform_id=platform_a["id"])
    b1 = await create_merchant(client, admin, platform_id=platform_b["id"])
    key_a = bearer((await create_key(client, admin, role="platform", platform_id=platform_a["id"]))["token"])
    key_a1 = bearer((await create_key(client, admin, role="merchant", merchant_id=a1["id"]))["token"])

    assert [m["id"] for m in (await client.get("/v1/merchants", headers=key_a)).json()["data"]] == [
        a1["id"],
        a2["id"],
    ]
    assert [m["id"] for m in (await client.get("/v1/merchants", headers=key_a1)).json()["data"]] == [a1["id"]]
    assert (await client.get(f"/v1/merchants/{a1['id']}", headers=key_a1)).status_code == 200
    # Someone else's merchant looks exactly like a missing one.
    assert_problem(await client.get(f"/v1/merchants/{b1['id']}", headers=key_a), 404, "not-found")
    assert_problem(await client.get(f"/v1/merchants/{a2['id']}", headers=key_a1), 404, "not-found")
    assert_problem(await client.get("/v1/merchants/mer_missing", headers=key_a), 404, "not-found")
    # A platform cannot register a merchant on another platform, nor can a merchant register anyone.
    body = {"external_id": "x", "name": "x", "country": "KH", "platform_id": platform_b["id"]}
    assert_problem(await client.post("/v1/merchants", json=body, headers=key_a), 404, "not-found")
    assert_problem(await client.post("/v1/merchants", json=body, headers=key_a1), 403, "forbidden")
    filtered = (
        await client.get("/v1/merchants", params={"platform_id": platform_b["id"]}, headers=admin)
    ).json()
    assert [m["id"] for m in filtered["data"]] == [b1["id"]]
