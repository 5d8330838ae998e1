"""Who did what: changes made with a key are in the activity log, with that key, and the log can't be rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from app.activity.service import record_activity
from tests.conftest import DATA_KEY
from tests.helpers import (
    create_key,
    create_partner,
    create_platform,
    create_token_directly,
    kind_body,
)
from tests.live import g4g_env, run_g4g


async def entries(client: httpx.AsyncClient, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/activity", params={"limit": "100", **filters}, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def key_id_of(client: httpx.AsyncClient, admin: dict[str, str], name: str) -> str:
    keys = (await client.get("/v1/api-keys", headers=admin)).json()["data"]
    [key] = [k for k in keys if k["name"] == name]
    return str(key["id"])


async def test_the_log_refuses_updates_deletes_and_truncation(
    client: httpx.AsyncClient, admin: dict[str, str], database_url: str
) -> None:
    await create_platform(client, admin, name="Tmall")
    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await db.fetchval("SELECT count(*) FROM activity_entries") == 1
        for statement in (
            "UPDATE activity_entries SET key_name = 'someone else'",
            "UPDATE activity_entries SET occurred_at = occurred_at - interval '1 day'",
            "DELETE FROM activity_entries",
            "TRUNCATE activity_entries",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await db.execute(statement)
        assert await db.fetchval("SELECT key_name FROM activity_entries") == "test operator"
    finally:
        await db.close()


async def test_key_created_and_revoked_are_recorded_with_the_acting_key_never_a_token(
    client: httpx.AsyncClient, admin: dict[str, str], admin_token: str, app: Any
) -> None:
    operator = await key_id_of(client, admin, "test operator")
    created = await create_key(client, admin, role="admin", name="night shift")
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204

    create, revoke = reversed(await entries(client, admin, resource_type="api_key"))
    for entry, action in ((create, "api_key.create"), (revoke, "api_key.revoke")):
        assert entry["action"] == action
        assert (entry["key_id"], entry["key_name"], entry["key_role"]) == (operator, "test operator", "admin")
        assert entry["resource_id"] == created["id"]
        assert entry["via"] == "api"
        assert entry["details"] == {"role": "admin", "name": "night shift"}
        assert entry["address"] == "127.0.0.1"
        assert entry["request_id"]

    async with app.state.engine.connect() as connection:
        dump = json.dumps(
            [list(map(str, row)) for row in await connection.execute(text("SELECT * FROM activity_entries"))]
        )
    for token in (admin_token, created["token"], created["token_prefix"]):
        assert token not in dump


async def test_a_key_created_at_the_cli_is_recorded_without_an_acting_key(
    client: httpx.AsyncClient, admin: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    made = run_g4g("create-api-key", "--role", "admin", "--name", "break glass", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    [entry] = await entries(client, admin, action="api_key.create")
    assert entry["via"] == "cli" and entry["key_id"] is None and entry["key_name"] is None
    assert entry["details"] == {"role": "admin", "name": "break glass"}
    assert entry["resource_id"] == await key_id_of(client, admin, "break glass")
    assert token[:12] not in json.dumps(entry)


async def test_a_refused_change_records_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    partner = await create_partner(client, admin)
    before = await entries(client, admin)
    refused = [
        await client.post("/v1/schools", json={"name": "X", "country": "ZZ"}, headers=admin),
        await client.post(
            "/v1/api-keys",
            json={"role": "merchant", "name": "m", "merchant_id": "mer_missing"},
            headers=admin,
        ),
        await client.delete("/v1/api-keys/key_missing", headers=admin),
        await client.patch("/v1/schools/sch_missing", json={"region": "Bagmati"}, headers=admin),
        await client.post(
            "/v1/package-kinds", json={**kind_body(), "unit_cost": {"amount": -1}}, headers=admin
        ),
    ]
    assert [r.status_code for r in refused] == [422, 404, 404, 404, 422]
    assert await entries(client, admin) == before
    assert partner["id"] in {e["resource_id"] for e in before}


async def test_a_change_rolled_back_leaves_no_entry_and_one_committed_always_has_one(app: Any) -> None:
    token = await create_token_directly(app, role="admin", name="console operator")
    async with app.state.sessionmaker() as session:
        key_id = await session.scalar(text("SELECT id FROM api_keys WHERE name = 'console operator'"))
    async with app.state.sessionmaker() as session:
        await record_activity(
            session, key_id=key_id, action="school.create", resource_type="school", resource_id="sch_1"
        )
        await session.rollback()
    async with app.state.sessionmaker() as session, session.begin():
        await record_activity(
            session,
            key_id=key_id,
            action="school.update",
            resource_type="school",
            resource_id="sch_1",
            address="203.0.113.9",
            details={"changed": ["region"]},
        )
    async with app.state.engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT action, via, key_name, address FROM activity_entries"))
        ).all()
    assert [tuple(r) for r in rows] == [("school.update", "console", "console operator", "203.0.113.9")]
    assert token  # the console signs in with its key; the entry names the key, never the token


async def test_details_that_would_hold_a_secret_are_refused_before_anything_is_written(app: Any) -> None:
    async with app.state.sessionmaker() as session:
        for details in ({"token": "x"}, {"nested": [{"roster_code": "NP-1"}]}, {"webhook_secret": "x"}):
            with pytest.raises(ValueError, match="may not hold"):
                await record_activity(
                    session, key_id=None, via="cli", action="x.y", resource_type="x", details=details
                )
        with pytest.raises(ValueError, match="without an API key"):
            await record_activity(session, key_id=None, action="x.y", resource_type="x")
