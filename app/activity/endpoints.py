from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.activity import service
from app.activity.schemas import ActivityEntryRead
from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.patterns import pattern
from app.core.types import QueryInstant, ResourceId

router = APIRouter(prefix="/v1/activity", tags=["activity"], route_class=ExactJsonRoute)

Action = Annotated[
    str,
    Query(
        max_length=80,
        pattern=pattern(service.ACTION.pattern, "must be an action such as school.create"),
        description="Only this action (`resource.verb`, e.g. `school.create`)",
    ),
]
ResourceType = Annotated[
    str,
    Query(
        pattern=pattern(service.RESOURCE_TYPE.pattern, "must be a resource type such as school"),
        description="Only actions on this kind of resource (e.g. `school`)",
    ),
]
ActedResourceId = Annotated[
    str,
    Query(
        min_length=1,
        max_length=200,
        pattern=pattern(r"^[\x21-\x7e]{1,200}$", "must be a resource's id as the log shows it"),
        description="Only actions on this resource (with `resource_type`, or alone)",
    ),
]


@router.get("", response_model=Page[ActivityEntryRead], operation_id="list_activity")
async def list_activity(
    session: SessionDep,
    page: PageParams,
    key_id: Annotated[ResourceId | None, Query(description="Only what this key did")] = None,
    action: Action | None = None,
    resource_type: ResourceType | None = None,
    resource_id: ActedResourceId | None = None,
    since: Annotated[QueryInstant | None, Query(description="From this time on (inclusive)")] = None,
    until: Annotated[QueryInstant | None, Query(description="Before this time")] = None,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> Page[ActivityEntryRead]:
    """Who did what, newest first. An admin sees every entry; a merchant, what its own keys and its platform's
    keys did to its resources; a platform, what its own keys did. `since` and `until` take RFC 3339 times with
    an offset; a window that ends before it starts is empty."""
    rows = await service.list_activity(
        session,
        principal,
        key_id=key_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
        after=page.after,
        limit=page.limit + 1,
    )
    return page_of([ActivityEntryRead.model_validate(r) for r in rows], [r.id for r in rows], page.limit)
