"""Receipt links (the order's platform makes and revokes them) and a receipt as JSON (public, by its token)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.database import PublicReadConnectionDep, SessionDep, pooled
from app.core.errors import problem_for
from app.core.json_body import ExactJsonRoute
from app.core.types import PRINTABLE
from app.receipts import service
from app.receipts.schemas import ReceiptLinkIn, ReceiptLinkOut, ReceiptOut

router = APIRouter(prefix="/v1", tags=["receipts"], route_class=ExactJsonRoute)

OrderId = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]
Token = Annotated[str, Path(description="The token from the receipt link")]
# A receipt is the buyer's: kept out of caches, search engines and other sites' logs.
RECEIPT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def public_origin(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_url
    return configured or f"{request.url.scheme}://{request.url.netloc}"


def link_out(request: Request, issued: service.IssuedLink) -> ReceiptLinkOut:
    path = f"/r/{issued.token}"
    return ReceiptLinkOut(
        url=path,
        full_url=public_origin(request) + path,
        qr_svg=f"{path}/qr.svg",
        qr_png=f"{path}/qr.png",
        created_at=issued.created_at,
    )


@router.post(
    "/orders/{order_id:path}/receipt-link",
    response_model=ReceiptLinkOut,
    status_code=201,
    responses={200: {"model": ReceiptLinkOut, "description": "The order's existing link, again"}},
    operation_id="create_receipt_link",
)
async def create_receipt_link(
    order_id: OrderId,
    request: Request,
    session: SessionDep,
    body: ReceiptLinkIn | None = None,
    principal: Principal = Authorized(Role.platform),
    activity: ActivityNote = Recorded("receipt_link.create", "order"),
) -> JSONResponse:
    """The buyer's receipt link for an order, to put in the order confirmation: 201 when made, 200 with the
    same link when asked again (display choices updated). Only the order's platform can ask."""
    assert principal.platform_id is not None
    state = request.app.state
    issued = await service.issue_link(
        session,
        state.receipt_key,
        principal.platform_id,
        order_id,
        body or ReceiptLinkIn(),
        now=state.clock.now(),
        window=timedelta(days=state.settings.return_window_days),
    )
    activity.resource_id, activity.merchant_id = issued.order_id, issued.merchant_id
    activity.details = {"new": issued.new, "show_merchant": (body or ReceiptLinkIn()).show_merchant}
    out = link_out(request, issued)
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=201 if issued.new else 200,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/orders/{order_id:path}/receipt-link", response_model=ReceiptLinkOut, operation_id="get_receipt_link"
)
async def get_receipt_link(
    order_id: OrderId, request: Request, session: SessionDep, principal: Principal = Authorized(Role.platform)
) -> JSONResponse:
    """The order's receipt link, as made by `POST` (404 when it has none, or it was revoked)."""
    assert principal.platform_id is not None
    issued = await service.current_link(
        session, request.app.state.receipt_key, principal.platform_id, order_id
    )
    return JSONResponse(
        link_out(request, issued).model_dump(mode="json"), headers={"Cache-Control": "no-store"}
    )


@router.delete("/orders/{order_id:path}/receipt-link", status_code=204, operation_id="revoke_receipt_link")
async def revoke_receipt_link(
    order_id: OrderId,
    session: SessionDep,
    principal: Principal = Authorized(Role.platform),
    activity: ActivityNote = Recorded("receipt_link.revoke", "order"),
) -> Response:
    """Revoke the order's receipt link: it answers 404 from now on, like a link never made. Revoking again
    changes nothing; asking for a link afterwards makes a new one."""
    assert principal.platform_id is not None
    order = await service.revoke_links(session, principal.platform_id, order_id)
    activity.resource_id, activity.merchant_id = order.id, order.merchant_id
    return Response(status_code=204)


@router.get("/receipts/{token}", response_model=ReceiptOut, operation_id="get_receipt")
async def get_receipt(token: Token, request: Request, db: PublicReadConnectionDep) -> Response:
    """A receipt by its token (public: the token is the key). What happened to the order's donation, with
    dates, what comes next and roughly when. Never a student or a school; a region only where the public report
    shows it. An unknown or revoked token is 404, the same for both."""
    return await receipt_json(token, request, db)


async def receipt_json(token: str, request: Request, db: asyncpg.Connection) -> Response:
    try:
        receipt = await receipt_for(request, db, token)
    except service.ReceiptNotFound as exc:
        return problem_for(exc)
    return Response(receipt.model_dump_json(), media_type="application/json", headers=RECEIPT_HEADERS)


async def receipt_for(request: Request, db: asyncpg.Connection, token: str) -> ReceiptOut:
    """The receipt, read on `db` (the replica's while within its lag bound). Whether a token opens a receipt is
    always the primary's answer (one indexed lookup): a link revoked a moment ago must not open from a replica
    that has not replayed the revocation yet, and a link made a moment ago, which it has not replayed either, is
    read on the primary."""
    state = request.app.state

    async def read(connection: asyncpg.Connection) -> ReceiptOut:
        return await service.receipt(
            connection,
            token,
            now=state.clock.now(),
            window=timedelta(days=state.settings.return_window_days),
            regions=state.public_regions,
            settlement_schedule=state.settings.settlement_schedule,
        )

    if not getattr(request.state, "read_on_replica", False):
        return await read(db)  # the primary's (no replica, or it is past its lag bound)
    async with pooled(state.read_pool) as primary:
        if not await service.link_is_live(primary, token):
            raise service.ReceiptNotFound("No such receipt.")
        try:
            return await read(db)
        except service.ReceiptNotFound:
            return await read(primary)
