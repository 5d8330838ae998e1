"""Wrong codes against an admin key's second factor, counted across sign-ins, and the lock they lead to.

A pending sign-in allows a few codes and a key prefix about ten a minute (`app/core/auth_failures.py`), but a
fresh sign-in starts a new pending session: alone, those limits would let the holder of a stolen key try some
14,000 codes a day, enough to hit a six-digit code (three are valid at any time) in a few weeks. So the factor
itself counts wrong codes — TOTP codes, replayed ones and recovery codes alike — in `admin_factors`, and after
`G4G_ADMIN_FACTOR_MAX_FAILURES` in a row (10) it is locked: no code, not even the right one, is checked until an
operator at the server runs `g4g admin-factor unlock --key-id …`. A code accepted sets the count back to zero.

Each wrong code and the lock are written to the activity log under the key that tried (its id and name, never
its token nor the code), and logged the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.activity.service import record_activity
from app.core.errors import NotFound, ProblemError
from app.models import AdminFactor

log = structlog.get_logger("g4g.web.admin")

CodeKind = Literal["totp_code", "used_totp_code", "recovery_code"]


class FactorLocked(ProblemError):
    """The key's second factor is locked: nothing is checked until an operator unlocks it."""

    status, kind, title = 403, "admin-factor-locked", "This admin key's second factor is locked"

    def __init__(self) -> None:
        super().__init__(
            "Too many wrong codes were given for this key's second factor; whoever runs the service can unlock it "
            "with `g4g admin-factor unlock --key-id`."
        )


@dataclass(frozen=True, slots=True)
class Failure:
    failures: int
    locked: bool


async def count_failure(
    session: AsyncSession,
    key_id: str,
    *,
    kind: CodeKind,
    max_failures: int,
    now: datetime,
    address: str | None,
) -> Failure:
    """One more wrong code for the key's factor, counted by one atomic statement (two guesses at once both
    count); the one that reaches `max_failures` locks it. The caller holds the factor's row lock, so the lock is
    taken exactly once."""
    row = (
        await session.execute(
            update(AdminFactor)
            .where(AdminFactor.api_key_id == key_id)
            .values(
                failed_attempts=AdminFactor.failed_attempts + 1,
                locked_at=case(
                    (
                        AdminFactor.locked_at.is_(None) & (AdminFactor.failed_attempts + 1 >= max_failures),
                        now,
                    ),
                    else_=AdminFactor.locked_at,
                ),
            )
            .returning(AdminFactor.failed_attempts, AdminFactor.locked_at)
        )
    ).one()
    failures, locked = int(row.failed_attempts), row.locked_at is not None
    details = {"failures": failures, "limit": max_failures, "kind": kind}
    await record_activity(
        session,
        key_id=key_id,
        action="admin_factor.fail",
        resource_type="admin_factor",
        resource_id=key_id,
        address=address,
        details=details,
    )
    log.info("admin_factor_failed", key_id=key_id, failures=failures, limit=max_failures, kind=kind)
    if locked:
        await record_activity(
            session,
            key_id=key_id,
            action="admin_factor.lock",
            resource_type="admin_factor",
            resource_id=key_id,
            address=address,
            details={"failures": failures, "limit": max_failures},
        )
        log.warning("admin_factor_locked", key_id=key_id, failures=failures, address=address)
    return Failure(failures, locked)


async def reset_failures(session: AsyncSession, key_id: str) -> None:
    """A code was accepted: wrong ones before it no longer count."""
    await session.execute(
        update(AdminFactor)
        .where(AdminFactor.api_key_id == key_id, AdminFactor.failed_attempts != 0)
        .values(failed_attempts=0)
    )


async def unlock(session: AsyncSession, key_id: str) -> Failure:
    """Unlock the key's factor and forget its wrong codes (an operator's decision, from the CLI); returns how
    many wrong codes it had and whether it was locked. `NotFound` if the key has no second factor."""
    factor = await session.scalar(
        select(AdminFactor).where(AdminFactor.api_key_id == key_id).with_for_update()
    )
    if factor is None:
        raise NotFound(f"API key {key_id} has no console second factor.")
    failures, was_locked = factor.failed_attempts, factor.locked_at is not None
    await session.execute(
        update(AdminFactor).where(AdminFactor.api_key_id == key_id).values(failed_attempts=0, locked_at=None)
    )
    await record_activity(
        session,
        key_id=None,
        action="admin_factor.unlock",
        resource_type="admin_factor",
        resource_id=key_id,
        details={"failures": failures, "was_locked": was_locked},
        via="cli",
    )
    log.info("admin_factor_unlocked", key_id=key_id, failures=failures, was_locked=was_locked)
    return Failure(failures, was_locked)
