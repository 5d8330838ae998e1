"""The logistics partner guide is true: its walk-through script, run with bash, curl and jq and nothing but a
partner's key, takes a real shipment on a real `g4g serve` to the school's receipt; its examples are valid events;
its table is the service's state machine."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from app.logistics.machine import TRANSITIONS
from app.logistics.schemas import ShipmentEventIn
from tests.conftest import DATA_KEY
from tests.helpers import order_paid, signed_headers
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer
from tests.roster_codes import roster_codes

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
GUIDE = (ROOT / "docs" / "logistics-partner-guide.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE, flags=re.DOTALL)


@pytest.fixture(scope="module")
def live(pg_server: TestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    name = f"{pg_server.prefix}_partner_guide"
    url = asyncio.run(pg_server.create_database(name, template=pg_server.template))
    tmp = tmp_path_factory.mktemp("partner-guide")
    # Donations are final at once, so money reaches the pool without waiting out a return window.
    env = g4g_env(DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp), G4G_RETURN_WINDOW_DAYS="0")
    token = run_g4g("create-api-key", "--role", "admin", "--name", "guide", env=env).stdout.strip()
    server = LiveServer(env, tmp / "serve.log")
    try:
        yield {"url": server.url, "admin": {"Authorization": f"Bearer {token}"}, "tmp": tmp}
    finally:
        server.stop()
        asyncio.run(pg_server.drop_database(name))


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _finished(http: httpx.Client, run_id: str) -> dict[str, Any]:
    """A settlement run once the server's own worker has finished it."""
    deadline = time.monotonic() + 60
    while True:
        run = _ok(http.get(f"/v1/settlement-runs/{run_id}"))
        if run["status"] in ("done", "failed") or time.monotonic() > deadline:
            assert run["status"] == "done", run
            return run
        time.sleep(0.05)


def _a_planned_shipment(http: httpx.Client) -> tuple[dict[str, Any], str]:
    """The programme's side, through the API: an order paid, billed and paid by transfer, a school with three
    students, an allocation run. Returns the platform and the partner's key."""
    platform = _ok(http.post("/v1/platforms", json={"name": "Tmall"}))
    merchant = _ok(
        http.post(
            "/v1/merchants",
            json={"external_id": "tea", "name": "Tea", "country": "CN", "platform_id": platform["id"]},
        )
    )
    _ok(http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 10_000}))
    _ok(http.put(f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"}))
    body = json.dumps(
        order_paid(
            "TM-1",
            merchant="tea",
            currency="USD",
            items=[{"sku": "X", "quantity": 1, "amount": 7500}],
            placed_at=datetime.now(UTC),
        )
    ).encode()
    sent = http.post(
        f"/v1/webhooks/orders/{platform['id']}",
        content=body,
        headers=signed_headers(platform["webhook_secret"], body),
    )
    assert sent.json() == {"status": "applied"}, sent.text
    started = http.post("/v1/settlement-runs", json={})
    assert started.status_code == 202, started.text
    [statement] = _finished(http, started.json()["id"])["statements"]
    _ok(
        http.post(
            f"/v1/statements/{statement['id']}/payments",
            json={"reference": "TT-1", "amount": statement["total"]},
        )
    )
    kind = _ok(
        http.post(
            "/v1/package-kinds",
            json={
                "name": "Primary box",
                "contents": [{"item": "Notebook", "quantity": 4}],
                "unit_cost": {"amount": 2500, "currency": "USD"},
                "countries": ["NP"],
                "grades": ["1", "2"],
            },
        )
    )
    partner = _ok(http.post("/v1/logistics-partners", json={"name": "Himalaya Express"}))
    school = _ok(
        http.post(
            "/v1/schools",
            json={
                "name": "Shree Janata School",
                "country": "NP",
                "region": "Bagmati",
                "logistics_partner_id": partner["id"],
                "teacher_contact": {"name": "Sita Sharma", "phone": "01-4412345"},
            },
        )
    )
    students = [{"roster_code": code, "grade": "1"} for code in roster_codes(3)]
    _ok(http.post(f"/v1/schools/{school['id']}/students", json={"students": students}))
    run = _ok(http.post("/v1/allocation-runs", json={"term": "2027-T1", "package_kind_id": kind["id"]}))
    assert run["packages"] == 3
    key = _ok(
        http.post(
            "/v1/api-keys", json={"role": "logistics", "name": "hx", "logistics_partner_id": partner["id"]}
        )
    )
    return platform, key["token"]


def test_the_walkthrough_takes_a_shipment_to_receipt_with_only_the_partners_key(live: dict[str, Any]) -> None:
    with httpx.Client(base_url=live["url"], headers=live["admin"]) as http:
        platform, partner_token = _a_planned_shipment(http)
    [script] = [block for block in _blocks("sh") if block.startswith("# walkthrough:")]
    (live["tmp"] / "delivery-note.jpg").write_bytes(b"the signed delivery note")
    env = {"PATH": "/usr/bin:/bin", "G4G_URL": live["url"], "G4G_KEY": partner_token}

    def walk(*arguments: str) -> list[str]:
        done = subprocess.run(
            [BASH, "-euo", "pipefail", "-c", script, "walkthrough.sh", *arguments],
            env=env,
            cwd=live["tmp"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert partner_token not in done.stdout + done.stderr
        return done.stdout.strip().splitlines()

    lines = walk()
    assert lines[-1] == '{"status":"receipt_confirmed","result":"applied","status_after":"receipt_confirmed"}'
    with httpx.Client(base_url=live["url"], headers=live["admin"]) as http:
        [planned] = _ok(http.get("/v1/shipments"))["data"]
        events = _ok(http.get(f"/v1/shipments/{planned['id']}"))["events"]
    # Run again for the same shipment (as after losing the network halfway): every step is the same event, so
    # each gets its first answer back and nothing new is recorded.
    assert walk(planned["id"]) == lines
    with httpx.Client(base_url=live["url"], headers=live["admin"]) as http:
        assert _ok(http.get(f"/v1/shipments/{planned['id']}"))["events"] == events

    with httpx.Client(base_url=live["url"], headers=live["admin"]) as http:
        [shipment] = _ok(http.get("/v1/shipments"))["data"]
        assert shipment["status"] == "receipt_confirmed"
        trail = _ok(http.get("/v1/orders/TM-1", params={"platform_id": platform["id"]}))["trail"]
        assert [(t["delivery_status"], t["stage"]) for t in trail] == [("accepted", "delivered")] * 3
        assert all(t["delivered_at"] and t["receipt_confirmed_at"] for t in trail)
        assert _ok(http.get("/v1/audit"))["ok"]


def test_the_guides_events_are_valid_and_its_table_is_the_state_machine() -> None:
    events = [json.loads(block) for block in _blocks("json") if '"event_id"' in block]
    assert {e["status"] for e in events} == {"delivered", "receipt_confirmed"}
    for event in events:
        TypeAdapter(ShipmentEventIn).validate_python(event)
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", GUIDE, flags=re.MULTILINE)
    table = {status: re.findall(r"`(\w+)`", following) for status, following in rows if status in TRANSITIONS}
    assert table == {status: list(following) for status, following in TRANSITIONS.items()}
