"""Domain errors and their one rendering: RFC 9457 problem+json, with a stable `type` per kind."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core import patterns

PROBLEM_BASE = "https://goodsforgood.org/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """A failure the client can act on. Subclasses fix the status, the problem type and the title."""

    status: int = 400
    kind: str = "bad-request"
    title: str = "Bad request"
    headers: Mapping[str, str] = {}  # sent with the problem, e.g. `Retry-After`

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extensions = extensions


class Unauthorized(ProblemError):
    status, kind, title = 401, "unauthorized", "Missing, unknown or revoked credentials"


class NotFound(ProblemError):
    status, kind, title = 404, "not-found", "Resource not found"


class Conflict(ProblemError):
    status, kind, title = 409, "conflict", "Conflicts with the current state"


class AlreadyExists(Conflict):
    kind, title = "already-exists", "A resource with this natural key already exists"


class IdempotencyKeyReused(Conflict):
    kind, title = "idempotency-key-reused", "Idempotency-Key was used with a different request"


class SecretShownOnce(Conflict):
    kind, title = (
        "secret-shown-once",
        "This request was already answered, with a secret that is shown only once",
    )


class InvalidRequest(ProblemError):
    status, kind, title = 422, "invalid-request", "The request body or parameters are invalid"


def problem_response(
    status: int, kind: str, title: str, detail: str | None = None, **extensions: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extensions)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


_HTTP_KINDS = {
    404: "not-found",
    405: "method-not-allowed",
    401: "unauthorized",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem_for(exc: ProblemError) -> JSONResponse:
    response = problem_response(exc.status, exc.kind, exc.title, exc.detail, **exc.extensions)
    response.headers.update(exc.headers)
    return response


async def _problem_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_for(exc)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. (The router names only the first matching route's.)"""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def http_problem_for(exc: StarletteHTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    kind = _HTTP_KINDS.get(exc.status_code, phrase.lower().replace(" ", "-"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    response = problem_response(exc.status_code, kind, phrase, detail)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = http_problem_for(exc)
    if exc.status_code == 405:
        response.headers["Allow"] = _allowed_methods(request)
    return response


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": _jsonable(list(e.get("loc", ()))),
            "msg": patterns.message(e),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return problem_response(422, InvalidRequest.kind, InvalidRequest.title, _summarise(errors), errors=errors)


def _summarise(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Unexpected exceptions (bugs) are answered by `app.core.observability.RequestObservation`, which knows the
    # request id: an `Exception` handler here would run outside it and lose the id.
