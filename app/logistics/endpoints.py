from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role, ensure_visible
from app.core.database import SessionDep
from app.core.idempotency import REPLAY_HEADER, IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import CountryCode, ResourceId
from app.logistics import repository, service, tracking
from app.logistics.schemas import (
    LogisticsPartnerCreate,
    LogisticsPartnerRead,
    ShipmentEventAnswer,
    ShipmentEventIn,
    ShipmentOut,
    ShipmentStatus,
    ShipmentSummaryOut,
)

# A receipt names every box of a shipment (up to 10,000, each with a reason of up to 500 characters).
MAX_SHIPMENT_EVENT_BYTES = 8 * 1024 * 1024

router = APIRouter(prefix="/v1/logistics-partners", tags=["logistics"], route_class=ExactJsonRoute)
shipments = APIRouter(prefix="/v1/shipments", tags=["logistics"], route_class=ExactJsonRoute)


@router.post(
    "", status_code=201, response_model=LogisticsPartnerRead, operation_id="create_logistics_partner"
)
async def create_logistics_partner(
    body: LogisticsPartnerCreate,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("logistics_partner.create", "logistics_partner"),
) -> LogisticsPartnerRead | JSONResponse:
    async def create() -> LogisticsPartnerRead:
        partner = await service.create_partner(session, name=body.name)
        activity.resource_id, activity.details = partner.id, {"name": partner.name}
        return LogisticsPartnerRead.model_validate(partner)

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


# ---- shipments ----


@shipments.get("", response_model=Page[ShipmentSummaryOut], operation_id="list_shipments")
async def list_shipments(
    request: Request,
    session: SessionDep,
    page: PageParams,
    status: Annotated[ShipmentStatus | None, Query()] = None,
    school_id: Annotated[ResourceId | None, Query()] = None,
    country: Annotated[CountryCode | None, Query()] = None,
    stale: Annotated[
        bool | None,
        Query(
            description="true: not in a final state and no event for G4G_SHIPMENT_STALE_DAYS; false: the others"
        ),
    ] = None,
    logistics_partner_id: Annotated[ResourceId | None, Query()] = None,
    principal: Principal = Authorized(Role.admin, Role.logistics),
) -> Page[ShipmentSummaryOut]:
    """Shipments, oldest first: every one for admin, a partner's own for its key."""
    state = request.app.state
    rows, ids = await service.list_shipments(
        session,
        principal,
        after=page.after,
        limit=page.limit + 1,
        status=status,
        school_id=school_id,
        country=country,
        stale=stale,
        logistics_partner_id=logistics_partner_id,
        now=state.clock.now(),
        stale_days=state.settings.shipment_stale_days,
    )
    return page_of(rows, ids, page.limit)


@shipments.get("/{shipment_id}", response_model=ShipmentOut, operation_id="get_shipment")
async def get_shipment(
    shipment_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.logistics),
) -> ShipmentOut:
    """A shipment: school and teacher contact, its packages (kind, contents, grade; never a student), status,
    what may follow, and the full event history. Another partner's shipment is a 404."""
    state = request.app.state
    return await service.get_shipment(
        session,
        principal,
        shipment_id,
        cipher=state.cipher,
        now=state.clock.now(),
        stale_days=state.settings.shipment_stale_days,
    )


@shipments.post(
    "/{shipment_id}/events",
    status_code=201,
    response_model=ShipmentEventAnswer,
    operation_id="post_shipment_event",
)
async def post_shipment_event(
    shipment_id: ResourceId,
    body: ShipmentEventIn,
    request: Request,
    response: Response,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin, Role.logistics),
    activity: ActivityNote = Recorded("shipment.post_event", "shipment", resource_id="shipment_id"),
) -> ShipmentEventAnswer | JSONResponse:
    """Report a tracking event (the shipment's partner; admin too, and only admin cancels a `planned` shipment).
    Answered with the event as recorded: `applied` (the shipment moved) or `recorded` (kept in the history,
    nothing changed: it happened before the current status, or repeats it). The same `event_id` again gets the
    first answer (`Idempotent-Replayed: true`); with other content, 409. A transition the state machine does
    not allow is a 409 naming the current status and what may follow."""
    state = request.app.state

    async def create() -> ShipmentEventAnswer:
        answer, replayed = await tracking.post_event(
            session,
            principal,
            shipment_id,
            body,
            cipher=state.cipher,
            lookup_key=state.lookup_key,
            now=state.clock.now(),
        )
        if replayed:
            response.headers[REPLAY_HEADER] = "true"
            activity.skip()  # the same event again: nothing changed
        activity.details = {
            "event_id": answer.id,
            "status": answer.status,
            "result": answer.result,
            "status_after": answer.status_after,
        }
        return answer

    return await idempotency.run(principal, create)


@shipments.get(
    "/{shipment_id}/packing-list",
    response_class=Response,
    operation_id="get_shipment_packing_list",
    responses={
        200: {
            "description": "CSV: package_id, package, grade, roster_code (one line per package)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def get_shipment_packing_list(
    shipment_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
) -> Response:
    """The packing list for the school's teacher: each package with the roster code of the student it is for.
    Admin only (partners never see students); not stored by caches."""
    text = await service.packing_list(session, shipment_id, cipher=request.app.state.cipher)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="packing-list-{shipment_id}.csv"',
            "Cache-Control": "no-store",
        },
    )
