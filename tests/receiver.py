"""A real HTTP receiver on 127.0.0.1 that verifies Standard Webhooks signatures, as a platform's server would."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    verified_with: list[int]  # indexes of the receiver's secrets that verify this message
    host_header: str


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    # Status codes to answer with, in order; once used up, 200.
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None  # serve https with this context's certificate
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(index)
            except WebhookVerificationError:
                pass
        self.received.append(Received(headers["webhook-id"], json.loads(body), verified, headers["host"]))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok" if status < 300 else "x" * 100_000)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
