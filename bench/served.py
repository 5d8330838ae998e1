"""A benchmark's own service, as an operator runs it: a fresh database on `DATABASE_URL`'s server (default the
local one), `g4g migrate`, an admin key from `g4g create-api-key`, and `g4g serve` on a free port. Stopped, and
the database dropped, when the block ends."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

G4G = str(Path(sys.executable).with_name("g4g"))
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Served:
    http: httpx.Client
    """The service, with the admin key."""
    url: str
    """The service's base URL."""
    database_url: str


@contextmanager
def served(tag: str, **settings: str) -> Iterator[Served]:
    """The service on a database named after `tag`; `settings` are extra environment variables (`G4G_…`)."""
    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER_URL)
    name = f"g4g_bench_{tag}_{secrets.token_hex(4)}"
    database_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    work = Path(tempfile.mkdtemp(prefix=f"g4g-bench-{tag}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("G4G_")}
    env.update(DATABASE_URL=database_url, G4G_DATA_DIR=str(work), G4G_LOG_LEVEL="warning", **settings)
    server = None
    try:
        subprocess.run([G4G, "migrate"], env=env, check=True, capture_output=True)
        token = subprocess.run(
            [G4G, "create-api-key", "--role", "admin", "--name", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = _free_port()
        with (work / "serve.log").open("w") as log:
            server = subprocess.Popen(
                [G4G, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as http:
            for _ in range(300):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield Served(http, url, database_url)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
