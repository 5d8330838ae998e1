"""Allocation runs: the pool becomes Love Packages for the students who should get one next (SPEC §7).

A run, for one term and one package kind:
1. takes the pool lock (runs and money entering the pool take turns, so two runs never spend the same money) and
   a share lock on the kind (nobody retires it or changes its cost under the run);
2. counts what it can make: the kind's packages back in stock, plus as many new ones as the pool's available
   money pays for at the kind's current cost, at most `max_packages`;
3. orders the eligible students (`allocation_repository.plan_students`: the fairness order, rule `fair-1`) and
   takes that many from the front; stock packages go to the first of them, so no new money is spent while a
   returned box waits;
4. makes one `planned` shipment per school, assigned to the school's logistics partner, the new packages and each
   student's allocation record (a second live package for a student in a term is refused by the database);
5. funds the new packages from the front of the pool queue (oldest money first), each from exactly its cost;
6. posts the money: pool → packages assigned per new package, stock → packages assigned per reused one.

Every step is a set-based statement, so the run's memory does not grow with the number of students. A dry run
does all of it inside a savepoint and rolls it back: it is exactly the plan the real run would make now. Its
`plan_fingerprint` hashes what the plan was made from (parameters, pool, stock, students) and the plan itself, in
the database; a run given it (`expected_plan_fingerprint`) computes it again under the same locks and makes the
plan only if nothing changed (else `PlanChanged`, 409, naming what changed)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.database import driver_connection
from app.core.errors import Conflict, NotFound
from app.core.ids import new_id, new_ids_in_bulk
from app.core.money import MoneyOut
from app.events.outbox import EventDraft, emit_many
from app.events.repository import subscribers
from app.ledger import accounts
from app.ledger.service import EntryDraft, post, transfer
from app.packages import allocation_repository as repository
from app.packages import pool
from app.packages import service as packages
from app.packages.schemas import (
    AllocationRunIn,
    AllocationRunOut,
    FundingLineOut,
    FundingSummaryOut,
    PackageOut,
    PackageSummaryOut,
    PlannedStudentOut,
    SchoolServedOut,
    StudentAllocationOut,
)
from app.receipts import events as receipts

RULE_VERSION = "fair-1"


class NothingToAllocate(Conflict):
    kind, title = "nothing-to-allocate", "This run would make no package"


class PlanChanged(Conflict):
    kind, title = "plan-changed", "The plan changed since the dry run"


class _DryRun(Exception):
    """Raised inside the savepoint to roll a dry run back."""


@dataclass(frozen=True, slots=True)
class _Capacity:
    available: int  # base minor units in the pool, not yet spent
    stock: list[str]
    cost: int
    limit: int
    limited_by: str


def _capacity(
    available: int, stock: list[str], cost: int, max_packages: int | None, eligible: int
) -> _Capacity:
    affordable = len(stock) + available // cost
    candidates = {"pool": affordable, "students": eligible}
    if max_packages is not None:
        candidates["max_packages"] = max_packages
    limited_by = min(candidates, key=lambda name: (candidates[name], name != "students"))
    return _Capacity(available, stock, cost, candidates[limited_by], limited_by)


@dataclass(frozen=True, slots=True)
class PlanFingerprint:
    """What a plan was computed from and what it is, in three parts, so a refusal can say which changed: the
    run's parameters (term, kind version and cost, max_packages, rule), the pool (the queue's end and how much
    of it is spent, the stock packages), and the students (how many are eligible, and the plan itself)."""

    parameters: str
    pool: str
    students: str

    def __str__(self) -> str:
        return f"{self.parameters}.{self.pool}.{self.students}"

    @classmethod
    def parse(cls, text: str) -> PlanFingerprint:
        parameters, pool_state, students = text.split(".")
        return cls(parameters, pool_state, students)

    def changes_since(self, expected: PlanFingerprint) -> list[str]:
        return [
            part
            for part in ("parameters", "pool", "students")
            if getattr(self, part) != getattr(expected, part)
        ]


_WHAT_CHANGED = {
    "parameters": "the run's term, package kind (or its cost) or max_packages",
    "pool": "the pool (money collected or spent since, or packages back in stock)",
    "students": "the students (who is eligible, their grades, schools or deliveries)",
}


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


async def run_allocation(
    session: AsyncSession,
    body: AllocationRunIn,
    *,
    base_currency: str,
    now: datetime,
    with_plan: bool = False,
) -> AllocationRunOut:
    """One allocation run (see the module). A real run that would make nothing is refused with the reason; a dry
    run answers with the plan, empty or not (`with_plan`: every student of it, in order, with the reason). With
    `body.expected_plan_fingerprint` the run makes exactly the plan of that dry run, or raises `PlanChanged`."""
    db = await driver_connection(session)
    # Set-based statements over 10^5-10^6 rows: compiling them to machine code costs more than it saves.
    await db.execute("SET LOCAL jit = off")
    await pool.lock_pool(db)
    version = await packages.usable_kind_version(session, body.package_kind_id, base_currency=base_currency)
    tail, spent = await repository.queue_position(db)
    stock = await repository.lock_stock(db, version.kind_id)
    eligible = await repository.count_eligible(db, body.term, version.countries, version.grades)
    capacity = _capacity(tail - spent, stock, version.unit_cost, body.max_packages, eligible)

    run_id = new_id("alr")
    plan: list[PlannedStudentOut] | None = None
    try:
        async with db.transaction():  # a savepoint: a dry run rolls back to here
            await repository.plan_students(db, body.term, version.countries, version.grades, capacity.limit)
            fingerprint = PlanFingerprint(
                parameters=_digest(
                    RULE_VERSION, body.term, version.id, version.unit_cost, body.max_packages, base_currency
                ),
                pool=_digest(tail, spent, *stock),
                students=_digest(eligible, await repository.plan_digest(db)),
            )
            if body.expected_plan_fingerprint is not None:
                _ensure_unchanged(fingerprint, PlanFingerprint.parse(body.expected_plan_fingerprint))
            if capacity.limit == 0 and not body.dry_run:
                raise NothingToAllocate(
                    _why_nothing(capacity, eligible, version.countries, version.grades, base_currency)
                )
            if with_plan:
                plan = _plan_out(
                    await repository.plan_rows(db),
                    stock=len(stock),
                    cost=MoneyOut(amount=version.unit_cost, currency=base_currency),
                )
            outcome = await _make_packages(
                db, run_id, body, version, capacity, spent=spent, base_currency=base_currency, now=now
            )
            if body.dry_run:
                raise _DryRun
    except _DryRun:
        pass
    out = AllocationRunOut(
        id=None if body.dry_run else run_id,
        dry_run=body.dry_run,
        term=body.term,
        package_kind_id=version.kind_id,
        kind_version_id=version.id,
        unit_cost=MoneyOut(amount=version.unit_cost, currency=base_currency),
        max_packages=body.max_packages,
        rule_version=RULE_VERSION,
        packages=outcome["packages"],
        from_stock=outcome["from_stock"],
        new_packages=outcome["new_packages"],
        money_spent=MoneyOut(amount=outcome["new_packages"] * version.unit_cost, currency=base_currency),
        pool_before=MoneyOut(amount=capacity.available, currency=base_currency),
        pool_left=MoneyOut(
            amount=capacity.available - outcome["new_packages"] * version.unit_cost, currency=base_currency
        ),
        students_served=outcome["packages"],
        students_waiting=eligible - outcome["packages"],
        limited_by=capacity.limited_by,
        schools=[
            SchoolServedOut(
                school_id=s["school_id"],
                shipment_id=None if body.dry_run else s["shipment_id"],
                packages=s["packages"],
                from_stock=s["from_stock"],
            )
            for s in outcome["schools"]
        ],
        created_at=now,
        plan_fingerprint=str(fingerprint),
    )
    if not body.dry_run:
        await repository.store_run_summary(db, run_id, out.model_dump_json())
    out.plan = plan
    return out


def run_details(run: AllocationRunOut, body: AllocationRunIn) -> dict[str, Any]:
    """What the activity log says about a run, through the API or the console."""
    return {
        "term": run.term,
        "package_kind_id": run.package_kind_id,
        "packages": run.packages,
        "money_spent": run.money_spent.model_dump(mode="json"),
        "plan_fingerprint": run.plan_fingerprint,
        "as_dry_run_planned": body.expected_plan_fingerprint is not None,
    }


def _ensure_unchanged(now: PlanFingerprint, expected: PlanFingerprint) -> None:
    changed = now.changes_since(expected)
    if changed:
        raise PlanChanged(
            f"Since that dry run, {' and '.join(_WHAT_CHANGED[part] for part in changed)} changed: this run"
            " would not make the plan you saw, so it made nothing. Make a new dry run and check its plan.",
            changed=changed,
        )


def _plan_out(rows: list[asyncpg.Record], *, stock: int, cost: MoneyOut) -> list[PlannedStudentOut]:
    nothing = MoneyOut(amount=0, currency=cost.currency)
    out: list[PlannedStudentOut] = []
    previous: tuple[str, Any] | None = None
    for row in rows:
        group = (row["reason"], row["last_at"])
        from_stock = row["rank"] <= stock
        out.append(
            PlannedStudentOut(
                rank=row["rank"],
                student_id=row["student_id"],
                school_id=row["school_id"],
                grade=row["grade"],
                reason=row["reason"],
                last_delivered_at=row["last_at"],
                school_turn=row["turn"],
                tie_break="round_robin" if group == previous else None,
                from_stock=from_stock,
                spends=nothing if from_stock else cost,
            )
        )
        previous = group
    return out


async def _make_packages(
    db: asyncpg.Connection,
    run_id: str,
    body: AllocationRunIn,
    version: Any,
    capacity: _Capacity,
    *,
    spent: int,
    base_currency: str,
    now: datetime,
) -> dict[str, Any]:
    planned = await repository.plan_size(db)
    stock = capacity.stock[:planned]
    new_ids = new_ids_in_bulk("pkg", planned - len(stock))
    schools = await repository.planned_schools(db)
    shipments = {s["school_id"]: new_id("shp") for s in schools}
    # The run row first: packages, allocations and shipments refer to it (its summary is filled in at the end).
    await repository.insert_run(db, run_id, body.term, version.kind_id, version.id, body.max_packages, now)
    await repository.insert_shipments(
        db,
        run_id,
        [(shipments[s["school_id"]], s["school_id"], s["logistics_partner_id"]) for s in schools],
        now,
    )
    await repository.assign_packages(db, new_ids_in_bulk("alc", planned), stock, new_ids, shipments)
    await repository.create_packages(
        db,
        run_id=run_id,
        term=body.term,
        kind_id=version.kind_id,
        version_id=version.id,
        cost=version.unit_cost,
        currency=base_currency,
        rule_version=RULE_VERSION,
        spent=spent,
        stock=len(stock),
        now=now,
    )
    await post(db, _ledger_entries(new_ids, stock, cost=version.unit_cost, currency=base_currency))
    await _announce(db, new_ids + stock, now=now)
    await receipts.announce(db, now=now, package_ids=new_ids + stock)
    served = await repository.served_per_school(db)
    return {
        "packages": planned,
        "from_stock": len(stock),
        "new_packages": len(new_ids),
        "schools": [dict(s) for s in served],
    }


def _ledger_entries(new_ids: list[str], stock: list[str], *, cost: int, currency: str) -> list[EntryDraft]:
    entries = [
        transfer(
            cause_type="package_allocated",
            cause_id=package_id,
            memo=f"package {package_id} funded from the pool",
            debit=accounts.PACKAGES_ASSIGNED,
            credit=accounts.POOL,
            currency=currency,
            amount=cost,
        )
        for package_id in new_ids
    ]
    entries += [
        transfer(
            cause_type="package_reassigned",
            cause_id=package_id,
            memo=f"package {package_id} out of stock to a new student",
            debit=accounts.PACKAGES_ASSIGNED,
            credit=accounts.PACKAGES_IN_STOCK,
            currency=currency,
            amount=cost,
        )
        for package_id in stock
    ]
    return entries


async def _announce(db: asyncpg.Connection, package_ids: list[str], *, now: datetime) -> None:
    """`package.allocated` to each merchant whose orders funded a package (with its share), and to programme
    endpoints; built only for those who subscribed (a run may make tens of thousands of packages)."""
    listening = await subscribers(db, "package.allocated")
    if not listening.anyone or not package_ids:
        return
    shares = await repository.merchant_shares(db, package_ids)
    events: list[EventDraft] = []
    for row in shares:
        data = package_share(row)
        if row["merchant_id"] in listening.merchant_ids:
            events.append(EventDraft("package.allocated", data, now, merchant_id=row["merchant_id"]))
        if row["platform_id"] in listening.platform_ids:
            events.append(EventDraft("package.allocated", data, now, platform_id=row["platform_id"]))
    if listening.programme:
        events += [
            EventDraft("package.allocated", {"package_id": package_id}, now) for package_id in package_ids
        ]
    await emit_many(db, events)


def package_share(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a merchant's `package.*` event says of a package it helped pay for: its share, the box's cost and
    where the box went (never a student)."""
    return {
        "package_id": row["package_id"],
        "merchant_id": row["merchant_id"],
        "share": {"amount": int(row["share"]), "currency": row["currency"]},
        "cost": {"amount": int(row["cost"]), "currency": row["currency"]},
        "country": row["country"],
        "region": row["region"],
        "grade": row["grade"],
    }


def _why_nothing(
    capacity: _Capacity, eligible: int, countries: list[str], grades: list[str], currency: str
) -> str:
    if eligible == 0:
        return (
            f"No eligible student: none active at schools in {', '.join(countries)} in grades "
            f"{', '.join(grades)} without a package this term."
        )
    if capacity.limited_by == "max_packages":
        return "max_packages is 0."
    return (
        f"The pool holds {capacity.available} {currency} minor units; a package costs {capacity.cost} and none "
        "is in stock."
    )


# ---- reads ----


async def latest_runs(session: AsyncSession, *, limit: int) -> list[AllocationRunOut]:
    """The newest `limit` runs, newest first (the console's list)."""
    return [
        AllocationRunOut.model_validate(s)
        for s in await repository.latest_run_summaries(session, limit=limit)
    ]


async def get_run(session: AsyncSession, run_id: str) -> AllocationRunOut:
    summary = await repository.run_summary(session, run_id)
    if summary is None:
        raise NotFound(f"No allocation run {run_id}.")
    return AllocationRunOut.model_validate(summary)


async def list_runs(
    session: AsyncSession, *, after: str | None, limit: int
) -> tuple[list[AllocationRunOut], list[str]]:
    rows = await repository.run_summaries(session, after=after, limit=limit)
    return [AllocationRunOut.model_validate(summary) for _, summary in rows], [run_id for run_id, _ in rows]


async def get_package(session: AsyncSession, principal: Principal, package_id: str) -> PackageOut:
    """A package with whose money paid for it. The operator sees everything; a merchant sees a package its orders
    funded, with only its own funding lines and only where it went (country and grade), never a school or a
    student."""
    found = await repository.package_with_place(session, package_id)
    merchant_id = None if principal.is_admin else principal.merchant_id
    lines = await repository.package_funding_lines(
        await driver_connection(session), package_id, merchant_id=merchant_id
    )
    if found is None or (merchant_id is not None and not lines):
        raise NotFound(f"No package {package_id}.")
    package, name, country, region = found
    restricted = merchant_id is not None
    return PackageOut(
        id=package.id,
        kind_id=package.kind_id,
        kind_version_id=package.kind_version_id,
        name=name,
        cost=MoneyOut(amount=package.cost, currency=package.currency),
        status=package.status,
        country=country,
        region=None if restricted else region,
        grade=package.grade,
        school_id=None if restricted else package.school_id,
        shipment_id=None if restricted else package.shipment_id,
        run_id=package.run_id,
        created_at=package.created_at,
        delivered_at=package.delivered_at,
        receipt_confirmed_at=package.receipt_confirmed_at,
        funding=[
            FundingLineOut(
                merchant_id=merchant,
                order_id=order,
                amount=MoneyOut(amount=amount, currency=package.currency),
            )
            for merchant, order, amount in lines
        ],
    )


async def student_allocations(
    session: AsyncSession, student_id: str, *, after: str | None, limit: int
) -> tuple[list[StudentAllocationOut], list[str]]:
    """The per-student record: each package the student was given, why, and what became of it."""
    await packages.get_student(session, student_id)
    rows = await repository.student_allocations(session, student_id, after=after, limit=limit)
    funding = await repository.funding_by_merchant(
        await driver_connection(session), [a.package_id for a, _, _, _ in rows]
    )
    out = [
        StudentAllocationOut(
            id=a.id,
            student_id=a.student_id,
            school_id=a.school_id,
            run_id=a.run_id,
            term=a.term,
            package_id=a.package_id,
            package_kind_id=kind_id,
            kind_version_id=version_id,
            cost=MoneyOut(amount=a.cost, currency=currency),
            rank=a.rank,
            reason=a.reason,
            rule_version=a.rule_version,
            from_stock=a.from_stock,
            funding=[
                FundingSummaryOut(
                    merchant_id=merchant,
                    amount=MoneyOut(amount=amount, currency=currency),
                )
                for merchant, amount in funding.get(a.package_id, [])
            ],
            shipment_id=a.shipment_id,
            status=a.status,
            delivered_at=a.delivered_at,
            receipt_confirmed_at=a.receipt_confirmed_at,
            created_at=a.created_at,
        )
        for a, kind_id, version_id, currency in rows
    ]
    return out, [a.id for a, _, _, _ in rows]


async def list_packages(
    session: AsyncSession,
    *,
    after: str | None,
    limit: int,
    run_id: str | None,
    school_id: str | None,
    status: str | None,
) -> tuple[list[PackageSummaryOut], list[str]]:
    rows = await repository.packages_page(
        session, after=after, limit=limit, run_id=run_id, school_id=school_id, status=status
    )
    return [
        PackageSummaryOut(
            id=p.id,
            kind_id=p.kind_id,
            kind_version_id=p.kind_version_id,
            cost=MoneyOut(amount=p.cost, currency=p.currency),
            status=p.status,
            school_id=p.school_id,
            grade=p.grade,
            shipment_id=p.shipment_id,
            run_id=p.run_id,
            created_at=p.created_at,
        )
        for p in rows
    ], [p.id for p in rows]
