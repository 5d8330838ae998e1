"""Schools: registration order, an existing logistics partner, and a teacher contact encrypted at rest."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from app.core.secrets import decrypt
from tests.helpers import assert_problem, create_partner, create_school, school_body


@pytest.fixture
async def partner(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    return await create_partner(client, admin)


async def _raw_schools(database_url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await connection.fetch("SELECT * FROM schools ORDER BY registration_number"))
    finally:
        await connection.close()


async def test_a_school_is_registered_with_its_contact_in_e164_and_read_back(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any]
) -> None:
    school = await create_school(
        client,
        admin,
        partner_id=partner["id"],
        name="Shree Janata Secondary",
        region="Bagmati",
        teacher_contact={"name": "Sita Sharma", "phone": "01-4412345", "email": "Sita@Example.org"},
    )
    assert school["id"].startswith("sch_") and school["registration_number"] >= 1
    assert school["country"] == "NP" and school["region"] == "Bagmati"
    assert school["logistics_partner_id"] == partner["id"]
    # A number as dialled in Nepal, stored in international form for a partner calling from anywhere.
    assert school["teacher_contact"] == {
        "name": "Sita Sharma",
        "phone": "+97714412345",
        "email": "Sita@example.org",
    }
    read = await client.get(f"/v1/schools/{school['id']}", headers=admin)
    assert read.status_code == 200 and read.json() == school


async def test_the_teacher_contact_is_stored_only_encrypted(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any], database_url: str, app: Any
) -> None:
    school = await create_school(
        client,
        admin,
        partner_id=partner["id"],
        teacher_contact={"name": "Dara Sok", "email": "dara.sok@example.org"},
    )
    [row] = await _raw_schools(database_url)
    flat = json.dumps({k: str(v) for k, v in dict(row).items()})
    assert "Dara Sok" not in flat and "dara.sok" not in flat
    assert {
        "phone": None,
        **json.loads(decrypt(app.state.cipher, row["teacher_contact_encrypted"])),
    } == school["teacher_contact"]


async def test_schools_list_in_registration_order_with_filters(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any]
) -> None:
    other = await create_partner(client, admin, name="Mekong Freight")
    created = [
        await create_school(client, admin, partner_id=partner["id"], country="NP"),
        await create_school(
            client,
            admin,
            partner_id=other["id"],
            country="KH",
            teacher_contact={"name": "T", "phone": "012 345 678"},
        ),
        await create_school(client, admin, partner_id=partner["id"], country="NP"),
    ]
    numbers = [s["registration_number"] for s in created]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/schools", params=params, headers=admin)).json()
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [s["id"] for s in created]
    nepal = (await client.get("/v1/schools", params={"country": "NP"}, headers=admin)).json()["data"]
    assert [s["id"] for s in nepal] == [created[0]["id"], created[2]["id"]]
    by_partner = (
        await client.get("/v1/schools", params={"logistics_partner_id": other["id"]}, headers=admin)
    ).json()
    assert [s["id"] for s in by_partner["data"]] == [created[1]["id"]]
    assert (await client.get("/v1/schools", params={"cursor": "not-a-number"}, headers=admin)).json()["data"][
        0
    ]["id"] == created[0]["id"]


async def test_patch_changes_region_partner_and_contact_only(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any]
) -> None:
    school = await create_school(client, admin, partner_id=partner["id"])
    other = await create_partner(client, admin, name="Mekong Freight")
    response = await client.patch(
        f"/v1/schools/{school['id']}",
        json={
            "region": "Gandaki",
            "logistics_partner_id": other["id"],
            "teacher_contact": {"name": "Hari", "phone": "+977 61 520000"},
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["region"] == "Gandaki" and patched["logistics_partner_id"] == other["id"]
    assert patched["teacher_contact"] == {"name": "Hari", "phone": "+97761520000", "email": None}
    assert patched["name"] == school["name"] and patched["country"] == school["country"]
    assert patched["registration_number"] == school["registration_number"]
    assert (await client.get(f"/v1/schools/{school['id']}", headers=admin)).json() == patched

    only_region = await client.patch(f"/v1/schools/{school['id']}", json={"region": "Lumbini"}, headers=admin)
    assert only_region.json()["teacher_contact"] == patched["teacher_contact"]
    assert only_region.json()["logistics_partner_id"] == other["id"]

    for field, value in (
        ("name", "New name"),
        ("country", "KH"),
        ("region", None),
        ("teacher_contact", None),
    ):
        refused = await client.patch(f"/v1/schools/{school['id']}", json={field: value}, headers=admin)
        body = assert_problem(refused, 422, "invalid-request")
        assert ["body", field] in [e["loc"] for e in body["errors"]]
    assert_problem(
        await client.patch("/v1/schools/sch_nope", json={"region": "X"}, headers=admin), 404, "not-found"
    )


async def test_an_unknown_logistics_partner_is_a_422_naming_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any], database_url: str
) -> None:
    response = await client.post("/v1/schools", json=school_body("lgp_missing"), headers=admin)
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["body", "logistics_partner_id"]
    assert "lgp_missing" in body["detail"]
    school = await create_school(client, admin, partner_id=partner["id"])
    patched = await client.patch(
        f"/v1/schools/{school['id']}", json={"logistics_partner_id": "lgp_missing"}, headers=admin
    )
    assert assert_problem(patched, 422, "invalid-request")["errors"][0]["loc"] == [
        "body",
        "logistics_partner_id",
    ]
    [row] = await _raw_schools(database_url)
    assert row["logistics_partner_id"] == partner["id"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"country": "XX"}, ["body", "country"]),
        ({"country": "Nepal"}, ["body", "country"]),
        ({"name": "   "}, ["body", "name"]),
        ({"region": "a\nb"}, ["body", "region"]),
        ({"teacher_contact": {"name": "Sita"}}, ["body", "teacher_contact"]),
        (
            {"teacher_contact": {"name": "Sita", "email": "not-an-email"}},
            ["body", "teacher_contact", "email"],
        ),
        ({"teacher_contact": {"name": "Sita", "phone": "call me"}}, ["body", "teacher_contact", "phone"]),
        ({"teacher_contact": {"name": "Sita", "phone": "12"}}, ["body", "teacher_contact", "phone"]),
        (
            {"teacher_contact": {"name": "Sita", "phone": "+999 1234 5678"}},
            ["body", "teacher_contact", "phone"],
        ),
        (
            {"teacher_contact": {"name": "Sita", "email": "s@example.org", "birth_date": "1990-01-01"}},
            ["body", "teacher_contact", "birth_date"],
        ),
        ({"students": []}, ["body", "students"]),
    ],
)
async def test_invalid_schools_are_422_naming_the_field_and_store_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    partner: dict[str, Any],
    database_url: str,
    change: dict[str, Any],
    where: list[Any],
) -> None:
    response = await client.post("/v1/schools", json=school_body(partner["id"], **change), headers=admin)
    body = assert_problem(response, 422, "invalid-request")
    assert where in [e["loc"] for e in body["errors"]], body
    assert await _raw_schools(database_url) == []


async def test_unknown_schools_are_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await client.get("/v1/schools/sch_nope", headers=admin), 404, "not-found")


async def test_registering_honours_idempotency_keys(
    client: httpx.AsyncClient, admin: dict[str, str], partner: dict[str, Any], database_url: str
) -> None:
    headers = admin | {"Idempotency-Key": "school-1"}
    body = school_body(partner["id"])
    first = await client.post("/v1/schools", json=body, headers=headers)
    again = await client.post("/v1/schools", json=body, headers=headers)
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert_problem(
        await client.post("/v1/schools", json=school_body(partner["id"]), headers=headers),
        409,
        "idempotency-key-reused",
    )
    assert len(await _raw_schools(database_url)) == 1
