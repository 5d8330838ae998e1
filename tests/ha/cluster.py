"""A highly available PostgreSQL on 127.0.0.1, the standard way: etcd plus two or three Patroni nodes, each
managing a PostgreSQL (Debian's packages: `etcd-server`, `patroni`, `postgresql-15`), with synchronous
replication, so a commit the primary acknowledged is also on a standby Patroni may promote.

Reusable from tests and benchmarks:

    with HaCluster(tmp_path, nodes=2) as cluster:
        url = cluster.database_url("g4g")   # every node, target_session_attrs=read-write
        old = cluster.kill_primary()        # kill -9 of the primary's postmaster
        new = cluster.wait_for_primary(other_than=old)
        cluster.wait_healthy()              # the old primary rejoined as a synchronous standby

Timings are short for tests (Patroni's defaults are ttl 30 s, loop_wait 10 s, retry_timeout 10 s):
`ttl` 10 s, `loop_wait` 1 s, `retry_timeout` 3 s, and `primary_start_timeout` 0, so a crashed primary is not
restarted in place but failed over at once (the default waits up to 300 s for it to come back). The old primary
rejoins with `pg_rewind` (hence `wal_log_hints`). PostgreSQL refuses to run as root: when the tests are root,
Patroni runs as the `postgres` user the Debian package created.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.live import free_port

PG_BIN = Path(os.environ.get("G4G_HA_PG_BIN", "/usr/lib/postgresql/15/bin"))
PATRONI = shutil.which("patroni") or "/usr/bin/patroni"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
SCOPE = "g4g"

# Patroni's dynamic configuration for the tests (see the module's docstring).
TIMINGS = {"ttl": 10, "loop_wait": 1, "retry_timeout": 3, "primary_start_timeout": 0}


def available() -> str | None:
    """Why the HA set-up cannot run here, or None."""
    for tool in (PATRONI, ETCD, str(PG_BIN / "postgres")):
        if not Path(tool).exists():
            return f"{tool} is missing (apt-get install patroni etcd-server postgresql-15)"
    return None


def _run_as() -> dict[str, Any]:
    """Popen arguments to run PostgreSQL's processes as `postgres` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


class Node:
    def __init__(self, root: Path, index: int, etcd_port: int) -> None:
        self.name = f"pg{index}"
        self.dir = root / self.name
        self.dir.mkdir()
        _chown(self.dir)
        self.data_dir = self.dir / "data"
        self.port = free_port()
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.log_path = root / f"{self.name}.patroni.log"
        self.config_path = self.dir / "patroni.yml"
        self.config_path.write_text(
            json.dumps(self._config(etcd_port), indent=2)
        )  # YAML is a superset of JSON
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self, etcd_port: int) -> dict[str, Any]:
        return {
            "scope": SCOPE,
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{self.api_port}",
                "connect_address": f"127.0.0.1:{self.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    **TIMINGS,
                    "maximum_lag_on_failover": 1024 * 1024,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "remove_data_directory_on_rewind_failure": True,
                        "parameters": {
                            "wal_log_hints": "on",
                            "max_connections": 200,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_keep_size": "128MB",
                            "fsync": "on",
                            "shared_buffers": "64MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(self.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "postgres", "password": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(self.dir)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
        }

    def start(self) -> None:
        env = {**os.environ, "HOME": str(self.dir), "PGPASSFILE": str(self.dir / "pgpass")}
        env.pop("PYTHONPATH", None)  # Patroni runs on Debian's python3, not our venv
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [PATRONI, str(self.config_path)],
            cwd=self.dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_run_as(),
        )
        log.close()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def status(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(self.api + "/patroni", timeout=1)
        except httpx.HTTPError:
            return None
        return dict(response.json())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # Patroni stops its PostgreSQL (fast shutdown), then itself
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        pid = self.postmaster_pid()
        if pid is not None:  # a postmaster Patroni left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class HaCluster:
    """etcd and `nodes` Patroni-managed PostgreSQL servers under `root`; a context manager."""

    def __init__(self, root: Path | None = None, *, nodes: int = 2) -> None:
        # Its own directory, not pytest's (private to root, which the `postgres` user could not enter).
        self.root = Path(tempfile.mkdtemp(prefix="g4g-ha-", dir=root))
        self.root.chmod(0o755)
        self._remove_root = root is None
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        self.nodes = [Node(self.root, i, self.etcd_port) for i in range(nodes)]

    # -- lifecycle

    def start(self, *, timeout: float = 90) -> None:
        log = (self.root / "etcd.log").open("ab")
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd = subprocess.Popen(
            [
                ETCD,
                "--name=g4g",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=g4g={peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(client + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.etcd.poll() is not None:
                raise RuntimeError("etcd did not come up: " + self.logs())
            time.sleep(0.2)
        self.nodes[0].start()  # the first bootstraps the cluster; the others clone it
        self.wait_for_primary(timeout=timeout)
        for node in self.nodes[1:]:
            node.start()
        self.wait_healthy(timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()
        if self._remove_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HaCluster:
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

    # -- where things are

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def database_url(self, database: str = "postgres") -> str:
        """libpq's multi-host form: whichever node accepts writes."""
        return f"postgresql://postgres@{self.hosts()}/{database}?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{node.port}/{database}"

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster (`GET /cluster` on any node that answers)."""
        for node in self.nodes:
            try:
                response = httpx.get(node.api + "/cluster", timeout=1)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return list(response.json().get("members", []))
        return []

    def primary(self) -> Node | None:
        """The node whose Patroni says it is the running primary."""
        for node in self.nodes:
            status = node.status()
            if status and status.get("role") in ("master", "primary") and status.get("state") == "running":
                return node
        return None

    def wait_for_primary(self, *, other_than: Node | None = None, timeout: float = 60) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.primary()
            if node is not None and node is not other_than:
                return node
            time.sleep(0.1)
        raise RuntimeError(f"no primary after {timeout}s: {self.members()}\n{self.logs()}")

    def wait_healthy(self, *, timeout: float = 90) -> Node:
        """A running primary and every other node streaming as a standby, one of them synchronous."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = self.members()
            roles = sorted(m.get("role", "") for m in members)
            running = all(m.get("state") in ("running", "streaming") for m in members)
            if (
                len(members) == len(self.nodes)
                and running
                and roles.count("leader") == 1
                and "sync_standby" in roles
                and all(m.get("lag", 0) in (0, None) for m in members if m.get("role") != "leader")
            ):
                primary = self.primary()
                if primary is not None:
                    return primary
            time.sleep(0.2)
        raise RuntimeError(f"cluster not healthy after {timeout}s: {self.members()}\n{self.logs()}")

    # -- faults

    def kill_primary(self) -> Node:
        """`kill -9` of the primary's postmaster (its Patroni stays up, as on a host whose database crashed)."""
        node = self.primary()
        assert node is not None, "no primary to kill"
        pid = node.postmaster_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return node

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"== {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)
