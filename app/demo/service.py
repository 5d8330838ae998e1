"""Starting a service for the demo when none is given: `g4g migrate`, `g4g serve` as a child process (the embedded
PostgreSQL under the data directory unless `DATABASE_URL` is set, like `make run`), and the first admin key made
by `g4g create-api-key`, the one step that goes to the database rather than through the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.preflight import port_is_free
from app.demo.api import DemoError

# The demo's service settles what it was sent straight away (no 30-day return window), keeps the public figures
# current on every read, and may deliver events to the demo's receiver on 127.0.0.1.
DEMO_SETTINGS = {
    "G4G_RETURN_WINDOW_DAYS": "0",
    "G4G_TRANSPARENCY_REFRESH_SECONDS": "0",
    "G4G_EVENTS_ALLOW_PRIVATE_URLS": "true",
    "G4G_EMBEDDED_WORKER": "true",
}


def _g4g(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


class DemoService:
    """`g4g serve` on 127.0.0.1:`port`, its log in `data_dir/demo-serve.log`."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir / "demo-serve.log"
        self.env = {
            **os.environ,
            **DEMO_SETTINGS,
            "G4G_DATA_DIR": str(data_dir),
            "G4G_HOST": "127.0.0.1",
            "G4G_PORT": str(port),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> None:
        if not port_is_free("127.0.0.1", self.port):
            raise DemoError(
                f"port {self.port} is taken (another g4g serve?): pass --port, or --url and --admin-key to use it"
            )
        done = subprocess.run(_g4g("migrate"), env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DemoError(f"g4g migrate failed: {done.stderr.strip()}")

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # Its own session: Ctrl-C reaches the demo, which then stops the service in order.
            self.process = subprocess.Popen(
                _g4g("serve"), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"g4g serve exited with {self.process.returncode}; its log: {self.log_path}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise DemoError(f"g4g serve was not ready within {timeout:.0f} s; its log: {self.log_path}")

    def create_admin_key(self, name: str) -> str:
        done = subprocess.run(
            _g4g("create-api-key", "--role", "admin", "--name", name),
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(f"g4g create-api-key failed: {done.stderr.strip()}")
        return done.stdout.strip()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def wait(self) -> None:
        if self.process is not None:
            self.process.wait()

    def stop(self) -> int | None:
        """SIGTERM: the server finishes its requests and jobs, then the embedded database stops with it."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
