"""Random sequences of tracking events for one shipment — legal steps, illegal jumps, late events, scans,
retries, reused ids, the same event posted at once, cancellations and receipts — against an independent model of
SPEC §8's state machine.

After every step: the shipment's status is the model's (so it never left a final state), its history holds every
event the service accepted exactly once and in order, its boxes are where the status puts them, the money its
events moved is what the model says, and allocated = in transit + delivered + written off + in stock. After every
sequence the whole audit holds."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from app.core.clock import FrozenClock
from tests.helpers import bearer, create_key, create_partner, create_platform
from tests.logistics.conftest import proof
from tests.machine import ServiceLoop
from tests.packages.conftest import Pool
from tests.postgres import TestServer

WORLD: ServiceLoop | None = None
CLOCK = FrozenClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
COST = 500
BOXES = 2
_examples = itertools.count()

# SPEC §8, written out again for the model (the service has its own table in `app.logistics.machine`).
NEXT = {
    "planned": {"handed_over"},
    "handed_over": {"in_transit"},
    "in_transit": {"customs_hold", "out_for_delivery"},
    "customs_hold": {"in_transit"},
    "out_for_delivery": {"delivered", "delivery_failed"},
    "delivery_failed": {"out_for_delivery", "returning"},
    "returning": {"returned"},
    "delivered": {"receipt_confirmed"},
}
SCANS = {"handed_over", "in_transit", "customs_hold", "out_for_delivery", "delivery_failed", "returning"}
STATUSES = sorted(
    {
        "handed_over",
        "in_transit",
        "customs_hold",
        "out_for_delivery",
        "delivered",
        "receipt_confirmed",
        "delivery_failed",
        "returning",
        "returned",
    }
)
BOX_STATUS = {
    "planned": "allocated",
    "delivered": "delivered",
    "returned": "returned",
    "cancelled": "cancelled",
} | dict.fromkeys(SCANS, "shipped")


@dataclass
class Sent:
    body: dict[str, Any]
    headers: dict[str, str]
    answer: dict[str, Any]


@dataclass
class ModelShipment:
    status: str = "planned"
    since: datetime | None = None  # when the current status took effect; None while planned
    history: list[str] = field(default_factory=list)  # event ids the service accepted, in order
    money: Counter[str] = field(default_factory=Counter)  # what its events moved, by account
    outcomes: dict[str, str] = field(default_factory=dict)

    def expect(self, status: str, at: datetime, *, admin: bool) -> str:
        """`applied`, `recorded`, or the HTTP status of the refusal."""
        if status == "cancelled":
            if not admin:
                return "403"
            return "applied" if self.status == "planned" else "409"
        if self.since is not None and at < self.since:
            return "recorded"
        if status == self.status and status in SCANS:
            return "recorded"
        return "applied" if status in NEXT.get(self.status, set()) else "409"


class ShipmentLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.tag = next(_examples)
        self.model = ModelShipment()
        self.sent: list[Sent] = []
        self.events = itertools.count(1)

    @initialize()
    def plan_a_shipment(self) -> None:
        world = self.world
        platform = world.run(create_platform(world.client, world.admin))
        self.pool = Pool(world.app, world.client, world.admin, CLOCK, platform)
        self.pool.partner = world.run(create_partner(world.client, world.admin, name=f"Carrier {self.tag}"))
        key = world.run(
            create_key(
                world.client, world.admin, role="logistics", logistics_partner_id=self.pool.partner["id"]
            )
        )
        self.partner = bearer(key["token"])
        shop = world.run(self.pool.merchant(f"m{self.tag}"))
        world.run(self.pool.collect([(shop, f"O-{self.tag}", COST * BOXES)]))
        kind = world.run(self.pool.kind(unit_cost={"amount": COST, "currency": "USD"}))
        self.school, self.students = world.run(self.pool.school(["1"] * BOXES))
        run = world.run(self.pool.run(term="2027-T1", package_kind_id=kind["id"]))
        [served] = run["schools"]
        assert served["packages"] == BOXES
        self.shipment_id = served["shipment_id"]
        self.boxes = [p["id"] for p in self._read()["packages"]]

    def teardown(self) -> None:
        # Every invariant the audit knows (stage accounts against the boxes in them, records against their
        # shipments, the pool against its queue, ...): a wrong posting can't be undone by a later step, so once per
        # sequence finds it (the invariants above run after every step).
        if hasattr(self, "shipment_id"):
            report = self.world.run(self.world.client.get("/v1/audit", headers=self.world.admin)).json()
            assert report["ok"], [c for c in report["checks"] if not c["ok"]]
        # The next example's run must serve only its own school: these students leave the programme.
        for student in getattr(self, "students", []):
            self.world.run(
                self.world.client.patch(
                    f"/v1/students/{student['id']}", json={"active": False}, headers=self.world.admin
                )
            )

    # ---- helpers ----

    def _read(self) -> dict[str, Any]:
        response = self.world.run(
            self.world.client.get(f"/v1/shipments/{self.shipment_id}", headers=self.world.admin)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def _body(self, status: str, at: datetime, data: st.DataObject) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": f"E{next(self.events)}",
            "status": status,
            "occurred_at": at.isoformat(),
        }
        if data.draw(st.booleans(), label="with location"):
            body["location"] = data.draw(st.sampled_from(["Kathmandu hub", "Birgunj customs", "Bhaktapur"]))
        if status == "delivered":
            body["proof"] = proof()
        if status == "receipt_confirmed":
            outcomes = data.draw(
                st.lists(st.sampled_from(["accepted", "damaged", "missing"]), min_size=BOXES, max_size=BOXES),
                label="outcomes",
            )
            body["packages"] = [
                {"package_id": box, "outcome": outcome}
                | ({} if outcome == "accepted" else {"reason": "as found"})
                for box, outcome in zip(self.boxes, outcomes, strict=True)
            ]
        return body

    def _post(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        response: httpx.Response = self.world.run(
            self.world.client.post(f"/v1/shipments/{self.shipment_id}/events", json=body, headers=headers)
        )
        assert response.status_code < 500, response.text
        return response

    def _check_and_learn(
        self, body: dict[str, Any], headers: dict[str, str], response: httpx.Response
    ) -> None:
        """The answer is what the model expects; the model follows what the service accepted."""
        at = datetime.fromisoformat(body["occurred_at"])
        expected = self.model.expect(body["status"], at, admin=headers is self.world.admin)
        if expected in ("403", "409"):
            assert str(response.status_code) == expected, (expected, response.text)
            if expected == "409":
                refused = response.json()
                assert refused["current_status"] == self.model.status
                assert body["status"] not in refused["allowed_next"]
            return
        assert response.status_code == 201, response.text
        answer = response.json()
        assert (answer["result"], answer["status_before"]) == (expected, self.model.status), answer
        self.sent.append(Sent(body, headers, answer))
        self.model.history.append(body["event_id"])
        if expected == "applied":
            self._apply(body, at)

    def _apply(self, body: dict[str, Any], at: datetime) -> None:
        model, status = self.model, body["status"]
        model.status, model.since = status, at
        n = len(self.boxes)
        if status == "receipt_confirmed":
            model.outcomes = {p["package_id"]: p["outcome"] for p in body["packages"]}
            accepted = sum(o == "accepted" for o in model.outcomes.values())
            model.money["programme:packages:delivered"] += accepted * COST
            model.money["programme:packages:written_off"] += (n - accepted) * COST
        elif status == "returned":
            model.money["programme:packages:in_stock"] += n * COST
        elif status == "cancelled":
            model.money["programme:pool"] += n * COST
        else:
            return
        model.money["programme:packages:assigned"] -= n * COST

    def _tick(self, minutes: int) -> datetime:
        CLOCK.advance(timedelta(minutes=minutes))
        return CLOCK.now()

    # ---- rules ----

    @precondition(lambda self: self.model.status in NEXT)
    @rule(data=st.data(), minutes=st.integers(1, 180))
    def report_the_next_step(self, data: st.DataObject, minutes: int) -> None:
        """A legal next status, happening now: the partner doing its job."""
        status = data.draw(st.sampled_from(sorted(NEXT[self.model.status])), label="next")
        at = self._tick(minutes)
        body = self._body(status, at, data)
        self._check_and_learn(body, self.partner, self._post(body, self.partner))

    @rule(
        data=st.data(), status=st.sampled_from(STATUSES), minutes=st.integers(0, 600), ago=st.integers(0, 900)
    )
    def report_anything(self, data: st.DataObject, status: str, minutes: int, ago: int) -> None:
        """Any status, at any time up to now: illegal jumps, late events, scans, back-steps."""
        now = self._tick(minutes)
        body = self._body(status, now - timedelta(minutes=ago), data)
        self._check_and_learn(body, self.partner, self._post(body, self.partner))

    @precondition(lambda self: self.model.since is not None)
    @rule(data=st.data(), status=st.sampled_from(STATUSES), minutes=st.integers(0, 60))
    def report_at_the_instant_the_status_took_effect(
        self, data: st.DataObject, status: str, minutes: int
    ) -> None:
        """Not older than the current status: decided by the table, like any other."""
        self._tick(minutes)
        assert self.model.since is not None
        body = self._body(status, self.model.since, data)
        self._check_and_learn(body, self.partner, self._post(body, self.partner))

    @rule(data=st.data(), minutes=st.integers(0, 60))
    def programme_cancels(self, data: st.DataObject, minutes: int) -> None:
        body = self._body("cancelled", self._tick(minutes), data)
        self._check_and_learn(body, self.world.admin, self._post(body, self.world.admin))

    @rule(data=st.data())
    def partner_tries_to_cancel(self, data: st.DataObject) -> None:
        body = self._body("cancelled", CLOCK.now(), data)
        self._check_and_learn(body, self.partner, self._post(body, self.partner))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def retry_an_event(self, data: st.DataObject) -> None:
        """A partner's retry: the first answer again, whatever happened since."""
        sent = data.draw(st.sampled_from(self.sent), label="retried")
        response = self._post(sent.body, sent.headers)
        assert (response.status_code, response.json()) == (201, sent.answer)
        assert response.headers["idempotent-replayed"] == "true"

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def reuse_an_event_id_for_something_else(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.sent), label="reused")
        body = {**sent.body, "note": "a different report under the same id"}
        response = self._post(body, sent.headers)
        assert response.status_code == 409 and response.json()["type"].endswith("/event-id-reused")

    @rule(data=st.data(), status=st.sampled_from(STATUSES), minutes=st.integers(0, 120))
    def post_the_same_event_three_times_at_once(self, data: st.DataObject, status: str, minutes: int) -> None:
        body = self._body(status, self._tick(minutes), data)

        async def three() -> list[httpx.Response]:
            post = self.world.client.post
            path = f"/v1/shipments/{self.shipment_id}/events"
            return list(
                await asyncio.gather(*[post(path, json=body, headers=self.partner) for _ in range(3)])
            )

        answers = self.world.run(three())
        assert all(a.status_code < 500 for a in answers), [a.text for a in answers]
        assert len({(a.status_code, a.text) for a in answers}) == 1, [a.text for a in answers]
        self._check_and_learn(body, self.partner, answers[0])

    # ---- after every step ----

    @invariant()
    def the_shipment_is_the_model(self) -> None:
        if not hasattr(self, "shipment_id"):
            return
        read = self._read()
        assert read["status"] == self.model.status
        assert [e["event_id"] for e in read["events"]] == self.model.history
        assert [e["status_after"] for e in read["events"]][-1:] in ([], [self.model.status])
        boxes = {p["id"]: p["status"] for p in read["packages"]}
        if self.model.status == "receipt_confirmed":
            assert boxes == self.model.outcomes
        else:
            assert set(boxes.values()) == {BOX_STATUS[self.model.status]}

    @invariant()
    def the_money_followed_the_boxes(self) -> None:
        if not hasattr(self, "shipment_id"):
            return

        async def moved() -> dict[str, int]:
            async with self.world.app.state.engine.connect() as connection:
                rows = await connection.execute(
                    text(
                        """SELECT p.account, sum(p.amount) FROM ledger_postings p
                           JOIN ledger_entries e ON e.id = p.entry_id
                           JOIN shipment_events s ON s.id = e.cause_id AND e.cause_type = 'shipment_event'
                           WHERE s.shipment_id = :id GROUP BY p.account"""
                    ),
                    {"id": self.shipment_id},
                )
                return {account: int(total) for account, total in rows}

        assert self.world.run(moved()) == {k: v for k, v in self.model.money.items() if v}
        world = self.world
        packages = world.run(world.client.get("/v1/funds", headers=world.admin)).json()["packages"]
        stages = ("in_transit", "delivered", "written_off", "in_stock")
        assert packages["allocated"]["amount"] == sum(packages[s]["amount"] for s in stages)


def test_random_shipment_event_sequences_match_the_model(
    pg_server: TestServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global WORLD
    request.node.uses_postgres = True
    with ServiceLoop(pg_server, tmp_path, "shipments", clock=CLOCK) as service:
        WORLD = service
        try:
            run_state_machine_as_test(
                ShipmentLifecycle,
                settings=settings(
                    max_examples=10,
                    stateful_step_count=20,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            WORLD = None
