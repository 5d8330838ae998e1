from __future__ import annotations

from fastapi import APIRouter, Request

from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.json_body import ExactJsonRoute
from app.ledger.audit import AuditReport, run_audit

router = APIRouter(prefix="/v1", tags=["ledger"], route_class=ExactJsonRoute)


@router.get("/audit", response_model=AuditReport, operation_id="run_audit")
async def audit(
    request: Request, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> AuditReport:
    """Recompute every invariant from the ledger's entries; `ok` is false if any is broken."""
    return await run_audit(session, now=request.app.state.clock.now())
