from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.activity.recording import ActivityNote, Recorded
from app.api_keys import repository, service
from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.errors import NotFound
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"], route_class=ExactJsonRoute)


@router.post("", status_code=201, response_model=ApiKeyCreated, operation_id="create_api_key")
async def create_api_key(
    body: ApiKeyCreate,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("api_key.create", "api_key"),
) -> ApiKeyCreated:
    """Create an API key. The token is in this answer only; we keep just its hash. A retry with the same
    `Idempotency-Key` gets 409 `secret-shown-once` naming the key it created, never the token again."""

    async def create() -> ApiKeyCreated:
        scope = body.model_dump(exclude={"role", "name"})
        key, token = await service.create_api_key(session, role=body.role, name=body.name, **scope)
        activity.resource_id, activity.merchant_id = key.id, key.merchant_id
        activity.details = service.key_details(key)
        return ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), token=token)

    return await idempotency.run_showing_secret_once(
        principal,
        create,
        if_lost="If that answer was lost, revoke the key and create another under a new Idempotency-Key.",
    )


@router.get("", response_model=Page[ApiKeyRead], operation_id="list_api_keys")
async def list_api_keys(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[ApiKeyRead]:
    rows = await repository.list_after(session, after=page.after, limit=page.limit + 1)
    return page_of([ApiKeyRead.model_validate(r) for r in rows], [r.id for r in rows], page.limit)


@router.get("/{key_id}", response_model=ApiKeyRead, operation_id="get_api_key")
async def get_api_key(
    key_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> ApiKeyRead:
    key = await repository.get(session, key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.")
    return ApiKeyRead.model_validate(key)


@router.delete("/{key_id}", status_code=204, response_class=Response, operation_id="revoke_api_key")
async def revoke_api_key(
    key_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("api_key.revoke", "api_key", resource_id="key_id"),
) -> Response:
    """Revoke a key. Requests with it are refused (401) from then on by this server process, and by every other
    within `G4G_API_KEY_CACHE_SECONDS` (5 s by default) while they still remember it."""
    key = await service.revoke_api_key(session, key_id)
    activity.merchant_id, activity.details = key.merchant_id, service.key_details(key)
    request.app.state.api_keys.forget(key_id)
    return Response(status_code=204)
