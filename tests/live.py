"""Run `g4g` as a real process, the way an operator does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

G4G = str(Path(sys.executable).with_name("g4g"))
# Every served process's log, for the session's check that no roster code reached one.
LIVE_LOGS: list[Path] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The checkout whose `app` these tests import: the served process runs the same code (the installed `g4g` may
# point at another checkout, e.g. from a git worktree).
CODE_ROOT = str(Path(__file__).resolve().parent.parent)


def g4g_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("G4G_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CODE_ROOT, env.get("PYTHONPATH")) if p)
    env.update(values)
    return env


def run_g4g(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([G4G, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120)


class LiveServer:
    """`g4g serve` on a free loopback port, its log captured to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        LIVE_LOGS.append(log_path)
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [G4G, "serve", "--port", str(self.port)],
            env=dict(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"g4g serve exited: {log_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("g4g serve did not come up")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
