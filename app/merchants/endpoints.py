from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.merchants import repository, service
from app.merchants.schemas import MerchantCreate, MerchantRead

router = APIRouter(prefix="/v1/merchants", tags=["merchants"], route_class=ExactJsonRoute)


@router.post("", status_code=201, response_model=MerchantRead, operation_id="create_merchant")
async def create_merchant(
    body: MerchantCreate,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin, Role.platform),
) -> MerchantRead | JSONResponse:
    """Register a merchant. A platform key registers on its own platform; an admin names `platform_id`."""

    async def create() -> MerchantRead:
        merchant = await service.register_merchant(
            session,
            platform_id=principal.acting_platform(body.platform_id),
            external_id=body.external_id,
            name=body.name,
            country=body.country,
            now=request.app.state.clock.now(),
        )
        return MerchantRead.model_validate(merchant)

    return await idempotency.run(principal, create)


@router.get("", response_model=Page[MerchantRead], operation_id="list_merchants")
async def list_merchants(
    session: SessionDep,
    page: PageParams,
    platform_id: Annotated[
        ResourceId | None, Query(description="Admin only: one platform's merchants")
    ] = None,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> Page[MerchantRead]:
    """Merchants the caller may see: all (admin), its own (platform), itself (merchant)."""
    rows = await repository.list_after(
        session,
        after=page.after,
        limit=page.limit + 1,
        platform_id=platform_id if principal.is_admin else principal.platform_id,
        merchant_id=principal.merchant_id,
    )
    return page_of([MerchantRead.model_validate(r) for r in rows], [r.id for r in rows], page.limit)


@router.get("/{merchant_id}", response_model=MerchantRead, operation_id="get_merchant")
async def get_merchant(
    merchant_id: ResourceId,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> MerchantRead:
    return MerchantRead.model_validate(await service.get_visible_merchant(session, principal, merchant_id))
