"""Random interleavings of orders, late refunds, time, settlement runs, failed and fixed payments and FX rates.

After every step, money is conserved across the stages: for each currency, what orders pledged less what was
reversed is exactly what is pledged, final, billed or collected, less the credits still owed to merchants; the
ledger audit holds (billed, collected, converted and pooled money all reconcile); the pool never shrinks."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import stripe
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

from app.core.clock import FrozenClock
from tests.helpers import (
    create_merchant,
    create_platform,
    order_paid,
    order_refunded,
    set_rule,
    settle,
    signed_headers,
)
from tests.machine import ServiceLoop
from tests.postgres import TestServer
from tests.settlement.conftest import STRIPE_WEBHOOK_SECRET, link_customer
from tests.stripe_server import (
    LocalStripe,
    close_stripe_client,
    create_chargeable_customer,
    create_declining_customer,
    stripe_client,
)

T = TypeVar("T")
_examples = itertools.count()


class World(ServiceLoop):
    """The service, its frozen clock and a client of the Stripe-compatible server it charges through."""

    clock: FrozenClock
    stripe: stripe.StripeClient


WORLD: World | None = None


class SettlementLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.w = WORLD
        self.tag = f"st{next(_examples)}"
        # order id -> {"merchant", "currency", "base", "refunded"}
        self.orders: dict[str, dict[str, Any]] = {}
        # Funds are programme-wide and earlier examples' money is in them: compare changes from here.
        funds = self.w.run(self.w.client.get("/v1/funds", headers=self.w.admin)).json()
        self.baseline = {stage["currency"]: stage for stage in funds["stages"]}
        self.pool_seen = funds["pool"]["amount"]

    @initialize()
    def open_shops(self) -> None:
        w = self.w
        self.platform = w.run(create_platform(w.client, w.admin))
        good = w.run(create_chargeable_customer(w.stripe)).customer_id
        declining = w.run(create_declining_customer(w.stripe)).customer_id
        self.merchants: dict[str, dict[str, Any]] = {}
        for name, customer in (("good", good), ("flaky", declining)):
            merchant = w.run(
                create_merchant(
                    w.client, w.admin, platform_id=self.platform["id"], external_id=f"{name}-{self.tag}"
                )
            )
            w.run(
                set_rule(
                    w.client,
                    w.admin,
                    merchant["id"],
                    rate_bps=500,
                    fixed_per_unit=[{"amount": 3, "currency": "CNY"}],
                )
            )
            w.run(self._billing(merchant["id"], customer))
            self.merchants[name] = merchant

    async def _billing(self, merchant_id: str, customer: str) -> None:
        await link_customer(self.w.client, self.w.admin, self.w.stripe, merchant_id, customer)

    def _send(self, event: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(event).encode()
        headers = signed_headers(self.platform["webhook_secret"], body)
        response = self.w.run(
            self.w.client.post(f"/v1/webhooks/orders/{self.platform['id']}", content=body, headers=headers)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    @rule(
        merchant=st.sampled_from(["good", "flaky"]),
        currency=st.sampled_from(["CNY", "JPY"]),
        amount=st.integers(0, 40_000),
        quantity=st.integers(1, 4),
    )
    def pay(self, merchant: str, currency: str, amount: int, quantity: int) -> None:
        order_id = f"O{len(self.orders)}"
        items = [{"sku": "BOOK", "quantity": quantity, "amount": amount}]
        event = order_paid(
            order_id,
            merchant=self.merchants[merchant]["external_id"],
            currency=currency,
            items=items,
            placed_at=self.w.clock.now(),
        )
        assert self._send(event) == {"status": "applied"}
        self.orders[order_id] = {"merchant": merchant, "currency": currency, "base": amount, "refunded": 0}

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), share=st.sampled_from([0.1, 0.5, 1.0]))
    def refund(self, data: st.DataObject, share: float) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders[order_id]
        amount = max(1, int(order["base"] * share))
        event = order_refunded(
            order_id,
            f"R{order['refunded']}-{amount}-{len(self.orders)}",
            amount,
            merchant=self.merchants[order["merchant"]]["external_id"],
            currency=order["currency"],
        )
        assert self._send(event) == {"status": "applied"}
        order["refunded"] += amount

    @rule(days=st.sampled_from([1, 15, 31]))
    def time_passes(self, days: int) -> None:
        self.w.clock.advance(timedelta(days=days))

    @rule()
    def settle(self) -> None:
        self.w.run(settle(self.w.client, self.w.admin, app=self.w.app))

    @rule(
        currency=st.sampled_from(["CNY", "JPY"]), rate=st.sampled_from(["0.1385", "0.5", "0.00667", "1.25"])
    )
    def set_rate(self, currency: str, rate: str) -> None:
        response = self.w.run(
            self.w.client.put(f"/v1/fx-rates/{currency}", json={"rate": rate}, headers=self.w.admin)
        )
        assert response.status_code == 200, response.text

    @rule()
    def flaky_merchant_fixes_its_card(self) -> None:
        customer = self.w.run(create_chargeable_customer(self.w.stripe)).customer_id
        self.w.run(self._billing(self.merchants["flaky"]["id"], customer))

    @invariant()
    def money_is_conserved(self) -> None:
        if not hasattr(self, "platform"):
            return
        w = self.w
        report = w.run(w.client.get("/v1/audit", headers=w.admin)).json()
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
        donated: dict[str, int] = {}
        reversed_: dict[str, int] = {}
        for merchant in self.merchants.values():
            rows = w.run(
                w.client.get(
                    f"/v1/merchants/{merchant['id']}/donations", params={"limit": 100}, headers=w.admin
                )
            ).json()["data"]
            for row in rows:
                donated[row["currency"]] = donated.get(row["currency"], 0) + row["donation"]["amount"]
                reversed_[row["currency"]] = reversed_.get(row["currency"], 0) + row["reversed"]["amount"]
                assert row["net"]["amount"] >= 0
        funds = w.run(w.client.get("/v1/funds", headers=w.admin)).json()
        for stage in funds["stages"]:
            c = stage["currency"]
            before = self.baseline.get(c, {})
            held = (
                stage["pledged"]
                + stage["final"]
                + stage["billed"]
                + stage["collected"]
                - stage["credits_due"]
            )
            held_before = (
                before.get("pledged", 0)
                + before.get("final", 0)
                + before.get("billed", 0)
                + before.get("collected", 0)
                - before.get("credits_due", 0)
            )
            assert held - held_before == donated.get(c, 0) - reversed_.get(c, 0), (c, stage, before)
            assert stage["collected_unconverted"] >= 0 and stage["credits_due"] >= 0
        pool = funds["pool"]["amount"]
        assert pool >= self.pool_seen >= 0
        self.pool_seen = pool

    def teardown(self) -> None:
        if hasattr(self, "platform"):
            funds = self.w.run(self.w.client.get("/v1/funds", headers=self.w.admin)).json()
            STATS["collected"] += sum(stage["collected"] for stage in funds["stages"])
            STATS["credits"] += sum(stage["credits_due"] for stage in funds["stages"])
            STATS["pool"] = max(STATS["pool"], funds["pool"]["amount"])


STATS = {"collected": 0, "credits": 0, "pool": 0}


def test_money_is_conserved_across_settlement(
    pg_server: TestServer, local_stripe: LocalStripe, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global WORLD
    request.node.uses_postgres = True
    clock = FrozenClock(datetime.now(UTC))
    service = World(
        pg_server,
        tmp_path,
        "settlement_machine",
        clock=clock,
        stripe_api_key="sk_test_g4g",
        stripe_api_base=local_stripe.url,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
    )
    with service:
        service.clock = clock
        service.stripe = stripe_client(local_stripe.url)
        WORLD = service
        try:
            run_state_machine_as_test(
                SettlementLifecycle,
                settings=settings(
                    max_examples=10,
                    stateful_step_count=30,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
            # The runs really went through the stages (not only orders that never got billed).
            assert STATS["collected"] > 0 and STATS["pool"] > 0, STATS
        finally:
            WORLD = None
            service.run(close_stripe_client(service.stripe))
