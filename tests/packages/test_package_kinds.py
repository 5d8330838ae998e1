"""Package kinds: versions when they change, the cost a package keeps, retirement instead of deletion."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.errors import Conflict, NotFound
from app.models import PackageKind, PackageKindVersion
from app.packages.service import PackageKindRetired, usable_kind_version
from tests.helpers import assert_problem, create_kind, kind_body


async def _count(app: Any, model: type) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_kind_is_created_at_version_1_and_read_back(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await create_kind(client, admin, countries=["NP", "KH", "NP"], grades=["3", "K", "1"])
    assert created["id"].startswith("pkk_") and created["version_id"].startswith("pkv_")
    assert created["version"] == 1 and created["status"] == "active" and created["retired_at"] is None
    assert created["unit_cost"] == {"amount": 2500, "currency": "USD"}
    assert created["contents"] == [{"item": "Notebook", "quantity": 4}, {"item": "Pencil", "quantity": 6}]
    # Countries sorted and once each; grades in school order.
    assert created["countries"] == ["KH", "NP"] and created["grades"] == ["K", "1", "3"]

    read = await client.get(f"/v1/package-kinds/{created['id']}", headers=admin)
    assert read.status_code == 200 and read.json() == created
    listed = (await client.get("/v1/package-kinds", headers=admin)).json()
    assert listed["data"] == [created] and listed["next_cursor"] is None


async def test_a_cost_change_makes_a_new_version_and_the_old_one_keeps_its_cost(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    kind = await create_kind(client, admin)
    changed = await client.put(
        f"/v1/package-kinds/{kind['id']}",
        json=kind_body(unit_cost={"amount": 2750, "currency": "USD"}),
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    now = changed.json()
    assert now["version"] == 2 and now["version_id"] != kind["version_id"]
    assert now["unit_cost"]["amount"] == 2750 and now["id"] == kind["id"]
    assert now["created_at"] == kind["created_at"]

    # What a package funded at version 1 refers to still says 2500.
    first = (await client.get(f"/v1/package-kind-versions/{kind['version_id']}", headers=admin)).json()
    assert first["version"] == 1 and first["unit_cost"] == {"amount": 2500, "currency": "USD"}
    history = (await client.get(f"/v1/package-kinds/{kind['id']}/versions", headers=admin)).json()
    assert [v["version"] for v in history["data"]] == [2, 1]
    assert [v["unit_cost"]["amount"] for v in history["data"]] == [2750, 2500]


async def test_the_same_definition_again_adds_no_version(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    kind = await create_kind(client, admin)
    # Same definition, written in another order: still the same kind.
    again = await client.put(
        f"/v1/package-kinds/{kind['id']}",
        json=kind_body(grades=["3", "2", "1"], countries=["NP", "NP"]),
        headers=admin,
    )
    assert again.status_code == 200 and again.json() == kind
    assert await _count(app, PackageKindVersion) == 1


async def test_any_change_is_a_version_and_history_pages_newest_first(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    kind = await create_kind(client, admin)
    for version, change in enumerate(
        [
            {"name": "Starter box"},
            {"countries": ["NP", "MM"]},
            {"grades": ["K"]},
            {"contents": [{"item": "Eraser", "quantity": 1}]},
        ],
        start=2,
    ):
        response = await client.put(
            f"/v1/package-kinds/{kind['id']}", json=kind_body(**change), headers=admin
        )
        assert response.status_code == 200 and response.json()["version"] == version
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get(f"/v1/package-kinds/{kind['id']}/versions", params=params, headers=admin)
        ).json()
        seen += [v["version"] for v in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_retired_kinds_stay_readable_but_cannot_change_or_be_used(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    kind = await create_kind(client, admin)
    other = await create_kind(client, admin, name="Secondary box", grades=["7", "8"])
    retired = await client.post(f"/v1/package-kinds/{kind['id']}/retire", headers=admin)
    assert retired.status_code == 200
    assert retired.json()["status"] == "retired" and retired.json()["retired_at"] is not None
    again = await client.post(f"/v1/package-kinds/{kind['id']}/retire", headers=admin)
    assert again.json()["retired_at"] == retired.json()["retired_at"]  # retiring again changes nothing

    assert (await client.get(f"/v1/package-kinds/{kind['id']}", headers=admin)).json()["status"] == "retired"
    change = await client.put(
        f"/v1/package-kinds/{kind['id']}", json=kind_body(name="Renamed"), headers=admin
    )
    assert_problem(change, 409, "package-kind-retired")
    assert (await client.delete(f"/v1/package-kinds/{kind['id']}", headers=admin)).status_code == 405

    active = (await client.get("/v1/package-kinds", params={"status": "active"}, headers=admin)).json()[
        "data"
    ]
    retired_list = (
        await client.get("/v1/package-kinds", params={"status": "retired"}, headers=admin)
    ).json()["data"]
    assert [k["id"] for k in active] == [other["id"]] and [k["id"] for k in retired_list] == [kind["id"]]

    # What allocation runs will ask: the retired kind is refused, the active one gives its current version.
    async with app.state.sessionmaker() as session:
        with pytest.raises(PackageKindRetired):
            await usable_kind_version(session, kind["id"], base_currency="USD")
        with pytest.raises(NotFound):
            await usable_kind_version(session, "pkk_missing", base_currency="USD")
        version = await usable_kind_version(session, other["id"], base_currency="USD")
        assert version.id == other["version_id"] and version.unit_cost == 2500
        with pytest.raises(Conflict, match="costs USD, but the pool is in EUR"):
            await usable_kind_version(session, other["id"], base_currency="EUR")


async def test_unknown_kinds_are_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for response in (
        await client.get("/v1/package-kinds/pkk_nope", headers=admin),
        await client.put("/v1/package-kinds/pkk_nope", json=kind_body(), headers=admin),
        await client.post("/v1/package-kinds/pkk_nope/retire", headers=admin),
        await client.get("/v1/package-kinds/pkk_nope/versions", headers=admin),
        await client.get("/v1/package-kind-versions/pkv_nope", headers=admin),
    ):
        assert_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"unit_cost": {"amount": 2500, "currency": "EUR"}}, ["body", "unit_cost", "currency"]),
        ({"unit_cost": {"amount": 0, "currency": "USD"}}, ["body", "unit_cost", "amount"]),
        ({"unit_cost": {"amount": 25.5, "currency": "USD"}}, ["body", "unit_cost", "amount"]),
        ({"unit_cost": {"amount": 2500, "currency": "XYZ"}}, ["body", "unit_cost", "currency"]),
        ({"countries": ["XX"]}, ["body", "countries", 0]),
        ({"countries": ["np"]}, ["body", "countries", 0]),
        ({"countries": []}, ["body", "countries"]),
        ({"grades": ["13"]}, ["body", "grades", 0]),
        ({"grades": [3]}, ["body", "grades", 0]),
        ({"grades": []}, ["body", "grades"]),
        ({"contents": []}, ["body", "contents"]),
        ({"contents": [{"item": "Pen", "quantity": 0}]}, ["body", "contents", 0, "quantity"]),
        (
            {"contents": [{"item": "Pen", "quantity": 1}, {"item": "pen", "quantity": 2}]},
            ["body", "contents"],
        ),
        ({"contents": [{"item": "Pen", "quantity": 1, "colour": "red"}]}, ["body", "contents", 0, "colour"]),
        ({"name": ""}, ["body", "name"]),
        ({"price": 3}, ["body", "price"]),
    ],
)
async def test_invalid_kinds_are_422_naming_the_field_and_store_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any, change: dict[str, Any], where: list[Any]
) -> None:
    response = await client.post("/v1/package-kinds", json=kind_body(**change), headers=admin)
    body = assert_problem(response, 422, "invalid-request")
    assert where in [e["loc"] for e in body["errors"]], body
    assert await _count(app, PackageKind) == 0

    kind = await create_kind(client, admin)
    change_response = await client.put(
        f"/v1/package-kinds/{kind['id']}", json=kind_body(**change), headers=admin
    )
    assert_problem(change_response, 422, "invalid-request")
    assert await _count(app, PackageKindVersion) == 1


async def test_the_base_currency_is_a_setting(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"base_currency": "EUR"})
    refused = await client.post("/v1/package-kinds", json=kind_body(), headers=admin)
    body = assert_problem(refused, 422, "invalid-request")
    assert "EUR" in body["detail"]
    accepted = await client.post(
        "/v1/package-kinds", json=kind_body(unit_cost={"amount": 2300, "currency": "EUR"}), headers=admin
    )
    assert accepted.status_code == 201 and accepted.json()["unit_cost"]["currency"] == "EUR"


async def test_creating_honours_idempotency_keys(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    headers = admin | {"Idempotency-Key": "kind-1"}
    first = await client.post("/v1/package-kinds", json=kind_body(), headers=headers)
    again = await client.post("/v1/package-kinds", json=kind_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/package-kinds", json=kind_body(name="Other"), headers=headers)
    assert_problem(other, 409, "idempotency-key-reused")
    assert await _count(app, PackageKind) == 1
