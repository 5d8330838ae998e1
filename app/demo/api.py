"""The public HTTP API as the demo's actors call it: one client, each call made with the caller's own key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook


class DemoError(Exception):
    """The demo cannot go on; the message says why in one line."""


class Api:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
    ) -> Any:
        """The answer's JSON (None for 204); any other status than `expect` stops the demo with the problem's
        title and detail."""
        response = await self.http.request(
            method, path, json=body, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code not in expect:
            raise DemoError(f"{method} {path} answered {response.status_code}: {_problem(response)}")
        return None if response.status_code == 204 else response.json()

    async def every(
        self, path: str, token: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a list endpoint, page after page."""
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": 100}
        while True:
            page = await self.call("GET", path, token, params=query)
            items.extend(page["data"])
            if not page["next_cursor"]:
                return items
            query["cursor"] = page["next_cursor"]

    async def send_order_event(
        self, platform_id: str, secret: str, event: dict[str, Any], webhook_id: str
    ) -> tuple[int, str]:
        """An order event signed the way docs/platform-integration.md tells platforms to: Standard Webhooks over
        the exact bytes sent. Returns the HTTP status and the answer's `status` (or the problem's title)."""
        body = json.dumps(event, separators=(",", ":"))
        sent_at = datetime.now(UTC)
        response = await self.http.post(
            f"/v1/webhooks/orders/{platform_id}",
            content=body.encode(),
            headers={
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": Webhook(secret).sign(webhook_id, sent_at, body),
            },
        )
        if response.status_code >= 300:
            return response.status_code, _problem(response)
        return response.status_code, str(response.json().get("status"))


def _problem(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(problem, dict):
        return str(problem)[:200]
    return " ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k))[:500]
