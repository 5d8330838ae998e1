"""Request bodies are bounded while they stream: a body over its route's limit is answered 413 problem+json
before more of it is read, whoever sends it and whether or not it carries credentials."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response


@dataclass(frozen=True, slots=True)
class BodyAllowance:
    """A larger (or smaller) limit for the requests whose method and path match."""

    method: str
    path: re.Pattern[str]
    limit: int


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than this endpoint accepts ({limit} bytes).")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, default: int, allowances: Sequence[BodyAllowance] = ()) -> None:
        self.app = app
        self.default = default
        self.allowances = tuple(allowances)

    def limit_for(self, method: str, path: str) -> int:
        for allowance in self.allowances:
            if allowance.method == method and allowance.path.fullmatch(path):
                return allowance.limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Refused from the header alone: not one byte of the body is read.
            too_large = BodyTooLarge(limit)
            response = problem_response(413, "payload-too-large", "Payload too large", str(too_large.detail))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we ever see it
    return None
