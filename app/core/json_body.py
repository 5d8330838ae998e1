"""JSON request bodies, read only once the caller is known and parsed exactly, within limits.

A number with a fraction or an exponent becomes a `Decimal`, never a binary float, so `999999999999999.99` stays
what the client wrote (and is refused as an amount) instead of silently becoming 10**15. NaN and Infinity are not
JSON and are refused.

The size of a body is bounded while it streams (`app/core/body_limit.py`), but bytes are not the cost that hurts:
8 MiB of `[[],[],…]` is 2.8 million Python lists, about 200 MB. So before a body is parsed its shape is measured
on the bytes themselves (C-speed `re` and `bytes` operations, no objects built): more values than allowed is a
413, nesting deeper than allowed a 422."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import jiter
from fastapi import Request, Response, params
from fastapi.routing import APIRoute

from app.core.auth import authorize_early, roles_required
from app.core.errors import InvalidRequest, ProblemError


@dataclass(frozen=True, slots=True)
class JsonLimits:
    depth: int
    values: int  # every value counts: each object, array, string, number, true, false and null (keys do not)


# The largest bodies the API takes are a shipment receipt (10,000 boxes, ~40,000 values) and a class list
# (`ROSTER_LIMITS`, in packages); anything else is far smaller.
DEFAULT_LIMITS = JsonLimits(depth=32, values=100_000)


class PayloadTooLarge(ProblemError):
    status, kind, title = 413, "payload-too-large", "Payload too large"


# A string, or an unterminated one running to the end (so a search never rescans the rest: linear time).
# Possessive: nothing to backtrack into, which keeps long runs of escapes fast.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S]?+)*+(?:"|\Z)')
_WHITESPACE = b" \t\r\n"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NESTING = [0] * 256
_NESTING[ord("[")] = _NESTING[ord("{")] = 1
_NESTING[ord("]")] = _NESTING[ord("}")] = -1


def check_shape(body: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> None:
    """Refuse a body with more values or deeper nesting than `limits`, measured without parsing it. Exact for
    valid JSON; invalid JSON gets some count and is then refused by the parser."""
    # Every string is a value or a key, and each key has a value: at least half as many values as strings.
    # Counted first, so a body of a million tiny strings is refused before the (slower) pass over strings.
    if body.count(b'"') - body.count(b'\\"') > 4 * limits.values:
        raise PayloadTooLarge(f"The JSON body holds more than {limits.values} values.")
    skeleton = _STRING.sub(b"0", body).translate(None, _WHITESPACE)
    opened = skeleton.count(b"[") + skeleton.count(b"{")
    # Every comma adds a value to its container, and so does the first element of each non-empty container.
    empty = skeleton.count(b"[]") + skeleton.count(b"{}")
    values = 1 + skeleton.count(b",") + opened - empty
    if values > limits.values:
        raise PayloadTooLarge(f"The JSON body holds more than {limits.values} values.")
    if opened > limits.depth:  # only then can it be deeper
        brackets = skeleton.translate(None, _NOT_BRACKETS)  # at most 2 * limits.values bytes by now
        if max(accumulate(map(_NESTING.__getitem__, brackets))) > limits.depth:
            raise InvalidRequest(f"The JSON body is nested deeper than {limits.depth} levels.")


def parse_json(body: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Parse JSON with exact numbers, within `limits` (`PayloadTooLarge` or `InvalidRequest` beyond them).
    Raises `ValueError` on anything that isn't JSON (non-UTF-8 included)."""
    check_shape(body, limits)
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
    """Every API route (set as `route_class` on each router). FastAPI reads and parses a body parameter before
    it runs any dependency, the caller's key included; this route checks the key and the role (`Authorized`)
    from the header first, so a caller without a valid key never has a byte of its body read. Then the body is
    parsed here with `parse_json`, so one over the limits is refused before any object is built."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        roles = roles_required(self.dependant)
        takes_json = self.body_field is not None and not isinstance(self.body_field.field_info, params.Form)

        async def exact_json_handler(request: Request) -> Response:
            request = ExactJsonRequest(request.scope, request.receive)
            if roles is not None:
                await authorize_early(request, roles)
            if takes_json and await request.body():
                try:
                    await request.json()  # kept on the request for FastAPI
                except json.JSONDecodeError:
                    pass  # FastAPI answers it, as it does every invalid body
            return await handler(request)

        return exact_json_handler
