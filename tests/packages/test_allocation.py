"""Allocation runs: the pool becomes packages for the right students, oldest money first, every cent traced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.helpers import assert_problem, audit_ok, bearer, create_key, get_order
from tests.packages.conftest import Pool


async def _count(pool: Pool, sql: str) -> int:
    async with pool.app.state.engine.connect() as connection:
        return int((await connection.execute(text(sql))).scalar_one())


async def _state(pool: Pool) -> tuple[int, ...]:
    return tuple(
        [
            await _count(pool, f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names
            for table in (
                "love_packages",
                "package_funding",
                "allocations",
                "shipments",
                "allocation_runs",
                "ledger_entries",
                "funding_sources",
            )
        ]
    )


async def test_a_run_turns_the_pool_into_packages_funded_oldest_money_first(pool: Pool) -> None:
    tea, cake = await pool.merchant("tea"), await pool.merchant("cake")
    await pool.collect([(tea, "T-1", 300), (tea, "T-2", 500), (cake, "C-1", 400)])
    assert (await pool.funds())["pool"] == {"amount": 1200, "currency": "USD"}
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    school, _ = await pool.school(["1", "2", "3"])

    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert (run["packages"], run["new_packages"], run["from_stock"]) == (2, 2, 0)
    assert run["money_spent"] == {"amount": 1000, "currency": "USD"}
    assert run["pool_before"]["amount"] == 1200 and run["pool_left"]["amount"] == 200
    assert (run["students_served"], run["students_waiting"], run["limited_by"]) == (2, 1, "pool")
    [served] = run["schools"]
    assert served["school_id"] == school["id"] and served["packages"] == 2 and served["shipment_id"]

    packages = (
        await pool.client.get("/v1/packages", params={"run_id": run["id"]}, headers=pool.admin)
    ).json()["data"]
    first, second = sorted(
        [(await pool.package(p["id"])).json() for p in packages], key=lambda p: p["funding"][0]["order_id"]
    )
    # FIFO over the queue: T-1 (300) + 200 of T-2, then the rest of T-2 (300) + 200 of C-1.
    assert [(f["order_id"], f["amount"]["amount"]) for f in first["funding"]] == [("T-1", 300), ("T-2", 200)]
    assert [(f["order_id"], f["amount"]["amount"]) for f in second["funding"]] == [("T-2", 300), ("C-1", 200)]
    for package in (first, second):
        assert sum(f["amount"]["amount"] for f in package["funding"]) == package["cost"]["amount"] == 500
        assert (
            package["status"] == "allocated" and package["country"] == "NP" and package["region"] == "Bagmati"
        )

    # The money is where the ledger says, and the trail leads from each order to its packages.
    funds = await pool.funds()
    assert funds["pool"]["amount"] == 200
    assert funds["packages"]["allocated"]["amount"] == funds["packages"]["in_transit"]["amount"] == 1000
    assert funds["next_package"] == {
        "package_kind_id": kind["id"],
        "available": {"amount": 200, "currency": "USD"},
        "cost": {"amount": 500, "currency": "USD"},
        "short_by": {"amount": 300, "currency": "USD"},
    }
    trail = (await get_order(pool.client, pool.admin, pool.platform["id"], "T-2")).json()["trail"]
    assert sorted(t["share"]["amount"] for t in trail) == [200, 300]
    assert all(t["country"] == "NP" and t["delivery_status"] == "allocated" for t in trail)
    assert "student" not in str(trail)
    await audit_ok(pool.client, pool.admin)

    # The leftover stays in the pool; the next money tops it up and the waiting student is served.
    await pool.collect([(cake, "C-2", 300)])
    again = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert (again["packages"], again["students_waiting"], again["pool_left"]["amount"]) == (1, 0, 0)
    third = (
        await pool.package(
            (
                await pool.client.get("/v1/packages", params={"run_id": again["id"]}, headers=pool.admin)
            ).json()["data"][0]["id"]
        )
    ).json()
    assert [(f["order_id"], f["amount"]["amount"]) for f in third["funding"]] == [("C-1", 200), ("C-2", 300)]
    await audit_ok(pool.client, pool.admin)


async def test_the_database_refuses_a_package_whose_money_overlaps_another_or_skips_some(pool: Pool) -> None:
    """Belt and braces under the run's lock: even a writer that bypasses the service cannot make two packages
    share a unit of the pool queue, nor leave a gap before a package: each stretch must start where another ends."""
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1"])
    await pool.run(term="2027-T1", package_kind_id=kind["id"])  # one package: [0, 500)
    copy_with_stretch_at = """
        INSERT INTO love_packages (id, kind_id, kind_version_id, cost, currency, run_id, status, school_id, grade,
                                   shipment_id, status_changed_at, funding_start, funding_end)
        SELECT :id, kind_id, kind_version_id, cost, currency, run_id, 'in_stock', school_id, grade, shipment_id,
               status_changed_at, funding_start + :shift, funding_end + :shift
        FROM love_packages"""
    refusals = {
        0: "ix_love_packages_funding_start",  # the same stretch again
        1: "fk_love_packages_follows_end",  # overlapping by 499
        250: "fk_love_packages_follows_end",
        499: "fk_love_packages_follows_end",  # overlapping by 1
        600: "fk_love_packages_follows_end",  # a gap of 100 before it
        -1: "ck_love_packages_funding_is_cost",  # before the queue's start
    }
    for shift, constraint in refusals.items():
        async with pool.app.state.engine.connect() as connection:
            with pytest.raises(IntegrityError, match=constraint):
                await connection.execute(
                    text(copy_with_stretch_at), {"id": f"pkg_bad{shift}", "shift": shift}
                )
    # Right after the last unit spent is where the next package goes.
    async with pool.app.state.engine.connect() as connection:
        await connection.execute(text(copy_with_stretch_at), {"id": "pkg_next", "shift": 500})
        await connection.rollback()


async def test_students_are_served_in_fairness_order_round_robin_across_schools(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 3 * 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    first_school, (a, b, c) = await pool.school(["1", "1", "2"])
    second_school, (d, e) = await pool.school(["3", "2"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert run["packages"] == 3
    records = {}
    for student in (a, b, c, d, e):
        page = (await pool.client.get(f"/v1/students/{student['id']}/allocations", headers=pool.admin)).json()
        records[student["id"]] = page["data"]
    served = sorted((r[0]["rank"], sid) for sid, r in records.items() if r)
    # Each school's first student, then each school's second: a, d, b; c and e wait.
    assert [sid for _, sid in served] == [a["id"], d["id"], b["id"]]
    record = records[a["id"]][0]
    assert (record["reason"], record["rule_version"], record["term"], record["status"]) == (
        "never_received",
        "fair-1",
        "2027-T1",
        "allocated",
    )
    assert record["funding"] == [{"merchant_id": shop["id"], "amount": {"amount": 500, "currency": "USD"}}]
    assert {s["school_id"]: s["packages"] for s in run["schools"]} == {
        first_school["id"]: 2,
        second_school["id"]: 1,
    }
    assert len({s["shipment_id"] for s in run["schools"]}) == 2

    # Nobody gets a second package in the same term; the next term starts over.
    await pool.collect([(shop, "O-2", 5 * 500)])
    rest = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert rest["packages"] == 2 and rest["students_waiting"] == 0
    assert (await pool.run(term="2027-T1", package_kind_id=kind["id"], expect=409))["type"].endswith(
        "nothing-to-allocate"
    )
    next_term = await pool.run(term="2027-T2", package_kind_id=kind["id"])
    assert next_term["packages"] == 3  # the pool had 5 packages' worth, 2 went in the run before
    await audit_ok(pool.client, pool.admin)


async def test_a_dry_run_is_the_same_plan_and_writes_nothing(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1750)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1", "2"])
    await pool.school(["3"])
    before = await _state(pool)
    funds = await pool.funds()
    plan = await pool.run(term="2027-T1", package_kind_id=kind["id"], dry_run=True, expect=200)
    assert plan["id"] is None and plan["dry_run"] and all(s["shipment_id"] is None for s in plan["schools"])
    assert await _state(pool) == before and await pool.funds() == funds
    real = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    volatile = ("id", "dry_run", "schools", "created_at", "plan")
    assert {k: v for k, v in plan.items() if k not in volatile} == {
        k: v for k, v in real.items() if k not in volatile
    }
    assert [(s["school_id"], s["packages"]) for s in plan["schools"]] == [
        (s["school_id"], s["packages"]) for s in real["schools"]
    ]


async def test_four_runs_at_once_never_spend_the_same_money_twice(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, f"O-{n}", 700) for n in range(10)])  # 7000: fourteen packages' worth
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    for _ in range(3):
        await pool.school(["1"] * 8)
    answers = await asyncio.gather(
        *[
            pool.client.post(
                "/v1/allocation-runs",
                json={"term": "2027-T1", "package_kind_id": kind["id"]},
                headers=pool.admin,
            )
            for _ in range(4)
        ]
    )
    made = [a.json()["packages"] for a in answers if a.status_code == 201]
    assert sum(made) == 14 and all(a.status_code in (201, 409) for a in answers)
    assert await _count(pool, "SELECT count(*) FROM allocations") == 14
    assert await _count(pool, "SELECT count(DISTINCT student_id) FROM allocations") == 14
    assert await _count(pool, "SELECT coalesce(sum(amount), 0) FROM package_funding") == 7000
    assert (await pool.funds())["pool"]["amount"] == 0
    await audit_ok(pool.client, pool.admin)


async def test_runs_that_cannot_make_anything_say_why(pool: Pool) -> None:
    shop = await pool.merchant()
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1"])
    empty = await pool.client.post(
        "/v1/allocation-runs", json={"term": "T1", "package_kind_id": kind["id"]}, headers=pool.admin
    )
    assert "pool holds 0" in assert_problem(empty, 409, "nothing-to-allocate")["detail"]
    await pool.collect([(shop, "O-1", 1000)])
    elsewhere = await pool.kind(countries=["KH"], grades=["4"], unit_cost={"amount": 500, "currency": "USD"})
    mismatch = await pool.client.post(
        "/v1/allocation-runs", json={"term": "T1", "package_kind_id": elsewhere["id"]}, headers=pool.admin
    )
    assert "No eligible student" in assert_problem(mismatch, 409, "nothing-to-allocate")["detail"]
    assert_problem(
        await pool.client.post(
            "/v1/allocation-runs", json={"term": "T1", "package_kind_id": "pkk_nothing"}, headers=pool.admin
        ),
        404,
        "not-found",
    )
    await pool.client.post(f"/v1/package-kinds/{kind['id']}/retire", headers=pool.admin)
    retired = await pool.client.post(
        "/v1/allocation-runs", json={"term": "T1", "package_kind_id": kind["id"]}, headers=pool.admin
    )
    assert retired.status_code == 409
    for bad in (
        {"term": "", "package_kind_id": kind["id"]},
        {"term": "T1/../x", "package_kind_id": kind["id"]},
        {"term": "T1", "package_kind_id": kind["id"], "max_packages": 0},
        {"term": "T1", "package_kind_id": kind["id"], "max_packages": 1.5},
        {"term": "T1", "package_kind_id": kind["id"], "students": ["x"]},
        {"term": "T1"},
    ):
        assert_problem(
            await pool.client.post("/v1/allocation-runs", json=bad, headers=pool.admin),
            422,
            "invalid-request",
        )
    merchant_key = bearer(
        (await create_key(pool.client, pool.admin, role="merchant", merchant_id=shop["id"]))["token"]
    )
    assert_problem(
        await pool.client.post(
            "/v1/allocation-runs", json={"term": "T1", "package_kind_id": kind["id"]}, headers=merchant_key
        ),
        403,
        "forbidden",
    )
    assert (await pool.funds())["pool"]["amount"] == 1000
    await audit_ok(pool.client, pool.admin)


async def test_max_packages_and_idempotent_retries(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 5000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1"] * 6)
    body = {"term": "T1", "package_kind_id": kind["id"], "max_packages": 2}
    key = pool.admin | {"Idempotency-Key": "run-once"}
    first = await pool.client.post("/v1/allocation-runs", json=body, headers=key)
    again = await pool.client.post("/v1/allocation-runs", json=body, headers=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (first.json()["packages"], first.json()["limited_by"]) == (2, "max_packages")
    assert await _count(pool, "SELECT count(*) FROM love_packages") == 2
    listed = (await pool.client.get("/v1/allocation-runs", headers=pool.admin)).json()["data"]
    assert [r["id"] for r in listed] == [first.json()["id"]]
    assert (
        await pool.client.get(f"/v1/allocation-runs/{first.json()['id']}", headers=pool.admin)
    ).json() == first.json()


async def test_merchants_see_only_their_own_money_in_a_package_and_never_a_school(pool: Pool) -> None:
    tea, cake, other = await pool.merchant("tea"), await pool.merchant("cake"), await pool.merchant("other")
    await pool.collect([(tea, "T-1", 300), (cake, "C-1", 200)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1"])
    run = await pool.run(term="T1", package_kind_id=kind["id"])
    [package] = (
        await pool.client.get("/v1/packages", params={"run_id": run["id"]}, headers=pool.admin)
    ).json()["data"]

    async def as_merchant(merchant: dict[str, Any]) -> dict[str, str]:
        return bearer(
            (await create_key(pool.client, pool.admin, role="merchant", merchant_id=merchant["id"]))["token"]
        )

    seen = (await pool.package(package["id"], await as_merchant(tea))).json()
    assert [(f["merchant_id"], f["order_id"], f["amount"]["amount"]) for f in seen["funding"]] == [
        (tea["id"], "T-1", 300)
    ]
    assert seen["country"] == "NP" and seen["grade"] == "1"
    assert seen["school_id"] is None and seen["shipment_id"] is None and seen["region"] is None
    assert_problem(await pool.package(package["id"], await as_merchant(other)), 404, "not-found")
    assert_problem(await pool.package("pkg_nothing"), 404, "not-found")
    full = (await pool.package(package["id"])).json()
    assert {f["merchant_id"] for f in full["funding"]} == {tea["id"], cake["id"]}


async def test_erased_students_keep_their_history_and_are_not_served_again(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    _, (first, second) = await pool.school(["1", "1"])
    erased = await pool.client.delete(f"/v1/students/{first['id']}", headers=pool.admin)
    assert erased.status_code == 200
    run = await pool.run(term="T1", package_kind_id=kind["id"])
    assert run["packages"] == 1 and run["students_waiting"] == 0
    assert (await pool.client.get(f"/v1/students/{first['id']}/allocations", headers=pool.admin)).json()[
        "data"
    ] == []
    # Erasing a student who has a package leaves the record, under the tombstone.
    await pool.client.delete(f"/v1/students/{second['id']}", headers=pool.admin)
    [record] = (await pool.client.get(f"/v1/students/{second['id']}/allocations", headers=pool.admin)).json()[
        "data"
    ]
    assert record["status"] == "allocated" and record["cost"]["amount"] == 500
    await audit_ok(pool.client, pool.admin)
