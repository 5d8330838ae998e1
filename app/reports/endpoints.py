from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app.core.json_body import ExactJsonRoute
from app.reports.schemas import TransparencyOut
from app.reports.service import Snapshot, TransparencyReport

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
