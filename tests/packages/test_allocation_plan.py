"""A dry run shows its plan — who, in which order, why, for how much — and a run can be held to exactly that plan."""

from __future__ import annotations

from typing import Any

from tests.helpers import assert_problem, import_students
from tests.logistics.conftest import Shipping
from tests.logistics.conftest import pool as pool  # the fixtures, for this file too
from tests.logistics.conftest import shipping as shipping
from tests.packages.conftest import Pool
from tests.packages.test_allocation import _state
from tests.roster_codes import roster_codes


async def _records(pool: Pool, students: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for student in students:
        page = await pool.client.get(f"/v1/students/{student['id']}/allocations", headers=pool.admin)
        out[student["id"]] = page.json()["data"]
    return out


def _plan(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (p["student_id"], p["reason"], p["tie_break"], p["school_turn"], p["spends"]["amount"])
        for p in answer["plan"]
    ]


async def test_the_plan_names_each_students_reason_and_the_run_makes_exactly_it(shipping: Shipping) -> None:
    pool = shipping.pool
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 3 * 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    first_school, (ann, ben, cara) = await pool.school(["1", "1", "2"])
    second_school, (dev, eve) = await pool.school(["1", "3"])
    first = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    by_school = {s["school_id"]: s["shipment_id"] for s in first["schools"]}
    # Ann and Ben's school gets its boxes first; Ben's goes missing. Dev's arrives later.
    await shipping.walk(
        by_school[first_school["id"]], ["handed_over", "in_transit", "out_for_delivery", "delivered"]
    )
    boxes = {sid: r[0]["package_id"] for sid, r in (await _records(pool, [ann, ben])).items()}
    receipt = await shipping.post(
        by_school[first_school["id"]],
        "receipt_confirmed",
        packages=[
            {"package_id": boxes[ann["id"]], "outcome": "accepted"},
            {"package_id": boxes[ben["id"]], "outcome": "missing", "reason": "not in the delivery"},
        ],
    )
    assert receipt.status_code == 201, receipt.text
    await shipping.walk(
        by_school[second_school["id"]],
        ["handed_over", "in_transit", "out_for_delivery", "delivered"],
    )
    await pool.collect([(shop, "O-2", 5 * 500)])

    # This term: Ben's box to replace first; then those who never had one, round-robin across the schools.
    this_term = await pool.run(term="2027-T1", package_kind_id=kind["id"], dry_run=True, expect=200)
    assert _plan(this_term) == [
        (ben["id"], "replacement", None, 1, 500),
        (cara["id"], "never_received", None, 1, 500),
        (eve["id"], "never_received", "round_robin", 1, 500),
    ]
    assert [(p["rank"], p["grade"], p["school_id"]) for p in this_term["plan"]] == [
        (1, "1", first_school["id"]),
        (2, "2", first_school["id"]),
        (3, "3", second_school["id"]),
    ]
    # Next term: never served before longest since their last delivery (Ann's came before Dev's).
    next_term = await pool.run(term="2027-T2", package_kind_id=kind["id"], dry_run=True, expect=200)
    assert _plan(next_term) == [
        (ben["id"], "never_received", None, 1, 500),
        (eve["id"], "never_received", "round_robin", 1, 500),
        (cara["id"], "never_received", "round_robin", 2, 500),
        (ann["id"], "longest_since_last", None, 1, 500),
        (dev["id"], "longest_since_last", None, 1, 500),
    ]
    last = [p["last_delivered_at"] for p in next_term["plan"]]
    assert last[:3] == [None] * 3 and last[3] < last[4]
    assert sum(p["spends"]["amount"] for p in next_term["plan"]) == next_term["money_spent"]["amount"]

    run = await pool.run(
        term="2027-T1", package_kind_id=kind["id"], expected_plan_fingerprint=this_term["plan_fingerprint"]
    )
    assert run["plan_fingerprint"] == this_term["plan_fingerprint"] and run["plan"] is None
    made = await _records(pool, [ben, cara, eve])
    assert [
        (made[p["student_id"]][-1]["rank"], made[p["student_id"]][-1]["reason"]) for p in this_term["plan"]
    ] == [(p["rank"], p["reason"]) for p in this_term["plan"]]
    volatile = ("id", "dry_run", "schools", "created_at", "plan")
    assert {k: v for k, v in run.items() if k not in volatile} == {
        k: v for k, v in this_term.items() if k not in volatile
    }
    [entry] = (
        await pool.client.get("/v1/activity", params={"action": "allocation.run"}, headers=pool.admin)
    ).json()["data"][:1]
    assert entry["resource_id"] == run["id"]
    assert entry["details"]["as_dry_run_planned"] is True
    assert entry["details"]["plan_fingerprint"] == this_term["plan_fingerprint"]


async def test_a_run_held_to_a_plan_refuses_when_the_students_or_the_pool_changed(pool: Pool) -> None:
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 2 * 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    school, (ann, ben, cara) = await pool.school(["1", "1", "1"])
    body = {"term": "2027-T1", "package_kind_id": kind["id"]}

    async def refused(fingerprint: str, changed: list[str], **overrides: Any) -> None:
        before, funds = await _state(pool), await pool.funds()
        response = await pool.client.post(
            "/v1/allocation-runs",
            json=body | overrides | {"expected_plan_fingerprint": fingerprint},
            headers=pool.admin,
        )
        problem = assert_problem(response, 409, "plan-changed")
        assert problem["changed"] == changed
        assert "new dry run" in problem["detail"]
        assert await _state(pool) == before and await pool.funds() == funds  # nothing written

    # A student of the plan leaves.
    plan = await pool.run(**body, dry_run=True, expect=200)
    assert [p["student_id"] for p in plan["plan"]] == [ann["id"], ben["id"]]
    left = await pool.client.patch(f"/v1/students/{ben['id']}", json={"active": False}, headers=pool.admin)
    assert left.status_code == 200
    await refused(plan["plan_fingerprint"], ["students"])
    # A student joins who would not even be served: the students still changed (one more would wait).
    plan = await pool.run(**body, dry_run=True, expect=200)
    [code] = roster_codes(1)
    assert (await import_students(pool.client, pool.admin, school["id"], [(code, "1")])).status_code == 200
    await refused(plan["plan_fingerprint"], ["students"])
    # Money enters the pool (and so the plan grows).
    plan = await pool.run(**body, dry_run=True, expect=200)
    await pool.collect([(shop, "O-2", 500)])
    await refused(plan["plan_fingerprint"], ["pool", "students"])
    # The same fingerprint for another term.
    plan = await pool.run(**body, dry_run=True, expect=200)
    await refused(plan["plan_fingerprint"], ["parameters"], term="2027-T2")

    run = await pool.run(**body, expected_plan_fingerprint=plan["plan_fingerprint"])
    assert (run["packages"], run["students_waiting"]) == (3, 0)
    made = await _records(pool, [ann, cara])
    assert [made[ann["id"]][0]["rank"], made[cara["id"]][0]["rank"]] == [1, 2]
    assert [p["student_id"] for p in plan["plan"]][:2] == [ann["id"], cara["id"]]
    entries = (
        await pool.client.get("/v1/activity", params={"action": "allocation.run"}, headers=pool.admin)
    ).json()
    assert [e["resource_id"] for e in entries["data"]] == [run["id"]]  # refusals and dry runs record nothing

    for bad in ("", "abc", plan["plan_fingerprint"].upper(), plan["plan_fingerprint"] + "0"):
        response = await pool.client.post(
            "/v1/allocation-runs", json=body | {"expected_plan_fingerprint": bad}, headers=pool.admin
        )
        assert_problem(response, 422, "invalid-request")
