from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.core.money import MAX_MINOR_UNITS, MoneyIn, MoneyOut
from app.core.patterns import pattern
from app.core.types import CountryCode, Name, ResourceId, WholeNumber
from app.packages.grades import Grade, in_grade_order


def _absent_not_null(schema: dict[str, Any]) -> None:
    """JSON Schema for optional fields that may be left out but not sent as null."""
    for field in schema.get("properties", {}).values():
        options = field.get("anyOf", [])
        if {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            del field["anyOf"]
            field.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
            if field.get("default", ...) is None:
                del field["default"]


def _present(value: object) -> object:
    """In a PATCH, a field left out keeps its value; an explicit null would mean "remove", which isn't allowed."""
    if value is None:
        raise ValueError("may be changed but not removed; leave the field out to keep it")
    return value


# ---- package kinds ----


class ContentItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: Name
    quantity: Annotated[int, Field(ge=1, le=10_000, strict=True), WholeNumber]


class UnitCostIn(MoneyIn):
    """What one package of a kind costs: more than nothing, in the programme's base currency."""

    amount: Annotated[int, Field(ge=1, le=MAX_MINOR_UNITS, strict=True), WholeNumber]


class PackageKindIn(BaseModel):
    """A package kind as the operator defines it (POST creates it, PUT makes a new version when it changes)."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    contents: Annotated[list[ContentItem], Field(min_length=1, max_length=100)]
    unit_cost: UnitCostIn
    """In the programme's base currency (`G4G_BASE_CURRENCY`)."""
    countries: Annotated[list[CountryCode], Field(min_length=1, max_length=250)]
    """Where the kind may be sent (ISO 3166-1 alpha-2); stored sorted, each once."""
    grades: Annotated[list[Grade], Field(min_length=1, max_length=13)]
    """The grades it serves; stored in school order, each once."""

    @field_validator("contents")
    @classmethod
    def _items_once(cls, contents: list[ContentItem]) -> list[ContentItem]:
        seen: set[str] = set()
        for item in contents:
            if item.item.casefold() in seen:
                raise ValueError("each item is listed once (add up its quantity)")
            seen.add(item.item.casefold())
        return contents

    @field_validator("countries")
    @classmethod
    def _countries_sorted(cls, countries: list[str]) -> list[str]:
        return sorted(set(countries))

    @field_validator("grades")
    @classmethod
    def _grades_ordered(cls, grades: list[str]) -> list[str]:
        return in_grade_order(set(grades))


class PackageKindVersionOut(BaseModel):
    id: str
    """`pkv_…`: what a package refers to, so it keeps the cost it was funded at."""
    kind_id: str
    version: int
    name: str
    contents: list[ContentItem]
    unit_cost: MoneyOut
    countries: list[str]
    grades: list[str]
    created_at: datetime


class PackageKindOut(BaseModel):
    """A package kind as it is now: its current (highest) version, and whether it is retired."""

    id: str
    status: Literal["active", "retired"]
    version: int
    version_id: str
    name: str
    contents: list[ContentItem]
    unit_cost: MoneyOut
    countries: list[str]
    grades: list[str]
    created_at: datetime
    updated_at: datetime
    """When the current version was made."""
    retired_at: datetime | None


# ---- schools ----

# What a person types as a phone number; the school's country decides the rest (normalised to E.164).
PhoneText = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=pattern(
            r"^[+0-9 ().\-/]{4,40}$", "must be a phone number: 4 to 40 digits, spaces and + ( ) . - /"
        ),
    ),
]


def _contact_schema(schema: dict[str, Any]) -> None:
    _absent_not_null(schema)
    schema["anyOf"] = [{"required": ["phone"]}, {"required": ["email"]}]


class TeacherContact(BaseModel):
    """The school's teacher who receives the packages: name, and a phone number and/or an email address.
    Personal data of an adult: encrypted at rest and shown only to admin (and the school's partner)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_contact_schema)
    name: Name
    phone: PhoneText | None = None
    """International (`+977 1 4412345`) or as dialled in the school's country; answered in E.164."""
    email: EmailStr | None = None

    @field_validator("phone", "email", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # the contract says left out, not null (see `_absent_not_null`)
            raise ValueError("leave the field out rather than sending null")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> TeacherContact:
        if self.phone is None and self.email is None:
            raise ValueError("give a phone number, an email address or both")
        return self


class TeacherContactOut(BaseModel):
    name: str
    phone: str | None
    """E.164, e.g. `+97714412345`."""
    email: str | None


class SchoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    country: CountryCode
    region: Name
    logistics_partner_id: ResourceId
    """The partner that ships to this school; must exist."""
    teacher_contact: TeacherContact


class SchoolPatch(BaseModel):
    """Fields left out stay as they are; none can be removed (null is refused)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)
    region: Name | None = None
    logistics_partner_id: ResourceId | None = None
    teacher_contact: TeacherContact | None = None

    @field_validator("region", "logistics_partner_id", "teacher_contact", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        return _present(value)


class SchoolOut(BaseModel):
    id: str
    registration_number: int
    """Order of registration: allocation goes round-robin across schools in this order."""
    name: str
    country: str
    region: str
    logistics_partner_id: str
    teacher_contact: TeacherContactOut
    created_at: datetime
    updated_at: datetime


# ---- students ----

MAX_ROSTER_CODE_LENGTH = 64


def _roster_code_text(value: object) -> object:
    # One spelling per code: NFC, so the same code typed on two systems finds the same student; outer spaces are
    # spreadsheet noise. Numbers are refused (a leading zero would already be lost).
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    return value


RosterCode = Annotated[
    str,
    # Printable, no control characters; no outer whitespace once read (the validator below strips it first).
    StringConstraints(
        min_length=1,
        max_length=MAX_ROSTER_CODE_LENGTH,
        pattern=pattern(
            r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
            "must be printable, without control characters",
        ),
    ),
    BeforeValidator(_roster_code_text),
]


class StudentRowIn(BaseModel):
    """One student: the school's own roster code and a grade. Nothing else is accepted: no names, birth dates
    or photos."""

    model_config = ConfigDict(extra="forbid")
    roster_code: RosterCode
    grade: Grade


MAX_STUDENTS_PER_IMPORT = 50_000


class StudentImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    students: Annotated[list[StudentRowIn], Field(min_length=1, max_length=MAX_STUDENTS_PER_IMPORT)]


class StudentImportOut(BaseModel):
    """What an import did: every row is one of created, updated (its grade changed) or unchanged."""

    school_id: str
    received: int
    created: int
    updated: int
    unchanged: int


class StudentOut(BaseModel):
    """A student as the operator sees it. An erased student is a tombstone: no roster code, ever again."""

    id: str
    school_id: str
    registration_number: int
    """Order of registration (within a school too): allocation's last tie-break."""
    roster_code: str | None
    grade: str
    status: Literal["active", "inactive", "erased"]
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None


class StudentPatch(BaseModel):
    """`active: false` takes a student out of allocation (left the school, served elsewhere); `true` brings
    them back. Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)
    active: Annotated[bool, Field(strict=True)] | None = None
    grade: Grade | None = None

    @field_validator("active", "grade", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        return _present(value)


class StudentLookupIn(BaseModel):
    """Find a student by the school's roster code (sent in a body, never in a URL that logs would keep)."""

    model_config = ConfigDict(extra="forbid")
    roster_code: RosterCode


# ---- allocation runs and packages ----

Term = Annotated[
    str,
    StringConstraints(
        pattern=pattern(
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$",
            "must be a letter or digit, then up to 31 letters, digits, dots, underscores or hyphens",
        )
    ),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", "example": "2027-T1"}),
]


PLAN_FINGERPRINT = r"^[0-9a-f]{32}\.[0-9a-f]{32}\.[0-9a-f]{32}$"


class AllocationRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    term: Term
    """The school term the packages are for: a student gets at most one live package per term."""
    package_kind_id: ResourceId
    max_packages: Annotated[int, Field(ge=1, le=1_000_000, strict=True), WholeNumber] | None = None
    dry_run: bool = False
    """Answer with the plan the run would make now, and write nothing."""
    expected_plan_fingerprint: (
        Annotated[
            str,
            StringConstraints(
                pattern=pattern(
                    PLAN_FINGERPRINT, "must be the plan_fingerprint of a dry run's answer, as it was"
                )
            ),
        ]
        | None
    ) = None
    """The `plan_fingerprint` of a dry run: the run makes exactly that plan, or is refused (409 `plan-changed`,
    saying whether the pool, the students or the run's parameters changed) and writes nothing."""


class SchoolServedOut(BaseModel):
    school_id: str
    shipment_id: str | None
    """The school's planned shipment (null in a dry run)."""
    packages: int
    from_stock: int


class PlannedStudentOut(BaseModel):
    """One student of a dry run's plan, in fairness order, with why it ranks where it does."""

    rank: int
    """1 is served first."""
    student_id: str
    school_id: str
    grade: str
    reason: Literal["replacement", "never_received", "longest_since_last"]
    """The student's fairness group, served in this order: its package was lost or damaged this term
    (`replacement`); it never received one (`never_received`); it received one before (`longest_since_last`,
    the longest ago first)."""
    last_delivered_at: datetime | None
    """When its last package was delivered (`longest_since_last` only)."""
    school_turn: int
    """Its turn at its school among students of the same group (and date): equals are served round-robin
    across schools in registration order, each school's first, then each school's second…, and within a school
    by registration order."""
    tie_break: Literal["round_robin"] | None
    """`round_robin` when the student shares its group and date with the student before it, so the round-robin
    decided which of them comes first; null when its group (or an older delivery) put it here."""
    from_stock: bool
    """It gets a package returned to stock: no new money is spent on it."""
    spends: MoneyOut
    """New money this student's package takes from the pool (oldest collected money first)."""


class AllocationRunOut(BaseModel):
    id: str | None
    """Null for a dry run, which is never stored."""
    dry_run: bool
    term: str
    package_kind_id: str
    kind_version_id: str
    unit_cost: MoneyOut
    max_packages: int | None
    rule_version: str
    """The fairness rules that ordered the students (`fair-1`: lost or damaged this term first, then never
    received, then longest since the last; round-robin across schools by registration)."""
    packages: int
    from_stock: int
    """Packages that came back earlier, given to new students before any new money was spent."""
    new_packages: int
    money_spent: MoneyOut
    pool_before: MoneyOut
    pool_left: MoneyOut
    students_served: int
    students_waiting: int
    """Eligible students this run did not reach."""
    limited_by: Literal["pool", "students", "max_packages"]
    schools: list[SchoolServedOut]
    created_at: datetime
    plan_fingerprint: str | None = None
    """What the plan was computed from and what it is (the pool, the stock, the students, the run's
    parameters); pass it as `expected_plan_fingerprint` to make exactly this plan. Null for runs made before
    fingerprints existed."""
    plan: list[PlannedStudentOut] | None = None
    """A dry run's plan: every student it would serve, in fairness order. Null for a real run (its students
    are in `GET /v1/students/{id}/allocations` and `GET /v1/packages?run_id=`)."""


class FundingLineOut(BaseModel):
    merchant_id: str
    order_id: str
    """The platform's order id."""
    amount: MoneyOut


PackageStatus = Literal[
    "allocated", "shipped", "delivered", "accepted", "damaged", "missing", "in_stock", "cancelled"
]


class PackageSummaryOut(BaseModel):
    id: str
    kind_id: str
    kind_version_id: str
    cost: MoneyOut
    status: PackageStatus
    school_id: str | None
    grade: str | None
    shipment_id: str | None
    run_id: str
    created_at: datetime


class PackageOut(BaseModel):
    id: str
    kind_id: str
    kind_version_id: str
    name: str
    cost: MoneyOut
    status: PackageStatus
    country: str | None
    region: str | None
    grade: str | None
    school_id: str | None
    shipment_id: str | None
    run_id: str
    created_at: datetime
    delivered_at: datetime | None
    """When its shipment reached the school (this trip)."""
    receipt_confirmed_at: datetime | None
    """When the school confirmed what it received."""
    funding: list[FundingLineOut]
    """Whose money paid for it, summing exactly to its cost (a merchant sees only its own lines)."""


class FundingSummaryOut(BaseModel):
    merchant_id: str
    amount: MoneyOut


class StudentAllocationOut(BaseModel):
    id: str
    student_id: str
    school_id: str
    run_id: str
    term: str
    package_id: str
    package_kind_id: str
    kind_version_id: str
    cost: MoneyOut
    rank: int
    reason: Literal["replacement", "never_received", "longest_since_last"]
    rule_version: str
    from_stock: bool
    funding: list[FundingSummaryOut]
    """The package's funding by merchant."""
    shipment_id: str
    status: str
    delivered_at: datetime | None
    receipt_confirmed_at: datetime | None
    created_at: datetime
