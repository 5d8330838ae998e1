"""The merchant guide is true: its example, run with bash and curl and nothing but a merchant's key, sets the
donation rule it describes on a real `g4g serve`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.docs.guides import ROOT, blocks, live_service, run_bash, variables_used
from tests.postgres import TestServer

GUIDE = (ROOT / "docs" / "merchant-guide.md").read_text()
SCRIPT = "\n".join(blocks(GUIDE))


async def test_the_merchant_guide_sets_the_rule_it_describes(pg_server: TestServer, tmp_path: Path) -> None:
    async with live_service(pg_server, tmp_path, "merchant_guide") as service:
        async with httpx.AsyncClient(base_url=service.url, headers=service.admin) as http:
            platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
            body = {"external_id": "tea", "name": "Tea House", "country": "CN", "platform_id": platform["id"]}
            merchant = (await http.post("/v1/merchants", json=body)).json()
            key = await http.post(
                "/v1/api-keys", json={"role": "merchant", "name": "tea", "merchant_id": merchant["id"]}
            )
        variables = {"G4G": service.url, "KEY": key.json()["token"], "MERCHANT_ID": merchant["id"]}
        done = await run_bash(SCRIPT, variables)
        assert done.returncode == 0, done.stdout + done.stderr
        assert variables["KEY"] not in done.stdout + done.stderr
        rule = json.loads(done.stdout)
        assert rule["rate_bps"] == 150, rule
        async with httpx.AsyncClient(
            base_url=service.url, headers={"Authorization": f"Bearer {variables['KEY']}"}
        ) as http:
            versions = (await http.get(f"/v1/merchants/{merchant['id']}/donation-rules")).json()
        assert [version["id"] for version in versions["data"]] == [rule["id"]], versions
        overrides = {override["sku"]: override for override in rule["sku_overrides"]}
        assert overrides["TEA-01"]["rate_bps"] == 500 and overrides["GIFT-CARD"]["excluded"], rule


def test_the_merchant_guide_explains_every_variable_it_uses() -> None:
    used = variables_used(SCRIPT)
    assert used == {"G4G", "KEY", "MERCHANT_ID"}, used
    for name in used:
        assert f"`{name}`" in GUIDE.split("```")[0], name
