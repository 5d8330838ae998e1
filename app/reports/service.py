"""The figures behind the public report and the merchant dashboard, and how the public summary is kept current.

The public summary is an aggregate over every order, so it is never computed while a client waits (except the
very first time): `TransparencyReport` serves the last computed figures from `report_summaries` (each process
keeps a copy, checked against the row at most once a second) and, once they are older than
`G4G_TRANSPARENCY_REFRESH_SECONDS`, recomputes them in the background (one refresher at a time across all
processes). A recomputation reads the orders' figures from rollups it first brings up to date with what committed
since (`app.reports.rollups`), so its cost follows the change, not the history. Figures that did not change keep
their ETag and `updated_at`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.database import ReadReplica
from app.core.money import MoneyOut, currency_exponent, round_half_even
from app.ledger import accounts
from app.reports import repository, rollups
from app.reports.disclosure import STEP, Publication
from app.reports.repository import PackageCosts, PlaceCell, StageCell
from app.reports.schemas import (
    CountryImpact,
    FunnelCount,
    MerchantImpactOut,
    MonthFigures,
    PackageFigures,
    PlaceFigures,
    RateUsed,
    StageCount,
    StageMoney,
    TransparencyOut,
)

log = structlog.get_logger("g4g.reports")

TRANSPARENCY = rollups.WATERMARK  # one name: the summary, its refresh lock and the rollups' watermark
# How long a process serves its copy of the figures before looking at the shared row again.
RECHECK_SECONDS = 1.0
MONEY_FIELDS = ("pledged", "final", "billed", "collected", "in_pool", "reversed")
ORDER_STAGES = ("pledged", "final", "billed", "collected", "reversed")


# ---- money by stage ----


@dataclass
class StageSums:
    """Running sums per stage in one currency (minor units) and orders per stage."""

    currency: str
    money: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MONEY_FIELDS, 0))
    orders: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ORDER_STAGES, 0))

    def add(self, cell: StageCell) -> None:
        stage = "collected" if cell.stage == "in_pool" else cell.stage
        self.money[stage] += cell.net
        if cell.stage == "in_pool":
            self.money["in_pool"] += cell.net
        self.money["reversed"] += cell.reversed
        self.orders[stage] += cell.orders

    def out(self) -> StageMoney:
        return StageMoney(currency=self.currency, **self.money)


def fold_by_currency(cells: Iterable[StageCell]) -> dict[str, StageSums]:
    sums: dict[str, StageSums] = {}
    for cell in cells:
        sums.setdefault(cell.currency, StageSums(cell.currency)).add(cell)
    return dict(sorted(sums.items()))


def fold_by_month(cells: Iterable[StageCell]) -> dict[str, dict[str, StageSums]]:
    months: dict[str, list[StageCell]] = defaultdict(list)
    for cell in cells:
        months[cell.month].append(cell)
    return {month: fold_by_currency(months[month]) for month in sorted(months)}


def exact_in_base(
    amounts: Mapping[str, int], rates: Mapping[str, Decimal], base_currency: str
) -> tuple[Fraction, set[str]]:
    """The sum of amounts in several currencies, valued in the base currency at `rates`, exactly. Currencies
    without a rate are left out and returned."""
    exact = Fraction(0)
    missing: set[str] = set()
    base_exponent = currency_exponent(base_currency)
    for currency, amount in amounts.items():
        if currency == base_currency:
            exact += amount
        elif currency in rates:
            shift = base_exponent - currency_exponent(currency)
            exact += Fraction(amount) * Fraction(rates[currency]) * Fraction(10) ** shift
        elif amount:
            missing.add(currency)
    return exact, missing


def value_in_base(
    amounts: Mapping[str, int], rates: Mapping[str, Decimal], base_currency: str
) -> tuple[int, set[str]]:
    """`exact_in_base`, with one half-even rounding at the end."""
    exact, missing = exact_in_base(amounts, rates, base_currency)
    return round_half_even(exact), missing


def stages_in_base(
    sums: Mapping[str, StageSums],
    rates: Mapping[str, Decimal],
    base_currency: str,
    pooled: Mapping[str, Fraction] | None = None,
) -> tuple[StageMoney, set[str]]:
    """Money by stage in the base currency, so that a later step on the way to the pool never shows more than an
    earlier one (raised ≥ billed ≥ collected ≥ in the pool), whatever the rates did since.

    Money that reached the pool is valued at what it fetched when it was converted (`pooled`: base amounts by
    currency, from the conversions; at the latest rates where not given). Money still on its way is valued at the
    latest rates. Each step is the pool plus the money still on its way at that step, summed exactly and rounded
    once (half-even, which never turns a larger sum into a smaller figure); the stages are the differences of
    those rounded steps, so they add up to the figures shown."""
    money = {name: {c: s.money[name] for c, s in sums.items()} for name in MONEY_FIELDS}
    missing: set[str] = set()

    def latest(amounts: Mapping[str, int]) -> Fraction:
        exact, left_out = exact_in_base(amounts, rates, base_currency)
        missing.update(left_out)
        return exact

    pool = sum(pooled.values(), Fraction(0)) if pooled is not None else latest(money["in_pool"])
    collecting = {c: money["collected"][c] - money["in_pool"][c] for c in sums}
    collected = pool + latest(collecting)
    billed = collected + latest(money["billed"])
    raised_exact = billed + latest(money["final"])
    rounded = [round_half_even(x) for x in (pool, collected, billed, raised_exact)]
    in_pool, collected_r, billed_r, raised_r = rounded
    return StageMoney(
        currency=base_currency,
        pledged=round_half_even(latest(money["pledged"])),
        final=raised_r - billed_r,
        billed=billed_r - collected_r,
        collected=collected_r,
        in_pool=in_pool,
        reversed=round_half_even(latest(money["reversed"])),
    ), missing


def pooled_by_month(
    months: Mapping[str, Mapping[str, StageSums]], pool_by_currency: Mapping[str, int]
) -> dict[str, dict[str, Fraction]]:
    """What each month's money in the pool fetched: a currency's converted base amount shared among the months
    in proportion to their money of that currency in the pool (so the months add up to the pool exactly)."""
    in_pool: dict[str, int] = defaultdict(int)
    for sums in months.values():
        for currency, s in sums.items():
            in_pool[currency] += s.money["in_pool"]
    return {
        month: {
            c: Fraction(pool_by_currency.get(c, 0) * s.money["in_pool"], in_pool[c])
            for c, s in sums.items()
            if in_pool[c]
        }
        for month, sums in months.items()
    }


def raised(stages: StageMoney) -> int:
    """Money raised: final, billed and collected. Pledged money is not raised until its return window passed."""
    return stages.final + stages.billed + stages.collected


PLACE_MEASURES = ("allocated", "delivered", "students_reached")


def count_places(publication: Publication, places: Sequence[PlaceCell]) -> dict[str, list[str]]:
    """Register packages and students by place: the programme, each country, each region, with their sums."""
    countries = sorted({p.country for p in places})
    regions_of = {c: [p for p in places if p.country == c] for c in countries}
    for name in PLACE_MEASURES:
        country_keys = []
        for country in countries:
            region_keys = [
                publication.count(f"{name}:{country}:{row.region}", getattr(row, name))
                for row in regions_of[country]
            ]
            country_key = publication.count(
                f"{name}:{country}", sum(getattr(row, name) for row in regions_of[country])
            )
            publication.total(country_key, region_keys)
            country_keys.append(country_key)
        publication.count(name, sum(getattr(p, name) for p in places))
        publication.total(name, country_keys)
    return {c: [row.region for row in regions_of[c]] for c in countries}


@dataclass(frozen=True, slots=True)
class PackageKeys:
    """Where the package figures are in a publication: the funnel's counts, and the package money in units of
    `unit` (the dearest package's cost) when there are packages."""

    funnel: list[str]
    buckets: dict[str, str]
    in_packages: str | None
    unit: int


BUCKETS = (
    ("in_transit", accounts.PACKAGES_ASSIGNED),
    ("delivered_money", accounts.PACKAGES_DELIVERED),
    ("written_off", accounts.PACKAGES_WRITTEN_OFF),
    ("in_stock", accounts.PACKAGES_IN_STOCK),
)


def count_packages(
    publication: Publication, funnel: Sequence[int], money: Mapping[str, int], costs: PackageCosts | None
) -> PackageKeys:
    """Register the delivery funnel and the money in packages (as the count of packages it is worth). Figures of
    the same quantity share its key: the funnel's first and last steps are the packages allocated and accepted,
    and money that is exactly N packages' worth is that count."""
    allocated, shipped, delivered, accepted = funnel

    def same_or_own(key: str, own: str, value: int) -> str:
        return key if publication.values[key] == value else publication.count(own, value)

    funnel_keys = [
        same_or_own("allocated", "funnel:allocated", allocated),
        publication.count("funnel:shipped", shipped),
        publication.count("funnel:delivered", delivered),
        same_or_own("delivered", "funnel:accepted", accepted),
    ]
    if costs is None:
        return PackageKeys(funnel_keys, {}, None, 0)
    unit = costs.highest

    def units(key: str, amount: int, same_as: str | None = None) -> str:
        if same_as is not None and amount == publication.values[same_as] * unit:
            return same_as
        return publication.count(key, max(amount, 0) // unit)

    buckets = {
        name: units(
            f"money:{name}", money.get(account, 0), "delivered" if name == "delivered_money" else None
        )
        for name, account in BUCKETS
    }
    in_packages = units("money:in_packages", sum(money.values()), "allocated")
    publication.total(in_packages, list(buckets.values()))
    return PackageKeys(funnel_keys, buckets, in_packages, unit)


def cost_per_package(places: Sequence[PlaceCell], costs: PackageCosts, base_currency: str) -> int:
    """The packages' cost: exact when they all cost the same (the kit's price, public anyway); otherwise their
    average to the base currency's whole unit, so that it doesn't tell how many were bought at each cost."""
    if costs.lowest == costs.highest:
        return costs.highest
    whole: int = 10 ** currency_exponent(base_currency)
    allocated = sum(p.allocated for p in places)
    return round_half_even(Fraction(sum(p.cost for p in places), allocated * whole)) * whole


def build_transparency(
    cells: Sequence[StageCell],
    *,
    merchants: int,
    pool_received: int,
    pool_balance: int,
    rates: Mapping[str, Decimal],
    base_currency: str,
    updated_at: datetime,
    places: Sequence[PlaceCell] = (),
    funnel: Sequence[int] = (0, 0, 0, 0),
    package_money: Mapping[str, int] | None = None,
    package_costs: PackageCosts | None = None,
    pool_by_currency: Mapping[str, int] | None = None,
) -> TransparencyOut:
    """The public figures (pure: no database). Every count goes through one `Publication`, decided at once.

    `pool_by_currency` is what each currency's conversions brought into the pool (base minor units; they add up
    to `pool_received`): money in the pool is valued at that, the rest at the latest `rates` (`stages_in_base`)."""
    by_currency = fold_by_currency(cells)
    months = fold_by_month(cells)
    pooled = {c: Fraction(a) for c, a in pool_by_currency.items()} if pool_by_currency is not None else None
    in_base, missing = stages_in_base(by_currency, rates, base_currency, pooled)
    month_pooled = pooled_by_month(months, pool_by_currency) if pool_by_currency is not None else {}

    publication = Publication()
    publication.count("merchants", merchants)
    orders = publication.count("orders", sum(c.orders for c in cells))
    stage_keys = [
        publication.count(f"orders:{stage}", sum(s.orders[stage] for s in by_currency.values()))
        for stage in ORDER_STAGES
    ]
    publication.total(orders, stage_keys)
    month_keys = [
        publication.count(f"orders:month:{month}", sum(c.orders for c in cells if c.month == month))
        for month in months
    ]
    publication.total(orders, month_keys)
    regions_of = count_places(publication, places)
    costs = package_costs if package_costs is not None and publication.values["allocated"] else None
    keys = count_packages(publication, funnel, package_money or {}, costs)
    decided = publication.decide()

    by_month = []
    for (month, sums), key in zip(months.items(), month_keys, strict=True):
        month_in_base, month_missing = stages_in_base(
            sums, rates, base_currency, month_pooled.get(month) if pool_by_currency is not None else None
        )
        missing |= month_missing
        by_month.append(
            MonthFigures(
                month=month,
                orders=decided[key],
                money=[s.out() for s in sums.values()],
                in_base_currency=month_in_base,
            )
        )
    raised_base = raised(in_base)
    share = round_half_even(Fraction(in_base.in_pool * 10_000, raised_base)) if raised_base > 0 else None

    def base(amount: int) -> MoneyOut:
        return MoneyOut(amount=amount, currency=base_currency)

    shown_pool_balance = pool_balance
    money = dict.fromkeys((name for name, _ in BUCKETS), 0)
    in_packages = 0
    if costs is not None and keys.in_packages is not None:
        money = {name: decided.lower[key] * keys.unit for name, key in keys.buckets.items()}
        in_packages = decided.lower[keys.in_packages] * keys.unit
        # The pool's balance is what reached it less what went into packages: shown exactly, it would give the
        # money in packages (and so their count) away. It keeps the part of the packages' money not shown.
        shown_pool_balance = pool_balance + sum((package_money or {}).values()) - in_packages
    packages = PackageFigures(
        allocated=decided["allocated"],
        delivered=decided["delivered"],
        students_reached=decided["students_reached"],
        cost_per_package=base(cost_per_package(places, costs, base_currency)) if costs else None,
        money_step=base(STEP * keys.unit) if costs else None,
        in_packages=base(in_packages),
        in_transit=base(money["in_transit"]),
        delivered_money=base(money["delivered_money"]),
        written_off=base(money["written_off"]),
        in_stock=base(money["in_stock"]),
        reached_schools_share_bps=round_half_even(Fraction(money["delivered_money"] * 10_000, raised_base))
        if raised_base > 0
        else None,
    )

    def place(country: str, region: str | None) -> PlaceFigures:
        suffix = f":{country}" + (f":{region}" if region is not None else "")
        return PlaceFigures(
            country=country,
            region=region,
            packages_allocated=decided["allocated" + suffix],
            packages_delivered=decided["delivered" + suffix],
            students_reached=decided["students_reached" + suffix],
        )

    return TransparencyOut(
        updated_at=updated_at,
        base_currency=base_currency,
        merchants_taking_part=decided["merchants"],
        orders=decided[orders],
        orders_by_stage=[
            StageCount(stage=stage, orders=decided[key])
            for stage, key in zip(ORDER_STAGES, stage_keys, strict=True)
        ],
        raised=base(raised_base),
        pledged=base(in_base.pledged),
        reached_pool=base(pool_received),
        pool_balance=base(shown_pool_balance),
        reached_pool_share_bps=share,
        money_by_stage=[s.out() for s in by_currency.values()],
        money_by_stage_in_base_currency=in_base,
        not_valued=sorted(missing),
        rates=[
            RateUsed(currency=c, rate=format(r.normalize(), "f"))
            for c, r in sorted(rates.items())
            if c in by_currency
        ],
        by_month=by_month,
        packages=packages,
        countries=[place(country, None) for country in regions_of],
        regions=[place(country, region) for country, names in regions_of.items() for region in names],
        delivery_funnel=[
            FunnelCount(step=step, packages=decided[key])
            for step, key in zip(repository.FUNNEL, keys.funnel, strict=True)
        ],
    )


async def compute_transparency(
    session: AsyncSession, *, now: datetime, window: timedelta, base_currency: str, from_orders: bool = False
) -> TransparencyOut:
    """The public figures, the orders' from the rollups (`app.reports.rollups`, brought up to date by the
    caller in the same transaction) or, `from_orders`, recomputed from every order (the same figures: the tests
    compare them). An unbilled order is final once the return window since it was placed has passed."""
    final_before = now - window
    if from_orders:
        cells = await rollups.full_cells(session, final_before=final_before)
        merchants = await repository.merchants_with_orders(session)
    else:
        cells = await rollups.cells(session, final_before=final_before)
        merchants = await rollups.merchants(session)
    return build_transparency(
        cells,
        merchants=merchants,
        pool_received=await repository.pool_received(session, base_currency),
        pool_by_currency=await repository.pool_by_currency(session, base_currency),
        pool_balance=await repository.pool_balance(session, base_currency),
        rates=await repository.latest_rates(session, base_currency),
        base_currency=base_currency,
        updated_at=now,
        places=await repository.place_cells(session),
        funnel=await repository.delivery_funnel(session),
        package_money=await repository.package_money(session, base_currency),
        package_costs=await repository.package_costs(session),
    )


# ---- one merchant's figures (its own data: nothing is hidden from it) ----


@dataclass(frozen=True, slots=True)
class MerchantFigures:
    orders: int
    by_currency: list[StageMoney]
    by_month: list[tuple[str, list[StageMoney]]]
    orders_by_month: list[tuple[str, int]]


async def merchant_figures(
    session: AsyncSession, merchant_id: str, *, now: datetime, window: timedelta
) -> MerchantFigures:
    """A merchant's donations by stage and currency, overall and by the month its orders were placed."""
    cells = await repository.stage_cells(session, final_before=now - window, merchant_id=merchant_id)
    months = fold_by_month(cells)
    return MerchantFigures(
        orders=sum(c.orders for c in cells),
        by_currency=[s.out() for s in fold_by_currency(cells).values()],
        by_month=[(month, [s.out() for s in sums.values()]) for month, sums in months.items()],
        orders_by_month=[(month, sum(c.orders for c in cells if c.month == month)) for month in months],
    )


async def merchant_impact(
    session: AsyncSession,
    merchant_id: str,
    *,
    placed_from: datetime | None,
    placed_to: datetime | None,
    now: datetime,
    window: timedelta,
    base_currency: str,
) -> MerchantImpactOut:
    """What a merchant's donations (orders placed in the period) became: money by stage, what reached the pool,
    the packages it paid for (its share of each), the students they reached and where, and how much of its
    money reached schools."""
    cells = await repository.stage_cells(
        session,
        final_before=now - window,
        merchant_id=merchant_id,
        placed_from=placed_from,
        placed_to=placed_to,
    )
    by_currency = fold_by_currency(cells)
    packages = await repository.merchant_packages(
        session, merchant_id, placed_from=placed_from, placed_to=placed_to
    )
    pooled = await repository.merchant_pooled(
        session, merchant_id, placed_from=placed_from, placed_to=placed_to
    )
    funded: dict[str, Fraction] = defaultdict(Fraction)
    delivered: dict[str, Fraction] = defaultdict(Fraction)
    for _, share, cost, status, country, _ in packages:
        funded[country or "?"] += Fraction(share, cost)
        if status == "accepted":
            delivered[country or "?"] += Fraction(share, cost)
    in_packages = sum(share for _, share, _, _, _, _ in packages)
    reached = sum(share for _, share, _, status, _, _ in packages if status == "accepted")

    def base(amount: int) -> MoneyOut:
        return MoneyOut(amount=amount, currency=base_currency)

    return MerchantImpactOut(
        merchant_id=merchant_id,
        placed_from=placed_from,
        placed_to=placed_to,
        base_currency=base_currency,
        orders=sum(c.orders for c in cells),
        money_by_stage=[s.out() for s in by_currency.values()],
        raised=[MoneyOut(amount=raised(s.out()), currency=c) for c, s in by_currency.items()],
        reached_pool=base(pooled),
        in_packages=base(in_packages),
        reached_schools=base(reached),
        reached_schools_share_bps=round_half_even(Fraction(reached * 10_000, pooled)) if pooled else None,
        packages_funded=_decimal(sum(funded.values(), Fraction(0))),
        students_reached=await repository.students_reached_by(session, [p[0] for p in packages]),
        by_country=[
            CountryImpact(
                country=c, packages_funded=_decimal(funded[c]), packages_delivered=_decimal(delivered[c])
            )
            for c in sorted(funded)
        ],
    )


def _decimal(value: Fraction, places: int = 2) -> str:
    """A fraction as a decimal string, rounded half-even once."""
    scaled = round_half_even(value * 10**places)
    return f"{scaled // 10**places}.{scaled % 10**places:0{places}d}"


# ---- keeping the public summary current ----


@dataclass(frozen=True, slots=True)
class Snapshot:
    body: bytes
    etag: str
    updated_at: datetime
    checked_at: datetime

    def figures(self) -> TransparencyOut:
        return TransparencyOut.model_validate_json(self.body)


def _etag(figures: TransparencyOut) -> str:
    digest = hashlib.sha256(figures.model_dump_json(exclude={"updated_at"}).encode()).hexdigest()
    return f'"{digest[:32]}"'


class TransparencyReport:
    """Serves the public figures from `report_summaries`, recomputing them once they are older than `refresh`
    (in the background while the older figures are served; before answering when there are none yet, or when
    `refresh` is zero)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        refresh: timedelta,
        window: timedelta,
        base_currency: str,
        replica: ReadReplica | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._replica = replica
        self._clock = clock
        self.refresh_interval = refresh
        self._window = window
        self._base_currency = base_currency
        self._background: asyncio.Task[Snapshot | None] | None = None
        self._held: Snapshot | None = None
        self._held_since = 0.0

    async def current(self) -> Snapshot:
        """The figures to serve now: this process's copy, checked against the shared row at most once a second
        (its body is read again only when its ETag changed)."""
        if self.refresh_interval <= timedelta(0):
            snapshot = await self.refresh(wait=True)
            assert snapshot is not None
            return snapshot
        held = self._held
        if held is None or time.monotonic() - self._held_since >= RECHECK_SECONDS:
            held = await self._shared(held) or await self.refresh(wait=True)
            assert held is not None
            self._remember(held)
        if self._clock.now() - held.checked_at >= self.refresh_interval and not self.refreshing:
            self._background = asyncio.create_task(self._refresh_quietly())
        return held

    async def _shared(self, held: Snapshot | None) -> Snapshot | None:
        """The stored figures, read from the replica (`DATABASE_READ_URL`) while it is within its lag bound, else
        from the primary. Never older than those this process holds (the replica may not have replayed yet the
        figures this process just stored on the primary), and when the replica has none yet, the primary's."""
        replica = self._replica if self._replica is not None and await self._replica.usable() else None
        if replica is not None:
            found = await self._stored(replica.sessionmaker, held)
            if found is not None:
                if held is not None and found.updated_at < held.updated_at:
                    return held
                return found
        return await self._stored(self._sessionmaker, held)

    @staticmethod
    async def _stored(
        sessionmaker: async_sessionmaker[AsyncSession], held: Snapshot | None
    ) -> Snapshot | None:
        async with sessionmaker() as session:
            version = await repository.summary_version(session, TRANSPARENCY)
            if version is None:
                return None
            etag, updated_at, checked_at = version
            if held is not None and held.etag == etag:
                return Snapshot(held.body, etag, updated_at, checked_at)
            row = await repository.summary(session, TRANSPARENCY)
        return Snapshot(row.body.encode(), row.etag, row.updated_at, row.checked_at) if row else None

    def _remember(self, snapshot: Snapshot) -> None:
        self._held, self._held_since = snapshot, time.monotonic()

    async def refresh_if_due(self) -> Snapshot | None:
        """Recompute the figures if they are missing or as old as the refresh interval (a scheduled job's way in);
        None if they are fresh, or another process is recomputing them now."""
        async with self._sessionmaker() as session:
            version = await repository.summary_version(session, TRANSPARENCY)
        if version is not None and self._clock.now() - version[2] < self.refresh_interval:
            return None
        return await self.refresh(wait=False)

    async def _refresh_quietly(self) -> Snapshot | None:
        try:
            return await self.refresh(wait=False)
        except Exception as exc:  # the older figures keep being served; the next read tries again
            log.error("transparency_refresh_failed", exc_info=exc)
            return None

    async def refresh(self, *, wait: bool) -> Snapshot | None:
        """Recompute and store the figures. With `wait`, queue behind a refresh under way in any process (and
        reuse its result if it started after this call); without, leave it to that refresh (None)."""
        asked_at = self._clock.now()
        async with self._sessionmaker() as session, session.begin():
            if not await repository.try_lock_refresh(session, TRANSPARENCY, wait=wait):
                return None
            row = await repository.summary(session, TRANSPARENCY)
            if row is not None and row.checked_at > asked_at:
                snapshot = Snapshot(row.body.encode(), row.etag, row.updated_at, row.checked_at)
                self._remember(snapshot)
                return snapshot
            now = self._clock.now()
            # The figures come from one consistent snapshot of the database, read in a transaction of their own
            # that first folds into the rollups what committed since they were last brought up to date.
            async with self._sessionmaker() as reader:
                await reader.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                await rollups.catch_up(reader, now)
                figures = await compute_transparency(
                    reader, now=now, window=self._window, base_currency=self._base_currency
                )
                await reader.commit()
            etag = _etag(figures)
            if row is not None and row.etag == etag:
                await repository.mark_checked(session, TRANSPARENCY, now)
                snapshot = Snapshot(row.body.encode(), row.etag, row.updated_at, now)
            else:
                body = figures.model_dump_json()
                await repository.save_summary(
                    session, name=TRANSPARENCY, body=body, etag=etag, updated_at=now, checked_at=now
                )
                snapshot = Snapshot(body.encode(), etag, now, now)
        self._remember(snapshot)  # committed: what this process serves from now on
        return snapshot

    @property
    def refreshing(self) -> bool:
        return self._background is not None and not self._background.done()

    async def refreshed(self) -> None:
        """Wait for a background refresh under way, if any."""
        if self._background is not None:
            await self._background

    async def close(self) -> None:
        if self._background is not None and not self._background.done():
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
