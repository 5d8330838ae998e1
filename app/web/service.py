"""What the pages show, built from the reports and the other domains' services, and the merchant's session.

Sessions: the cookie holds a random token; only its SHA-256 is stored. A session ends at its expiry, at sign-out,
or as soon as the API key it was opened with is revoked (every request checks the key). Forms carry a CSRF token:
derived from the session token once signed in, equal to a random `g4g_csrf` cookie on the sign-in form."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import structlog
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.auth import TOKEN_PREFIX, hash_token
from app.core.csv_export import Cell, csv_text
from app.core.ids import new_id
from app.core.money import major_units, round_half_even
from app.donations import repository as donations_repository
from app.donations import service as donations
from app.donations.schemas import DonationRow, DonationRuleOut, OrderDonationOut
from app.models import Merchant, WebSession
from app.reports.schemas import MerchantImpactOut, StageMoney, TransparencyOut
from app.reports.service import merchant_figures, merchant_impact, raised, value_in_base
from app.settlement import billing
from app.settlement.endpoints import statement_with_lines
from app.settlement.schemas import BillingProfileOut, SetupIntentOut, StatementWithLines
from app.settlement.stripe_gateway import StripeGateway
from app.web import repository
from app.web.charts import BarItem, Chart, Series, Table, bar_chart, funnel, stacked_columns
from app.web.i18n import Formatter

log = structlog.get_logger("g4g.web")

SESSION_COOKIE = "g4g_session"
SIGN_IN_CSRF_COOKIE = "g4g_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"  # the same token, sent by the billing page's script


# ---- sessions and CSRF ----


class SignInRefused(Exception):
    """The key is not a live merchant key. The page says so plainly; nothing else is revealed."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    merchant: Merchant
    session_id: str
    cookie_token: str
    expires_at: datetime

    @property
    def csrf_token(self) -> str:
        return session_csrf_token(self.cookie_token)


def session_csrf_token(cookie_token: str) -> str:
    """Only someone holding the session cookie (HttpOnly, so not another site's script) can derive it."""
    return hashlib.sha256(f"g4g-csrf\n{cookie_token}".encode()).hexdigest()


def new_sign_in_csrf() -> str:
    return secrets.token_urlsafe(24)


def same_secret(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


async def sign_in(session: AsyncSession, token: str, *, now: datetime, lifetime: timedelta) -> str:
    """Open a dashboard session for the merchant whose API key this is; returns the cookie's token."""
    token = token.strip()
    key = None
    if token.startswith(TOKEN_PREFIX) and len(token) <= 200:
        key = await repository.MERCHANT_SESSIONS.live_key(session, hash_token(token))
    if key is None or key.merchant_id is None:
        log.info("web_sign_in_refused")  # never the key itself
        raise SignInRefused
    await repository.MERCHANT_SESSIONS.end_expired(session, now)
    cookie_token = secrets.token_urlsafe(32)
    await repository.MERCHANT_SESSIONS.add(
        session,
        WebSession(
            id=new_id("wss"),
            token_hash=hash_token(cookie_token),
            api_key_id=key.id,
            merchant_id=key.merchant_id,
            expires_at=now + lifetime,
        ),
    )
    log.info("web_signed_in", merchant_id=key.merchant_id, key_id=key.id)
    return cookie_token


async def signed_in(session: AsyncSession, cookie_token: str | None, *, now: datetime) -> SignedIn | None:
    if not cookie_token or len(cookie_token) > 100:
        return None
    found = await repository.MERCHANT_SESSIONS.live(session, hash_token(cookie_token), now)
    if found is None:
        return None
    web_session, merchant = found
    return SignedIn(merchant, web_session.id, cookie_token, web_session.expires_at)


async def sign_out(session: AsyncSession, signed: SignedIn) -> None:
    await repository.MERCHANT_SESSIONS.end(session, hash_token(signed.cookie_token))
    log.info("web_signed_out", merchant_id=signed.merchant.id, session_id=signed.session_id)


# ---- labels ----


def stage_names(fmt: Formatter) -> dict[str, str]:
    return {
        "pledged": fmt.gettext("Pledged"),
        "final": fmt.gettext("Final"),
        "billed": fmt.gettext("Billed"),
        "collected": fmt.gettext("Collected"),
        "in_pool": fmt.gettext("In the pool"),
        "reversed": fmt.gettext("Reversed"),
    }


def _money_series(months: list[StageMoney], fmt: Formatter, *, with_pool: bool) -> list[Series]:
    names = stage_names(fmt)
    series = [
        Series(names["final"], "s1", [m.final for m in months]),
        Series(names["billed"], "s2", [m.billed for m in months]),
    ]
    if with_pool:
        series += [
            Series(names["collected"], "s3", [m.collected - m.in_pool for m in months]),
            Series(names["in_pool"], "s4", [m.in_pool for m in months]),
        ]
    else:
        series.append(Series(names["collected"], "s3", [m.collected for m in months]))
    series.append(Series(fmt.gettext("Pledged (not yet raised)"), "s5", [m.pledged for m in months]))
    return series


def _stage_row(label: str, m: StageMoney, fmt: Formatter) -> list[str]:
    return [
        label,
        *(
            fmt.money(getattr(m, f), m.currency)
            for f in ("pledged", "final", "billed", "collected", "in_pool")
        ),
        fmt.money(m.reversed, m.currency),
    ]


def _stage_head(fmt: Formatter, first: str) -> list[str]:
    names = stage_names(fmt)
    return [first, *(names[f] for f in ("pledged", "final", "billed", "collected", "in_pool", "reversed"))]


# ---- the public page ----


@dataclass(frozen=True, slots=True)
class PublicPage:
    figures: TransparencyOut
    money_over_time: Chart
    to_the_pool: Chart
    raised_by_currency: Chart
    orders_by_stage: Chart
    currencies: Table
    packages_by_country: Chart
    places: Table
    delivery: Chart


def _count_value(count: int | str) -> int | None:
    return count if isinstance(count, int) else None


def _package_sections(figures: TransparencyOut, fmt: Formatter) -> tuple[Chart, Table, Chart]:
    """Packages and students by country (a chart) and region (its table), and the delivery funnel."""
    country_items = [
        BarItem(fmt.country(c.country), _count_value(c.packages_allocated), fmt.count(c.packages_allocated))
        for c in figures.countries
    ]
    places = Table(
        fmt.gettext("Packages and students by country and region"),
        [
            fmt.gettext("Country"),
            fmt.gettext("Region"),
            fmt.gettext("Packages allocated"),
            fmt.gettext("Accepted by the school"),
            fmt.gettext("Students reached"),
        ],
        [
            [
                fmt.country(row.country),
                row.region if row.region is not None else fmt.gettext("All regions"),
                fmt.count(row.packages_allocated),
                fmt.count(row.packages_delivered),
                fmt.count(row.students_reached),
            ]
            for country in figures.countries
            for row in [country, *(r for r in figures.regions if r.country == country.country)]
        ],
        [
            fmt.gettext("Total"),
            "",
            fmt.count(figures.packages.allocated) if figures.packages else "0",
            fmt.count(figures.packages.delivered) if figures.packages else "0",
            fmt.count(figures.packages.students_reached) if figures.packages else "0",
        ],
    )
    by_country = bar_chart(
        "packages-by-country",
        fmt.gettext("Love Packages allocated, by country"),
        country_items,
        places,
        css="s2",
    )
    step_names = {
        "allocated": fmt.gettext("Allocated to a student"),
        "shipped": fmt.gettext("Shipped"),
        "delivered": fmt.gettext("Delivered to the school"),
        "accepted": fmt.gettext("Accepted by the school"),
    }
    steps = [
        BarItem(step_names[s.step], _count_value(s.packages), fmt.count(s.packages))
        for s in figures.delivery_funnel
    ]
    delivery = funnel(
        "delivery-funnel",
        fmt.gettext("How far the packages got"),
        steps,
        Table(
            fmt.gettext("Packages by how far they got"),
            [fmt.gettext("Step"), fmt.gettext("Packages")],
            [[item.label, item.display] for item in steps],
        ),
        css="s3",
    )
    return by_country, places, delivery


def public_page(figures: TransparencyOut, fmt: Formatter) -> PublicPage:
    """Charts and tables of the public figures, in the reader's language."""
    base = figures.base_currency
    names = stage_names(fmt)
    months = [m.in_base_currency for m in figures.by_month]
    month_labels = [fmt.month(m.month) for m in figures.by_month]
    over_time = stacked_columns(
        "money-over-time",
        fmt.gettext("Money by stage, by the month orders were placed (%(currency)s)") % {"currency": base},
        month_labels,
        _money_series(months, fmt, with_pool=True),
        lambda amount: fmt.money(amount, base),
        Table(
            fmt.gettext("Money by stage and month, valued in %(currency)s") % {"currency": base},
            [*_stage_head(fmt, fmt.gettext("Month")), fmt.gettext("Orders")],
            [
                [*_stage_row(label, m.in_base_currency, fmt), fmt.count(m.orders)]
                for label, m in zip(month_labels, figures.by_month, strict=True)
            ],
        ),
    )

    total = figures.money_by_stage_in_base_currency
    raised_total = raised(total)
    steps = [
        (fmt.gettext("Raised"), raised_total),
        (fmt.gettext("Billed to merchants"), total.billed + total.collected),
        (fmt.gettext("Collected"), total.collected),
        (fmt.gettext("In the pool"), total.in_pool),
    ]

    def share(amount: int) -> str:
        return (
            fmt.percent_bps(round_half_even(Fraction(amount * 10_000, raised_total))) if raised_total else "–"
        )

    to_pool = funnel(
        "to-the-pool",
        fmt.gettext("On the way to the pool (%(currency)s)") % {"currency": base},
        [BarItem(label, amount, fmt.money(amount, base)) for label, amount in steps],
        Table(
            fmt.gettext("Money raised on its way to the pool"),
            [fmt.gettext("Step"), fmt.gettext("Amount"), fmt.gettext("Share of money raised")],
            [[label, fmt.money(amount, base), share(amount)] for label, amount in steps],
        ),
    )

    valued = {c: c not in figures.not_valued for c in (m.currency for m in figures.money_by_stage)}
    rates = {r.currency: r.rate for r in figures.rates}
    by_currency_items = []
    for m in figures.money_by_stage:
        in_base = _valued(m, rates, base) if valued[m.currency] else None
        by_currency_items.append(BarItem(m.currency, in_base, fmt.money(raised(m), m.currency)))
    raised_by_currency = bar_chart(
        "raised-by-currency",
        fmt.gettext("Money raised by currency"),
        by_currency_items,
        Table(
            fmt.gettext("Money raised by currency"),
            [
                fmt.gettext("Currency"),
                fmt.gettext("Raised"),
                fmt.gettext("Valued in %(currency)s") % {"currency": base},
            ],
            [
                [item.label, item.display, fmt.money(item.value, base) if item.value is not None else "–"]
                for item in by_currency_items
            ],
        ),
    )

    stage_items = [
        BarItem(names[c.stage], c.orders if isinstance(c.orders, int) else None, fmt.count(c.orders))
        for c in figures.orders_by_stage
    ]
    orders_by_stage = bar_chart(
        "orders-by-stage",
        fmt.gettext("Orders by the stage of their donation"),
        stage_items,
        Table(
            fmt.gettext("Orders by stage"),
            [fmt.gettext("Stage"), fmt.gettext("Orders")],
            [[item.label, item.display] for item in stage_items],
            [fmt.gettext("Total"), fmt.count(figures.orders)],
        ),
        css="s1",
    )
    currencies = Table(
        fmt.gettext("Money by stage and currency"),
        _stage_head(fmt, fmt.gettext("Currency")),
        [_stage_row(m.currency, m, fmt) for m in figures.money_by_stage],
        _stage_row(fmt.gettext("All, in %(currency)s") % {"currency": base}, total, fmt)
        if figures.money_by_stage
        else None,
    )
    return PublicPage(
        figures,
        over_time,
        to_pool,
        raised_by_currency,
        orders_by_stage,
        currencies,
        *_package_sections(figures, fmt),
    )


def _valued(m: StageMoney, rates: dict[str, str], base: str) -> int:
    amount, _ = value_in_base({m.currency: raised(m)}, {c: Decimal(r) for c, r in rates.items()}, base)
    return amount


# ---- the merchant's dashboard ----

ORDERS_PAGE = 50


def _link(href: str, text: str) -> Markup:
    """A table cell that opens a page; the text is escaped."""
    return Markup('<a href="{}">{}</a>').format(href, text)


def statement_statuses(fmt: Formatter) -> dict[str, str]:
    return {
        "pending_payment": fmt.gettext("Awaiting payment"),
        "paid": fmt.gettext("Paid"),
        "payment_failed": fmt.gettext("Payment failed"),
        "needs_attention": fmt.gettext("Needs attention"),
    }


@dataclass(frozen=True, slots=True)
class RuleView:
    effective_from: datetime
    in_effect: bool
    status: str
    rate: str
    fixed: list[str]
    overrides: list[str]


@dataclass(frozen=True, slots=True)
class Dashboard:
    merchant: Merchant
    rules: list[RuleView]
    stages: Table
    charts: list[Chart]
    statements: Table
    orders: Table
    orders_total: int
    older_orders: str | None
    """The link to the next (older) page of orders, if there is one."""
    impact: MerchantImpactOut
    impact_by_country: Table


def _rule_view(rule: DonationRuleOut, fmt: Formatter) -> RuleView:
    statuses = {
        "scheduled": fmt.gettext("Scheduled"),
        "in_effect": fmt.gettext("In effect"),
        "superseded": fmt.gettext("Superseded"),
    }
    overrides = []
    for o in rule.sku_overrides:
        if o.excluded:
            overrides.append(fmt.gettext("%(sku)s: no donation") % {"sku": o.sku})
        else:
            parts = [fmt.percent_bps(o.rate_bps or 0)]
            parts += [fmt.money(m.amount, m.currency) for m in o.fixed_per_unit or []]
            overrides.append(f"{o.sku}: {' + '.join(parts)}")
    return RuleView(
        effective_from=rule.effective_from,
        in_effect=rule.status == "in_effect",
        status=statuses[rule.status],
        rate=fmt.percent_bps(rule.rate_bps),
        fixed=[
            fmt.gettext("%(amount)s per unit on %(currency)s orders")
            % {"amount": fmt.money(m.amount, m.currency), "currency": m.currency}
            for m in rule.fixed_per_unit
        ],
        overrides=overrides,
    )


async def dashboard(
    session: AsyncSession,
    merchant: Merchant,
    *,
    now: datetime,
    window: timedelta,
    base_currency: str,
    fmt: Formatter,
    orders_before: str | None = None,
) -> Dashboard:
    """Everything the merchant's dashboard shows; only this merchant's data is read."""
    rule_rows = await donations_repository.rules_newest_first(session, merchant.id, before=None, limit=20)
    in_effect = await donations.rule_in_effect_id(session, merchant.id, now)
    rules = [_rule_view(donations.rule_out(r, in_effect_id=in_effect, now=now), fmt) for r in rule_rows]

    figures = await merchant_figures(session, merchant.id, now=now, window=window)
    stages = Table(
        fmt.gettext("Your donations by stage"),
        _stage_head(fmt, fmt.gettext("Currency")),
        [_stage_row(m.currency, m, fmt) for m in figures.by_currency],
    )
    charts = []
    for m in figures.by_currency:
        currency = m.currency
        months = [
            (month, next((x for x in row if x.currency == currency), None)) for month, row in figures.by_month
        ]
        present = [(month, x) for month, x in months if x is not None]
        labels = [fmt.month(month) for month, _ in present]
        values = [x for _, x in present]
        charts.append(
            stacked_columns(
                f"donations-{currency.lower()}",
                fmt.gettext("Your donations over time (%(currency)s)") % {"currency": currency},
                labels,
                _money_series(values, fmt, with_pool=False),
                lambda amount, c=currency: fmt.money(amount, c),  # type: ignore[misc]
                Table(
                    fmt.gettext("Your donations by month (%(currency)s)") % {"currency": currency},
                    _stage_head(fmt, fmt.gettext("Month")),
                    [_stage_row(label, x, fmt) for label, x in zip(labels, values, strict=True)],
                ),
            )
        )

    statements = Table(
        fmt.gettext("Your statements"),
        [fmt.gettext("Statement"), fmt.gettext("Date"), fmt.gettext("Amount"), fmt.gettext("Status")],
        [
            [
                _link(f"/merchant/statements/{s.id}", s.id),
                fmt.timestamp(s.created_at),
                fmt.money(s.total, s.currency),
                statement_statuses(fmt)[s.status],
            ]
            for s in await repository.latest_statements(session, merchant.id, limit=24)
        ],
    )
    names = stage_names(fmt)
    final_before = now - window
    latest = await repository.latest_orders(session, merchant.id, before=orders_before, limit=ORDERS_PAGE + 1)
    older = (
        f"/merchant?orders_before={latest[ORDERS_PAGE - 1][0].id}#orders-heading"
        if len(latest) > ORDERS_PAGE
        else None
    )
    orders = Table(
        fmt.gettext("Your latest orders") if orders_before is None else fmt.gettext("Your older orders"),
        [
            fmt.gettext("Order"),
            fmt.gettext("Placed"),
            fmt.gettext("Stage"),
            fmt.gettext("Donation"),
            fmt.gettext("Net"),
        ],
        [
            [
                _link(f"/merchant/orders/{order.id}", row.order_id),
                fmt.timestamp(row.placed_at),
                names[row.stage],
                fmt.money(row.donation.amount, row.currency),
                fmt.money(row.net.amount, row.currency),
            ]
            for order, row in (
                (o, donations.donation_row(o, status, final_before=final_before))
                for o, status in latest[:ORDERS_PAGE]
            )
        ],
    )
    impact = await merchant_impact(
        session,
        merchant.id,
        placed_from=None,
        placed_to=None,
        now=now,
        window=window,
        base_currency=base_currency,
    )
    impact_by_country = Table(
        fmt.gettext("Love Packages your donations paid for, by country"),
        [fmt.gettext("Country"), fmt.gettext("Packages funded"), fmt.gettext("Accepted by the school")],
        [[fmt.country(c.country), c.packages_funded, c.packages_delivered] for c in impact.by_country],
    )
    return Dashboard(
        merchant, rules, stages, charts, statements, orders, figures.orders, older, impact, impact_by_country
    )


# ---- drill-down: a statement's lines, an order's trail ----


@dataclass(frozen=True, slots=True)
class StatementPage:
    statement: StatementWithLines
    status: str
    total: str
    lines: Table


async def statement_page(
    session: AsyncSession, merchant: Merchant, statement_id: str, fmt: Formatter
) -> StatementPage | None:
    """One of this merchant's statements with its lines: `GET /v1/statements/{id}`'s figures. Another
    merchant's statement is None, as an unknown one."""
    found = await repository.merchant_statement(session, merchant.id, statement_id)
    if found is None:
        return None
    statement = await statement_with_lines(session, found)
    kinds = {
        "donation": fmt.gettext("Donation"),
        "credit": fmt.gettext("Credit for a refund"),
        "carried_in": fmt.gettext("Carried in from an earlier statement"),
        "carried_out": fmt.gettext("Carried to the next statement"),
    }
    currency = statement.currency
    lines = Table(
        fmt.gettext("Lines of this statement"),
        [fmt.gettext("Order"), fmt.gettext("Line"), fmt.gettext("Amount")],
        [
            [
                _link(f"/merchant/orders/{order}", line.order_id),
                kinds[line.kind],
                fmt.money(line.amount.amount, currency),
            ]
            for line, order in zip(
                statement.lines, await repository.statement_line_orders(session, statement.id), strict=True
            )
        ],
        [fmt.gettext("Total"), "–", fmt.money(statement.total.amount, currency)],
    )
    return StatementPage(
        statement,
        statement_statuses(fmt)[statement.status],
        fmt.money(statement.total.amount, currency),
        lines,
    )


@dataclass(frozen=True, slots=True)
class OrderPage:
    order: OrderDonationOut
    stage: str
    donation: str
    reversed: str
    net: str
    trail: Table


async def order_page(
    session: AsyncSession, merchant: Merchant, order_id: str, *, final_before: datetime, fmt: Formatter
) -> OrderPage | None:
    """One of this merchant's orders and its trail: `GET /v1/orders/{order_id}`'s figures. Another merchant's
    order is None, as an unknown one."""
    found = await repository.merchant_order(session, merchant.id, order_id)
    if found is None:
        return None
    order = await donations.order_donation_of(session, *found, final_before=final_before)
    package_stages = {
        "in_transit": fmt.gettext("On its way"),
        "delivered": fmt.gettext("Accepted by the school"),
        "written_off": fmt.gettext("Written off"),
        "in_stock": fmt.gettext("Back in stock"),
        "released": fmt.gettext("Released to the pool"),
    }
    trail = Table(
        fmt.gettext("Where this donation went"),
        [
            fmt.gettext("Love Package"),
            fmt.gettext("Your share"),
            fmt.gettext("Country"),
            fmt.gettext("Region"),
            fmt.gettext("Grade"),
            fmt.gettext("Status"),
            fmt.gettext("Reached the school"),
        ],
        [
            [
                item.package_id,
                fmt.money(item.share.amount, item.share.currency),
                fmt.country(item.country) if item.country else "–",
                item.region or "–",
                item.grade or "–",
                package_stages[item.stage],
                fmt.timestamp(item.delivered_at) if item.delivered_at else "–",
            ]
            for item in order.trail
        ],
    )
    currency = order.currency
    return OrderPage(
        order,
        stage_names(fmt)[order.stage],
        fmt.money(order.donation.amount, currency),
        fmt.money(order.reversed.amount, currency),
        fmt.money(order.net.amount, currency),
        trail,
    )


# ---- the CSV export ----

CSV_COLUMNS = [
    "order_id",
    "placed_at",
    "stage",
    "currency",
    "donation",
    "reversed",
    "net",
    "donation_minor_units",
    "reversed_minor_units",
    "net_minor_units",
]


async def donations_csv(
    sessionmaker: async_sessionmaker[AsyncSession],
    merchant_id: str,
    *,
    final_before: datetime,
    page_size: int = 1000,
) -> AsyncIterator[str]:
    """The merchant's donations, one row per order, oldest first: the rows of `GET /v1/merchants/{id}/donations`,
    read from one snapshot of the database page by page."""
    yield csv_text([CSV_COLUMNS])
    async with sessionmaker() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
        after: str | None = None
        while True:
            rows = await donations_repository.merchant_orders(
                session, merchant_id, after=after, limit=page_size
            )
            if not rows:
                return
            yield csv_text(
                _donation_cells(donations.donation_row(order, status, final_before=final_before))
                for order, status in rows
            )
            after = rows[-1][0].id


def _donation_cells(row: DonationRow) -> list[Cell]:
    return [
        row.order_id,
        row.model_dump(mode="json")["placed_at"],
        row.stage,
        row.currency,
        major_units(row.donation.amount, row.currency),
        major_units(row.reversed.amount, row.currency),
        major_units(row.net.amount, row.currency),
        row.donation.amount,
        row.reversed.amount,
        row.net.amount,
    ]


# ---- the billing page ----


@dataclass(frozen=True, slots=True)
class BillingPage:
    merchant: Merchant
    method: str
    card: str | None
    publishable_key: str | None
    """None: this service takes no cards (Stripe not configured), so the page offers none."""


def billing_page(merchant: Merchant, gateway: StripeGateway | None, fmt: Formatter) -> BillingPage:
    profile = billing.profile_of(merchant)
    methods = {
        "stripe": fmt.gettext("Your statements are charged to your card through Stripe."),
        "bank_transfer": fmt.gettext("You pay your statements by bank transfer."),
        None: fmt.gettext("No way to pay is set up yet: your statements wait until one is."),
    }
    return BillingPage(
        merchant=merchant,
        method=methods[profile.method],
        card=profile.payment_method.label if profile.payment_method else None,
        publishable_key=gateway.publishable_key if gateway is not None else None,
    )


async def start_card_setup(
    session: AsyncSession, gateway: StripeGateway | None, merchant: Merchant
) -> SetupIntentOut:
    """A SetupIntent for the signed-in merchant's own Stripe customer (see `settlement.billing`)."""
    return await billing.start_card_setup(session, billing.require_gateway(gateway), merchant)


async def complete_card_setup(
    session: AsyncSession, gateway: StripeGateway | None, merchant: Merchant, setup_intent_id: str
) -> BillingProfileOut:
    """The card confirmed in the browser becomes the one the merchant's statements are charged to."""
    gateway = billing.require_gateway(gateway)
    return billing.profile_of(await billing.complete_card_setup(session, gateway, merchant, setup_intent_id))
