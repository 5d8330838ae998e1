from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.errors import PROBLEM_MEDIA_TYPE, ProblemError
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.pagination import Page, PageParams, page_of
from app.core.types import CountryCode, ResourceId
from app.packages import allocation, repository, roster, service
from app.packages.grades import Grade
from app.packages.schemas import (
    AllocationRunIn,
    AllocationRunOut,
    PackageKindIn,
    PackageKindOut,
    PackageKindVersionOut,
    PackageOut,
    PackageStatus,
    PackageSummaryOut,
    SchoolIn,
    SchoolOut,
    SchoolPatch,
    StudentAllocationOut,
    StudentImportIn,
    StudentImportOut,
    StudentLookupIn,
    StudentOut,
    StudentPatch,
)

router = APIRouter(prefix="/v1", tags=["packages"], route_class=ExactJsonRoute)


class UnsupportedMediaType(ProblemError):
    status, kind, title = 415, "unsupported-media-type", "The body's media type is not accepted here"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _position(cursor: str | None) -> int | None:
    """A registration number as a cursor; anything else is the position before everything."""
    if cursor is None or not cursor.isdigit() or len(cursor) > 18:
        return None
    return int(cursor)


# ---- package kinds ----


@router.post(
    "/package-kinds", status_code=201, response_model=PackageKindOut, operation_id="create_package_kind"
)
async def create_package_kind(
    body: PackageKindIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("package_kind.create", "package_kind"),
) -> PackageKindOut | JSONResponse:
    """Define a kind of Love Package: contents, unit cost in the base currency, countries and grades served."""

    async def create() -> PackageKindOut:
        kind, version = await service.create_kind(
            session, body, base_currency=request.app.state.settings.base_currency
        )
        activity.resource_id = kind.id
        activity.details = {"name": body.name, "version_id": version.id}
        return service.kind_out(kind, version)

    return await idempotency.run(principal, create)


@router.get("/package-kinds", response_model=Page[PackageKindOut], operation_id="list_package_kinds")
async def list_package_kinds(
    session: SessionDep,
    page: PageParams,
    status: Annotated[
        Literal["active", "retired"] | None, Query(description="Only active or retired kinds")
    ] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[PackageKindOut]:
    kinds = await repository.list_kinds(
        session,
        after=page.after,
        limit=page.limit + 1,
        retired=None if status is None else status == "retired",
    )
    versions = await repository.current_versions(session, [k.id for k in kinds])
    return page_of([service.kind_out(k, versions[k.id]) for k in kinds], [k.id for k in kinds], page.limit)


@router.get("/package-kinds/{kind_id}", response_model=PackageKindOut, operation_id="get_package_kind")
async def get_package_kind(
    kind_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> PackageKindOut:
    """The kind as it is now (its current version); retired kinds too."""
    return service.kind_out(*await service.get_kind(session, kind_id))


@router.put(
    "/package-kinds/{kind_id}",
    response_model=PackageKindOut,
    operation_id="replace_package_kind",
    responses={409: _problem("The kind is retired")},
)
async def replace_package_kind(
    kind_id: ResourceId,
    body: PackageKindIn,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("package_kind.replace", "package_kind", resource_id="kind_id"),
) -> PackageKindOut:
    """Change the kind: anything that differs (its cost above all) makes a new version, and packages already
    funded keep the version, and so the cost, they were funded at. The same definition again changes nothing."""
    kind, version, _ = await service.replace_kind(
        session, kind_id, body, base_currency=request.app.state.settings.base_currency
    )
    activity.details = {"version_id": version.id}
    return service.kind_out(kind, version)


@router.post(
    "/package-kinds/{kind_id}/retire", response_model=PackageKindOut, operation_id="retire_package_kind"
)
async def retire_package_kind(
    kind_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("package_kind.retire", "package_kind", resource_id="kind_id"),
) -> PackageKindOut:
    """Retire instead of delete: new allocation runs can't use the kind; it and its history stay readable.
    Retiring a retired kind changes nothing."""
    return service.kind_out(*await service.retire_kind(session, kind_id, now=request.app.state.clock.now()))


@router.get(
    "/package-kinds/{kind_id}/versions",
    response_model=Page[PackageKindVersionOut],
    operation_id="list_package_kind_versions",
)
async def list_package_kind_versions(
    kind_id: ResourceId, session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[PackageKindVersionOut]:
    """Every version of the kind, newest first."""
    await service.get_kind(session, kind_id)
    rows = await repository.versions_newest_first(
        session, kind_id, before=_position(page.after), limit=page.limit + 1
    )
    return page_of([service.version_out(v) for v in rows], [str(v.version) for v in rows], page.limit)


@router.get(
    "/package-kind-versions/{version_id}",
    response_model=PackageKindVersionOut,
    operation_id="get_package_kind_version",
)
async def get_package_kind_version(
    version_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> PackageKindVersionOut:
    """One version of a kind, as packages funded at it refer to it."""
    return service.version_out(await service.get_version(session, version_id))


# ---- schools ----


@router.post("/schools", status_code=201, response_model=SchoolOut, operation_id="create_school")
async def create_school(
    body: SchoolIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("school.create", "school"),
) -> SchoolOut | JSONResponse:
    """Register a school with its logistics partner and teacher contact (encrypted at rest)."""
    cipher = request.app.state.cipher

    async def create() -> SchoolOut:
        school = await service.register_school(session, body, cipher=cipher)
        activity.resource_id = school.id
        activity.details = {"country": school.country, "logistics_partner_id": school.logistics_partner_id}
        return service.school_out(school, cipher)

    return await idempotency.run(principal, create)


@router.get("/schools", response_model=Page[SchoolOut], operation_id="list_schools")
async def list_schools(
    request: Request,
    session: SessionDep,
    page: PageParams,
    country: Annotated[CountryCode | None, Query()] = None,
    logistics_partner_id: Annotated[ResourceId | None, Query()] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[SchoolOut]:
    """Schools in registration order."""
    rows = await repository.list_schools(
        session,
        after=_position(page.after),
        limit=page.limit + 1,
        country=country,
        logistics_partner_id=logistics_partner_id,
    )
    cipher = request.app.state.cipher
    return page_of(
        [service.school_out(s, cipher) for s in rows], [str(s.registration_number) for s in rows], page.limit
    )


@router.get("/schools/{school_id}", response_model=SchoolOut, operation_id="get_school")
async def get_school(
    school_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
) -> SchoolOut:
    return service.school_out(await service.get_school(session, school_id), request.app.state.cipher)


@router.patch("/schools/{school_id}", response_model=SchoolOut, operation_id="update_school")
async def update_school(
    school_id: ResourceId,
    body: SchoolPatch,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("school.update", "school", resource_id="school_id"),
) -> SchoolOut:
    """Change the region, the logistics partner or the teacher contact. Name and country stay."""
    cipher = request.app.state.cipher
    # Which fields changed, not their values: the teacher contact is personal data.
    activity.details = {"changed": sorted(body.model_dump(exclude_unset=True))}
    return service.school_out(await service.update_school(session, school_id, body, cipher=cipher), cipher)


# ---- students ----

_IMPORT_SCHEMA: dict[str, Any] = TypeAdapter(StudentImportIn).json_schema(
    ref_template="#/components/schemas/{model}"
)
_IMPORT_DEFS = _IMPORT_SCHEMA.pop("$defs", {})
_IMPORT_DEFS["StudentImportIn"] = _IMPORT_SCHEMA
_CSV_SCHEMA = {
    "type": "string",
    "description": "A header line `roster_code,grade`, then one student a line (UTF-8).",
    "example": "roster_code,grade\nNP-0001,3\nNP-0002,K\n",
}


def _media_type(request: Request) -> str:
    """`json` or `csv` from Content-Type; anything else is a 415."""
    media, _, parameters = request.headers.get("content-type", "").partition(";")
    media = media.strip().lower()
    if media == "application/json":
        return "json"
    if media == "text/csv":
        charset = next(
            (
                p.split("=", 1)[1].strip().strip('"').lower()
                for p in parameters.split(";")
                if "charset=" in p.lower()
            ),
            "utf-8",
        )
        if charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("Send the CSV as UTF-8 (charset=utf-8).")
        return "csv"
    raise UnsupportedMediaType("Send application/json or text/csv.")


@router.post(
    "/schools/{school_id}/students",
    response_model=StudentImportOut,
    operation_id="import_students",
    responses={
        415: _problem("Neither application/json nor UTF-8 text/csv"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/StudentImportIn"}},
                "text/csv": {"schema": _CSV_SCHEMA},
            },
        },
        "x-component-schemas": _IMPORT_DEFS,
    },
)
async def import_students(
    school_id: ResourceId,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("students.import", "school", resource_id="school_id"),
) -> StudentImportOut | JSONResponse:
    """Add or update a school's students, all or nothing, from JSON `{"students": [{"roster_code", "grade"}]}`
    or CSV (header `roster_code,grade`), up to 50,000 a request. Idempotent by (school, roster code): a known
    code gets the row's grade. Any other field or column is refused by name; a bad row fails the whole import
    with every problem listed by row (never quoting a roster code). Answers how many were created, updated and
    unchanged."""
    await service.get_school(session, school_id)
    media = _media_type(request)
    body = (
        await request.body()
    )  # at most G4G_MAX_IMPORT_BYTES: bounded while it streams (app/core/body_limit.py)
    rows = roster.read_json(body) if media == "json" else roster.read_csv(body)
    state = request.app.state

    async def create() -> StudentImportOut:
        imported = await service.import_students(
            session, school_id, rows, cipher=state.cipher, lookup_key=state.lookup_key
        )
        activity.details = imported.model_dump(include={"received", "created", "updated", "unchanged"})
        return imported

    return await idempotency.run(principal, create, status=200)


@router.get("/schools/{school_id}/students", response_model=Page[StudentOut], operation_id="list_students")
async def list_students(
    school_id: ResourceId,
    request: Request,
    session: SessionDep,
    page: PageParams,
    status: Annotated[Literal["active", "inactive", "erased"] | None, Query()] = None,
    grade: Annotated[Grade | None, Query()] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[StudentOut]:
    """A school's students in registration order, with their roster codes (admin only); erased students are
    tombstones without one."""
    await service.get_school(session, school_id)
    rows = await repository.list_students(
        session, school_id, after=_position(page.after), limit=page.limit + 1, status=status, grade=grade
    )
    cipher = request.app.state.cipher
    return page_of(
        [service.student_out(s, cipher) for s in rows], [str(s.registration_number) for s in rows], page.limit
    )


@router.post(
    "/schools/{school_id}/students/lookup",
    response_model=StudentOut,
    operation_id="find_student_by_roster_code",
)
async def find_student_by_roster_code(
    school_id: ResourceId,
    body: StudentLookupIn,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
) -> StudentOut:
    """The school's student with this roster code, found by its keyed hash. The code travels in the body, never
    in a URL (URLs end up in logs)."""
    state = request.app.state
    student = await service.find_student(session, school_id, body.roster_code, lookup_key=state.lookup_key)
    return service.student_out(student, state.cipher)


@router.get("/students/{student_id}", response_model=StudentOut, operation_id="get_student")
async def get_student(
    student_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
) -> StudentOut:
    return service.student_out(await service.get_student(session, student_id), request.app.state.cipher)


@router.patch(
    "/students/{student_id}",
    response_model=StudentOut,
    operation_id="update_student",
    responses={409: _problem("The student was erased")},
)
async def update_student(
    student_id: ResourceId,
    body: StudentPatch,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("student.update", "student", resource_id="student_id"),
) -> StudentOut:
    """`{"active": false}` takes the student out of allocation (`true` brings them back); `grade` corrects
    the grade."""
    activity.details = body.model_dump(exclude_unset=True, mode="json")
    return service.student_out(
        await service.update_student(session, student_id, body), request.app.state.cipher
    )


@router.delete("/students/{student_id}", response_model=StudentOut, operation_id="erase_student")
async def erase_student(
    student_id: ResourceId,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("student.erase", "student", resource_id="student_id"),
) -> StudentOut:
    """Erase the student: the roster code is gone for good (ciphertext and hash); a tombstone keeps the id,
    school, grade and history. Erasing again changes nothing."""
    student = await service.erase_student(session, student_id, now=request.app.state.clock.now())
    return service.student_out(student, request.app.state.cipher)


# ---- allocation runs and packages ----


@router.post(
    "/allocation-runs",
    status_code=201,
    response_model=AllocationRunOut,
    operation_id="run_allocation",
    responses={
        200: {"model": AllocationRunOut, "description": "A dry run: the plan, nothing written (`id` null)"},
        409: _problem("Nothing to allocate, or the plan changed since the dry run (`plan-changed`)"),
    },
)
async def run_allocation(
    body: AllocationRunIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("allocation.run", "allocation_run"),
) -> AllocationRunOut | JSONResponse:
    """Turn the pool into Love Packages for the students who should get one next (fairness order `fair-1`),
    oldest money first, stock before new money, one planned shipment per school. `dry_run`: the same plan,
    nothing written (answered 200), with `plan` (every student it would serve, in order, with the reason and
    the money it spends) and its `plan_fingerprint`. Send that fingerprint as `expected_plan_fingerprint` to
    make exactly that plan: if the pool, the students or the parameters changed since, the run is refused with
    409 `plan-changed` (saying which) and nothing is written."""
    state = request.app.state

    async def create() -> AllocationRunOut:
        run = await allocation.run_allocation(
            session,
            body,
            base_currency=state.settings.base_currency,
            now=state.clock.now(),
            with_plan=body.dry_run,
        )
        activity.resource_id = run.id
        activity.details = allocation.run_details(run, body)
        return run

    if body.dry_run:
        activity.skip()  # a dry run writes nothing
        return JSONResponse((await create()).model_dump(mode="json"), status_code=200)
    return await idempotency.run(principal, create)


@router.get("/allocation-runs", response_model=Page[AllocationRunOut], operation_id="list_allocation_runs")
async def list_allocation_runs(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[AllocationRunOut]:
    runs, ids = await allocation.list_runs(session, after=page.after, limit=page.limit + 1)
    return page_of(runs, ids, page.limit)


@router.get("/allocation-runs/{run_id}", response_model=AllocationRunOut, operation_id="get_allocation_run")
async def get_allocation_run(
    run_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> AllocationRunOut:
    return await allocation.get_run(session, run_id)


@router.get("/packages", response_model=Page[PackageSummaryOut], operation_id="list_packages")
async def list_packages(
    session: SessionDep,
    page: PageParams,
    run_id: Annotated[ResourceId | None, Query()] = None,
    school_id: Annotated[ResourceId | None, Query()] = None,
    status: Annotated[PackageStatus | None, Query()] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[PackageSummaryOut]:
    """Every package (without its funding; read one for that), filtered by run, school or status."""
    rows, ids = await allocation.list_packages(
        session, after=page.after, limit=page.limit + 1, run_id=run_id, school_id=school_id, status=status
    )
    return page_of(rows, ids, page.limit)


@router.get("/packages/{package_id}", response_model=PackageOut, operation_id="get_package")
async def get_package(
    package_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin, Role.merchant)
) -> PackageOut:
    """A Love Package and whose money paid for it. A merchant sees only packages its orders funded, only its own
    funding lines, and only the package's country and grade."""
    return await allocation.get_package(session, principal, package_id)


@router.get(
    "/students/{student_id}/allocations",
    response_model=Page[StudentAllocationOut],
    operation_id="list_student_allocations",
)
async def list_student_allocations(
    student_id: ResourceId,
    session: SessionDep,
    page: PageParams,
    principal: Principal = Authorized(Role.admin),
) -> Page[StudentAllocationOut]:
    """Every package the student was given: term, kind, cost, rank and rule version, funding, shipment, status,
    delivery and receipt dates."""
    rows, ids = await allocation.student_allocations(
        session, student_id, after=page.after, limit=page.limit + 1
    )
    return page_of(rows, ids, page.limit)
