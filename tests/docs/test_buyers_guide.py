"""The buyers' guide is true: its examples, run with bash and curl and nothing but a platform's key, make the
receipt link it shows (the answer has the fields it shows) and put the merchant's badge up on a real `g4g serve`.
Its other JSON blocks are answers and events, checked for their shape."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.docs.guides import ROOT, blocks, live_service, run_bash, variables_used
from tests.helpers import order_paid, signed_headers
from tests.postgres import TestServer

GUIDE = (ROOT / "docs" / "buyers.md").read_text()
# Each block's answer on a line of its own.
SCRIPT = "\necho\n".join(blocks(GUIDE)) + "\necho\n"


async def test_the_buyers_guide_makes_a_receipt_link_and_a_badge(
    pg_server: TestServer, tmp_path: Path
) -> None:
    async with live_service(pg_server, tmp_path, "buyers_guide") as service:
        async with httpx.AsyncClient(base_url=service.url, headers=service.admin) as http:
            platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
            body = {"external_id": "tea", "name": "Tea House", "country": "CN", "platform_id": platform["id"]}
            merchant = (await http.post("/v1/merchants", json=body)).json()
            await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json={"rate_bps": 500})
            key = await http.post(
                "/v1/api-keys", json={"role": "platform", "name": "tmall", "platform_id": platform["id"]}
            )
            event = json.dumps(
                order_paid(
                    "TM-1001", merchant="tea", items=[{"sku": "TEA-01", "quantity": 1, "amount": 9900}]
                )
            ).encode()
            sent = await http.post(
                f"/v1/webhooks/orders/{platform['id']}",
                content=event,
                headers=signed_headers(platform["webhook_secret"], event),
            )
            assert sent.json() == {"status": "applied"}, sent.text
        variables = {"G4G": service.url, "KEY": key.json()["token"], "MERCHANT_ID": merchant["id"]}
        done = await run_bash(SCRIPT, variables)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert variables["KEY"] not in output
        link, profile = (json.loads(line) for line in done.stdout.splitlines())
        shown = json.loads(blocks(GUIDE, "json")[0])
        assert link.keys() == shown.keys(), link
        assert link["full_url"] == service.url + link["url"], link
        assert profile["public_profile"] is True, profile
        async with httpx.AsyncClient(base_url=service.url) as anyone:
            receipt = await anyone.get(f"/v1/receipts/{link['url'].removeprefix('/r/')}")
            assert receipt.status_code == 200, receipt.text
            assert (await anyone.get(link["qr_svg"])).status_code == 200
            badge = await anyone.get(f"/v1/merchants/{merchant['id']}/badge", params={"lang": "en"})
            assert badge.status_code == 200 and badge.json()["page_url"], badge.text
            assert (await anyone.get(f"/m/{profile['public_slug']}")).status_code == 200


def test_the_buyers_guide_explains_every_variable_it_uses() -> None:
    used = variables_used("\n".join(blocks(GUIDE)))
    assert used == {"G4G", "KEY", "MERCHANT_ID"}, used
    for name in used:
        assert f"`{name}`" in GUIDE.split("```")[0], name


def test_the_receipt_event_in_the_guide_has_the_fields_app_receipts_events_sends() -> None:
    event = json.loads(blocks(GUIDE, "json")[1])
    assert event["type"] == "receipt.updated"
    assert event["data"].keys() == {"order_id", "step", "previous_step"}
