"""Kinds, schools and students are the operator's alone: every other key is refused, and nothing changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import (
    all_students,
    assert_problem,
    bearer,
    create_key,
    create_kind,
    create_partner,
    create_platform,
    create_school,
    import_students,
    kind_body,
    school_body,
)
from tests.roster_codes import MARK, roster_code


@pytest.fixture
async def world(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    partner = await create_partner(client, admin)
    school = await create_school(client, admin, partner_id=partner["id"])
    kind = await create_kind(client, admin)
    code = roster_code()
    await import_students(client, admin, school["id"], [(code, "2")])
    [student] = await all_students(client, admin, school["id"])
    platform = await create_platform(client, admin)
    merchant = (
        await client.post(
            "/v1/merchants",
            json={"external_id": "m-1", "name": "Tea", "country": "CN", "platform_id": platform["id"]},
            headers=admin,
        )
    ).json()
    keys = {
        "platform": await create_key(client, admin, role="platform", platform_id=platform["id"]),
        "merchant": await create_key(client, admin, role="merchant", merchant_id=merchant["id"]),
        # The school's own partner: it will see the teacher contact later (logistics work), not students.
        "logistics": await create_key(client, admin, role="logistics", logistics_partner_id=partner["id"]),
    }
    return {
        "partner": partner,
        "school": school,
        "kind": kind,
        "student": student,
        "code": code,
        "keys": keys,
    }


def _calls(world: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    school, kind, student = world["school"]["id"], world["kind"]["id"], world["student"]["id"]
    students = {"students": [{"roster_code": world["code"], "grade": "5"}]}
    return [
        ("POST", "/v1/package-kinds", {"json": kind_body()}),
        ("GET", "/v1/package-kinds", {}),
        ("GET", f"/v1/package-kinds/{kind}", {}),
        ("PUT", f"/v1/package-kinds/{kind}", {"json": kind_body(name="Changed")}),
        ("POST", f"/v1/package-kinds/{kind}/retire", {}),
        ("GET", f"/v1/package-kinds/{kind}/versions", {}),
        ("GET", f"/v1/package-kind-versions/{world['kind']['version_id']}", {}),
        ("POST", "/v1/schools", {"json": school_body(world["partner"]["id"])}),
        ("GET", "/v1/schools", {}),
        ("GET", f"/v1/schools/{school}", {}),
        ("PATCH", f"/v1/schools/{school}", {"json": {"region": "Elsewhere"}}),
        ("POST", f"/v1/schools/{school}/students", {"json": students}),
        ("GET", f"/v1/schools/{school}/students", {}),
        ("POST", f"/v1/schools/{school}/students/lookup", {"json": {"roster_code": world["code"]}}),
        ("GET", f"/v1/students/{student}", {}),
        ("PATCH", f"/v1/students/{student}", {"json": {"active": False}}),
        ("DELETE", f"/v1/students/{student}", {}),
    ]


async def _state(client: httpx.AsyncClient, admin: dict[str, str], world: dict[str, Any]) -> Any:
    return (
        (await client.get("/v1/package-kinds", headers=admin)).json(),
        (await client.get("/v1/schools", headers=admin)).json(),
        await all_students(client, admin, world["school"]["id"]),
    )


@pytest.mark.parametrize("role", ["platform", "merchant", "logistics", None])
async def test_only_admin_keys_may_touch_kinds_schools_and_students(
    client: httpx.AsyncClient, admin: dict[str, str], world: dict[str, Any], role: str | None
) -> None:
    before = await _state(client, admin, world)
    headers = bearer(world["keys"][role]["token"]) if role else {}
    for method, path, kwargs in _calls(world):
        response = await client.request(method, path, headers=headers, **kwargs)
        if role is None:
            assert_problem(response, 401, "unauthorized")
        else:
            assert_problem(response, 403, "forbidden")
        assert MARK not in response.text, (method, path)
    assert await _state(client, admin, world) == before
