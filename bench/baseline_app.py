"""The ceiling for "one durable write per request", for bench/ingest.py.

A raw ASGI app (no framework) that bench/ingest.py serves with uvicorn, configured by environment variables:

- `BENCH_DATABASE_URL`: a `postgresql://` URL whose database has the `webhook_events` table (ingest.py makes it);
- `BENCH_WEBHOOK_SECRET`: the `whsec_…` secret the requests are signed with;
- `BENCH_POOL_SIZE`: asyncpg connections per worker process (default 10, like the service's pool).

Routes:
- `POST /v1/webhooks/orders/{platform_id}`: verify the Standard Webhooks signature with the `standardwebhooks`
  package (401 if it fails), insert (webhook id, body) with asyncpg, then answer 200 `{"status":"applied"}`;
- `POST /bench/verify`: the same verification without the insert (calibration);
- `POST /bench/noop`: read the body and answer (calibration: what the HTTP layer and the generator cost);
- `GET /healthz`: 200 once the pool is up.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEBHOOK_PREFIX = "/v1/webhooks/orders/"
INSERT = "INSERT INTO webhook_events (webhook_id, body) VALUES ($1, $2)"
APPLIED = b'{"status":"applied"}'


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BaselineApp:
    def __init__(self) -> None:
        self._webhook = Webhook(os.environ["BENCH_WEBHOOK_SECRET"])
        self._database_url = os.environ["BENCH_DATABASE_URL"]
        self._pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
        self._pool: asyncpg.Pool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._pool = await asyncpg.create_pool(
                        self._database_url, min_size=self._pool_size, max_size=self._pool_size
                    )
                except (OSError, asyncpg.PostgresError) as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._pool is not None:
                    await self._pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _verified(self, scope: Scope, body: bytes) -> dict[str, str] | None:
        """The request's headers if its signature holds, else None."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            self._webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            return None
        return headers

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        path: str = scope["path"]
        if scope["method"] == "GET" and path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b'{"status":"method not allowed"}')
            return
        if path == "/bench/noop":
            await _respond(send, 200, APPLIED)
            return
        if not (path.startswith(WEBHOOK_PREFIX) or path == "/bench/verify"):
            await _respond(send, 404, b'{"status":"not found"}')
            return
        headers = self._verified(scope, body)
        if headers is None:
            await _respond(send, 401, b'{"status":"bad signature"}')
            return
        if path.startswith(WEBHOOK_PREFIX):
            assert self._pool is not None
            await self._pool.execute(INSERT, headers["webhook-id"], body.decode())
        await _respond(send, 200, APPLIED)


app = BaselineApp()
