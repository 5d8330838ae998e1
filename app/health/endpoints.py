from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.core.errors import problem_response
from app.core.json_body import ExactJsonRoute
from app.core.migrations import current_revision

router = APIRouter(tags=["health"], route_class=ExactJsonRoute)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    schema_revision: str


@router.get("/healthz", response_model=Health, operation_id="healthz")
async def healthz() -> Health:
    """The process is alive. Checks nothing else, so an orchestrator never restarts it for a database blip."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readyz",
    responses={503: {"description": "Database unreachable or schema not at the head revision"}},
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready for traffic: the database answers and its schema is at the revision this code expects."""
    expected = request.app.state.schema_head
    try:
        async with request.app.state.engine.connect() as connection:
            revision = await current_revision(connection)
    except (OSError, TimeoutError, Exception) as exc:  # any failure to reach the database means "not ready"
        return problem_response(503, "not-ready", "Database unreachable", type(exc).__name__)
    if revision != expected:
        return problem_response(
            503, "not-ready", "Schema not current", f"schema at {revision}, code expects {expected}"
        )
    return Readiness(status="ready", schema_revision=revision)
