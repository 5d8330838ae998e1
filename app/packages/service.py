"""Package kinds, schools and students: the rules. Every function works inside the caller's transaction and
never commits.

Roster codes exist in clear only in memory, between the request and the two functions that store them:
`encrypt` (the data key, for the admin's reads) and `keyed_hash` (the lookup key, to find a student again).
Neither key is in the database, so a copy of the database alone reveals no roster code. They are never
logged, never put in an error message, and answered only to admin."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import phonenumbers
import structlog
from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import driver_connection
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.core.ids import new_id
from app.core.money import MoneyOut
from app.core.secrets import decrypt, encrypt, keyed_hash
from app.models import PackageKind, PackageKindVersion, School, Student
from app.packages import repository
from app.packages.roster import RosterRow
from app.packages.schemas import (
    ContentItem,
    PackageKindIn,
    PackageKindOut,
    PackageKindVersionOut,
    SchoolIn,
    SchoolOut,
    SchoolPatch,
    StudentImportOut,
    StudentOut,
    StudentPatch,
    TeacherContact,
    TeacherContactOut,
)

log = structlog.get_logger("g4g.packages")


class PackageKindRetired(Conflict):
    kind, title = "package-kind-retired", "The package kind is retired"


class StudentErased(Conflict):
    kind, title = "student-erased", "The student was erased"


def _invalid_field(loc: list[str | int], message: str, kind: str) -> InvalidRequest:
    where = ".".join(str(part) for part in loc)
    return InvalidRequest(
        f"{where}: {message}", errors=[{"loc": ["body", *loc], "msg": message, "type": kind}]
    )


# ---- package kinds ----


def version_out(version: PackageKindVersion) -> PackageKindVersionOut:
    return PackageKindVersionOut(
        id=version.id,
        kind_id=version.kind_id,
        version=version.version,
        name=version.name,
        contents=[ContentItem.model_validate(item) for item in version.contents],
        unit_cost=MoneyOut(amount=version.unit_cost, currency=version.currency),
        countries=list(version.countries),
        grades=list(version.grades),
        created_at=version.created_at,
    )


def kind_out(kind: PackageKind, version: PackageKindVersion) -> PackageKindOut:
    return PackageKindOut(
        id=kind.id,
        status="retired" if kind.retired_at is not None else "active",
        version=version.version,
        version_id=version.id,
        name=version.name,
        contents=[ContentItem.model_validate(item) for item in version.contents],
        unit_cost=MoneyOut(amount=version.unit_cost, currency=version.currency),
        countries=list(version.countries),
        grades=list(version.grades),
        created_at=kind.created_at,
        updated_at=version.created_at,
        retired_at=kind.retired_at,
    )


def _definition(body: PackageKindIn, base_currency: str) -> dict[str, Any]:
    """The stored form of a kind's definition, after the rules JSON Schema can't state."""
    if body.unit_cost.currency != base_currency:
        raise _invalid_field(
            ["unit_cost", "currency"],
            f"package costs are in the programme's base currency, {base_currency}",
            "base_currency_required",
        )
    return {
        "name": body.name,
        "contents": [item.model_dump() for item in body.contents],
        "unit_cost": body.unit_cost.amount,
        "currency": body.unit_cost.currency,
        "countries": body.countries,
        "grades": body.grades,
    }


def _new_version(kind_id: str, number: int, definition: dict[str, Any]) -> PackageKindVersion:
    return PackageKindVersion(id=new_id("pkv"), kind_id=kind_id, version=number, **definition)


async def create_kind(
    session: AsyncSession, body: PackageKindIn, *, base_currency: str
) -> tuple[PackageKind, PackageKindVersion]:
    """A new package kind, at version 1."""
    definition = _definition(body, base_currency)
    kind = PackageKind(id=new_id("pkk"))
    session.add(kind)
    await session.flush()
    version = _new_version(kind.id, 1, definition)
    session.add(version)
    await session.flush()
    await session.refresh(kind)
    await session.refresh(version)
    return kind, version


async def get_kind(session: AsyncSession, kind_id: str) -> tuple[PackageKind, PackageKindVersion]:
    kind = await repository.get_kind(session, kind_id)
    version = await repository.current_version(session, kind_id) if kind is not None else None
    if kind is None or version is None:
        raise NotFound(f"No package kind {kind_id}.")
    return kind, version


async def get_version(session: AsyncSession, version_id: str) -> PackageKindVersion:
    version = await repository.get_version(session, version_id)
    if version is None:
        raise NotFound(f"No package kind version {version_id}.")
    return version


async def replace_kind(
    session: AsyncSession, kind_id: str, body: PackageKindIn, *, base_currency: str
) -> tuple[PackageKind, PackageKindVersion, bool]:
    """Make `body` the kind's definition: a new version if anything differs (the versions before stay as they
    were, with the packages funded at them), nothing if it is the same. Returns the kind, its current version,
    and whether a version was added. A retired kind can't change."""
    kind = await repository.get_kind(session, kind_id, lock="update")
    if kind is None:
        raise NotFound(f"No package kind {kind_id}.")
    if kind.retired_at is not None:
        raise PackageKindRetired(f"Package kind {kind_id} is retired and can't change.")
    definition = _definition(body, base_currency)
    current = await repository.current_version(session, kind_id)
    assert current is not None
    if all(getattr(current, name) == value for name, value in definition.items()):
        return kind, current, False
    version = _new_version(kind_id, current.version + 1, definition)
    session.add(version)
    await session.flush()
    await session.refresh(version)
    return kind, version, True


async def retire_kind(
    session: AsyncSession, kind_id: str, *, now: datetime
) -> tuple[PackageKind, PackageKindVersion]:
    """Retire a kind: no new allocation run may use it; its versions and every read stay. Retiring again
    changes nothing."""
    kind = await repository.get_kind(session, kind_id, lock="update")
    if kind is None:
        raise NotFound(f"No package kind {kind_id}.")
    if kind.retired_at is None:
        kind.retired_at = now
        await session.flush()
    version = await repository.current_version(session, kind_id)
    assert version is not None
    return kind, version


async def usable_kind_version(
    session: AsyncSession, kind_id: str, *, base_currency: str
) -> PackageKindVersion:
    """The version of a kind that new packages are made at (for allocation runs). Holds a share lock on the kind
    until the transaction ends, so it can't be retired or changed under the run. Unknown → 404; retired or
    costed in another currency than the pool → 409."""
    kind = await repository.get_kind(session, kind_id, lock="share")
    version = await repository.current_version(session, kind_id) if kind is not None else None
    if kind is None or version is None:
        raise NotFound(f"No package kind {kind_id}.")
    if kind.retired_at is not None:
        raise PackageKindRetired(f"Package kind {kind_id} is retired; new allocation runs can't use it.")
    if version.currency != base_currency:
        raise Conflict(
            f"Package kind {kind_id} costs {version.currency}, but the pool is in {base_currency}."
        )
    return version


# ---- schools ----


def _stored_contact(contact: TeacherContact, country: str) -> dict[str, str]:
    """The contact as stored: phone numbers in E.164, read as dialled in the school's country unless
    international."""
    stored = {"name": contact.name}
    if contact.phone is not None:
        invalid = _invalid_field(
            ["teacher_contact", "phone"],
            f"not a phone number in {country} (or give it in international form, +…)",
            "phone_number",
        )
        try:
            number = phonenumbers.parse(contact.phone, country)
        except phonenumbers.NumberParseException:
            raise invalid from None
        if not phonenumbers.is_possible_number(number):
            raise invalid
        stored["phone"] = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if contact.email is not None:
        stored["email"] = contact.email
    return stored


def school_out(school: School, cipher: MultiFernet) -> SchoolOut:
    """The school with its teacher contact decrypted: for admin (and, later, the school's partner) only."""
    stored = json.loads(decrypt(cipher, school.teacher_contact_encrypted))
    contact = TeacherContactOut(name=stored["name"], phone=stored.get("phone"), email=stored.get("email"))
    return SchoolOut(
        id=school.id,
        registration_number=school.registration_number,
        name=school.name,
        country=school.country,
        region=school.region,
        logistics_partner_id=school.logistics_partner_id,
        teacher_contact=contact,
        created_at=school.created_at,
        updated_at=school.updated_at,
    )


async def _require_partner(session: AsyncSession, partner_id: str) -> None:
    if not await repository.partner_exists(session, partner_id):
        raise _invalid_field(["logistics_partner_id"], f"no logistics partner {partner_id}", "not_found")


async def register_school(session: AsyncSession, body: SchoolIn, *, cipher: MultiFernet) -> School:
    """Register a school. Its registration number fixes its place in allocation's round-robin."""
    await _require_partner(session, body.logistics_partner_id)
    contact = _stored_contact(body.teacher_contact, body.country)
    school = School(
        id=new_id("sch"),
        name=body.name,
        country=body.country,
        region=body.region,
        logistics_partner_id=body.logistics_partner_id,
        teacher_contact_encrypted=encrypt(cipher, json.dumps(contact)),
    )
    session.add(school)
    await session.flush()
    await session.refresh(school)
    return school


async def get_school(session: AsyncSession, school_id: str) -> School:
    school = await repository.get_school(session, school_id)
    if school is None:
        raise NotFound(f"No school {school_id}.")
    return school


async def update_school(
    session: AsyncSession, school_id: str, patch: SchoolPatch, *, cipher: MultiFernet
) -> School:
    """Change a school's region, logistics partner or teacher contact; the rest stays."""
    school = await repository.get_school(session, school_id, lock=True)
    if school is None:
        raise NotFound(f"No school {school_id}.")
    if patch.logistics_partner_id is not None:
        await _require_partner(session, patch.logistics_partner_id)
        school.logistics_partner_id = patch.logistics_partner_id
    if patch.region is not None:
        school.region = patch.region
    if patch.teacher_contact is not None:
        contact = _stored_contact(patch.teacher_contact, school.country)
        school.teacher_contact_encrypted = encrypt(cipher, json.dumps(contact))
    await session.flush()
    await session.refresh(school)
    return school


# ---- students ----


def roster_code_hash(lookup_key: bytes, school_id: str, roster_code: str) -> bytes:
    """The keyed hash that finds a student by (school, roster code). The school is part of it, so one code at two
    schools gives two unrelated hashes."""
    return keyed_hash(lookup_key, school_id, roster_code)


def student_out(student: Student, cipher: MultiFernet) -> StudentOut:
    """The student with the roster code decrypted: for admin only."""
    if student.erased_at is not None:
        status = "erased"
    else:
        status = "active" if student.active else "inactive"
    return StudentOut(
        id=student.id,
        school_id=student.school_id,
        registration_number=student.registration_number,
        roster_code=(
            decrypt(cipher, student.roster_code_encrypted)
            if student.roster_code_encrypted is not None
            else None
        ),
        grade=student.grade,
        status=status,
        created_at=student.created_at,
        updated_at=student.updated_at,
        erased_at=student.erased_at,
    )


async def import_students(
    session: AsyncSession,
    school_id: str,
    rows: list[RosterRow],
    *,
    cipher: MultiFernet,
    lookup_key: bytes,
) -> StudentImportOut:
    """Add or update a school's students from validated rows, all in one statement: a new roster code is a new
    student (registered in the order of the rows), a known one gets the row's grade. Imports into one school
    take turns. Status (active or not) is not an import's business: see `update_student`."""
    hashes = [roster_code_hash(lookup_key, school_id, row.roster_code) for row in rows]
    encrypted = [encrypt(cipher, row.roster_code) for row in rows]
    ids = [new_id("stu") for _ in rows]
    db = await driver_connection(session)
    if not await repository.lock_school_roster(db, school_id):
        raise NotFound(f"No school {school_id}.")
    created, updated = await repository.upsert_students(
        db,
        school_id=school_id,
        ids=ids,
        hashes=hashes,
        encrypted=encrypted,
        grades=[row.grade for row in rows],
    )
    result = StudentImportOut(
        school_id=school_id,
        received=len(rows),
        created=created,
        updated=updated,
        unchanged=len(rows) - created - updated,
    )
    log.info("students_imported", **result.model_dump())  # counts only, never a roster code
    return result


@dataclass(frozen=True, slots=True)
class ImportPreviewRow:
    row: int
    grade: str
    outcome: Literal["created", "updated", "unchanged"]
    grade_before: str | None


@dataclass(frozen=True, slots=True)
class ImportPreview:
    """What `import_students` would do with these rows, nothing written: by row (never a roster code)."""

    school_id: str
    rows: list[ImportPreviewRow]

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.rows)


async def preview_import(
    session: AsyncSession, school_id: str, rows: list[RosterRow], *, lookup_key: bytes
) -> ImportPreview:
    """The outcome of each row as `import_students` would decide it now: a new roster code is created, a known
    one with another grade updated, the rest unchanged."""
    await get_school(session, school_id)
    hashes = [roster_code_hash(lookup_key, school_id, row.roster_code) for row in rows]
    known: dict[bytes, str] = {}
    for start in range(0, len(hashes), 5000):
        known |= await repository.grades_by_hash(session, school_id, hashes[start : start + 5000])
    preview = []
    for index, (row, digest) in enumerate(zip(rows, hashes, strict=True)):
        before = known.get(digest)
        outcome: Literal["created", "updated", "unchanged"] = (
            "created" if before is None else "unchanged" if before == row.grade else "updated"
        )
        preview.append(ImportPreviewRow(index + 1, row.grade, outcome, before))
    return ImportPreview(school_id, preview)


async def get_student(session: AsyncSession, student_id: str, *, lock: bool = False) -> Student:
    student = await repository.get_student(session, student_id, lock=lock)
    if student is None:
        raise NotFound(f"No student {student_id}.")
    return student


async def find_student(
    session: AsyncSession, school_id: str, roster_code: str, *, lookup_key: bytes
) -> Student:
    """The school's student with this roster code (erased students have none, so are never found)."""
    await get_school(session, school_id)
    student = await repository.find_student(
        session, school_id, roster_code_hash(lookup_key, school_id, roster_code)
    )
    if student is None:
        raise NotFound(f"No student with this roster code at school {school_id}.")
    return student


async def update_student(session: AsyncSession, student_id: str, patch: StudentPatch) -> Student:
    """Set a student's status (active students are eligible for allocation) or grade. An erased student
    can't change."""
    student = await get_student(session, student_id, lock=True)
    if student.erased_at is not None:
        raise StudentErased(f"Student {student_id} was erased and can't change.")
    if patch.active is not None:
        student.active = patch.active
    if patch.grade is not None:
        student.grade = patch.grade
    await session.flush()
    await session.refresh(student)
    return student


async def erase_student(session: AsyncSession, student_id: str, *, now: datetime) -> Student:
    """Erase a student: the roster code's ciphertext and hash are gone for good, the student is inactive, and a
    tombstone (id, school, grade, registration) keeps allocation history and the ledger intact. Erasing again
    changes nothing. Importing the same roster code later registers a new student: nothing links the two."""
    student = await get_student(session, student_id, lock=True)
    if student.erased_at is None:
        student.roster_code_encrypted = None
        student.roster_code_hash = None
        student.active = False
        student.erased_at = now
        await session.flush()
        await session.refresh(student)
        log.info("student_erased", student_id=student.id, school_id=student.school_id)
    return student
