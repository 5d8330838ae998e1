"""The documentation stands on its own: its example runs against the service, and its links stay inside the
repository."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from tests.conftest import DATA_KEY
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "send_order_event.py"


@pytest_asyncio.fixture(loop_scope="session")
async def service(pg_server: TestServer, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    name = f"{pg_server.prefix}_docs"
    url = await pg_server.create_database(name, template=pg_server.template)
    env = g4g_env(DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    token = run_g4g("create-api-key", "--role", "admin", "--name", "docs", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    admin = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
            body = {
                "external_id": "shop-88",
                "name": "Tea House",
                "country": "CN",
                "platform_id": platform["id"],
            }
            merchant = (await http.post("/v1/merchants", json=body)).json()
            rule = {"rate_bps": 150, "fixed_per_unit": [{"amount": 2, "currency": "CNY"}]}
            await http.put(f"/v1/merchants/{merchant['id']}/donation-rule", json=rule)
        yield {"url": server.url, "admin": admin, "platform": platform}
    finally:
        server.stop()
        await pg_server.drop_database(name)


def _example(service: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(EXAMPLE),
        "--url",
        service["url"],
        "--platform-id",
        service["platform"]["id"],
    ]
    return subprocess.run(
        [*command, "--merchant", "shop-88", *args],
        env={"G4G_WEBHOOK_SECRET": service["platform"]["webhook_secret"], "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_example_signs_and_sends_order_events(service: dict[str, Any]) -> None:
    paid = _example(
        service, "--order-id", "TM-1001", "--quantity", "2", "--amount", "12800", "--webhook-id", "msg_1"
    )
    assert (paid.returncode, paid.stdout.strip()) == (0, '200 {"status":"applied"}'), paid.stderr
    retry = _example(
        service, "--order-id", "TM-1001", "--quantity", "2", "--amount", "12800", "--webhook-id", "msg_1"
    )
    assert retry.stdout.strip() == '200 {"status":"applied"}'
    refund = _example(service, "--order-id", "TM-1001", "--refund-id", "R-1", "--amount", "6400")
    assert refund.stdout.strip() == '200 {"status":"applied"}', refund.stdout

    async with httpx.AsyncClient(base_url=service["url"], headers=service["admin"]) as http:
        order = await http.get("/v1/orders/TM-1001", params={"platform_id": service["platform"]["id"]})
    assert order.json()["donation"] == {"amount": 196, "currency": "CNY"}
    assert order.json()["reversed"] == {"amount": 98, "currency": "CNY"}

    wrong = _example(service, "--order-id", "TM-2", "--secret", "whsec_" + "A" * 32)
    assert wrong.returncode == 1 and wrong.stdout.startswith("401 ")


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_documentation_links_only_inside_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 5
    for page in pages:
        for target in _LINK.findall(page.read_text()):
            assert "://" not in target and not target.startswith("//"), f"{page.name} links outside: {target}"
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists() and ROOT in path.parents, f"{page.name}: {target} is not in the repository"
