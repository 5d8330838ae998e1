"""One demo run through the public API, in the order a programme lives it: set up, orders, refunds and
cancellations, settlement, allocation, shipments to the schools' receipts, and the events a platform received."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.demo import programme
from app.demo.api import Api, DemoError
from app.demo.programme import MERCHANTS, PARTNERS, SCHOOLS, PlannedOrder, SchoolPlan
from app.demo.receiver import EventReceiver
from app.demo.summary import Summary, format_money

HUBS = {"NP": "Kathmandu hub", "KH": "Phnom Penh hub", "MM": "Yangon hub"}
CONCURRENCY = 12
# Events out are delivered by the service's workers at their pace: wait long enough for a big run.
EVENTS_SECONDS_BASE, EVENTS_SECONDS_PER_ORDER = 60.0, 0.1


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Cast:
    """Who takes part in this run, with the keys each acts with."""

    admin: str
    platform_id: str = ""
    platform_secret: str = ""
    platform_key: str = ""
    merchants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By the platform's id for them (`external_id`)."""
    sign_in_key: str = ""
    partner_keys: dict[str, str] = field(default_factory=dict)
    """By logistics partner id."""
    schools: dict[str, tuple[SchoolPlan, dict[str, Any]]] = field(default_factory=dict)
    """By school id."""
    kind_id: str = ""
    endpoint_id: str | None = None
    keys_to_revoke: list[str] = field(default_factory=list)


class DemoRun:
    def __init__(
        self,
        api: Api,
        admin_key: str,
        *,
        orders: int,
        seed: int,
        console: Console,
        receiver: EventReceiver,
        show_sign_in_key: bool,
        revoke_admin_key_named: str | None = None,
    ) -> None:
        self.api = api
        self.revoke_admin_key_named = revoke_admin_key_named
        self.show_sign_in_key = show_sign_in_key
        self.cast = Cast(admin=admin_key)
        self.seed = seed
        self.plan = programme.plan_orders(seed, orders)
        self.console = console
        self.receiver = receiver
        # Unique per run, so a run on the same data adds to it: order ids, webhook ids, the school term.
        self.tag = f"{datetime.now(UTC):%Y%m%d%H%M%S}{secrets.token_hex(2)}"
        self.term = f"demo-{self.tag}"
        self.allocation: dict[str, Any] = {"schools": []}
        self.summary = Summary(
            base_url=api.base_url, seed=seed, run_tag=self.tag, term=self.term, orders_planned=orders
        )

    def order_id(self, order: PlannedOrder) -> str:
        return f"DEMO-{self.tag}-{order.number:05d}"

    async def run(self) -> Summary:
        started = time.monotonic()
        try:
            await self.set_up()
            await self.send_orders()
            await self.send_reversals()
            await self.settle()
            await self.allocate()
            await self.deliver()
            await self.await_events()
            await self.read_figures()
        except Exception:
            await self.tidy_up(best_effort=True)  # what failed is what the user must see
            raise
        await self.tidy_up()
        self.summary.sign_in_key = self.cast.sign_in_key
        self.summary.seconds = round(time.monotonic() - started, 1)
        return self.summary

    @asynccontextmanager
    async def _progress(self, description: str, total: int) -> AsyncIterator[Callable[[], None]]:
        with Progress(
            TextColumn("  {task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def _step(self, text: str) -> None:
        self.console.print(f"[green]✓[/green] {text}")

    # ---- the programme's cast ----

    async def _find_or_create(
        self, path: str, token: str, body: dict[str, Any], **params: Any
    ) -> tuple[dict[str, Any], bool]:
        """The resource named `body["name"]` if the list has one (an earlier run made it), else a new one."""
        for item in await self.api.every(path, token, params or None):
            if item["name"] == body["name"]:
                return item, False
        return await self.api.call("POST", path, token, body=body), True

    async def _key(self, name: str, role: str, **scope: str) -> str:
        """A key for one of the demo's actors, revoked when the run ends."""
        created = await self.api.call(
            "POST", "/v1/api-keys", self.cast.admin, body={"role": role, "name": name, **scope}
        )
        self.cast.keys_to_revoke.append(created["id"])
        return str(created["token"])

    async def set_up(self) -> None:
        await self._set_up_platform()
        await self._set_up_schools()
        await self._set_up_endpoint()

    async def _set_up_platform(self) -> None:
        """The platform, its merchants with their rules and billing, and the FX rates."""
        api, cast = self.api, self.cast
        admin = cast.admin
        # The platform: created once, its webhook secret rotated on later runs (the secret is shown only then).
        platform, created = await self._find_or_create(
            "/v1/platforms",
            admin,
            {"name": programme.PLATFORM_NAME},
        )
        if not created:
            platform = await api.call("POST", f"/v1/platforms/{platform['id']}/rotate-webhook-secret", admin)
        cast.platform_id, cast.platform_secret = platform["id"], platform["webhook_secret"]
        self.summary.platform_id = cast.platform_id
        cast.platform_key = await self._key(
            f"demo {self.tag} platform", "platform", platform_id=cast.platform_id
        )

        # Merchants register through their platform; rules and billing are set by the operator.
        known = {m["external_id"]: m for m in await api.every("/v1/merchants", cast.platform_key)}
        for plan in MERCHANTS:
            merchant = known.get(plan.external_id) or await api.call(
                "POST",
                "/v1/merchants",
                cast.platform_key,
                body={"external_id": plan.external_id, "name": plan.name, "country": plan.country},
            )
            cast.merchants[plan.external_id] = merchant
            self.summary.merchants[plan.external_id] = merchant["id"]
            rules = await api.call("GET", f"/v1/merchants/{merchant['id']}/donation-rules", admin)
            if not any(
                _rule_matches(rule, plan.rule) for rule in rules["data"] if rule["status"] == "in_effect"
            ):
                await api.call("PUT", f"/v1/merchants/{merchant['id']}/donation-rule", admin, body=plan.rule)
            await api.call(
                "PUT", f"/v1/merchants/{merchant['id']}/billing", admin, body={"method": "bank_transfer"}
            )
        if self.show_sign_in_key:  # for the user to sign in to /merchant with; made only when it can be shown
            first = cast.merchants[MERCHANTS[0].external_id]
            created_key = await api.call(
                "POST",
                "/v1/api-keys",
                admin,
                body={"role": "merchant", "name": f"demo {self.tag} dashboard", "merchant_id": first["id"]},
            )
            cast.sign_in_key = created_key["token"]
        for currency, rate in programme.FX_RATES.items():
            await api.call("PUT", f"/v1/fx-rates/{currency}", admin, body={"rate": rate})
        currencies = sorted({c for m in MERCHANTS for c in m.catalogue})
        self._step(
            f"platform [bold]{programme.PLATFORM_NAME}[/bold] with {len(MERCHANTS)} merchants selling in "
            f"{', '.join(currencies)}; FX rates set"
        )

    async def _set_up_schools(self) -> None:
        """Logistics partners, schools with their students, and the package kind."""
        api, cast = self.api, self.cast
        admin = cast.admin
        partners: dict[str, str] = {}
        for partner in PARTNERS:
            found, _ = await self._find_or_create(
                "/v1/logistics-partners",
                admin,
                {"name": partner.name},
            )
            partners[partner.country] = found["id"]
            cast.partner_keys[found["id"]] = await self._key(
                f"demo {self.tag} {partner.name}", "logistics", logistics_partner_id=found["id"]
            )
        students = 0
        for plan_school in SCHOOLS:
            school, _ = await self._find_or_create(
                "/v1/schools",
                admin,
                {
                    "name": plan_school.name,
                    "country": plan_school.country,
                    "region": plan_school.region,
                    "logistics_partner_id": partners[plan_school.country],
                    "teacher_contact": {"name": plan_school.teacher, "phone": plan_school.phone},
                },
                country=plan_school.country,
            )
            cast.schools[school["id"]] = (plan_school, school)
            roster = programme.students_of(plan_school)
            await api.call("POST", f"/v1/schools/{school['id']}/students", admin, body={"students": roster})
            students += len(roster)
        kind, created = await self._find_or_create(
            "/v1/package-kinds", admin, programme.PACKAGE_KIND, status="active"
        )
        if not created:  # the same definition changes nothing; another one becomes its next version
            kind = await api.call(
                "PUT", f"/v1/package-kinds/{kind['id']}", admin, body=programme.PACKAGE_KIND
            )
        cast.kind_id = kind["id"]
        self.summary.package_cost = kind["unit_cost"]
        self._step(
            f"{len(SCHOOLS)} schools in Nepal, Cambodia and Myanmar with {students} students, "
            f"{len(PARTNERS)} logistics partners, package kind [bold]{kind['name']}[/bold] "
            f"({_money(kind['unit_cost'])})"
        )

    async def _set_up_endpoint(self) -> None:
        """The platform's endpoint for events out: the receiver this process runs. Endpoints left by earlier runs
        point at receivers that are gone; they go first."""
        api, cast = self.api, self.cast
        for endpoint in await api.every("/v1/webhook-endpoints", cast.platform_key):
            if programme.RECEIVER_PATH in endpoint["url"]:
                await api.call("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}", cast.platform_key)
        endpoint = await api.call(
            "POST",
            "/v1/webhook-endpoints",
            cast.platform_key,
            body={"url": self.receiver.url, "events": ["donation.recorded", "donation.reversed"]},
            expect=(201, 422),
        )
        if "secret" in endpoint:
            self.receiver.secret = endpoint["secret"]
            cast.endpoint_id = endpoint["id"]
            self._step(f"the platform's webhook endpoint: {self.receiver.url}")
        else:
            self.summary.notes.append(
                f"the service refused the receiver's address ({endpoint.get('detail', '')}); no events out"
            )

    # ---- orders ----

    def _paid_event(self, order: PlannedOrder, placed_at: str) -> dict[str, Any]:
        return {
            "type": "order.paid",
            "timestamp": _now(),
            "data": {
                "order_id": self.order_id(order),
                "merchant_id": order.merchant,
                "currency": order.currency,
                "placed_at": placed_at,
                "items": [{"sku": i.sku, "quantity": i.quantity, "amount": i.amount} for i in order.lines],
            },
        }

    async def _in_parallel(
        self, description: str, items: list[Any], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)
        async with self._progress(description, len(items)) as advance:

            async def one(item: Any) -> None:
                async with gate:
                    await send(item)
                advance()

            await asyncio.gather(*(one(item) for item in items))

    async def _send(self, event: dict[str, Any], webhook_id: str, answers: Counter[str]) -> None:
        status, answer = await self.api.send_order_event(
            self.cast.platform_id, self.cast.platform_secret, event, webhook_id
        )
        answers[answer if status < 300 else f"refused ({status}): {answer}"] += 1

    async def send_orders(self) -> None:
        answers: Counter[str] = Counter()

        async def send(order: PlannedOrder) -> None:
            event = self._paid_event(order, _now())
            await self._send(event, f"msg_{self.tag}_{order.number}_paid", answers)
            if order.resent:  # the platform timed out and sends it again, as a new message
                await self._send(event, f"msg_{self.tag}_{order.number}_paid_again", answers)

        await self._in_parallel("orders (order.paid)", self.plan, send)
        self._check(answers, "order.paid")
        self.summary.orders_applied = answers["applied"]
        self.summary.duplicates = answers["duplicate"]
        self._step(
            f"{answers['applied']} orders applied through signed webhooks"
            + (
                f", {answers['duplicate']} resent ones recognised as duplicates"
                if answers["duplicate"]
                else ""
            )
        )

    async def send_reversals(self) -> None:
        answers: Counter[str] = Counter()
        reversed_orders = [o for o in self.plan if o.refund is not None or o.cancelled]

        async def send(order: PlannedOrder) -> None:
            order_id = self.order_id(order)
            if order.cancelled:
                data: dict[str, Any] = {"order_id": order_id, "merchant_id": order.merchant}
                event = {"type": "order.cancelled", "timestamp": _now(), "data": data}
                await self._send(event, f"msg_{self.tag}_{order.number}_cancelled", answers)
            else:
                data = {
                    "order_id": order_id,
                    "merchant_id": order.merchant,
                    "refund_id": f"{order_id}-R1",
                    "currency": order.currency,
                    "amount": order.refund,
                }
                event = {"type": "order.refunded", "timestamp": _now(), "data": data}
                await self._send(event, f"msg_{self.tag}_{order.number}_refunded", answers)

        await self._in_parallel("refunds and cancellations", reversed_orders, send)
        self._check(answers, "refunds and cancellations")
        self.summary.refunds = sum(1 for o in reversed_orders if not o.cancelled)
        self.summary.cancellations = sum(1 for o in reversed_orders if o.cancelled)
        self._step(
            f"{self.summary.refunds} partial refunds and {self.summary.cancellations} cancellations applied"
        )

    @staticmethod
    def _check(answers: Counter[str], what: str) -> None:
        refused = [answer for answer in answers if answer not in ("applied", "duplicate")]
        if refused:
            raise DemoError(f"{what}: the service answered {', '.join(refused)}")

    # ---- money ----

    async def settle(self) -> None:
        api, admin = self.api, self.cast.admin
        run = await api.call("POST", "/v1/settlement-runs", admin, body={})
        deadline = time.monotonic() + 120
        while run["status"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise DemoError(f"settlement run {run['id']} is still {run['status']} after 2 minutes")
            await asyncio.sleep(0.25)
            run = await api.call("GET", f"/v1/settlement-runs/{run['id']}", admin)
        if run["status"] == "failed":
            raise DemoError(f"settlement run {run['id']} failed: {run['error']}")
        ours = {m["id"] for m in self.cast.merchants.values()}
        statements = [s for s in run["statements"] if s["merchant_id"] in ours]
        for statement in statements:
            if statement["billing_method"] == "bank_transfer" and statement["status"] != "paid":
                await api.call(
                    "POST",
                    f"/v1/statements/{statement['id']}/payments",
                    admin,
                    body={"reference": f"DEMO-TRANSFER-{statement['id']}", "amount": statement["total"]},
                )
        self.summary.settlement_run = run["id"]
        self.summary.statements = [
            {"currency": s["currency"], "total": s["total"]["amount"], "merchant_id": s["merchant_id"]}
            for s in statements
        ]
        self.summary.carried_forward = sum(1 for c in run["carried_forward"] if c["merchant_id"] in ours)
        if not statements:
            self.summary.notes.append(
                "settlement billed none of this run's orders: the service's return window keeps them pledged "
                "(a service for the demo runs with G4G_RETURN_WINDOW_DAYS=0)"
            )
        by_currency = Counter[str]()
        for s in statements:
            by_currency[s["currency"]] += 1
        paid = ", ".join(f"{n} {c}" for c, n in sorted(by_currency.items()))
        self._step(
            f"settlement run {run['id']}: {len(statements)} statements"
            + (f" ({paid}) paid by bank transfer and converted into the pool" if statements else "")
        )

    async def allocate(self) -> None:
        run = await self.api.call(
            "POST",
            "/v1/allocation-runs",
            self.cast.admin,
            body={"term": self.term, "package_kind_id": self.cast.kind_id},
            expect=(201, 409),
        )
        if "id" not in run:  # nothing to allocate: the pool can't pay for a package, or nobody is waiting
            self.summary.notes.append(f"no allocation: {run.get('detail') or run.get('title')}")
            self._step(f"allocation (term {self.term}): no package this time")
            return
        self.summary.allocation_run = run["id"]
        self.summary.packages = run["packages"]
        self.summary.students_served = run["students_served"]
        self.summary.students_waiting = run["students_waiting"]
        self.summary.pool_before = run["pool_before"]
        self.summary.money_spent = run["money_spent"]
        self.allocation = run
        self._step(
            f"allocation run {run['id']} (term {self.term}): {run['packages']} Love Packages for "
            f"{run['students_served']} students, {_money(run['money_spent'])} from a pool of "
            f"{_money(run['pool_before'])}; {run['students_waiting']} students still waiting"
        )

    # ---- shipments ----

    async def deliver(self) -> None:
        shipped = [s for s in self.allocation["schools"] if s["shipment_id"]]
        served = [s for s in shipped if s["school_id"] in self.cast.schools]
        if len(served) < len(shipped):
            self.summary.notes.append(
                f"{len(shipped) - len(served)} shipments to schools the demo did not set up are left planned"
            )
        if not served:
            self.summary.notes.append("no packages this run, so no shipments to deliver")
            return
        boxes = Counter[str]()
        delivered = 0

        async def walk(school_served: dict[str, Any]) -> None:
            nonlocal delivered
            status = await self._walk(school_served, boxes)
            delivered += status == "receipt_confirmed"

        await self._in_parallel("shipments to the schools", served, walk)
        self.summary.shipments = len(served)
        self.summary.shipments_delivered = delivered
        self._step(
            f"{delivered} of {len(served)} shipments delivered with proof and receipts: "
            + ", ".join(f"{n} {outcome}" for outcome, n in sorted(boxes.items()))
        )

    async def _walk(self, school_served: dict[str, Any], boxes: Counter[str]) -> str:
        """One shipment from `planned` to the school's receipt, posted by its logistics partner."""
        plan, school = self.cast.schools[school_served["school_id"]]
        key = self.cast.partner_keys.get(school["logistics_partner_id"])
        if key is None:  # the school changed partner outside the demo: the programme posts instead
            key = self.cast.admin
        shipment_id = school_served["shipment_id"]
        path = f"/v1/shipments/{shipment_id}/events"
        shipment = await self.api.call("GET", f"/v1/shipments/{shipment_id}", key)
        story = programme.shipment_story(self.seed, plan.name, len(shipment["packages"]))
        hub = HUBS.get(plan.country, plan.region)
        steps: list[tuple[str, str, dict[str, Any]]] = [("handed_over", hub, {}), ("in_transit", hub, {})]
        if story.customs_hold:
            steps += [
                ("customs_hold", hub, {"note": "papers checked at the border"}),
                ("in_transit", hub, {}),
            ]
        steps.append(("out_for_delivery", plan.region, {}))
        if story.failed_attempt:
            steps += [
                ("delivery_failed", plan.region, {"note": "road closed by a landslide"}),
                ("out_for_delivery", plan.region, {}),
            ]
        note = f"delivery note for {shipment_id}".encode()
        steps.append(
            (
                "delivered",
                plan.name,
                {
                    "proof": {
                        "receiver_name": shipment["teacher_contact"]["name"],
                        "receiver_role": "teacher",
                        "evidence": {
                            "url": f"https://pod.example.org/{shipment_id}.jpg",
                            "sha256": hashlib.sha256(note).hexdigest(),
                        },
                        "gps": {"lat": plan.gps[0], "lon": plan.gps[1]},
                    }
                },
            )
        )
        outcomes = []
        for package, outcome in zip(shipment["packages"], story.outcomes, strict=True):
            entry = {"package_id": package["id"], "outcome": outcome}
            if outcome != "accepted":
                entry["reason"] = (
                    "carton soaked in the rain" if outcome == "damaged" else "not in the delivery"
                )
            outcomes.append(entry)
            boxes[outcome] += 1
        steps.append(("receipt_confirmed", plan.name, {"packages": outcomes}))
        answer: dict[str, Any] = {"status_after": shipment["status"]}
        for number, (status, location, extra) in enumerate(steps, 1):
            answer = await self.api.call(
                "POST",
                path,
                key,
                body={
                    "event_id": f"{shipment_id}-{number}-{status}",
                    "status": status,
                    "occurred_at": _now(),
                    "location": location,
                    **extra,
                },
                expect=(201,),
            )
        return str(answer["status_after"])

    # ---- what came out ----

    async def await_events(self) -> None:
        """Wait until every event the service sent to the platform's endpoint has reached the receiver and
        verified: the receiver's count against the service's own list of deliveries."""
        if self.cast.endpoint_id is None:
            return
        expected = self.summary.orders_applied
        timeout = EVENTS_SECONDS_BASE + EVENTS_SECONDS_PER_ORDER * expected
        deadline = time.monotonic() + timeout
        async with self._progress("donation.recorded events at the platform", expected) as advance:
            seen = 0
            deliveries: list[dict[str, Any]] = []
            while True:
                now_seen = min(self.receiver.count("donation.recorded"), expected)
                for _ in range(now_seen - seen):
                    advance()
                seen = now_seen
                if seen >= expected:
                    deliveries = await self.api.every(
                        f"/v1/webhook-endpoints/{self.cast.endpoint_id}/deliveries", self.cast.platform_key
                    )
                    if all(d["status"] == "delivered" for d in deliveries):
                        break
                if time.monotonic() > deadline:
                    self.summary.notes.append(
                        f"after {timeout:.0f} s the receiver had {self.receiver.count('donation.recorded')} "
                        f"of {expected} donation.recorded events"
                    )
                    break
                await asyncio.sleep(0.3)
        self.summary.events_sent = len(deliveries)
        self.summary.events_received = self.receiver.received
        self.summary.events_verified = dict(self.receiver.verified)
        verified = sum(self.receiver.verified.values())
        self._step(
            f"the platform's endpoint received {self.receiver.received} events, {verified} verified with "
            "standardwebhooks ("
            + ", ".join(f"{n} {t}" for t, n in sorted(self.receiver.verified.items()))
            + ")"
        )

    async def read_figures(self) -> None:
        admin = self.cast.admin
        self.summary.funds = await self.api.call("GET", "/v1/funds", admin)
        if self.summary.allocation_run:
            packages = await self.api.every("/v1/packages", admin, {"run_id": self.summary.allocation_run})
            self.summary.boxes = dict(Counter(p["status"] for p in packages))

    async def tidy_up(self, *, best_effort: bool = False) -> None:
        """The run's own keys go (the admin key it made for itself last); so does the endpoint, whose receiver
        stops with us. The merchant's sign-in key stays, for the user."""
        try:
            await self._revoke_and_remove()
        except (DemoError, httpx.HTTPError):
            if not best_effort:
                raise

    async def _revoke_and_remove(self) -> None:
        if self.cast.endpoint_id is not None:
            await self.api.call(
                "DELETE", f"/v1/webhook-endpoints/{self.cast.endpoint_id}", self.cast.platform_key
            )
        if self.revoke_admin_key_named is not None:
            for key in await self.api.every("/v1/api-keys", self.cast.admin):
                if key["name"] == self.revoke_admin_key_named and key["revoked_at"] is None:
                    self.cast.keys_to_revoke.append(key["id"])
        for key_id in self.cast.keys_to_revoke:
            await self.api.call("DELETE", f"/v1/api-keys/{key_id}", self.cast.admin)


def _rule_matches(rule: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return bool(
        rule["rate_bps"] == wanted["rate_bps"]
        and rule["fixed_per_unit"] == wanted.get("fixed_per_unit", [])
        and [{k: v for k, v in o.items() if v not in (None, False)} for o in rule["sku_overrides"]]
        == [{k: v for k, v in o.items() if v not in (None, False)} for o in wanted.get("sku_overrides", [])]
    )


def _money(money: dict[str, Any]) -> str:
    return format_money(money["amount"], money["currency"])
