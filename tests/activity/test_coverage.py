"""No route that changes something with a key can be added without its changes reaching the activity log."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from app.activity.recording import NOT_RECORDED, recorded_action
from app.activity.service import ACTION
from app.core.auth import roles_required


def _routes_taking_a_key(app: Any) -> list[tuple[str, str, APIRoute]]:
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and roles_required(route.dependant) is not None:
            found.extend((method, route.path, route) for method in sorted(route.methods))
    return found


async def test_every_route_that_may_change_something_records_it_or_says_why_not(app: Any) -> None:
    unrecorded = [
        f"{method} {path} ({route.operation_id})"
        for method, path, route in _routes_taking_a_key(app)
        if method not in ("GET", "HEAD")
        and recorded_action(route.dependant) is None
        and route.operation_id not in NOT_RECORDED
    ]
    assert unrecorded == [], "record these with `Recorded(...)`, or list them in NOT_RECORDED with a reason"


async def test_reads_record_nothing_and_every_exception_names_a_real_route(app: Any) -> None:
    routes = _routes_taking_a_key(app)
    assert [path for method, path, r in routes if method == "GET" and recorded_action(r.dependant)] == []
    operations = {route.operation_id for _, _, route in routes} | {"receive_order_event"}
    assert set(NOT_RECORDED) <= operations
    assert all(reason.endswith(".") for reason in NOT_RECORDED.values())


async def test_actions_are_stable_resource_verb_names_one_per_route(app: Any) -> None:
    actions = [
        action
        for method, _, route in _routes_taking_a_key(app)
        if method != "HEAD" and (action := recorded_action(route.dependant)) is not None
    ]
    assert all(ACTION.match(action) for action in actions), actions
    assert len(actions) == len(set(actions)) >= 30
