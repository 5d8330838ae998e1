"""`g4g audit` / `GET /v1/audit`: recompute everything from the ledger's entries and report any broken invariant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core import partitions
from app.core.ids import new_id
from app.donations.calculation import reversed_total
from app.ledger import accounts
from app.logistics.machine import ALLOCATION_STATUS, PACKAGE_STAGE
from app.models import AuditRun
from app.reports import repository as reports_repository
from app.reports import rollups

EXAMPLES = 10


class AuditCheck(BaseModel):
    name: str
    description: str
    ok: bool
    violations: int
    examples: list[dict[str, Any]]


class AuditReport(BaseModel):
    ok: bool
    checked_at: datetime
    checks: list[AuditCheck]


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), params)
    return [dict(row._mapping) for row in result]


async def _unbalanced_entries(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT entry_id, currency, sum(amount) AS off_by FROM ledger_postings
           GROUP BY entry_id, currency HAVING sum(amount) <> 0""",
    )


async def _entries_without_postings(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT e.id AS entry_id, e.cause_type, e.cause_id FROM ledger_entries e
           WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id)""",
    )


async def _orders_match_ledger(session: AsyncSession) -> list[dict[str, Any]]:
    # What each order still owes per the ledger, from its entries' postings on the merchant's receivable.
    return await _rows(
        session,
        """SELECT o.external_id AS order_id, o.platform_id, o.donation_amount - o.reversed_amount AS expected,
                  coalesce(l.total, 0) AS ledger
           FROM orders o
           LEFT JOIN (SELECT e.order_id, sum(p.amount) AS total FROM ledger_entries e
                      JOIN ledger_postings p ON p.entry_id = e.id
                      WHERE (p.account LIKE 'merchant_%_pledges!_receivable' ESCAPE '!'
                             OR p.account LIKE 'merchant_%_credits!_due' ESCAPE '!')
                        AND e.order_id IS NOT NULL
                      GROUP BY e.order_id) l ON l.order_id = o.id
           WHERE o.donation_amount - o.reversed_amount <> coalesce(l.total, 0)""",
    )


async def _refund_totals(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT o.external_id AS order_id, o.platform_id, o.refunded_amount, coalesce(r.total, 0) AS refunds
           FROM orders o LEFT JOIN (SELECT order_id, sum(amount) AS total FROM order_refunds GROUP BY order_id) r
             ON r.order_id = o.id
           WHERE o.refunded_amount <> coalesce(r.total, 0)""",
    )


async def _reversals_follow_the_rule(session: AsyncSession) -> list[dict[str, Any]]:
    """Each order's reversed total is exactly the SPEC's proportional figure (or all of it, if cancelled)."""
    broken: list[dict[str, Any]] = []
    result = await session.stream(
        text(
            """SELECT external_id, platform_id, donation_amount, base_amount, refunded_amount, reversed_amount,
                      cancelled_at IS NOT NULL AS cancelled FROM orders"""
        )
    )
    async for row in result:
        expected = reversed_total(
            donation=row.donation_amount,
            base=row.base_amount,
            refunded=row.refunded_amount,
            cancelled=row.cancelled,
        )
        if expected != row.reversed_amount:
            broken.append(
                {
                    "order_id": row.external_id,
                    "platform_id": row.platform_id,
                    "reversed": row.reversed_amount,
                    "expected": expected,
                }
            )
    return broken


async def _balances_match_orders(session: AsyncSession) -> list[dict[str, Any]]:
    """Every merchant's receivable balance, from entries alone, equals what its orders still pledge."""
    return await _rows(
        session,
        """WITH ledger AS (
               SELECT split_part(account, ':', 2) AS merchant_id, currency, sum(amount) AS balance
               FROM ledger_postings WHERE account LIKE 'merchant_%_pledges!_receivable' ESCAPE '!'
               GROUP BY 1, 2),
           domain AS (
               SELECT merchant_id, currency, sum(balance) AS balance FROM (
                   SELECT merchant_id, currency, donation_amount - reversed_amount AS balance
                   FROM orders WHERE statement_id IS NULL
                   UNION ALL  -- remainders Stripe could not take, waiting for the next statement
                   SELECT merchant_id, currency, amount FROM statement_carryovers WHERE into_statement_id IS NULL
               ) pending GROUP BY 1, 2)
           SELECT coalesce(l.merchant_id, d.merchant_id) AS merchant_id, coalesce(l.currency, d.currency) AS currency,
                  coalesce(l.balance, 0) AS ledger, coalesce(d.balance, 0) AS orders
           FROM ledger l FULL JOIN domain d ON l.merchant_id = d.merchant_id AND l.currency = d.currency
           WHERE coalesce(l.balance, 0) <> coalesce(d.balance, 0) OR coalesce(l.balance, 0) < 0""",
    )


async def _statements_sum_their_lines(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT s.id AS statement_id, s.total, coalesce(sum(l.amount), 0) AS lines
           FROM statements s LEFT JOIN statement_lines l ON l.statement_id = s.id
           GROUP BY s.id, s.total HAVING s.total <> coalesce(sum(l.amount), 0)""",
    )


async def _settlement_balances(session: AsyncSession) -> list[dict[str, Any]]:
    """Billed receivables equal unpaid statements; credits due equal uncredited reversals on billed orders."""
    return await _rows(
        session,
        """WITH ledger AS (
               SELECT split_part(account, ':', 2) AS merchant_id, split_part(account, ':', 3) AS account, currency,
                      sum(amount) AS balance
               FROM ledger_postings
               WHERE account LIKE 'merchant_%_billed!_receivable' ESCAPE '!'
                  OR account LIKE 'merchant_%_credits!_due' ESCAPE '!'
               GROUP BY 1, 2, 3),
           expected AS (
               SELECT merchant_id, 'billed_receivable' AS account, currency, sum(total) AS balance
               FROM statements WHERE status <> 'paid' GROUP BY 1, 2, 3
               UNION ALL
               SELECT merchant_id, 'credits_due', currency, -sum(reversed_amount - settled_reversed)
               FROM orders WHERE statement_id IS NOT NULL GROUP BY 1, 2, 3)
           SELECT coalesce(l.merchant_id, e.merchant_id) AS merchant_id, coalesce(l.account, e.account) AS account,
                  coalesce(l.currency, e.currency) AS currency, coalesce(l.balance, 0) AS ledger,
                  coalesce(e.balance, 0) AS expected
           FROM ledger l FULL JOIN expected e
             ON l.merchant_id = e.merchant_id AND l.account = e.account AND l.currency = e.currency
           WHERE coalesce(l.balance, 0) <> coalesce(e.balance, 0)""",
    )


async def _collected_money_is_all_accounted(session: AsyncSession) -> list[dict[str, Any]]:
    """Per currency, what paid statements brought in is either waiting unconverted or was converted."""
    return await _rows(
        session,
        """WITH paid AS (SELECT currency, sum(total) AS amount FROM statements WHERE status = 'paid' GROUP BY 1),
                unconverted AS (SELECT currency, sum(amount) AS amount FROM ledger_postings
                                WHERE account = 'programme:collected_unconverted' GROUP BY 1),
                converted AS (SELECT currency, sum(amount) AS amount FROM fx_conversions GROUP BY 1)
           SELECT coalesce(p.currency, u.currency, c.currency) AS currency, coalesce(p.amount, 0) AS paid,
                  coalesce(u.amount, 0) AS unconverted, coalesce(c.amount, 0) AS converted
           FROM paid p FULL JOIN unconverted u ON u.currency = p.currency
                FULL JOIN converted c ON c.currency = coalesce(p.currency, u.currency)
           WHERE coalesce(p.amount, 0) <> coalesce(u.amount, 0) + coalesce(c.amount, 0)""",
    )


async def _conversions_became_sources(session: AsyncSession) -> list[dict[str, Any]]:
    """Every statement's converted money entered the pool queue exactly, attributed to its orders."""
    return await _rows(
        session,
        """SELECT c.statement_id, c.base_amount, coalesce(s.amount, 0) AS sources
           FROM fx_conversions c
           LEFT JOIN (SELECT statement_id, sum(amount) AS amount FROM funding_sources WHERE kind = 'collected'
                      GROUP BY 1) s ON s.statement_id = c.statement_id
           WHERE c.base_amount <> coalesce(s.amount, 0)
             AND EXISTS (SELECT 1 FROM statement_lines l WHERE l.statement_id = c.statement_id AND l.amount > 0)""",
    )


async def _pool_is_the_unspent_queue(session: AsyncSession) -> list[dict[str, Any]]:
    """The pool's balance, from entries alone, is the queue's money not yet in a package; never negative. (Its
    currency is the base currency: a posting to the pool in any other currency shows up here too.)"""
    return await _rows(
        session,
        """WITH ledger AS (SELECT currency, sum(amount) AS balance FROM ledger_postings
                           WHERE account = 'programme:pool' GROUP BY 1),
                queue AS (SELECT currency, sum(amount) AS amount FROM funding_sources GROUP BY 1),
                spent AS (SELECT currency, sum(cost) AS amount FROM love_packages GROUP BY 1)
           SELECT coalesce(l.currency, q.currency) AS currency, coalesce(l.balance, 0) AS ledger,
                  coalesce(q.amount, 0) - coalesce(s.amount, 0) AS unspent
           FROM ledger l FULL JOIN queue q ON q.currency = l.currency
                LEFT JOIN spent s ON s.currency = coalesce(l.currency, q.currency)
           WHERE coalesce(l.balance, 0) <> coalesce(q.amount, 0) - coalesce(s.amount, 0) OR coalesce(l.balance, 0) < 0""",
    )


async def _packages_funded_exactly(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT k.id AS package_id, k.cost, coalesce(f.amount, 0) AS funded
           FROM love_packages k LEFT JOIN (SELECT package_id, sum(amount) AS amount FROM package_funding GROUP BY 1) f
             ON f.package_id = k.id
           WHERE k.cost <> coalesce(f.amount, 0)""",
    )


async def _no_money_spent_twice(session: AsyncSession) -> list[dict[str, Any]]:
    """The pool queue's sources follow each other without gap or overlap from 0, and so do the packages'
    stretches, never past the queue's end: every unit of money is in one source and pays for at most one
    package, so no order's money pays for more than it brought."""
    return await _rows(
        session,
        """WITH sources AS (SELECT 'source ' || id AS what, start_offset AS starts,
                                   coalesce(lag(end_offset) OVER (ORDER BY start_offset), 0) AS previous_end
                            FROM funding_sources),
                packages AS (SELECT 'package ' || id AS what, funding_start AS starts,
                                    coalesce(lag(funding_end) OVER (ORDER BY funding_start), 0) AS previous_end
                             FROM love_packages),
                tail AS (SELECT coalesce(max(end_offset), 0) AS tail FROM funding_sources)
           SELECT what, starts, previous_end FROM sources WHERE starts <> previous_end
           UNION ALL
           SELECT what, starts, previous_end FROM packages WHERE starts <> previous_end
           UNION ALL
           SELECT 'package ' || k.id, k.funding_end, tail.tail FROM love_packages k, tail WHERE k.funding_end > tail.tail""",
    )


async def _package_money_matches_boxes(session: AsyncSession) -> list[dict[str, Any]]:
    """Each package account holds exactly the cost of the packages in its stage, per currency: assigned
    (allocated, shipped, delivered but not yet confirmed), delivered (accepted), written off (damaged, missing),
    in stock."""
    return await _rows(
        session,
        f"""WITH ledger AS (SELECT account, currency, sum(amount) AS balance FROM ledger_postings
                           WHERE account LIKE 'programme:packages:%' GROUP BY 1, 2),
                stage(status, account) AS (VALUES {_stage_accounts()}),
                boxes AS (SELECT stage.account, k.currency, sum(k.cost) AS amount
                          FROM love_packages k JOIN stage ON stage.status = k.status GROUP BY 1, 2)
           SELECT coalesce(l.account, b.account) AS account, coalesce(l.currency, b.currency) AS currency,
                  coalesce(l.balance, 0) AS ledger, coalesce(b.amount, 0) AS packages
           FROM ledger l FULL JOIN boxes b ON b.account = l.account AND b.currency = l.currency
           WHERE coalesce(l.balance, 0) <> coalesce(b.amount, 0)""",  # noqa: S608 - constants
    )


async def _allocated_is_in_the_boxes(session: AsyncSession) -> list[dict[str, Any]]:
    """Per currency, what left the pool for packages (the queue's spent money, less what cancelled shipments
    released back into it) is exactly in transit + delivered + written off + in stock."""
    return await _rows(
        session,
        """WITH spent AS (SELECT s.currency, sum(f.amount) AS amount FROM package_funding f
                          JOIN funding_sources s ON s.id = f.source_id GROUP BY 1),
                released AS (SELECT currency, sum(amount) AS amount FROM funding_sources
                             WHERE kind = 'released' GROUP BY 1),
                stages AS (SELECT currency, sum(amount) AS amount FROM ledger_postings
                           WHERE account LIKE 'programme:packages:%' GROUP BY 1)
           SELECT coalesce(sp.currency, r.currency, st.currency) AS currency,
                  coalesce(sp.amount, 0) - coalesce(r.amount, 0) AS allocated, coalesce(st.amount, 0) AS stages
           FROM spent sp FULL JOIN released r ON r.currency = sp.currency
                FULL JOIN stages st ON st.currency = coalesce(sp.currency, r.currency)
           WHERE coalesce(sp.amount, 0) - coalesce(r.amount, 0) <> coalesce(st.amount, 0)""",
    )


_STAGE_ACCOUNTS = {
    "in_transit": accounts.PACKAGES_ASSIGNED,
    "delivered": accounts.PACKAGES_DELIVERED,
    "written_off": accounts.PACKAGES_WRITTEN_OFF,
    "in_stock": accounts.PACKAGES_IN_STOCK,
}


def _stage_accounts() -> str:
    """(package status, its stage's account) for every status whose money is in a package account (a cancelled
    box's went back to the pool)."""
    return ", ".join(
        f"('{status}', '{_STAGE_ACCOUNTS[stage]}')"
        for status, stage in PACKAGE_STAGE.items()
        if stage in _STAGE_ACCOUNTS
    )


def _pairs(mapping: dict[str, tuple[str, ...]]) -> str:
    """A VALUES list of (key, value) pairs, from a mapping of constant names (the state machine's tables)."""
    return ", ".join(f"('{key}', '{value}')" for key, values in mapping.items() for value in values)


async def _boxes_follow_their_shipments(session: AsyncSession) -> list[dict[str, Any]]:
    """Each student's record is where its shipment's status puts it (`machine.ALLOCATION_STATUS`), and each package
    is where its latest record puts it (returned or cancelled from stock: in stock; cancelled new: cancelled)."""
    return await _rows(
        session,
        f"""WITH allowed(shipment_status, allocation_status) AS (VALUES {_pairs(ALLOCATION_STATUS)}),
                 latest AS (SELECT DISTINCT ON (package_id) package_id, status, from_stock FROM allocations
                            ORDER BY package_id, created_at DESC, id DESC)
            SELECT 'allocation' AS what, a.id, a.status, s.status AS shipment_status
            FROM allocations a JOIN shipments s ON s.id = a.shipment_id
            WHERE NOT EXISTS (SELECT 1 FROM allowed w
                              WHERE w.shipment_status = s.status AND w.allocation_status = a.status)
            UNION ALL
            SELECT 'package', k.id, k.status, l.status
            FROM love_packages k JOIN latest l ON l.package_id = k.id
            WHERE k.status <> CASE WHEN l.status = 'returned' THEN 'in_stock'
                                   WHEN l.status = 'cancelled' AND l.from_stock THEN 'in_stock'
                                   ELSE l.status END""",  # noqa: S608 - constants from the state machine
    )


async def _carryovers_match_lines(session: AsyncSession) -> list[dict[str, Any]]:
    """Every remainder carried out of a statement is one carryover of the same amount, and every carryover billed
    again is a carried-in line of the statement it went into."""
    return await _rows(
        session,
        """WITH lines AS (
               SELECT statement_id, kind, sum(abs(amount)) AS amount FROM statement_lines
               WHERE kind IN ('carried_in', 'carried_out') GROUP BY 1, 2),
           carried AS (
               SELECT from_statement_id AS statement_id, 'carried_out' AS kind, sum(amount) AS amount
               FROM statement_carryovers GROUP BY 1
               UNION ALL
               SELECT into_statement_id, 'carried_in', sum(amount) FROM statement_carryovers
               WHERE into_statement_id IS NOT NULL GROUP BY 1)
           SELECT coalesce(l.statement_id, c.statement_id) AS statement_id, coalesce(l.kind, c.kind) AS kind,
                  coalesce(l.amount, 0) AS lines, coalesce(c.amount, 0) AS carryovers
           FROM lines l FULL JOIN carried c ON c.statement_id = l.statement_id AND c.kind = l.kind
           WHERE coalesce(l.amount, 0) <> coalesce(c.amount, 0)""",
    )


async def _report_rollups_match_orders(session: AsyncSession) -> list[dict[str, Any]]:
    """The public report's rollups, brought up to date in a snapshot of their own (rolled back: the audit
    writes nothing), against the same figures recomputed from every order."""
    if not isinstance(session.bind, AsyncEngine):
        raise TypeError("the audit's session is bound to an engine")
    # Behind the report's refresh lock, taken before the snapshot (as a refresh does), so that no refresh
    # commits new rollups between this snapshot and the rows it brings up to date.
    async with AsyncSession(session.bind) as lock, lock.begin():
        await reports_repository.try_lock_refresh(lock, rollups.WATERMARK, wait=True)
        async with AsyncSession(session.bind) as own:
            await own.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            now = await own.scalar(text("SELECT now()"))
            found = await rollups.mismatches(own, now)
            await own.rollback()
    return found


async def _no_half_processed_deliveries(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        "SELECT platform_id, webhook_id FROM webhook_deliveries WHERE status = 'processing'",
    )


async def _default_partitions_empty(session: AsyncSession) -> list[dict[str, Any]]:
    return await partitions.rows_in_default(session)


CHECKS: list[tuple[str, str, Callable[[AsyncSession], Awaitable[list[dict[str, Any]]]]]] = [
    ("entries_balance", "every entry's postings sum to zero in each currency", _unbalanced_entries),
    ("entries_have_postings", "every entry moves money", _entries_without_postings),
    (
        "orders_match_ledger",
        "each order's donation less reversals equals its ledger postings",
        _orders_match_ledger,
    ),
    ("refund_totals", "each order's refunded total equals its refunds", _refund_totals),
    (
        "reversals_follow_rule",
        "each order's reversal is round_half_even(D * min(R, base) / base), or D if cancelled",
        _reversals_follow_the_rule,
    ),
    (
        "balances_match_orders",
        "each merchant's receivable balance equals its unbilled orders' net pledges and carried remainders, >= 0",
        _balances_match_orders,
    ),
    ("statements_sum_lines", "each statement's total is the sum of its lines", _statements_sum_their_lines),
    (
        "carryovers_match_lines",
        "each carried remainder is one carryover out of its statement and, once billed, a line of the next",
        _carryovers_match_lines,
    ),
    (
        "settlement_balances",
        "billed receivables equal unpaid statements; credits due equal uncredited reversals",
        _settlement_balances,
    ),
    (
        "collected_accounted",
        "paid money is unconverted or converted",
        _collected_money_is_all_accounted,
    ),
    (
        "conversions_became_sources",
        "each statement's converted money entered the pool queue exactly, attributed to its orders",
        _conversions_became_sources,
    ),
    (
        "pool_is_unspent_queue",
        "the pool's balance is the queue's money not yet in a package, >= 0",
        _pool_is_the_unspent_queue,
    ),
    ("packages_funded_exactly", "each package's funding sums to its cost", _packages_funded_exactly),
    (
        "no_money_spent_twice",
        "no order's money pays for more than it brought; what is spent is the front of the queue",
        _no_money_spent_twice,
    ),
    (
        "package_money_matches_boxes",
        "each package account holds the cost of the packages in its stage, per currency",
        _package_money_matches_boxes,
    ),
    (
        "allocated_is_in_the_boxes",
        "money allocated to packages (spent less released) = in transit + delivered + written off + in stock",
        _allocated_is_in_the_boxes,
    ),
    (
        "boxes_follow_their_shipments",
        "each student's record and each package are where their shipment's events put them",
        _boxes_follow_their_shipments,
    ),
    ("inbox_settled", "no delivery was committed half-processed", _no_half_processed_deliveries),
    (
        "partitions_made_ahead",
        "no row of a partitioned table fell into its default partition (each month was made in time)",
        _default_partitions_empty,
    ),
    (
        "report_rollups_match_orders",
        "the public report's order figures kept from the watermark equal a recomputation from every order",
        _report_rollups_match_orders,
    ),
]


async def run_audit(session: AsyncSession, *, now: datetime) -> AuditReport:
    checks = []
    for name, description, check in CHECKS:
        violations = await check(session)
        checks.append(
            AuditCheck(
                name=name,
                description=description,
                ok=not violations,
                violations=len(violations),
                examples=[{k: _plain(v) for k, v in row.items()} for row in violations[:EXAMPLES]],
            )
        )
    return AuditReport(ok=all(c.ok for c in checks), checked_at=now, checks=checks)


Via = Literal["cli", "console", "api", "job"]


async def run_and_record_audit(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    via: Via,
    key_id: str | None = None,
) -> AuditReport:
    """`run_audit` on `session`, then one `audit_runs` row (when, by what, the failed checks' names) written in a
    short transaction of its own: recorded whatever becomes of the caller's (a read-only one, a rolled-back one)."""
    report = await run_audit(session, now=now)
    async with sessionmaker() as own, own.begin():
        own.add(
            AuditRun(
                id=new_id("aud"),
                checked_at=report.checked_at,
                ok=report.ok,
                failed_checks=[c.name for c in report.checks if not c.ok],
                via=via,
                key_id=key_id,
            )
        )
    return report


async def last_audit_run(session: AsyncSession) -> AuditRun | None:
    """The run recorded last: ids are time-ordered by the recording machine's clock, so this is the latest run
    even when a caller's `now` comes from another clock (a test's frozen one, the CLI's system clock)."""
    run: AuditRun | None = await session.scalar(select(AuditRun).order_by(AuditRun.id.desc()).limit(1))
    return run


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
