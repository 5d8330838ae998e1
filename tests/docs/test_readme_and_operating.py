"""The README's and the operator's guide's API examples are true: run with bash, curl and jq against a real
`g4g serve`, as a user would run them against `make run` (the test's server stands in for localhost:8000 and the
CLI gets the test's database, as `make run` gives it its own).

Not run, and why: `make run`, `make test` and `make demo` (they build a virtualenv and start their own service;
`tests/demo` runs the demo), the localstripe walk-through in docs/operating.md (it starts localstripe and
`make run`; tests/settlement runs settlement against localstripe), the high-availability blocks (an apt
install, and a `DATABASE_URL` naming Patroni's nodes; tests/ha runs that set-up), and the backup and restore
blocks (they need a PostgreSQL server of their own, run as `postgres`: tests/ha/test_backup.py runs them as
written)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.docs.guides import ROOT, Service, blocks, live_service, run_bash, variables_used
from tests.helpers import order_paid, signed_headers
from tests.live import G4G
from tests.postgres import TestServer

README = (ROOT / "README.md").read_text()
OPERATING = (ROOT / "docs" / "operating.md").read_text()


def _at(service: Service, script: str) -> str:
    """The script pointed at the test's server, with the `g4g` of the Python running the tests (`make run`'s
    is .venv/bin/g4g, which `VENV` may move)."""
    return script.replace("localhost:8000", service.url.removeprefix("http://")).replace(".venv/bin/g4g", G4G)


def _each_answer_on_its_line(tmp_path: Path) -> dict[str, str]:
    """A curl configuration that ends every answer with a new line, as a terminal's prompt would."""
    (tmp_path / ".curlrc").write_text('write-out = "\\n"\n')
    return {"CURL_HOME": str(tmp_path)}


def _answers(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


async def _money_in_the_pool(service: Service) -> tuple[str, str]:
    """An order of USD 75 paid, billed and paid by transfer: its whole amount in the pool. Its id and platform's."""
    async with httpx.AsyncClient(base_url=service.url, headers=service.admin) as http:
        platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
        body = {"external_id": "tea", "name": "Tea", "country": "CN", "platform_id": platform["id"]}
        merchant = (await http.post("/v1/merchants", json=body)).json()
        await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 10_000})
        await http.put(f"/v1/merchants/{merchant['id']}/billing", json={"method": "bank_transfer"})
        items = [{"sku": "X", "quantity": 1, "amount": 7500}]
        event = json.dumps(
            order_paid("TM-1", merchant="tea", currency="USD", items=items, placed_at=datetime.now(UTC))
        ).encode()
        sent = await http.post(
            f"/v1/webhooks/orders/{platform['id']}",
            content=event,
            headers=signed_headers(platform["webhook_secret"], event),
        )
        assert sent.json() == {"status": "applied"}, sent.text
        started = (await http.post("/v1/settlement-runs", json={})).json()
        for _ in range(600):
            run = (await http.get(f"/v1/settlement-runs/{started['id']}")).json()
            if run["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "done", run
        [statement] = run["statements"]
        paid = await http.post(
            f"/v1/statements/{statement['id']}/payments",
            json={"reference": "TT-1", "amount": statement["total"]},
        )
        assert paid.status_code in (200, 201), paid.text
    return "TM-1", platform["id"]


async def test_the_readme_examples_run(pg_server: TestServer, tmp_path: Path) -> None:
    make_run, first_key, demo, allocation, kinds = blocks(README)
    assert "make run" in make_run and "make demo" in demo, "the README's blocks moved: update this test"
    async with live_service(pg_server, tmp_path, "readme") as service:
        order_id, platform_id = await _money_in_the_pool(service)
        # The allocation example needs the schools and students registered in the section after it.
        script = "\n".join(_at(service, block) for block in (first_key, kinds, allocation))
        variables = {
            **service.env,
            **_each_answer_on_its_line(tmp_path),
            "ORDER_ID": order_id,
            "PLATFORM_ID": platform_id,
        }
        done = await run_bash(script, variables)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        platform, kind, students, plan, packages, package, order, activity = _answers(done.stdout)
        assert platform["name"] == "Tmall" and kind["name"] == "Primary box", (platform, kind)
        assert students["created"] == 2, students
        assert plan["dry_run"] and plan["id"] is None and plan["packages"] == 2, plan  # two students, USD 75
        assert [(p["rank"], p["reason"]) for p in plan["plan"]] == [
            (1, "never_received"),
            (2, "never_received"),
        ]
        assert len(packages["data"]) == 2, packages
        assert [part["order_id"] for part in package["funding"]] == [order_id], package
        assert order["order_id"] == order_id and len(order["trail"]) == 2, order
        [ran] = activity["data"]
        assert (ran["action"], ran["key_name"], ran["via"]) == ("allocation.run", "me", "api"), (
            ran
        )  # `TOKEN`, the README's key
        assert ran["details"]["plan_fingerprint"] == plan["plan_fingerprint"], ran


async def test_the_operating_guide_sets_up_a_programme(pg_server: TestServer, tmp_path: Path) -> None:
    make_run, setup, merchant_key, localstripe, apt, patroni, *backups = blocks(OPERATING)
    assert "make run" in make_run and "make localstripe" in localstripe and "apt-get" in apt
    assert "target_session_attrs" in patroni, "docs/operating.md's blocks moved: update this test"
    assert len(backups) == 5 and "archive_mode" in backups[0] and "g4g audit" in backups[-1], (
        "docs/operating.md's blocks moved: update this test"
    )
    async with live_service(pg_server, tmp_path, "operating") as service:
        # Between the two blocks the platform registers a merchant, as the guide says (here with the admin key).
        register = (
            'curl -s -X POST localhost:8000/v1/merchants -H "$H" -H "$J" -o /dev/null -d '
            """'{"external_id": "shop-88", "name": "Tea House", "country": "CN", "platform_id": "'"$PLATFORM_ID"'"}'"""
        )
        script = "\n".join(_at(service, block) for block in (setup, register, merchant_key))
        done = await run_bash(script, {**service.env, **_each_answer_on_its_line(tmp_path)})
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        platform, platform_key, merchant_key_made = _answers(done.stdout)
        assert platform["id"].startswith("plt_") and platform["webhook_secret"], platform
        assert platform_key["role"] == "platform" and platform_key["platform_id"] == platform["id"], (
            platform_key
        )
        assert merchant_key_made["role"] == "merchant", merchant_key_made
        async with httpx.AsyncClient(base_url=service.url) as http:
            mine = {"Authorization": f"Bearer {merchant_key_made['token']}"}
            merchant = await http.get(f"/v1/merchants/{merchant_key_made['merchant_id']}", headers=mine)
            assert merchant.status_code == 200 and merchant.json()["name"] == "Tea House", merchant.text


def test_the_examples_name_only_what_their_text_explains() -> None:
    _, first_key, _, allocation, kinds = blocks(README)
    assert variables_used("\n".join((first_key, kinds, allocation))) == {"ORDER_ID", "PLATFORM_ID"}
    text = (
        README.split(allocation)[0].rsplit("```", 1)[0].rstrip().rsplit("\n\n", 1)[-1]
    )  # the paragraph before it
    assert "`ORDER_ID`" in text and "`PLATFORM_ID`" in text and "`TOKEN`" in text, text
    _, setup, merchant_key, *_ = blocks(OPERATING)
    assert variables_used("\n".join((setup, merchant_key))) == set()
