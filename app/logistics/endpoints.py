from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.core.auth import Authorized, Principal, Role, ensure_visible
from app.core.database import SessionDep
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.logistics import repository, service
from app.logistics.schemas import LogisticsPartnerCreate, LogisticsPartnerRead

router = APIRouter(prefix="/v1/logistics-partners", tags=["logistics"], route_class=ExactJsonRoute)


@router.post(
    "", status_code=201, response_model=LogisticsPartnerRead, operation_id="create_logistics_partner"
)
async def create_logistics_partner(
    body: LogisticsPartnerCreate,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
) -> LogisticsPartnerRead | JSONResponse:
    async def create() -> LogisticsPartnerRead:
        return LogisticsPartnerRead.model_validate(await service.create_partner(session, name=body.name))

    return await idempotency.run(principal, create)


@router.get("", response_model=Page[LogisticsPartnerRead], operation_id="list_logistics_partners")
async def list_logistics_partners(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[LogisticsPartnerRead]:
    rows = await repository.list_after(session, after=page.after, limit=page.limit + 1)
    return page_of([LogisticsPartnerRead.model_validate(r) for r in rows], [r.id for r in rows], page.limit)


@router.get("/{partner_id}", response_model=LogisticsPartnerRead, operation_id="get_logistics_partner")
async def get_logistics_partner(
    partner_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin, Role.logistics)
) -> LogisticsPartnerRead:
    ensure_visible(principal.is_admin or principal.logistics_partner_id == partner_id, "logistics partner")
    return LogisticsPartnerRead.model_validate(await service.get_partner(session, partner_id))
