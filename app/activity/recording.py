"""Recording an API route's change in the activity log, in the request's own transaction.

Each route that changes something declares `activity: ActivityNote = Recorded("school.create", "school")`. The
dependency hands the endpoint a note to complete (the id of what it created, the merchant it belongs to, a few
details), and once the endpoint has returned, writes the entry on the request's session — after the change, before
the session dependency commits both. An endpoint that raises (any 4xx or 5xx) records nothing, and a commit that
fails takes the entry with it. `tests/activity/test_coverage.py` walks the app's routes: a route that may change
something and neither records nor is listed in `NOT_RECORDED` fails it. The console's pages write the same
entries through `write_note` (`tests/web/admin/test_console_activity.py` walks theirs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from sqlalchemy.ext.asyncio import AsyncSession

from app.activity.service import Via, record_activity
from app.core.auth import Principal
from app.core.database import SessionDep

# Routes taking a key that may write and are deliberately not recorded, by operation id, and why.
NOT_RECORDED: dict[str, str] = {
    "receive_order_event": "Order events (high volume) have their own record: the order inbox keeps every"
    " delivery, and the ledger every effect.",
    "create_quote": "A quote changes nothing.",
    "find_student_by_roster_code": "A lookup (POST so that the roster code is never in a URL) changes nothing.",
}

REPLAYED = "activity_replayed"
"""`request.state` flag set by an idempotent replay: the stored answer is given again, nothing changed."""


@dataclass(slots=True)
class ActivityNote:
    """What an endpoint says about its change, for its activity entry."""

    action: str
    resource_type: str
    resource_id: str | None = None
    merchant_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def skip(self) -> None:
        """Nothing changed after all (a dry run): no entry."""
        self.skipped = True


async def write_note(
    session: AsyncSession, request: Request, note: ActivityNote, *, key_id: str, via: Via
) -> None:
    """The entry for `note`, by key `key_id`, from the request's address, under its request id: how the API's
    routes and the console's pages both record a change (a skipped note writes nothing)."""
    if note.skipped:
        return
    await record_activity(
        session,
        key_id=key_id,
        action=note.action,
        resource_type=note.resource_type,
        resource_id=note.resource_id,
        merchant_id=note.merchant_id,
        address=request.client.host if request.client else None,
        details=note.details,
        via=via,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
    )


_RECORDERS: dict[Any, str] = {}


def Recorded(action: str, resource_type: str, *, resource_id: str | None = None) -> Any:
    """A dependency recording a successful call as `action` on `resource_type`. The resource's id is the path
    parameter named `resource_id` if given (the endpoint may set `note.resource_id` instead, e.g. to the id of
    what it created); the merchant is the `merchant_id` path parameter unless the endpoint says otherwise."""

    async def recorder(request: Request, session: SessionDep) -> AsyncIterator[ActivityNote]:
        params = request.path_params
        note = ActivityNote(
            action=action,
            resource_type=resource_type,
            resource_id=params.get(resource_id) if resource_id else None,
            merchant_id=params.get("merchant_id"),
        )
        yield note  # an exception here (the endpoint failed) propagates: nothing is recorded
        if note.skipped or getattr(request.state, REPLAYED, False):
            return
        principal: Principal = request.state.principal
        await write_note(session, request, note, key_id=principal.key_id, via="api")

    _RECORDERS[recorder] = action
    # scope="function": the entry is written before the session dependency (which this one depends on, so it
    # exits after) commits, and so before the answer is sent.
    return Depends(recorder, scope="function")


def recorded_action(dependant: Dependant) -> str | None:
    """The action a route records (None: it records nothing)."""
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call in _RECORDERS:
            return _RECORDERS[current.call]
        pending.extend(current.dependencies)
    return None
