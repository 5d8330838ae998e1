from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role, ensure_visible
from app.core.database import SessionDep
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.platforms import repository, service
from app.platforms.schemas import PlatformCreate, PlatformRead, PlatformSecretRotated, PlatformWithSecret

router = APIRouter(prefix="/v1/platforms", tags=["platforms"], route_class=ExactJsonRoute)


@router.post("", status_code=201, response_model=PlatformWithSecret, operation_id="create_platform")
async def create_platform(
    body: PlatformCreate,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("platform.create", "platform"),
) -> PlatformWithSecret:
    """Register a platform. Its webhook signing secret is in this answer and nowhere else: a retry with the same
    `Idempotency-Key` gets 409 `secret-shown-once` naming the platform it created (rotate the secret if it was
    lost)."""

    async def create() -> PlatformWithSecret:
        platform, secret = await service.create_platform(session, request.app.state.cipher, name=body.name)
        activity.resource_id, activity.details = platform.id, {"name": platform.name}
        return PlatformWithSecret(
            id=platform.id, name=platform.name, created_at=platform.created_at, webhook_secret=secret
        )

    return await idempotency.run_showing_secret_once(
        principal, create, if_lost="If that answer was lost, rotate the platform's webhook secret."
    )


@router.get("", response_model=Page[PlatformRead], operation_id="list_platforms")
async def list_platforms(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[PlatformRead]:
    rows = await repository.list_after(session, after=page.after, limit=page.limit + 1)
    return page_of(
        [PlatformRead.model_validate(r, from_attributes=True) for r in rows], [r.id for r in rows], page.limit
    )


@router.get("/{platform_id}", response_model=PlatformRead, operation_id="get_platform")
async def get_platform(
    platform_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin, Role.platform)
) -> PlatformRead:
    ensure_visible(principal.is_admin or principal.platform_id == platform_id, "platform")
    platform = await service.get_platform(session, platform_id)
    return PlatformRead.model_validate(platform, from_attributes=True)


@router.post(
    "/{platform_id}/rotate-webhook-secret",
    response_model=PlatformSecretRotated,
    operation_id="rotate_platform_webhook_secret",
)
async def rotate_webhook_secret(
    platform_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.platform),
    activity: ActivityNote = Recorded(
        "platform.rotate_webhook_secret", "platform", resource_id="platform_id"
    ),
) -> PlatformSecretRotated:
    """Issue a new signing secret. Secrets valid before stay valid for 24 hours (G4G_WEBHOOK_SECRET_GRACE_HOURS)."""
    ensure_visible(principal.is_admin or principal.platform_id == platform_id, "platform")
    platform = await service.get_platform(session, platform_id)
    grace = timedelta(hours=request.app.state.settings.webhook_secret_grace_hours)
    secret, valid_until = await service.rotate_webhook_secret(
        session, request.app.state.cipher, platform, grace=grace
    )
    return PlatformSecretRotated(
        id=platform.id,
        name=platform.name,
        created_at=platform.created_at,
        webhook_secret=secret,
        previous_secrets_valid_until=valid_until,
    )
