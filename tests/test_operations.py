"""The service as an operator runs it: real `g4g` processes, real HTTP, real logs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from app.core.migrations import head_revision
from tests.conftest import DATA_KEY
from tests.live import G4G, LiveServer, free_port, g4g_env, run_g4g
from tests.postgres import TestServer


def test_a_bad_setting_stops_the_process_with_one_line_naming_it(tmp_path: Path) -> None:
    for variable, value in (
        ("G4G_PORT", "eighty"),
        ("DATABASE_URL", "mysql://root@localhost/g4g"),
        ("G4G_DATA_KEY", "short"),
    ):
        result = run_g4g("migrate", env=g4g_env(**{variable: value}), cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"g4g: invalid setting {variable}:"), result.stderr
        assert value not in lines[0] or variable != "G4G_DATA_KEY"


def test_served_process_logs_json_lines_with_request_ids_and_no_secrets(
    database_url: str, tmp_path: Path
) -> None:
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    created = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and token.startswith("g4g_")

    server = LiveServer(env, tmp_path / "serve.log")
    try:
        auth = {"Authorization": f"Bearer {token}"}
        platform = httpx.post(server.url + "/v1/platforms", json={"name": "Lazada"}, headers=auth).json()
        key = httpx.post(
            server.url + "/v1/api-keys",
            json={"role": "platform", "name": "lazada", "platform_id": platform["id"]},
            headers=auth | {"X-Request-ID": "req-for-the-log"},
        ).json()
        assert httpx.get(server.url + "/readyz").status_code == 200
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [r for r in records if r.get("event") == "request"]
    assert {r["path"] for r in requests} >= {"/v1/platforms", "/v1/api-keys", "/readyz"}
    assert all(r["request_id"] and isinstance(r["status"], int) for r in requests)
    assert any(r["request_id"] == "req-for-the-log" and r["status"] == 201 for r in requests)
    for secret in (token, platform["webhook_secret"], key["token"], DATA_KEY):
        assert secret not in log


def _postgres_running_on(data_dir: Path) -> bool:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return False
    return psutil.pid_exists(int(pid_file.read_text().split()[0]))


def test_without_database_url_an_embedded_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    env = g4g_env()
    assert run_g4g("migrate", env=env, cwd=tmp_path).returncode == 0
    data_dir = tmp_path / ".g4g"
    assert not _postgres_running_on(data_dir)  # migrate let go of the database when it finished
    token = run_g4g(
        "create-api-key", "--role", "admin", "--name", "ops", env=env, cwd=tmp_path
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}

    first = LiveServer(env, tmp_path / "first.log", cwd=tmp_path)
    try:
        assert httpx.get(first.url + "/readyz").status_code == 200
        created = httpx.post(first.url + "/v1/platforms", json={"name": "Shopee"}, headers=auth).json()
        assert _postgres_running_on(data_dir)
    finally:
        assert first.stop() == 0
    assert not _postgres_running_on(data_dir)  # stopping the server stopped its database

    second = LiveServer(env, tmp_path / "second.log", cwd=tmp_path)
    try:
        read = httpx.get(second.url + f"/v1/platforms/{created['id']}", headers=auth)
        assert read.status_code == 200 and read.json()["name"] == "Shopee"
    finally:
        second.stop()
    assert not _postgres_running_on(data_dir)


def test_two_migrations_at_once_both_succeed(pg_server: TestServer, tmp_path: Path) -> None:
    """Two replicas starting together both run `g4g migrate` on an empty database: the second waits for the
    first and then finds nothing to do."""
    for trial in range(3):
        name = f"{pg_server.prefix}_migrate_{trial}"
        url = asyncio.run(pg_server.create_database(name))
        try:
            env = g4g_env(DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
            both = [
                subprocess.Popen(
                    [G4G, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                for _ in range(2)
            ]
            results = [(p.communicate(timeout=120)[1], p.returncode) for p in both]
            assert [code for _, code in results] == [0, 0], results
            revision = asyncio.run(_schema_revision(pg_server, name))
            assert revision == head_revision()
        finally:
            asyncio.run(pg_server.drop_database(name))


async def _schema_revision(pg_server: TestServer, database: str) -> str | None:
    connection = await asyncpg.connect(pg_server.dsn_for(database))
    try:
        return await connection.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    finally:
        await connection.close()


def test_a_server_killed_with_kill_9_leaves_no_embedded_database_running_forever(tmp_path: Path) -> None:
    env = g4g_env()
    migrated = run_g4g("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    data_dir = tmp_path / ".g4g"
    killed = LiveServer(env, tmp_path / "killed.log", cwd=tmp_path)
    killed.process.kill()
    killed.stop()
    assert _postgres_running_on(data_dir)  # orphaned, with the dead server still listed as holding it

    recovered = LiveServer(env, tmp_path / "recovered.log", cwd=tmp_path)
    try:
        assert httpx.get(recovered.url + "/readyz").status_code == 200
    finally:
        assert recovered.stop() == 0
    assert not _postgres_running_on(data_dir)  # the next server adopted the database and stopped it


def _one_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


async def test_commands_refuse_a_missing_or_unmigrated_database_in_one_line(
    pg_server: TestServer, tmp_path: Path
) -> None:
    missing = pg_server.url_for(f"{pg_server.prefix}_missing")
    env = g4g_env(DATABASE_URL=missing, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    unlock = ["admin-factor", "unlock", "--key-id", "key_x"]
    for command in (
        ["serve"],
        ["worker"],
        ["create-api-key", "--role", "admin", "--name", "x"],
        ["audit"],
        unlock,
    ):
        result = run_g4g(*command, env=env)
        assert result.returncode == 3, (command, result.stderr)
        assert "does not exist" in _one_line(result)

    name = f"{pg_server.prefix}_empty"
    empty = await pg_server.create_database(name)
    try:
        env = g4g_env(DATABASE_URL=empty, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
        for command in (["create-api-key", "--role", "admin", "--name", "x"], ["audit"], ["serve"], unlock):
            result = run_g4g(*command, env=env)
            assert result.returncode == 4, (command, result.stderr)
            assert "run `g4g migrate` first" in _one_line(result)
    finally:
        await pg_server.drop_database(name)


def test_serving_where_another_server_listens_is_refused_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    first = LiveServer(env, tmp_path / "first.log")
    try:
        second = run_g4g("serve", "--port", str(first.port), env=env)
        assert second.returncode == 6
        assert f"127.0.0.1:{first.port} is already in use" in _one_line(second)
        assert httpx.get(first.url + "/readyz").status_code == 200  # the first one is untouched
    finally:
        assert first.stop() == 0


def test_audit_exit_codes_tell_a_broken_invariant_from_an_unreachable_database(
    database_url: str, tmp_path: Path
) -> None:
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    assert run_g4g("audit", env=env).returncode == 0
    unreachable = g4g_env(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", G4G_DATA_DIR=str(tmp_path)
    )
    result = run_g4g("audit", env=unreachable)
    assert result.returncode == 3 and "cannot reach the database" in _one_line(result)


def test_a_500_keeps_its_request_id_and_logs_one_traceback(database_url: str, tmp_path: Path) -> None:
    # No embedded worker: its job refreshing the public figures runs at each minute's start, and on the dropped
    # tables it would log a traceback of its own.
    env = g4g_env(
        DATABASE_URL=database_url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_EMBEDDED_WORKER="false",
    )
    token = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    try:
        asyncio.run(
            _execute(database_url, "DROP TABLE fx_conversions, fx_rates")
        )  # a bug, as far as the API knows
        response = httpx.get(
            server.url + "/v1/fx-rates",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-that-failed"},
        )
    finally:
        server.stop()
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-that-failed"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "req-that-failed" in response.json()["detail"]
    log = server.log_path.read_text()
    errors = [json.loads(line) for line in log.splitlines() if '"unhandled_error"' in line]
    assert len(errors) == 1 and errors[0]["request_id"] == "req-that-failed"
    assert sum("Traceback" in line for line in log.splitlines()) == 1  # one log line carries it, once


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def test_serving_with_another_data_key_is_refused_naming_the_key(database_url: str, tmp_path: Path) -> None:
    first_dir = tmp_path / "here"
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_DIR=str(first_dir))
    token = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "first.log")
    try:
        created = httpx.post(
            server.url + "/v1/platforms", json={"name": "Tmall"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201
    finally:
        server.stop()

    elsewhere = tmp_path / "elsewhere"
    result = run_g4g("serve", env=g4g_env(DATABASE_URL=database_url, G4G_DATA_DIR=str(elsewhere)))
    assert result.returncode == 5 and str(elsewhere.resolve() / "data.key") in _one_line(result)
    assert not (elsewhere / "data.key").exists()  # no new key made beside data it can't read
    other_key = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(elsewhere))
    for command in ("serve", "worker"):
        result = run_g4g(command, env=other_key)
        assert result.returncode == 5 and "G4G_DATA_KEY" in _one_line(result)


def test_metrics_with_several_server_processes_add_up_and_name_their_routes(
    database_url: str, tmp_path: Path
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    env = g4g_env(
        DATABASE_URL=database_url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_WORKERS="2",
        G4G_METRICS_ADDRESS=metrics,
    )
    server = LiveServer(env, tmp_path / "serve.log")
    try:
        for _ in range(20):
            httpx.get(server.url + "/healthz")
        httpx.get(server.url + "/v1/platforms")
        text = httpx.get(f"http://{metrics}/metrics").text  # its own address: no key
    finally:
        server.stop()
    # 20 here and the one LiveServer waited for, whichever process answered each.
    assert 'g4g_http_requests_total{method="GET",route="/healthz",status="200"} 21.0' in text
    assert 'route="/v1/platforms",status="401"' in text and 'route="unmatched"' not in text
    assert 'g4g_statements{status="paid"} 0.0' in text
    assert 'g4g_event_deliveries{status="pending"} 0.0' in text


def test_a_key_guesser_at_sign_in_is_refused_and_metrics_answer_on_their_own_address(
    database_url: str, tmp_path: Path
) -> None:
    """200 wrong keys at the dashboard's sign-in, as fast as one client can send them: 20 are checked, the rest
    refused with 429 before any key is looked at. /metrics is on G4G_METRICS_ADDRESS only, where it needs no key."""
    metrics = f"127.0.0.1:{free_port()}"
    env = g4g_env(
        DATABASE_URL=database_url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_METRICS_ADDRESS=metrics,
    )
    admin = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url) as browser:
            form = browser.get("/merchant").text
            csrf = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            started = time.perf_counter()
            answers = [
                browser.post("/merchant/sign-in", data={"api_key": f"g4g_{n:08d}wrong", "csrf_token": csrf})
                for n in range(200)
            ]
            elapsed = time.perf_counter() - started
        assert (
            httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 404
        )
        text = httpx.get(f"http://{metrics}/metrics").text
    finally:
        server.stop()
    statuses = Counter(answer.status_code for answer in answers)
    print(f"200 wrong sign-ins in {elapsed:.2f} s ({200 / elapsed:.0f}/s): {dict(statuses)}")
    assert [a.status_code for a in answers[:20]] == [401] * 20 and statuses == {401: 20, 429: 180}
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in answers[20:])
    assert 'route="/merchant/sign-in",status="429"} 180.0' in text
