from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from app.core.auth import Authorized, Principal, Role
from app.core.database import ReportSessionDep
from app.core.errors import InvalidRequest
from app.core.json_body import ExactJsonRoute
from app.core.types import Instant, ResourceId
from app.merchants.service import get_visible_merchant
from app.reports.schemas import MerchantImpactOut, TransparencyOut
from app.reports.service import Snapshot, TransparencyReport, merchant_impact

router = APIRouter(prefix="/v1", tags=["reports"], route_class=ExactJsonRoute)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def cache_headers(snapshot: Snapshot, refresh: timedelta) -> dict[str, str]:
    """Caches may keep the figures as long as the service itself does before refreshing them (5 minutes at
    most); after that they revalidate with the ETag."""
    max_age = min(int(refresh.total_seconds()), 300)
    return {
        "ETag": snapshot.etag,
        "Cache-Control": f"public, max-age={max_age}" if max_age else "no-cache",
    }


@router.get(
    "/transparency",
    response_model=TransparencyOut,
    operation_id="get_transparency",
    responses={304: {"description": "Not modified: the figures still have the ETag sent in If-None-Match"}},
)
async def get_transparency(
    request: Request,
    if_none_match: Annotated[
        str | None, Header(alias="If-None-Match", description="An ETag from an earlier answer")
    ] = None,
) -> Response:
    """The programme's totals for the public, no key needed: merchants taking part, orders, money by stage (per
    currency and valued in the base currency), what reached the pool, and all of it by month. Counts below five
    are `"<5"`. Figures are recomputed regularly (see `updated_at`); use `If-None-Match` to ask cheaply."""
    report: TransparencyReport = request.app.state.transparency
    snapshot = await report.current()
    headers = cache_headers(snapshot, report.refresh_interval)
    if _matches(if_none_match, snapshot.etag):
        return Response(status_code=304, headers=headers)
    return Response(content=snapshot.body, media_type="application/json", headers=headers)


@router.get(
    "/merchants/{merchant_id}/impact", response_model=MerchantImpactOut, operation_id="get_merchant_impact"
)
async def get_merchant_impact(
    merchant_id: ResourceId,
    request: Request,
    session: ReportSessionDep,
    placed_from: Annotated[
        Instant | None, Query(alias="from", description="Orders placed from this instant (inclusive)")
    ] = None,
    placed_to: Annotated[
        Instant | None, Query(alias="to", description="… up to this instant (exclusive)")
    ] = None,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> MerchantImpactOut:
    """What the merchant's donations became: money by stage and currency (pledged money is not raised), the pool,
    the Love Packages its money paid for (its share of each, so a fraction), the students they reached, the
    packages delivered by country, and the share of its money that reached schools."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    if placed_from is not None and placed_to is not None and placed_to <= placed_from:
        raise InvalidRequest("to: must be later than from.")
    settings = request.app.state.settings
    return await merchant_impact(
        session,
        merchant.id,
        placed_from=placed_from,
        placed_to=placed_to,
        now=request.app.state.clock.now(),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
    )
