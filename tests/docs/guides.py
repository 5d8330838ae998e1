"""What the tests of the guides share: a guide's code blocks, a live `g4g serve` with an admin key, and bash to
run the blocks with only the variables the guide names."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import DATA_KEY
from tests.live import LiveServer, g4g_env, run_g4g
from tests.postgres import TestServer

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
# curl, jq and the tests' Python (as python3), nothing from the developer's own PATH.
PATH = f"{Path(sys.executable).parent}:/usr/bin:/bin"


def blocks(text: str, language: str = "sh") -> list[str]:
    """The guide's fenced blocks in one language, in order."""
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", text, flags=re.DOTALL | re.MULTILINE)


def variables_used(script: str) -> set[str]:
    """The upper-case shell variables a script reads and does not set itself."""
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", script))
    assigned = set(re.findall(r"(?:^|[\s;(])([A-Z_][A-Z0-9_]*)=", script, flags=re.MULTILINE))
    return used - assigned


@dataclass
class Service:
    url: str
    admin_token: str
    env: dict[str, str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@asynccontextmanager
async def live_service(pg_server: TestServer, tmp_path: Path, name: str) -> AsyncIterator[Service]:
    """A fresh database, an admin key made with the CLI, and `g4g serve` on a free port. Donations are final at
    once (no return window), so money can reach the pool within a test."""
    database = f"{pg_server.prefix}_{name}"
    url = await pg_server.create_database(database, template=pg_server.template)
    env = g4g_env(
        DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path), G4G_RETURN_WINDOW_DAYS="0"
    )
    token = run_g4g("create-api-key", "--role", "admin", "--name", "guide", env=env).stdout.strip()
    server = LiveServer(env, tmp_path / "serve.log")
    try:
        yield Service(server.url, token, env)
    finally:
        server.stop()
        await pg_server.drop_database(database)


async def run_bash(script: str, variables: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The script under `bash -euo pipefail`, from the repository's root, with only these variables."""
    return await asyncio.to_thread(
        subprocess.run,
        [BASH, "-euo", "pipefail", "-c", script],
        env={"PATH": PATH, **variables},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
