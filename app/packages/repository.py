from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import LogisticsPartner, PackageKind, PackageKindVersion, School, Student

# ---- package kinds ----


async def get_kind(session: AsyncSession, kind_id: str, *, lock: str | None = None) -> PackageKind | None:
    """The kind; `lock` "update" (to change it) or "share" (to use it while nobody retires it)."""
    query = select(PackageKind).where(PackageKind.id == kind_id)
    if lock == "update":
        query = query.with_for_update()
    elif lock == "share":
        query = query.with_for_update(read=True)
    return (await session.scalars(query)).one_or_none()


async def current_version(session: AsyncSession, kind_id: str) -> PackageKindVersion | None:
    return await session.scalar(
        select(PackageKindVersion)
        .where(PackageKindVersion.kind_id == kind_id)
        .order_by(PackageKindVersion.version.desc())
        .limit(1)
    )


async def current_versions(session: AsyncSession, kind_ids: Sequence[str]) -> dict[str, PackageKindVersion]:
    """The highest version of each kind, in one query."""
    if not kind_ids:
        return {}
    latest = (
        select(PackageKindVersion.kind_id, func.max(PackageKindVersion.version).label("version"))
        .where(PackageKindVersion.kind_id.in_(kind_ids))
        .group_by(PackageKindVersion.kind_id)
        .subquery()
    )
    rows = await session.scalars(
        select(PackageKindVersion).join(
            latest,
            and_(
                PackageKindVersion.kind_id == latest.c.kind_id, PackageKindVersion.version == latest.c.version
            ),
        )
    )
    return {version.kind_id: version for version in rows}


async def list_kinds(
    session: AsyncSession, *, after: str | None, limit: int, retired: bool | None
) -> list[PackageKind]:
    query = select(PackageKind).order_by(PackageKind.id).limit(limit)
    if after is not None:
        query = query.where(PackageKind.id > after)
    if retired is True:
        query = query.where(PackageKind.retired_at.is_not(None))
    elif retired is False:
        query = query.where(PackageKind.retired_at.is_(None))
    return list(await session.scalars(query))


async def versions_newest_first(
    session: AsyncSession, kind_id: str, *, before: int | None, limit: int
) -> list[PackageKindVersion]:
    query = (
        select(PackageKindVersion)
        .where(PackageKindVersion.kind_id == kind_id)
        .order_by(PackageKindVersion.version.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(PackageKindVersion.version < before)
    return list(await session.scalars(query))


async def get_version(session: AsyncSession, version_id: str) -> PackageKindVersion | None:
    return await session.get(PackageKindVersion, version_id)


# ---- schools ----


async def partner_exists(session: AsyncSession, partner_id: str) -> bool:
    return (
        await session.scalar(select(LogisticsPartner.id).where(LogisticsPartner.id == partner_id)) is not None
    )


async def get_school(session: AsyncSession, school_id: str, *, lock: bool = False) -> School | None:
    query = select(School).where(School.id == school_id)
    if lock:
        query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE: students may still reference it
    return (await session.scalars(query)).one_or_none()


async def list_schools(
    session: AsyncSession,
    *,
    after: int | None,
    limit: int,
    country: str | None,
    logistics_partner_id: str | None,
) -> list[School]:
    query = select(School).order_by(School.registration_number).limit(limit)
    if after is not None:
        query = query.where(School.registration_number > after)
    if country is not None:
        query = query.where(School.country == country)
    if logistics_partner_id is not None:
        query = query.where(School.logistics_partner_id == logistics_partner_id)
    return list(await session.scalars(query))


# ---- students ----


async def lock_school_roster(db: asyncpg.Connection, school_id: str) -> bool:
    """Imports into one school take turns (so two overlapping imports can't deadlock on each other's new
    rows); a plain statement of its own. False if there is no such school."""
    locked = await db.fetchval("SELECT id FROM schools WHERE id = $1 FOR NO KEY UPDATE", school_id)
    return locked is not None


async def upsert_students(
    db: asyncpg.Connection,
    *,
    school_id: str,
    ids: list[str],
    hashes: list[bytes],
    encrypted: list[str],
    grades: list[str],
) -> tuple[int, int]:
    """One set-based statement: new (school, roster code) pairs are inserted in the order given (their
    registration order), known ones get the new grade only if it differs. Returns (created, updated); rows
    neither created nor updated were unchanged. `ids` and `encrypted` are used only for new students."""
    row = await db.fetchrow(
        """
        WITH incoming AS (
            SELECT id, roster_code_hash, roster_code_encrypted, grade, position
            FROM unnest($2::text[], $3::bytea[], $4::text[], $5::text[])
                WITH ORDINALITY AS t(id, roster_code_hash, roster_code_encrypted, grade, position)
        ), upserted AS (
            INSERT INTO students (id, school_id, roster_code_hash, roster_code_encrypted, grade)
            SELECT id, $1, roster_code_hash, roster_code_encrypted, grade FROM incoming ORDER BY position
            ON CONFLICT (school_id, roster_code_hash) DO UPDATE
                SET grade = EXCLUDED.grade, updated_at = now()
                WHERE students.grade IS DISTINCT FROM EXCLUDED.grade
            RETURNING (xmax = 0) AS created
        )
        SELECT count(*) FILTER (WHERE created) AS created, count(*) FILTER (WHERE NOT created) AS updated
        FROM upserted
        """,
        school_id,
        ids,
        hashes,
        encrypted,
        grades,
    )
    assert row is not None
    return int(row["created"]), int(row["updated"])


async def grades_by_hash(session: AsyncSession, school_id: str, hashes: Sequence[bytes]) -> dict[bytes, str]:
    """The grade of each of the school's students whose roster code hash is among `hashes`."""
    rows = await session.execute(
        select(Student.roster_code_hash, Student.grade).where(
            Student.school_id == school_id, Student.roster_code_hash.in_(hashes)
        )
    )
    return {bytes(row[0]): row[1] for row in rows if row[0] is not None}


async def get_student(session: AsyncSession, student_id: str, *, lock: bool = False) -> Student | None:
    query = select(Student).where(Student.id == student_id)
    if lock:
        query = query.with_for_update(key_share=True)
    return (await session.scalars(query)).one_or_none()


async def find_student(session: AsyncSession, school_id: str, roster_code_hash: bytes) -> Student | None:
    return await session.scalar(
        select(Student).where(Student.school_id == school_id, Student.roster_code_hash == roster_code_hash)
    )


async def list_students(
    session: AsyncSession,
    school_id: str,
    *,
    after: int | None,
    limit: int,
    status: str | None,
    grade: str | None,
) -> list[Student]:
    query = (
        select(Student)
        .where(Student.school_id == school_id)
        .order_by(Student.registration_number)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Student.registration_number > after)
    if status == "active":
        query = query.where(Student.active)
    elif status == "inactive":
        query = query.where(~Student.active, Student.erased_at.is_(None))
    elif status == "erased":
        query = query.where(Student.erased_at.is_not(None))
    if grade is not None:
        query = query.where(Student.grade == grade)
    return list(await session.scalars(query))
