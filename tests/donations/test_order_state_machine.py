"""Random interleavings of order events against an independent model of what each order's donation must be.

After every step: the ledger balances in every currency (the audit), each applied order's donation and net
equal the model's, and no amount is negative."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

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

from tests.helpers import (
    create_merchant,
    create_platform,
    order_cancelled,
    order_paid,
    order_refunded,
    set_rule,
    signed_headers,
)
from tests.machine import ServiceLoop
from tests.postgres import TestServer

T = TypeVar("T")
RATE_A, FIXED_A_CNY, RATE_B = 275, 3, 1234


WORLD: ServiceLoop | None = None
_examples = itertools.count()


@dataclass
class ModelOrder:
    merchant: str  # "a" or "b"
    currency: str
    items: list[dict[str, Any]]
    paid_sent: bool = False
    refunds: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    # A payment parked for an unknown merchant applies when the merchant registers, before it can have a rule
    # (rules never start in the past), so it gives nothing.
    ruleless: bool = False

    @property
    def base(self) -> int:
        return sum(i["amount"] for i in self.items)

    def donation(self) -> int:
        if self.ruleless:
            return 0
        rate, fixed = (
            (RATE_A, FIXED_A_CNY if self.currency == "CNY" else 0) if self.merchant == "a" else (RATE_B, 0)
        )
        exact = sum(Fraction(i["amount"] * rate, 10_000) + fixed * i["quantity"] for i in self.items)
        return round(Fraction(exact))  # Fraction rounds half to even

    def reversed(self) -> int:
        donation, refunded = self.donation(), sum(self.refunds.values())
        if self.cancelled or (self.base == 0 and refunded > 0):
            return donation
        if self.base == 0:
            return 0
        return round(Fraction(donation * min(refunded, self.base), self.base))


items = st.lists(
    st.fixed_dictionaries(
        {"sku": st.sampled_from(["A", "B"]), "quantity": st.integers(1, 5), "amount": st.integers(0, 100_000)}
    ),
    min_size=1,
    max_size=3,
)


class OrderLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.tag = f"sm{next(_examples)}"
        self.orders: dict[str, ModelOrder] = {}
        self.sent: list[tuple[bytes, dict[str, str], int, dict[str, Any]]] = []
        self.b_registered = False
        self.placed_at = datetime.now(UTC) + timedelta(hours=1)  # after any rule this example sets

    @initialize()
    def set_up_platform(self) -> None:
        world = self.world
        self.platform = world.run(create_platform(world.client, world.admin))
        self.merchant_a = world.run(
            create_merchant(
                world.client, world.admin, platform_id=self.platform["id"], external_id=f"a-{self.tag}"
            )
        )
        world.run(
            set_rule(
                world.client,
                world.admin,
                self.merchant_a["id"],
                rate_bps=RATE_A,
                fixed_per_unit=[{"amount": FIXED_A_CNY, "currency": "CNY"}],
            )
        )

    def _registered(self, merchant: str) -> bool:
        return merchant == "a" or self.b_registered

    def _applies(self, order: ModelOrder) -> bool:
        return order.paid_sent and self._registered(order.merchant)

    def _send(self, event: dict[str, Any], *, webhook_id: str | None = None) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = signed_headers(self.platform["webhook_secret"], body, webhook_id=webhook_id)
        response = self.world.run(
            self.world.client.post(
                f"/v1/webhooks/orders/{self.platform['id']}", content=body, headers=headers
            )
        )
        assert response.status_code < 500, response.text
        self.sent.append((body, headers, response.status_code, response.json()))
        return response

    def _external(self, merchant: str) -> str:
        return f"{merchant}-{self.tag}"

    def _payment(self, order_id: str, order: ModelOrder) -> dict[str, Any]:
        return order_paid(
            order_id,
            merchant=self._external(order.merchant),
            currency=order.currency,
            items=order.items,
            placed_at=self.placed_at,
        )

    @rule(merchant=st.sampled_from(["a", "b"]), currency=st.sampled_from(["CNY", "JPY"]), lines=items)
    def plan_order(self, merchant: str, currency: str, lines: list[dict[str, Any]]) -> None:
        """An order exists at the platform; its events may arrive in any order from now on."""
        self.orders[f"O{len(self.orders)}"] = ModelOrder(merchant, currency, lines)

    @precondition(lambda self: any(not o.paid_sent for o in self.orders.values()))
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(k for k, o in self.orders.items() if not o.paid_sent)))
        order = self.orders[order_id]
        event = order_paid(
            order_id,
            merchant=self._external(order.merchant),
            currency=order.currency,
            items=order.items,
            placed_at=self.placed_at,
        )
        response = self._send(event)
        order.paid_sent = True
        expected = "applied" if self._registered(order.merchant) else "parked"
        assert response.json() == {"status": expected}

    @precondition(lambda self: any(o.paid_sent for o in self.orders.values()))
    @rule(data=st.data())
    def pay_again_under_another_webhook_id(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(k for k, o in self.orders.items() if o.paid_sent)))
        order = self.orders[order_id]
        event = order_paid(
            order_id,
            merchant=self._external(order.merchant),
            currency=order.currency,
            items=order.items,
            placed_at=self.placed_at,
        )
        expected = "duplicate" if self._registered(order.merchant) else "parked"
        assert self._send(event).json() == {"status": expected}

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), fraction=st.fractions(min_value=Fraction(1, 100), max_value=1))
    def refund_part(self, data: st.DataObject, fraction: Fraction) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders[order_id]
        self._refund(order_id, order, max(1, int(order.base * fraction)))

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data())
    def refund_the_rest(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders[order_id]
        self._refund(order_id, order, max(1, order.base - sum(order.refunds.values())))

    def _refund(self, order_id: str, order: ModelOrder, amount: int) -> None:
        refund_id = f"R{len(order.refunds)}"
        event = order_refunded(
            order_id, refund_id, amount, merchant=self._external(order.merchant), currency=order.currency
        )
        response = self._send(event)
        order.refunds[refund_id] = amount
        assert response.json() == {"status": "applied" if self._applies(order) else "parked"}

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders[order_id]
        response = self._send(order_cancelled(order_id, merchant=self._external(order.merchant)))
        if not self._applies(order):
            assert response.json() == {"status": "parked"}
        else:
            assert response.json() == {"status": "duplicate" if order.cancelled else "applied"}
        order.cancelled = True

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        body, headers, status, answer = data.draw(st.sampled_from(self.sent))
        response = self.world.run(
            self.world.client.post(
                f"/v1/webhooks/orders/{self.platform['id']}", content=body, headers=headers
            )
        )
        if status == 202:  # parked then: parked still, or applied since (or found to repeat what applied)
            assert response.json()["status"] in ("parked", "applied", "duplicate")
        else:
            assert (response.status_code, response.json()) == (status, answer)

    @precondition(lambda self: not self.b_registered)
    @rule()
    def register_merchant_b(self) -> None:
        world = self.world
        merchant = world.run(
            create_merchant(
                world.client, world.admin, platform_id=self.platform["id"], external_id=self._external("b")
            )
        )
        for order in self.orders.values():
            if order.merchant == "b" and order.paid_sent:
                order.ruleless = True
        world.run(set_rule(world.client, world.admin, merchant["id"], rate_bps=RATE_B))
        self.merchant_b = merchant
        self.b_registered = True

    @invariant()
    def ledger_balances_and_every_order_matches_the_model(self) -> None:
        world = self.world
        if not hasattr(self, "platform"):
            return
        report = world.run(world.client.get("/v1/audit", headers=world.admin)).json()
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
        seen: dict[str, dict[str, Any]] = {}
        for merchant in [self.merchant_a] + ([self.merchant_b] if self.b_registered else []):
            rows = world.run(
                world.client.get(
                    f"/v1/merchants/{merchant['id']}/donations", params={"limit": 100}, headers=world.admin
                )
            ).json()["data"]
            seen.update({row["order_id"]: row for row in rows})
        expected = {k for k, o in self.orders.items() if self._applies(o)}
        assert set(seen) == expected
        for order_id in expected:
            order, row = self.orders[order_id], seen[order_id]
            assert row["donation"] == {"amount": order.donation(), "currency": order.currency}
            assert row["reversed"]["amount"] == order.reversed()
            assert row["net"]["amount"] == order.donation() - order.reversed() >= 0


def test_random_order_event_interleavings_match_the_model(
    pg_server: TestServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global WORLD
    request.node.uses_postgres = True
    with ServiceLoop(pg_server, tmp_path, "machine") as service:
        WORLD = service
        try:
            run_state_machine_as_test(
                OrderLifecycle,
                settings=settings(
                    max_examples=14,
                    stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            WORLD = None
