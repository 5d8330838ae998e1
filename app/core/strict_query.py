"""Unknown query parameters are refused (422), as a mistyped filter silently ignored would return wrong data."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.core.errors import InvalidRequest


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_declared: dict[int, frozenset[str]] = {}


def _declared_query_names(route: APIRoute) -> frozenset[str]:
    names = _declared.get(id(route))
    if names is None:
        names = _declared[id(route)] = frozenset(_query_names(route.dependant))
    return names


async def reject_unknown_query_parameters(request: Request) -> None:
    route = request.scope.get("route")
    # Web pages (outside the API contract) take any query string: links and browsers add their own.
    if not isinstance(route, APIRoute) or not route.include_in_schema or not request.query_params:
        return
    unknown = sorted(set(request.query_params.keys()) - _declared_query_names(route))
    if unknown:
        raise InvalidRequest(
            f"Unknown query parameter(s): {', '.join(unknown)[:200]}.",
            errors=[
                {"loc": ["query", name], "msg": "unknown parameter", "type": "extra_forbidden"}
                for name in unknown[:20]
            ],
        )
