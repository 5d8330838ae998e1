from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.database import ReportSessionDep, SessionDep
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.merchants import repository, service
from app.merchants.profile import PublicFigures, public_figures
from app.merchants.schemas import BadgeOut, MerchantCreate, MerchantRead, MerchantUpdate
from app.web import badge
from app.web.i18n import LANGUAGES, Formatter, choose_language

router = APIRouter(prefix="/v1/merchants", tags=["merchants"], route_class=ExactJsonRoute)


@router.post("", status_code=201, response_model=MerchantRead, operation_id="create_merchant")
async def create_merchant(
    body: MerchantCreate,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin, Role.platform),
    activity: ActivityNote = Recorded("merchant.create", "merchant"),
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
        activity.resource_id = activity.merchant_id = merchant.id
        activity.details = {"platform_id": merchant.platform_id, "external_id": merchant.external_id}
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


@router.patch("/{merchant_id}", response_model=MerchantRead, operation_id="update_merchant")
async def update_merchant(
    merchant_id: ResourceId,
    body: MerchantUpdate,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
    activity: ActivityNote = Recorded("merchant.update", "merchant", resource_id="merchant_id"),
) -> MerchantRead:
    """Opt the merchant in or out of a public profile (its badge and its page). Sending the same again changes
    nothing."""
    merchant = await service.get_visible_merchant(session, principal, merchant_id)
    activity.details = {"public_profile": body.public_profile}
    return MerchantRead.model_validate(
        await service.set_public_profile(session, merchant, body.public_profile)
    )


# ---- the public badge: for platforms' product pages, no key needed, cacheable ----

Lang = Annotated[str | None, Query(description="en, id or zh-Hans; else from Accept-Language")]
BADGE_MAX_AGE = 600


async def _badge_figures(request: Request, session: ReportSessionDep, merchant_id: str) -> PublicFigures:
    merchant = await service.get_public_merchant(session, merchant_id)
    state = request.app.state
    return await public_figures(
        session,
        merchant,
        report=(await state.transparency.current()).figures(),
        now=state.clock.now(),
        window=timedelta(days=state.settings.return_window_days),
        base_currency=state.settings.base_currency,
    )


def _language(request: Request, lang: str | None) -> str:
    return lang if lang in LANGUAGES else choose_language(None, request.headers.get("accept-language"))


def _cacheable(request: Request, body: bytes, media_type: str, language: str) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": f"public, max-age={BADGE_MAX_AGE}",
        "ETag": etag,
        "Vary": "Accept-Language",
        "Content-Language": language,
        # Shown on other sites' product pages.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get(
    "/{merchant_id}/badge",
    response_model=BadgeOut,
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
    operation_id="get_merchant_badge",
)
async def get_merchant_badge(
    merchant_id: ResourceId, request: Request, session: ReportSessionDep, lang: Lang = None
) -> Response:
    """What a merchant that opted in gives and what it became, for its product pages (public, cacheable). A
    merchant without a public profile is 404."""
    figures = await _badge_figures(request, session, merchant_id)
    language = _language(request, lang)
    fmt = Formatter(language)
    merchant = figures.merchant
    out = BadgeOut(
        merchant_id=merchant.id,
        name=merchant.name,
        language=language,
        rate_bps=figures.rate_bps,
        text=badge.sentence(figures, fmt),
        gives=badge.gives(figures, fmt),
        so_far=badge.so_far(figures, fmt),
        packages_funded=figures.packages_funded,
        students_reached=figures.students_reached,
        countries=figures.countries,
        page_url=f"/m/{merchant.public_slug}",
    )
    return _cacheable(request, out.model_dump_json().encode(), "application/json", language)


@router.get(
    "/{merchant_id}/badge.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, 304: {"description": "Not modified"}},
    operation_id="get_merchant_badge_svg",
)
async def get_merchant_badge_svg(
    merchant_id: ResourceId, request: Request, session: ReportSessionDep, lang: Lang = None
) -> Response:
    """The badge as a 360 × 56 SVG image, in the requested language."""
    figures = await _badge_figures(request, session, merchant_id)
    language = _language(request, lang)
    return _cacheable(request, badge.svg(figures, Formatter(language)).encode(), "image/svg+xml", language)
