"""The public report plays against an attacker: for random programmes, every figure the report publishes is read
as the constraints it really gives (bands, sums at every level, the funnel, money divided by the package cost), and
an exact integer solver works out every count it can — from one publication, and from two consecutive ones. No
count from 1 to 4 may come out pinned."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from app.ledger import accounts
from app.reports.disclosure import Publication
from app.reports.repository import PackageCosts, PlaceCell, StageCell
from app.reports.service import ORDER_STAGES, build_transparency

COST = 2500  # every package costs the same: the case where dividing money by the cost gives a count exactly
COUNTRIES = ("KH", "MM", "NP")
MONTHS = ("2026-09", "2026-10", "2026-11", "2026-12", "2027-01", "2027-02")


# ---- a programme: what the service knows ----


@dataclass(frozen=True)
class Region:
    country: str
    name: str
    allocated: int
    accepted: int
    reached: int


@dataclass(frozen=True)
class Programme:
    regions: tuple[Region, ...]
    shipped: int
    delivered: int  # at the school: accepted, damaged or missing on receipt
    written_off: int
    in_stock: int
    orders: dict[tuple[str, str], int]  # (month, stage) → orders
    merchants: int

    @property
    def allocated(self) -> int:
        return sum(r.allocated for r in self.regions)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.regions)

    def publish(self) -> dict[str, Any]:
        places = [
            PlaceCell(r.country, r.name, r.allocated, r.accepted, r.reached, r.allocated * COST) for r in self
        ]
        in_transit = self.allocated - self.accepted - self.written_off - self.in_stock
        money = {
            accounts.PACKAGES_ASSIGNED: in_transit * COST,
            accounts.PACKAGES_DELIVERED: self.accepted * COST,
            accounts.PACKAGES_WRITTEN_OFF: self.written_off * COST,
            accounts.PACKAGES_IN_STOCK: self.in_stock * COST,
        }
        cells = [
            StageCell(month, "USD", "in_pool" if stage == "collected" else stage, n, 100 * n, 0)
            for (month, stage), n in sorted(self.orders.items())
            if n
        ]
        report = build_transparency(
            cells,
            merchants=self.merchants,
            pool_received=10**9,
            pool_balance=10**9 - self.allocated * COST,
            rates={},
            base_currency="USD",
            updated_at=datetime(2026, 12, 5, tzinfo=UTC),
            places=places,
            funnel=(self.allocated, self.shipped, self.delivered, self.accepted),
            package_money=money,
            package_costs=PackageCosts(COST, COST) if self.allocated else None,
        )
        return report.model_dump(mode="json")

    def __iter__(self) -> Any:
        return iter(self.regions)


@st.composite
def programmes(draw: st.DrawFn) -> Programme:
    regions = []
    for country in draw(st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3, unique=True)):
        for n in range(draw(st.integers(1, 6))):
            allocated = draw(st.integers(0, 14))
            accepted = draw(st.integers(0, allocated))
            reached = draw(st.integers(0, allocated))
            regions.append(Region(country, f"R{n}", allocated, accepted, reached))
    allocated = sum(r.allocated for r in regions)
    accepted = sum(r.accepted for r in regions)
    written_off = draw(st.integers(0, allocated - accepted))
    in_stock = draw(st.integers(0, allocated - accepted - written_off))
    delivered = draw(st.integers(accepted, allocated))
    shipped = draw(st.integers(delivered, allocated))
    months = draw(st.integers(1, len(MONTHS)))
    orders = {(month, stage): draw(st.integers(0, 9)) for month in MONTHS[:months] for stage in ORDER_STAGES}
    return Programme(
        tuple(regions), shipped, delivered, written_off, in_stock, orders, draw(st.integers(0, 12))
    )


@st.composite
def growth(draw: st.DrawFn, before: Programme) -> Programme:
    """The same programme a little later: more packages allocated, delivered, students reached, orders."""
    regions = []
    for r in before.regions:
        more = draw(st.integers(0, 3))
        allocated = r.allocated + more
        accepted = r.accepted + draw(
            st.integers(0, more)
        )  # no more than the new ones: stock stays what it was
        reached = r.reached + draw(st.integers(0, allocated - r.reached))
        regions.append(replace(r, allocated=allocated, accepted=accepted, reached=reached))
    after = replace(before, regions=tuple(regions))
    delivered = max(before.delivered + draw(st.integers(0, 3)), after.accepted)
    delivered = min(delivered, after.allocated)
    shipped = min(max(before.shipped + draw(st.integers(0, 3)), delivered), after.allocated)
    orders = {key: n + draw(st.integers(0, 2)) for key, n in before.orders.items()}
    return replace(
        after,
        shipped=shipped,
        delivered=delivered,
        orders=orders,
        merchants=before.merchants + draw(st.integers(0, 1)),
    )


# ---- the attacker: what the published JSON says, as integer constraints ----


@dataclass
class Knowledge:
    """Integer variables with bounds, and linear constraints over them."""

    names: list[str] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    rows: list[tuple[dict[int, float], float, float]] = field(default_factory=list)

    def var(self, name: str, low: float = 0, high: float = np.inf) -> int:
        self.names.append(name)
        self.low.append(low)
        self.high.append(high)
        return len(self.names) - 1

    def published(self, name: str, shown: Any, *, unit: int = 1) -> int:
        """A count as the report says it is to be read: "<5" is 0–4, n is n to n + 9."""
        if shown == "<5":
            return self.var(name, 0, 4)
        assert isinstance(shown, int) and shown % unit == 0, (name, shown)
        n = shown // unit
        assert n % 5 == 0 and n >= 5, (name, shown)
        return self.var(name, n, n + 9)

    def equal(self, left: int, right: Iterable[int]) -> None:
        coefficients: dict[int, float] = {left: 1.0}
        for r in right:
            coefficients[r] = coefficients.get(r, 0.0) - 1.0
        self.rows.append((coefficients, 0.0, 0.0))

    def at_most(self, smaller: int, larger: int) -> None:
        self.rows.append(({smaller: 1.0, larger: -1.0}, -np.inf, 0.0))

    def pinned(self, truth: dict[str, int]) -> dict[str, int]:
        """Every variable whose true value is 1–4 and that the constraints leave no other value for."""
        size = len(self.names)
        matrix = np.zeros((max(len(self.rows), 1), size))
        lower = np.zeros(max(len(self.rows), 1))
        upper = np.zeros(max(len(self.rows), 1))
        for i, (coefficients, lo, hi) in enumerate(self.rows):
            for j, value in coefficients.items():
                matrix[i, j] += value
            lower[i], upper[i] = lo, hi
        constraints = LinearConstraint(matrix, lower, upper)
        integrality = np.ones(size)
        truth_vector = np.array([truth[name] for name in self.names], dtype=float)
        assert all(np.array(self.low) <= truth_vector) and all(truth_vector <= np.array(self.high)), (
            "the published figures must be true of the programme"
        )
        assert np.allclose(matrix @ truth_vector, np.clip(matrix @ truth_vector, lower, upper))
        found = {}
        for j, name in enumerate(self.names):
            value = truth[name]
            if not 1 <= value <= 4:
                continue
            other = False
            for low, high in ((self.low[j], value - 1), (value + 1, self.high[j])):
                if low > high:
                    continue
                bounds = Bounds(
                    [low if k == j else self.low[k] for k in range(size)],
                    [high if k == j else self.high[k] for k in range(size)],
                )
                result = milp(np.zeros(size), integrality=integrality, bounds=bounds, constraints=constraints)
                if result.status == 0:
                    other = True
                    break
            if not other:
                found[name] = value
        return found


def read(report: dict[str, Any], knowledge: Knowledge, tag: str) -> dict[str, int]:
    """Turn one publication into constraints; returns the variables' indexes by name."""
    v: dict[str, int] = {}

    def count(name: str, shown: Any, **options: Any) -> int:
        v[name] = knowledge.published(f"{tag}{name}", shown, **options)
        return v[name]

    count("merchants", report["merchants_taking_part"])
    orders = count("orders", report["orders"])
    knowledge.equal(orders, [count(f"orders:{s['stage']}", s["orders"]) for s in report["orders_by_stage"]])
    months = [count(f"orders:month:{m['month']}", m["orders"]) for m in report["by_month"]]
    if months:
        knowledge.equal(orders, months)

    packages = report["packages"]
    measures = {
        "allocated": "packages_allocated",
        "delivered": "packages_delivered",
        "students_reached": "students_reached",
    }
    for measure, field_name in measures.items():
        total = count(measure, packages[measure])
        countries = []
        for c in report["countries"]:
            country = count(f"{measure}:{c['country']}", c[field_name])
            countries.append(country)
            regions = [
                count(f"{measure}:{r['country']}:{r['region']}", r[field_name])
                for r in report["regions"]
                if r["country"] == c["country"]
            ]
            knowledge.equal(country, regions)
        knowledge.equal(total, countries)
    for place in (
        [f":{c['country']}" for c in report["countries"]]
        + [f":{r['country']}:{r['region']}" for r in report["regions"]]
        + [""]
    ):
        knowledge.at_most(v["delivered" + place], v["allocated" + place])
        knowledge.at_most(v["students_reached" + place], v["allocated" + place])

    steps = [count(f"funnel:{s['step']}", s["packages"]) for s in report["delivery_funnel"]]
    knowledge.equal(steps[0], [v["allocated"]])
    knowledge.equal(steps[3], [v["delivered"]])
    for smaller, larger in zip(steps[1:], steps, strict=False):
        knowledge.at_most(smaller, larger)

    if packages["cost_per_package"] is not None:
        # The attacker divides every money figure by the published cost (uniform here: it divides exactly).
        unit = packages["cost_per_package"]["amount"]
        assert unit == COST
        buckets = [
            count(f"money:{name}", packages[name]["amount"] or "<5", unit=unit)
            for name in ("in_transit", "delivered_money", "written_off", "in_stock")
        ]
        in_packages = count("money:in_packages", packages["in_packages"]["amount"] or "<5", unit=unit)
        knowledge.equal(in_packages, buckets)
        knowledge.equal(in_packages, [v["allocated"]])
        knowledge.equal(buckets[1], [v["delivered"]])
        knowledge.at_most(buckets[1], v["funnel:delivered"])
        # The pool's balance and what reached it give the money in packages again.
        spent = report["reached_pool"]["amount"] - report["pool_balance"]["amount"]
        assert spent == packages["in_packages"]["amount"]
    return v


def truth_of(p: Programme, tag: str) -> dict[str, int]:
    truth = {f"{tag}merchants": p.merchants, f"{tag}orders": sum(p.orders.values())}
    for stage in ORDER_STAGES:
        truth[f"{tag}orders:{stage}"] = sum(n for (_, s), n in p.orders.items() if s == stage)
    for month in {m for m, _ in p.orders}:
        truth[f"{tag}orders:month:{month}"] = sum(n for (m, _), n in p.orders.items() if m == month)
    for measure, of in (
        ("allocated", "allocated"),
        ("delivered", "accepted"),
        ("students_reached", "reached"),
    ):
        truth[f"{tag}{measure}"] = sum(getattr(r, of) for r in p)
        for country in {r.country for r in p}:
            truth[f"{tag}{measure}:{country}"] = sum(getattr(r, of) for r in p if r.country == country)
        for r in p:
            truth[f"{tag}{measure}:{r.country}:{r.name}"] = getattr(r, of)
    in_transit = p.allocated - p.accepted - p.written_off - p.in_stock
    truth |= {
        f"{tag}funnel:allocated": p.allocated,
        f"{tag}funnel:shipped": p.shipped,
        f"{tag}funnel:delivered": p.delivered,
        f"{tag}funnel:accepted": p.accepted,
        f"{tag}money:in_transit": in_transit,
        f"{tag}money:delivered_money": p.accepted,
        f"{tag}money:written_off": p.written_off,
        f"{tag}money:in_stock": p.in_stock,
        f"{tag}money:in_packages": p.allocated,
    }
    return truth


def attack(*snapshots: Programme) -> dict[str, int]:
    """Everything pinned from the publications of `snapshots` (in order; counts that only grow known to grow)."""
    knowledge = Knowledge()
    truth: dict[str, int] = {}
    read_before: dict[str, int] | None = None
    for n, programme in enumerate(snapshots):
        tag = f"t{n}:"
        variables = read(programme.publish(), knowledge, tag)
        truth |= truth_of(programme, tag)
        if read_before is not None:
            for name, index in variables.items():
                growing = not name.startswith(
                    ("orders:pledged", "orders:final", "orders:billed", "orders:collected")
                )
                growing = growing and name not in ("money:in_transit", "money:in_stock", "funnel:shipped")
                if growing and name in read_before:
                    knowledge.at_most(read_before[name], index)
        read_before = variables
    return knowledge.pinned(truth)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(programmes())
def test_no_small_count_can_be_worked_out_from_one_publication(programme: Programme) -> None:
    assert attack(programme) == {}


@FAST
@given(st.data())
def test_no_small_count_can_be_worked_out_by_comparing_two_publications(data: st.DataObject) -> None:
    before = data.draw(programmes())
    after = data.draw(growth(before))
    assert attack(before, after) == {}


# ---- the attacks that were reproduced against the old report ----


def test_a_small_country_is_not_the_total_less_a_shown_region() -> None:
    # Bagmati (6 students) and Siem Reap (3), one allocation: 9 packages.
    programme = Programme(
        (Region("NP", "Bagmati", 6, 0, 0), Region("KH", "Siem Reap", 3, 0, 0)), 0, 0, 0, 0, {}, 1
    )
    report = programme.publish()
    assert report["packages"]["allocated"] == 5
    assert {r["region"]: r["packages_allocated"] for r in report["regions"]} == {
        "Bagmati": 5,
        "Siem Reap": "<5",
    }
    assert attack(programme) == {}


def test_money_divided_by_the_cost_gives_no_small_count() -> None:
    # 2 delivered and 1 written off at 2500 each, beside 6 more in transit.
    regions = (Region("NP", "Bagmati", 9, 2, 2),)
    programme = Programme(regions, 3, 3, 1, 0, {}, 1)
    packages = programme.publish()["packages"]
    assert packages["delivered"] == "<5"
    assert packages["money_step"] == {"amount": 5 * COST, "currency": "USD"}
    assert packages["delivered_money"]["amount"] == 0 and packages["written_off"]["amount"] == 0
    assert packages["in_packages"]["amount"] == 5 * COST  # 9 packages: the band 5–9
    assert attack(programme) == {}


def test_a_region_going_from_none_to_one_is_not_seen() -> None:
    before = Programme(
        (Region("NP", "Bagmati", 7, 0, 0), Region("NP", "Gandaki", 0, 0, 0)), 0, 0, 0, 0, {}, 1
    )
    after = replace(before, regions=(before.regions[0], replace(before.regions[1], allocated=1)))
    first, second = before.publish(), after.publish()
    assert first["packages"]["allocated"] == second["packages"]["allocated"] == 5
    assert [r["packages_allocated"] for r in first["regions"]] == [5, "<5"]
    assert first["regions"] == second["regions"]
    assert attack(before, after) == {}


def test_hidden_cells_are_not_known_to_be_at_least_one() -> None:
    # A country of 8 whose 8 regions each had one package: empty cells are "<5" as well, so nothing is pinned.
    programme = Programme(tuple(Region("NP", f"R{n}", 1, 0, 0) for n in range(8)), 0, 0, 0, 0, {}, 1)
    assert attack(programme) == {}
    empty = Programme((Region("NP", "R0", 0, 0, 0),), 0, 0, 0, 0, {}, 0)
    assert empty.publish()["packages"]["allocated"] == "<5"


def test_a_total_is_lowered_where_its_parts_would_be_pinned_at_the_top() -> None:
    # Five regions of four under a country of 20: "<5" five times and 20 would say four each.
    programme = Programme(tuple(Region("NP", f"R{n}", 4, 0, 0) for n in range(5)), 0, 0, 0, 0, {}, 1)
    report = programme.publish()
    assert [r["packages_allocated"] for r in report["regions"]] == ["<5"] * 5
    assert report["countries"][0]["packages_allocated"] == 15
    assert attack(programme) == {}


def test_one_decision_sees_every_level() -> None:
    publication = Publication()
    regions = [publication.count(f"r{n}", 4) for n in range(5)]
    country = publication.count("country", 20)
    publication.total(country, regions)
    total = publication.count("total", 20)
    publication.total(total, [country])
    orders = publication.count("orders", 20)
    publication.total(orders, [publication.count("collected", 20), publication.count("final", 0)])
    publication.total(orders, [publication.count(f"month{n}", 4) for n in range(5)])
    decided = publication.decide()
    # The country is lowered a step for its regions' sake (20 would say four each); the programme in one country
    # is that country, published alike.
    assert decided["country"] == decided["total"] == 15
    assert [decided[r] for r in regions] == ["<5"] * 5
    # The orders are lowered for their months' sake, but the collected ones (20 to 29) would still say the
    # orders are 20 at least and so four each month: they go down a step too.
    assert decided["orders"] == 15 and decided["collected"] == 15
    assert [decided[f"month{n}"] for n in range(5)] == ["<5"] * 5


def test_the_published_figures_are_plain_counts_and_money() -> None:
    programme = Programme((Region("NP", "Bagmati", 12, 6, 5),), 12, 8, 1, 0, {("2026-11", "final"): 7}, 6)
    report = programme.publish()
    assert report["orders"] == 5 and report["merchants_taking_part"] == 5
    assert report["packages"]["allocated"] == 10 and report["packages"]["delivered"] == 5
    assert [s["packages"] for s in report["delivery_funnel"]] == [10, 10, 5, 5]
    assert report["packages"]["reached_schools_share_bps"] == round(5 * COST * 10_000 / 700)
    assert Decimal(report["packages"]["cost_per_package"]["amount"]) == COST
