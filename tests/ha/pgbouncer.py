"""PgBouncer (Debian's `pgbouncer`) on 127.0.0.1 in transaction pooling, in front of one PostgreSQL server; a
context manager, reusable from tests and benchmarks:

    with PgBouncer(tmp_dir, server_port=primary.port, databases=["g4g"]) as bouncer:
        url = bouncer.url("g4g")          # through PgBouncer
        bouncer.stats("g4g")              # SHOW STATS on its admin console: transactions, queries

Each database gets a pool of `pool_size` server connections; `<name>_small` is the same database with a pool of
two (enough clients then share server connections for certain). Debian 12's PgBouncer is 1.18: no
`max_prepared_statements` (1.21+), so a client must not expect a statement it prepared to exist in its next
transaction. It refuses to run as root: when the tests are root, it runs as `postgres`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.ha.cluster import PG_BIN, _chown, _run_as
from tests.live import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PSQL = str(PG_BIN / "psql")


def available() -> str | None:
    if not Path(PGBOUNCER).exists():
        return f"{PGBOUNCER} is missing (apt-get install pgbouncer)"
    return None


class PgBouncer:
    def __init__(self, root: Path, *, server_port: int, databases: list[str], pool_size: int = 20) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=root))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.log_path = self.dir / "pgbouncer.log"
        entries = []
        for name in databases:
            entries.append(f"{name} = host=127.0.0.1 port={server_port} dbname={name} pool_size={pool_size}")
            entries.append(f"{name}_small = host=127.0.0.1 port={server_port} dbname={name} pool_size=2")
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        self.config = self.dir / "pgbouncer.ini"
        self.config.write_text(
            "\n".join(
                [
                    "[databases]",
                    *entries,
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.dir / 'users.txt'}",
                    "admin_users = postgres",
                    "pool_mode = transaction",
                    "max_client_conn = 500",
                    f"logfile = {self.log_path}",
                    "",
                ]
            )
        )
        for path in (self.dir, self.config, self.dir / "users.txt"):
            _chown(path)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PGBOUNCER, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_run_as(),
        )
        deadline = time.monotonic() + 10
        while self.admin("SHOW VERSION") is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pgbouncer did not start: " + self.logs())
            time.sleep(0.1)

    def admin(self, command: str) -> list[list[str]] | None:
        """A command on the admin console (simple query protocol only: psql), as rows of columns."""
        done = subprocess.run(
            [
                PSQL,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-AtF",
                "\t",
                "-c",
                command,
                "pgbouncer",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
        )
        if done.returncode != 0:
            return None
        return [line.split("\t") for line in done.stdout.splitlines()]

    def stats(self, database: str) -> dict[str, int]:
        """`SHOW STATS` for one database: total transactions, queries, server assignments and so on."""
        done = subprocess.run(
            [
                PSQL,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-A",
                "-F",
                "\t",
                "-c",
                "SHOW STATS",
                "pgbouncer",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        header, *rows = done.stdout.splitlines()
        names = header.split("\t")
        for line in rows:
            values = dict(zip(names, line.split("\t"), strict=False))
            if values.get("database") == database:
                return {k: int(v) for k, v in values.items() if k != "database" and v.isdigit()}
        raise KeyError(database)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
