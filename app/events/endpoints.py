from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.events import repository, service
from app.events.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointOut,
    EndpointSecretRotated,
    EndpointUpdate,
    EndpointWithSecret,
)
from app.models import EventDelivery, EventDeliveryAttempt, WebhookEndpoint

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["events"], route_class=ExactJsonRoute)

ATTEMPTS_SHOWN = 50
_OWNERS = (Role.admin, Role.platform, Role.merchant)


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        platform_id=endpoint.platform_id,
        merchant_id=endpoint.merchant_id,
        status="disabled" if endpoint.disabled_at else "enabled",
        disabled_at=endpoint.disabled_at,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _attempt_out(attempt: EventDeliveryAttempt) -> AttemptOut:
    return AttemptOut.model_validate(attempt, from_attributes=True)


def delivery_out(
    delivery: EventDelivery, event_type: str, attempts: list[EventDeliveryAttempt]
) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=event_type,
        status=delivery.status,
        attempt_count=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        attempts=[_attempt_out(a) for a in attempts],
    )


async def _checked_url(request: Request, url: str) -> str:
    settings = request.app.state.settings
    await service.check_url(
        url, production=settings.environment == "production", private_allowed=settings.private_urls_allowed
    )
    return url


@router.post("", status_code=201, response_model=EndpointWithSecret, operation_id="create_webhook_endpoint")
async def create_webhook_endpoint(
    body: EndpointCreate,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(*_OWNERS),
    activity: ActivityNote = Recorded("webhook_endpoint.create", "webhook_endpoint"),
) -> EndpointWithSecret:
    """Where to send events, and which. A platform's or merchant's key registers an endpoint for itself; an admin's
    is the programme's (every event of the types it names). The signing secret is in this answer only: a retry
    with the same `Idempotency-Key` gets 409 `secret-shown-once` naming the endpoint it created."""
    url = await _checked_url(request, str(body.url))

    async def create() -> EndpointWithSecret:
        endpoint, secret = await service.create_endpoint(
            session, request.app.state.cipher, principal, url=url, events=list(body.events)
        )
        activity.resource_id, activity.merchant_id = endpoint.id, endpoint.merchant_id
        activity.details = {"events": list(body.events)}
        return EndpointWithSecret(**endpoint_out(endpoint).model_dump(), secret=secret)

    return await idempotency.run_showing_secret_once(
        principal, create, if_lost="If that answer was lost, rotate the endpoint's secret."
    )


@router.get("", response_model=Page[EndpointOut], operation_id="list_webhook_endpoints")
async def list_webhook_endpoints(
    session: SessionDep,
    page: PageParams,
    platform_id: Annotated[
        ResourceId | None, Query(description="Admin only: one platform's endpoints")
    ] = None,
    merchant_id: Annotated[
        ResourceId | None, Query(description="Admin only: one merchant's endpoints")
    ] = None,
    principal: Principal = Authorized(*_OWNERS),
) -> Page[EndpointOut]:
    """The caller's own endpoints (an admin: every one)."""
    if not principal.is_admin:
        platform_id = principal.platform_id if principal.role is Role.platform else None
        merchant_id = principal.merchant_id if principal.role is Role.merchant else None
    rows = await repository.list_endpoints(
        session, platform_id=platform_id, merchant_id=merchant_id, after=page.after, limit=page.limit + 1
    )
    return page_of([endpoint_out(r) for r in rows], [r.id for r in rows], page.limit)


@router.get("/{endpoint_id}", response_model=EndpointOut, operation_id="get_webhook_endpoint")
async def get_webhook_endpoint(
    endpoint_id: ResourceId, session: SessionDep, principal: Principal = Authorized(*_OWNERS)
) -> EndpointOut:
    return endpoint_out(await service.get_visible_endpoint(session, principal, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut, operation_id="update_webhook_endpoint")
async def update_webhook_endpoint(
    endpoint_id: ResourceId,
    body: EndpointUpdate,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(*_OWNERS),
    activity: ActivityNote = Recorded(
        "webhook_endpoint.update", "webhook_endpoint", resource_id="endpoint_id"
    ),
) -> EndpointOut:
    """Change the URL or the events; `enabled: false` disables it, `enabled: true` enables it again."""
    endpoint = await service.get_visible_endpoint(session, principal, endpoint_id, lock=True)
    activity.merchant_id = endpoint.merchant_id
    activity.details = {"changed": sorted(body.model_dump(exclude_unset=True))}
    url = await _checked_url(request, str(body.url)) if body.url is not None else None
    await service.update_endpoint(
        session,
        endpoint,
        url=url,
        events=list(body.events) if body.events is not None else None,
        enabled=body.enabled,
        now=request.app.state.clock.now(),
    )
    return endpoint_out(endpoint)


@router.delete("/{endpoint_id}", status_code=204, operation_id="delete_webhook_endpoint")
async def delete_webhook_endpoint(
    endpoint_id: ResourceId,
    session: SessionDep,
    principal: Principal = Authorized(*_OWNERS),
    activity: ActivityNote = Recorded(
        "webhook_endpoint.delete", "webhook_endpoint", resource_id="endpoint_id"
    ),
) -> Response:
    """Delete the endpoint with its delivery history; nothing more is sent to it."""
    endpoint = await service.get_visible_endpoint(session, principal, endpoint_id, lock=True)
    activity.merchant_id = endpoint.merchant_id
    await repository.delete_endpoint(session, endpoint.id)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=EndpointSecretRotated,
    operation_id="rotate_webhook_endpoint_secret",
)
async def rotate_webhook_endpoint_secret(
    endpoint_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(*_OWNERS),
    activity: ActivityNote = Recorded(
        "webhook_endpoint.rotate_secret", "webhook_endpoint", resource_id="endpoint_id"
    ),
) -> EndpointSecretRotated:
    """A new signing secret. For 24 hours (G4G_WEBHOOK_SECRET_GRACE_HOURS) every message carries a signature with
    the old secret too, so the receiver can switch when it likes."""
    state = request.app.state
    endpoint = await service.get_visible_endpoint(session, principal, endpoint_id, lock=True)
    activity.merchant_id = endpoint.merchant_id
    secret, valid_until = await service.rotate_secret(
        session,
        state.cipher,
        endpoint,
        now=state.clock.now(),
        grace=timedelta(hours=state.settings.webhook_secret_grace_hours),
    )
    return EndpointSecretRotated(
        **endpoint_out(endpoint).model_dump(), secret=secret, previous_secrets_valid_until=valid_until
    )


@router.get(
    "/{endpoint_id}/deliveries", response_model=Page[DeliveryOut], operation_id="list_webhook_deliveries"
)
async def list_webhook_deliveries(
    endpoint_id: ResourceId,
    session: SessionDep,
    page: PageParams,
    principal: Principal = Authorized(*_OWNERS),
) -> Page[DeliveryOut]:
    """Every event sent (or being sent) to the endpoint, newest first, with its attempts: status code, duration,
    error, and when the next attempt is due."""
    endpoint = await service.get_visible_endpoint(session, principal, endpoint_id)
    rows = await repository.list_deliveries(session, endpoint.id, before=page.after, limit=page.limit + 1)
    attempts = await repository.attempts_of(session, [d.id for d, _ in rows], per_delivery=ATTEMPTS_SHOWN)
    return page_of(
        [delivery_out(d, t, attempts.get(d.id, [])) for d, t in rows], [d.id for d, _ in rows], page.limit
    )


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    operation_id="retry_webhook_delivery",
)
async def retry_webhook_delivery(
    endpoint_id: ResourceId,
    delivery_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(*_OWNERS),
    activity: ActivityNote = Recorded(
        "webhook_endpoint.retry_delivery", "webhook_endpoint", resource_id="endpoint_id"
    ),
) -> DeliveryOut:
    """Send the event again now, with the same `webhook-id`, whatever its state (delivered ones included)."""
    endpoint = await service.get_visible_endpoint(session, principal, endpoint_id)
    activity.merchant_id, activity.details = endpoint.merchant_id, {"delivery_id": delivery_id}
    delivery = await service.replay(session, endpoint, delivery_id, now=request.app.state.clock.now())
    event_type = await repository.event_type_of(session, delivery.event_id)
    attempts = await repository.attempts_of(session, [delivery.id], per_delivery=ATTEMPTS_SHOWN)
    return delivery_out(delivery, event_type, attempts.get(delivery.id, []))
