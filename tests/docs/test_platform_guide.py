"""The platform integration guide is true: every bash and Python block in it runs, in order, against a real
`g4g serve`, with only what the guide says a platform engineer (and, for testing, the operator) holds."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DATA_KEY
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "platform-integration.md").read_text()
BASH = shutil.which("bash") or "/bin/bash"


def _script() -> str:
    """The guide's blocks as one bash script: Python blocks run by the same Python as the tests."""
    parts = []
    for language, block in re.findall(r"```(sh|python)\n(.*?)```", GUIDE, flags=re.DOTALL):
        parts.append(block if language == "sh" else f"python3 - <<'PYTHON'\n{block}PYTHON\n")
    return "\n".join(parts)


async def test_every_example_in_the_platform_guide_runs(pg_server: TestServer, tmp_path: Path) -> None:
    name = f"{pg_server.prefix}_platform_guide"
    url = await pg_server.create_database(name, template=pg_server.template)
    env = g4g_env(
        DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path), G4G_RETURN_WINDOW_DAYS="0"
    )
    token = run_g4g("create-api-key", "--role", "admin", "--name", "guide", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    admin = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            platform = (await http.post("/v1/platforms", json={"name": "Tmall"})).json()
            key = await http.post(
                "/v1/api-keys", json={"role": "platform", "name": "tmall", "platform_id": platform["id"]}
            )
        variables = {
            "G4G": server.url,
            "KEY": key.json()["token"],
            "ADMIN": token,
            "PLATFORM_ID": platform["id"],
            "WEBHOOK_SECRET": platform["webhook_secret"],
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [BASH, "-euo", "pipefail", "-c", _script()],
            env=variables,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert all(secret not in output for secret in (token, variables["KEY"], variables["WEBHOOK_SECRET"]))
        lines = done.stdout.strip().splitlines()
        shown: dict[str, Any] = {"lines": lines}
        assert '{"rate_bps":150}' in lines, shown
        assert '{"amount":196,"currency":"CNY"}' in lines, shown  # the quote, as the guide says
        assert lines.count('200 {"status":"applied"}') == 3, shown  # TM-1001 from Python, TM-1002, the refund
        assert '{"stage":"final","trail":[]}' in lines and '{"stage":"collected"}' in lines, shown
        assert lines[-1].startswith(
            '[{"country":"NP","grade":"1","delivery_status":"allocated","stage":"in_transit"}'
        )
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            assert (await http.get("/v1/audit")).json()["ok"]
    finally:
        server.stop()
        await pg_server.drop_database(name)


def test_the_guide_names_only_what_the_test_gives() -> None:
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", _script())) | set(
        re.findall(r"os\.environ\[['\"](\w+)", GUIDE)
    )
    assigned = set(re.findall(r"^\s*([A-Z_][A-Z0-9_]*)=", _script(), flags=re.MULTILINE))
    assert used - assigned <= {"G4G", "KEY", "ADMIN", "PLATFORM_ID", "WEBHOOK_SECRET"}, shlex.join(
        sorted(used)
    )
