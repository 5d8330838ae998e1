"""The baseline for bench/quotes.py: what answering a checkout quote costs at the least, as raw ASGI on uvicorn.

`POST /v1/quotes` checks the bearer token (SHA-256 of it looked up among the known keys' hashes, as the service
stores them, held in memory), reads the JSON body, runs one indexed select with raw asyncpg (the merchant and its
rule, by platform and the platform's merchant id) and answers 200 with a small JSON document. No framework, no
validation, no money arithmetic: the floor a quote can't go below on this machine.

Environment: BENCH_DATABASE_URL (a database with `bench_merchants`, made by bench/quotes.py),
BENCH_TOKEN_SHA256 (hex), BENCH_POOL_SIZE (asyncpg connections per worker, default 10).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import asyncpg

Scope = dict[str, Any]
SELECT = "SELECT id, rate_bps FROM bench_merchants WHERE platform_id = $1 AND external_id = $2"


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class QuoteBaseline:
    def __init__(self) -> None:
        self._database_url = os.environ["BENCH_DATABASE_URL"]
        self._known = {bytes.fromhex(os.environ["BENCH_TOKEN_SHA256"]): "plt_baseline"}
        self._pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
        self._pool: asyncpg.Pool | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._pool = await asyncpg.create_pool(
                        self._database_url, min_size=self._pool_size, max_size=self._pool_size
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._pool is not None:
                        await self._pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if scope["path"] == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        platform_id = self._known.get(hashlib.sha256(authorization.removeprefix(b"Bearer ")).digest())
        if platform_id is None:
            await _respond(send, 401, b'{"status":"unauthorized"}')
            return
        quote = json.loads(body)
        assert self._pool is not None
        row = await self._pool.fetchrow(SELECT, platform_id, quote["merchant_id"])
        if row is None:
            await _respond(send, 404, b'{"status":"not found"}')
            return
        await _respond(send, 200, json.dumps({"merchant": row["id"], "rate_bps": row["rate_bps"]}).encode())


app = QuoteBaseline()
