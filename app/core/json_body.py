"""JSON request bodies parsed exactly: a number with a fraction or an exponent becomes a `Decimal`, never a
binary float, so `999999999999999.99` stays what the client wrote (and is refused as an amount) instead of
silently becoming 10**15. NaN and Infinity are not JSON and are refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import jiter
from fastapi import Request, Response
from fastapi.routing import APIRoute


def parse_json(body: bytes) -> Any:
    """Parse JSON with exact numbers. Raises `ValueError` on anything that isn't JSON (non-UTF-8 included)."""
    return jiter.from_json(body, float_mode="decimal", allow_inf_nan=False)


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = parse_json(body)
            except ValueError as exc:
                # FastAPI turns a JSONDecodeError into its usual 422 `json_invalid` answer.
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
        return self._json


class ExactJsonRoute(APIRoute):
    """Every API route reads its JSON body with `parse_json` (set as `route_class` on each router)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_json_handler(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact_json_handler
