"""The server's HTTP layer alone: uvicorn's httptools protocol against ours, which sends a response's head and body
in one write (`app/core/http_protocol.py`).

    .venv/bin/python bench/http_writes.py [--rounds 4] [--duration 5] [--concurrency 32]

Each round starts both servers in turn (uvicorn, one process) on a small ASGI app answering like the order webhook
does (a JSON body of 60 bytes with our eight headers) and drives each with bench/loadgen.py for `--duration`
seconds over `--concurrency` keep-alive connections, on two routes: `/` answers at once (the HTTP layer at full
speed) and `/wait` answers after 5 ms, as a request waiting for its batch's transaction does (a few thousand
requests a second, each response written on its own, as in `bench/ingest.py`). Prints each run, then per route
the medians and ours / uvicorn's ratios of requests a second and of the server's CPU a request, both measured in
the same run since the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from loadgen import run_load  # noqa: E402

BODY = b'{"status":"applied","donation":{"amount":196,"currency":"CNY"}}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(BODY)),
    (b"x-request-id", b"01JABCDEFGHJKMNPQRSTVWXYZ0"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'"),
]
PROTOCOLS = {
    "uvicorn": "'httptools'",
    "ours": "OneWriteHttpToolsProtocol",
}
ROUTES = {"/": "answers at once", "/wait": "answers after 5 ms"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app both servers run."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/wait":
        await asyncio.sleep(0.005)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _run(protocol: str, path: str, duration: float, concurrency: int) -> tuple[float, float]:
    """(requests a second, server CPU µs a request) of one server over one run."""
    port = _free_port()
    code = (
        f"import sys, uvicorn; sys.path.insert(0, {str(BENCH_DIR)!r}); "
        "from app.core.http_protocol import OneWriteHttpToolsProtocol; "
        f"uvicorn.run('http_writes:app', port={port}, http={PROTOCOLS[protocol]}, log_level='warning', "
        "access_log=False, lifespan='off')"
    )
    server = subprocess.Popen([sys.executable, "-c", code], cwd=BENCH_DIR.parent)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        request = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: 2\r\n\r\n{{}}".encode()
        before = _cpu_ticks(server.pid)
        result = run_load(
            [request], host="127.0.0.1", port=port, duration_s=duration, concurrency=concurrency, cycle=True
        )
        ticks = _cpu_ticks(server.pid) - before
    finally:
        server.terminate()
        server.wait()
    answered = len(result.statuses)
    if result.error_count or not answered or set(result.statuses) != {200}:
        raise SystemExit(f"{protocol} {path}: {result.error_count} errors, statuses {set(result.statuses)}")
    return answered / duration, ticks / 100 / answered * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    for path, what in ROUTES.items():
        print(f"route {path} ({what}), {args.concurrency} connections, {args.duration:g} s a run")
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PROTOCOLS}
        for round_ in range(args.rounds):
            for protocol in PROTOCOLS if round_ % 2 == 0 else reversed(PROTOCOLS):
                rate, cpu = _run(protocol, path, args.duration, args.concurrency)
                runs[protocol].append((rate, cpu))
                print(f"  {protocol:8} {rate:9,.0f} req/s  server {cpu:6.1f} µs a request", flush=True)
        medians = {
            name: (statistics.median(r for r, _ in got), statistics.median(c for _, c in got))
            for name, got in runs.items()
        }
        for name, (rate, cpu) in medians.items():
            print(f"  median {name:8} {rate:9,.0f} req/s  server {cpu:6.1f} µs a request")
        print(
            f"  ours / uvicorn: requests a second {medians['ours'][0] / medians['uvicorn'][0]:.3f}, "
            f"server CPU a request {medians['ours'][1] / medians['uvicorn'][1]:.3f}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
