from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from app.platforms.service import webhook_secrets
from tests.helpers import assert_problem, bearer, create_key, create_platform


async def _secrets(app: object, platform_id: str) -> list[str]:
    async with app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        return await webhook_secrets(session, app.state.cipher, platform_id)  # type: ignore[attr-defined]


async def test_secret_is_shown_at_creation_only_and_stored_encrypted(
    client: httpx.AsyncClient, admin: dict[str, str], app: object
) -> None:
    platform = await create_platform(client, admin, name="Tmall Global")
    assert platform["id"].startswith("plt_") and platform["name"] == "Tmall Global"
    secret = platform["webhook_secret"]
    assert secret.startswith("whsec_")

    read = (await client.get(f"/v1/platforms/{platform['id']}", headers=admin)).json()
    assert read["name"] == "Tmall Global" and "webhook_secret" not in read
    assert await _secrets(app, platform["id"]) == [secret]

    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        rows = (await connection.execute(text("SELECT * FROM platform_webhook_secrets"))).all()
    assert rows and all(secret not in " ".join(map(str, row)) for row in rows)


async def test_rotation_keeps_the_old_secret_valid_for_a_day(
    client: httpx.AsyncClient, admin: dict[str, str], app: object
) -> None:
    platform = await create_platform(client, admin)
    old = platform["webhook_secret"]
    before = datetime.now(UTC)
    response = await client.post(f"/v1/platforms/{platform['id']}/rotate-webhook-secret", headers=admin)
    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["webhook_secret"]
    assert new != old and new.startswith("whsec_")
    valid_until = datetime.fromisoformat(rotated["previous_secrets_valid_until"])
    assert before + timedelta(hours=24) <= valid_until <= datetime.now(UTC) + timedelta(hours=24)
    assert await _secrets(app, platform["id"]) == [new, old]

    # Once the grace period is over, only the new secret verifies.
    async with app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.execute(
            text(
                "UPDATE platform_webhook_secrets SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL"
            )
        )
    assert await _secrets(app, platform["id"]) == [new]


async def test_a_platform_rotates_its_own_secret_but_sees_no_other_platform(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    mine = await create_platform(client, admin)
    theirs = await create_platform(client, admin)
    key = bearer((await create_key(client, admin, role="platform", platform_id=mine["id"]))["token"])

    assert (await client.get(f"/v1/platforms/{mine['id']}", headers=key)).status_code == 200
    assert (
        await client.post(f"/v1/platforms/{mine['id']}/rotate-webhook-secret", headers=key)
    ).status_code == 200
    assert_problem(await client.get(f"/v1/platforms/{theirs['id']}", headers=key), 404, "not-found")
    assert_problem(
        await client.post(f"/v1/platforms/{theirs['id']}/rotate-webhook-secret", headers=key),
        404,
        "not-found",
    )
    assert_problem(await client.post("/v1/platforms", json={"name": "x"}, headers=key), 403, "forbidden")


async def test_platform_list_is_cursor_paginated(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = [(await create_platform(client, admin, name=f"P{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/platforms", params=params, headers=admin)).json()
        assert len(page["data"]) <= 2
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created
    assert_problem(
        await client.get("/v1/platforms", params={"cursor": "garbage!"}, headers=admin),
        422,
        "invalid-request",
    )
    assert_problem(
        await client.get("/v1/platforms", params={"limit": 0}, headers=admin), 422, "invalid-request"
    )
