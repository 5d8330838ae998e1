"""The backup and restore drill of docs/operating.md ("Backups and restore"), its commands run as written: a
PostgreSQL server with WAL archiving on takes signed order webhooks on 32 connections through `g4g serve`; a base
backup is taken under that load; a time T is noted mid-load; the load goes on; the WAL is archived; the backup is
restored to T into a fresh server. There `g4g audit` passes, every order acknowledged (2xx) before T is present,
and none whose webhook was sent after T (a sanity check: its commit came after T)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import DATA_KEY
from tests.docs.guides import blocks
from tests.ha.cluster import PG_BIN, _chown, _run_as
from tests.ha.load import Load, set_up
from tests.live import G4G, LiveServer, free_port, g4g_env, run_g4g

BASH = shutil.which("bash") or "/bin/bash"
OPERATING = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
LOAD_BEFORE_BACKUP_S = 1.5
LOAD_AFTER_BACKUP_S = 2.0  # then T
LOAD_AFTER_T_S = 2.0


def _block(containing: str) -> str:
    [block] = [b for b in blocks(OPERATING) if containing in b]
    return block


def _run(script: str, env: Mapping[str, str], *, as_postgres: bool = True, timeout: float = 300) -> str:
    """A block of the guide, with bash (as `postgres` unless told: PostgreSQL's tools refuse root); its output."""
    done = subprocess.run(
        [BASH, "-euo", "pipefail", "-c", script],
        env=dict(env),
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
        **(_run_as() if as_postgres else {}),
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    output: str = done.stdout
    return output


def _timed(script: str, env: Mapping[str, str]) -> float:
    started = time.monotonic()
    _run(script, env, timeout=600)
    return time.monotonic() - started


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    """A PostgreSQL server of its own (initdb, pg_ctl) on 127.0.0.1; the guide's variables for it."""
    root = Path(tempfile.mkdtemp(prefix="g4g-backup-"))
    root.chmod(0o755)
    _chown(root)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PGDATA", "PGDATABASE")},
        "PATH": f"{PG_BIN}:{os.environ['PATH']}",
        "HOME": str(root),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(free_port()),
        "PGUSER": "postgres",
        "PGDATA": str(root / "data"),
        "ARCHIVE": str(root / "archive"),
        "BACKUP": str(root / "backup"),
        "RESTORE": str(root / "restored"),
        "RESTORE_PORT": str(free_port()),
    }
    env.pop("PYTHONPATH", None)
    _run(
        'initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null\n'
        'cat >> "$PGDATA/postgresql.conf" <<EOF\n'
        "listen_addresses = '127.0.0.1'\nport = $PGPORT\nunix_socket_directories = '$HOME'\n"
        "max_connections = 100\nshared_buffers = '64MB'\n"
        "EOF\n"
        'pg_ctl -D "$PGDATA" -l "$PGDATA/../postgresql.log" -w start >/dev/null',
        env,
    )
    try:
        yield env
    finally:
        for data in (env["RESTORE"], env["PGDATA"]):
            if Path(data, "postmaster.pid").exists():
                subprocess.run(
                    [str(PG_BIN / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                    check=False,
                    **_run_as(),
                )
        shutil.rmtree(root, ignore_errors=True)


async def _orders(dsn: str) -> set[str]:
    db = await asyncpg.connect(dsn)
    try:
        return {row["external_id"] for row in await db.fetch("SELECT external_id FROM orders")}
    finally:
        await db.close()


async def test_a_backup_taken_under_load_restores_to_a_point_in_time_with_every_acknowledged_order(
    server: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(_run, _block("archive_mode = on"), server)
    primary = f"postgresql://postgres@127.0.0.1:{server['PGPORT']}"
    admin_db = await asyncpg.connect(primary + "/postgres")
    try:
        assert await admin_db.fetchval("SHOW archive_mode") == "on"
        await admin_db.execute("CREATE DATABASE g4g")
    finally:
        await admin_db.close()
    env = g4g_env(
        DATABASE_URL=primary + "/g4g",
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_EMBEDDED_WORKER="false",
    )
    assert run_g4g("migrate", env=env).returncode == 0
    admin_token = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    live = LiveServer(env, tmp_path / "serve.log")
    try:
        platform, quote_token = set_up(live.url, admin_token)
        load = Load([live.url], platform, quote_token)
        wall = time.time() - time.monotonic()  # monotonic instants to wall-clock ones
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(0, stop))
        await asyncio.sleep(LOAD_BEFORE_BACKUP_S)
        backup_s = await asyncio.to_thread(_timed, _block("pg_basebackup"), server)
        await asyncio.sleep(LOAD_AFTER_BACKUP_S)
        target = time.time()
        await asyncio.sleep(LOAD_AFTER_T_S)
        stop.set()
        await running
    finally:
        live.stop()
    await asyncio.to_thread(_run, _block("pg_switch_wal"), server)

    target_time = datetime.fromtimestamp(target, UTC)
    restore_s = await asyncio.to_thread(
        _timed, _block("recovery_target_time"), {**server, "TARGET_TIME": target_time.isoformat(sep=" ")}
    )
    restored_url = f"postgresql://postgres@127.0.0.1:{server['RESTORE_PORT']}/g4g"
    audit_block = _block("g4g audit").replace(".venv/bin/g4g", G4G)
    audit = await asyncio.to_thread(
        _run,
        audit_block,
        {**env, "HOME": server["HOME"], "RESTORE_PORT": server["RESTORE_PORT"]},
        as_postgres=False,
    )
    assert json.loads(audit)["ok"] is True

    payments = [s for s in load.sent if s.kind in ("paid", "duplicate")]
    acknowledged_before = {s.order for s in payments if 200 <= s.status < 300 and s.finished + wall < target}
    sent_after = {s.order for s in payments if s.kind == "paid" and s.started + wall > target}
    restored = await _orders(restored_url)
    assert acknowledged_before, "no order acknowledged before T: the drill proves nothing"
    assert acknowledged_before <= restored, sorted(acknowledged_before - restored)[:10]
    assert not sent_after & restored, sorted(sent_after & restored)[:10]
    assert sent_after, "no order sent after T: the sanity check proves nothing"
    assert restored < await _orders(primary + "/g4g")  # the original went on past T
    figures = {
        "backup_s": round(backup_s, 2),
        "restore_s": round(restore_s, 2),
        "orders_acknowledged_before_t": len(acknowledged_before),
        "orders_restored": len(restored),
        "orders_sent_after_t": len(sent_after),
        "requests": len(load.sent),
        "archived_segments": len(os.listdir(server["ARCHIVE"])),
    }
    with capsys.disabled():
        print("\nbackup", json.dumps(figures))
