from __future__ import annotations

from fastapi import APIRouter, Request

from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.json_body import ExactJsonRoute
from app.ledger.audit import AuditReport, run_and_record_audit

router = APIRouter(prefix="/v1", tags=["ledger"], route_class=ExactJsonRoute)


@router.get("/audit", response_model=AuditReport, operation_id="run_audit")
async def audit(
    request: Request, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> AuditReport:
    """Recompute every invariant from the ledger's entries; `ok` is false if any is broken. The run is recorded
    (when, by which key, the failed checks' names) for the console's overview."""
    state = request.app.state
    return await run_and_record_audit(
        session, state.sessionmaker, now=state.clock.now(), via="api", key_id=principal.key_id
    )
