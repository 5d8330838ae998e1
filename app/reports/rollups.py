"""The public report's order figures, kept in small rollup rows from a watermark, so that a refresh reads rows
whose number grows with hours and months, not with orders.

What is kept (`app/models/report_rollup.py`): unbilled orders by the hour they were placed (the month, for those
whose donation was reversed whole: they are at that stage whatever the time), currency and whether their donation
was reversed whole; each statement's orders by month placed and currency at the statement's stage
(billed, collected, in_pool); their sums by month, currency and stage; the merchants that gave. Nothing on the
order webhook's path writes them: the order path only leaves the id of its transaction on the rows it inserts
(a column default) and, for refunds and cancellations, a row a trigger writes; `catch_up` folds in what
committed since the last time.

The watermark is a database snapshot, not a sequence. A sequence or a timestamp read from the rows skips rows
committed out of order: a transaction that took id 100 may commit after one that took 101 and after a reader
moved its watermark past 101. Instead every change is stamped with its transaction's id (`xid8`, 64 bits, never
wraps: orders, statements and conversions by a column default; a statement's status by a trigger; a change of an
order's reversed total by a trigger that records it in `report_order_changes`), and `catch_up` runs in one
REPEATABLE READ transaction whose snapshot S_new it records as the new watermark. The changes it folds in are
exactly those of the transactions visible in S_new and not visible in the previous watermark S_old
(`pg_visible_in_snapshot`): a transaction still running at S_old is in S_old's list of running transactions, so it
is picked up by the first catch-up that sees it committed, however late it commits. Rows whose id is below
S_old's xmin were all visible in S_old, so the search starts there (BRIN indexes on orders; a long-running
transaction only widens the search, never loses a row). Catch-ups are serialised by the report's advisory lock
taken before the snapshot, and a second one on the same watermark would fail on the watermark row's concurrent
update rather than count twice.

How an order's contribution moves: its donation, currency and time never change after it is recorded; it is
billed once (`statement_id` set, never cleared), by a statement inserted in the same transaction (settlement bills
in one); a statement only moves forward (billed → collected → in_pool). Its reversed total does move, by refunds,
by a cancellation (which reverses what refunds left, with no refund row), by whatever else writes
`orders.reversed_amount`: so the database itself records every change of that column, not the code paths that
make one. A trigger (`orders_record_reversed_change`, AFTER UPDATE OF reversed_amount, when it differs) inserts
the change, new less old, with its transaction's id into `report_order_changes`. For each order touched since
S_old (recorded, its reversed total changed, or billed since), its contribution at S_old is then known without
looking back in time: none if it was recorded since; otherwise its reversed total at S_old, which is its total now
less the changes since (changes to one row are made one transaction after another, so those committed after S_old
are the latest ones, and their sum is exactly what moved since S_old, in whatever order they were recorded),
unbilled unless its statement was visible at S_old. The catch-up adds the new contribution and takes away the
old, then moves the cells of each statement whose stage changed since. It then deletes the changes its snapshot
sees (all folded in: those committed later are not visible to it and stay), so `report_order_changes` holds about
one refresh interval's reversals and is read whole. A change of an order's donation, currency, time or statement
outside these paths (a data fix in a migration) is not seen: such a migration deletes the watermark, and the next
catch-up rebuilds the rollups from every order.

The figures are exact. An unbilled order is final once its return window has passed (`placed_at <=
final_before`): the rollups give every whole hour before and after the one `final_before` falls in, and `cells`
splits that hour by reading its unbilled orders (a partial index on the unbilled orders' `placed_at`, so the read
is one hour's orders, not history), in the same snapshot as the rollups it was caught up to. `full_cells`
recomputes the same figures from every order, and the tests and `g4g audit` compare the two."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.reports import repository
from app.reports.repository import StageCell

# The watermark's name, also the name of the report whose refresh lock serialises catch-ups.
WATERMARK = "transparency"

_STATEMENT_STAGE = """CASE WHEN s.status = 'paid' AND c.id IS NOT NULL THEN 'in_pool'
                           WHEN s.status = 'paid' THEN 'collected' ELSE 'billed' END"""


async def catch_up(session: AsyncSession, now: datetime) -> int:
    """Fold every change committed since the watermark into the rollups (everything, the first time), in the
    caller's transaction, which must be REPEATABLE READ and begun here (its snapshot is the new watermark).
    Returns the number of cells that changed (-1 for a full rebuild)."""
    snapshot = str(await session.scalar(text("SELECT pg_current_snapshot()::text")))
    old = await session.scalar(
        text("SELECT snapshot FROM report_watermarks WHERE name = :name"), {"name": WATERMARK}
    )
    if old is None:
        await rebuild(session)
        changed = -1
    else:
        changed = await _fold_changes(session, old)
    # Every change this snapshot sees is now counted (changes committed after it are not visible, so they stay).
    await session.execute(text("DELETE FROM report_order_changes"))
    await session.execute(
        text(
            """INSERT INTO report_watermarks (name, snapshot, updated_at) VALUES (:name, :snapshot, :now)
               ON CONFLICT (name) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at"""
        ),
        {"name": WATERMARK, "snapshot": snapshot, "now": now},
    )
    return changed


async def rebuild(session: AsyncSession) -> None:
    """The rollups from every order, as of the transaction's snapshot."""
    for table in (
        "report_unbilled_cells",
        "report_statement_cells",
        "report_billed_cells",
        "report_merchants",
    ):
        await session.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
    await session.execute(
        text(
            """
            INSERT INTO report_unbilled_cells (placed_hour, currency, fully_reversed, orders, net, reversed)
            SELECT date_trunc(CASE WHEN reversed_amount = donation_amount THEN 'month' ELSE 'hour' END, placed_at,
                              'UTC'),
                   currency, reversed_amount = donation_amount, count(*),
                   sum(donation_amount - reversed_amount), sum(reversed_amount)
            FROM orders WHERE donation_amount > 0 AND statement_id IS NULL
            GROUP BY 1, 2, 3
            """
        )
    )
    await session.execute(
        text(
            f"""
            INSERT INTO report_statement_cells (statement_id, month, currency, stage, orders, net, reversed)
            SELECT o.statement_id, to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYY-MM'), o.currency,
                   min({_STATEMENT_STAGE}), count(*), sum(o.donation_amount - o.reversed_amount),
                   sum(o.reversed_amount)
            FROM orders o JOIN statements s ON s.id = o.statement_id
            LEFT JOIN fx_conversions c ON c.statement_id = s.id
            WHERE o.donation_amount > 0
            GROUP BY 1, 2, 3
            """  # noqa: S608 - fixed fragments only
        )
    )
    await session.execute(
        text(
            """
            INSERT INTO report_billed_cells (month, currency, stage, orders, net, reversed)
            SELECT month, currency, stage, sum(orders), sum(net), sum(reversed) FROM report_statement_cells
            GROUP BY 1, 2, 3
            """
        )
    )
    await session.execute(
        text(
            """INSERT INTO report_merchants (merchant_id)
               SELECT DISTINCT merchant_id FROM orders WHERE donation_amount > 0"""
        )
    )


def _since(column: str, lowest: int) -> str:
    """Rows written by a transaction visible now and not in the old snapshot (`:old`). `lowest` is the old
    snapshot's xmin, an integer from the database, inlined so that each run is planned for it (an index scan of
    the newest rows rather than a generic plan's guess)."""
    return f"{column} >= {int(lowest)} AND NOT pg_visible_in_snapshot({column}::text::xid8, CAST(CAST(:old AS text) AS pg_snapshot))"


async def _fold_changes(session: AsyncSession, old: str) -> int:
    lowest = int(
        await session.scalar(
            text("SELECT pg_snapshot_xmin(CAST(CAST(:old AS text) AS pg_snapshot))::text"), {"old": old}
        )
        or 0
    )
    params = {"old": old}
    new_orders = f"SELECT id FROM orders WHERE {_since('recorded_xid', lowest)}"  # noqa: S608 - see _since
    new_statements = f"SELECT id FROM statements WHERE {_since('recorded_xid', lowest)}"  # noqa: S608
    # Each touched order's contribution now (+) and at the old snapshot (-), summed by the cell it sits in:
    # kind 'u' an unbilled cell (hour, currency, reversed whole), kind 's' a statement's cell (statement, month,
    # currency) at the statement's current stage.
    deltas = await session.execute(
        text(
            f"""
            WITH win_orders AS ({new_orders}),
            win_reversals AS (
                SELECT order_id, sum(reversed_change) AS reversed FROM report_order_changes
                WHERE {_since("recorded_xid", lowest)} GROUP BY order_id),
            win_statements AS ({new_statements}),
            touched AS (
                SELECT id FROM win_orders
                UNION SELECT order_id FROM win_reversals
                UNION SELECT o.id FROM orders o JOIN win_statements w ON o.statement_id = w.id),
            states AS (
                SELECT o.statement_id, o.currency, o.donation_amount AS d, o.reversed_amount AS r,
                       date_trunc('hour', o.placed_at, 'UTC') AS hour,
                       date_trunc('month', o.placed_at, 'UTC') AS month_start,
                       to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
                       wo.id IS NULL AS existed, o.reversed_amount - coalesce(wr.reversed, 0) AS old_r,
                       o.statement_id IS NOT NULL AND ws.id IS NULL AS billed_before
                FROM touched t JOIN orders o ON o.id = t.id
                LEFT JOIN win_orders wo ON wo.id = o.id
                LEFT JOIN win_reversals wr ON wr.order_id = o.id
                LEFT JOIN win_statements ws ON ws.id = o.statement_id
                WHERE o.donation_amount > 0),
            contributions AS (
                SELECT statement_id,
                       CASE WHEN statement_id IS NULL THEN (CASE WHEN r = d THEN month_start ELSE hour END) END
                           AS hour,
                       CASE WHEN statement_id IS NULL THEN r = d END AS fully, month, currency,
                       1 AS orders, d - r AS net, r AS reversed
                FROM states
                UNION ALL
                SELECT CASE WHEN billed_before THEN statement_id END,
                       CASE WHEN NOT billed_before THEN (CASE WHEN old_r = d THEN month_start ELSE hour END) END,
                       CASE WHEN NOT billed_before THEN old_r = d END, month, currency,
                       -1, -(d - old_r), -old_r
                FROM states WHERE existed)
            SELECT x.statement_id, x.hour, x.fully, x.month, x.currency,
                   sum(x.orders) AS orders, sum(x.net) AS net, sum(x.reversed) AS reversed,
                   min({_STATEMENT_STAGE}) AS stage
            FROM contributions x
            LEFT JOIN statements s ON s.id = x.statement_id
            LEFT JOIN fx_conversions c ON c.statement_id = x.statement_id
            GROUP BY 1, 2, 3, 4, 5
            HAVING sum(x.orders) <> 0 OR sum(x.net) <> 0 OR sum(x.reversed) <> 0
            """  # noqa: S608 - fixed fragments and an integer from the database
        ),
        params,
    )
    rows = deltas.all()

    # Statements whose stage moved since (paid, or their money converted): their cells move with them.
    await session.execute(
        text(
            f"""
            WITH changed AS (
                SELECT s.id, {_STATEMENT_STAGE} AS stage FROM statements s
                LEFT JOIN fx_conversions c ON c.statement_id = s.id
                WHERE s.id IN (SELECT id FROM statements WHERE {_since("status_xid", lowest)}
                               UNION SELECT statement_id FROM fx_conversions WHERE {_since("recorded_xid", lowest)})),
            moved AS (
                SELECT m.month, m.currency, m.stage AS old_stage, ch.stage AS new_stage, m.orders, m.net, m.reversed
                FROM report_statement_cells m JOIN changed ch ON ch.id = m.statement_id WHERE m.stage <> ch.stage),
            restaged AS (
                UPDATE report_statement_cells m SET stage = ch.stage FROM changed ch
                WHERE ch.id = m.statement_id AND m.stage <> ch.stage),
            shifts AS (
                SELECT month, currency, old_stage AS stage, -orders AS orders, -net AS net, -reversed AS reversed
                FROM moved
                UNION ALL SELECT month, currency, new_stage, orders, net, reversed FROM moved)
            INSERT INTO report_billed_cells AS b (month, currency, stage, orders, net, reversed)
            SELECT month, currency, stage, sum(orders), sum(net), sum(reversed) FROM shifts GROUP BY 1, 2, 3
            ON CONFLICT (month, currency, stage) DO UPDATE
            SET orders = b.orders + excluded.orders, net = b.net + excluded.net,
                reversed = b.reversed + excluded.reversed
            """  # noqa: S608 - fixed fragments and an integer from the database
        ),
        params,
    )

    unbilled = [r for r in rows if r.statement_id is None]
    billed = [r for r in rows if r.statement_id is not None]
    if unbilled:
        await session.execute(
            text(
                """
                INSERT INTO report_unbilled_cells AS u (placed_hour, currency, fully_reversed, orders, net, reversed)
                SELECT * FROM unnest(CAST(:hours AS timestamptz[]), CAST(:currencies AS text[]),
                                     CAST(:fully AS boolean[]), CAST(:orders AS bigint[]), CAST(:net AS bigint[]),
                                     CAST(:reversed AS bigint[]))
                ON CONFLICT (placed_hour, currency, fully_reversed) DO UPDATE
                SET orders = u.orders + excluded.orders, net = u.net + excluded.net,
                    reversed = u.reversed + excluded.reversed
                """
            ),
            {
                "hours": [r.hour for r in unbilled],
                "currencies": [r.currency for r in unbilled],
                "fully": [r.fully for r in unbilled],
                "orders": [int(r.orders) for r in unbilled],
                "net": [int(r.net) for r in unbilled],
                "reversed": [int(r.reversed) for r in unbilled],
            },
        )
        await session.execute(text("DELETE FROM report_unbilled_cells WHERE orders = 0"))
    if billed:
        columns = {
            "statements": [r.statement_id for r in billed],
            "months": [r.month for r in billed],
            "currencies": [r.currency for r in billed],
            "stages": [r.stage for r in billed],
            "orders": [int(r.orders) for r in billed],
            "net": [int(r.net) for r in billed],
            "reversed": [int(r.reversed) for r in billed],
        }
        await session.execute(
            text(
                """
                WITH d AS (
                    SELECT * FROM unnest(CAST(:statements AS text[]), CAST(:months AS text[]),
                                         CAST(:currencies AS text[]), CAST(:stages AS text[]),
                                         CAST(:orders AS bigint[]), CAST(:net AS bigint[]),
                                         CAST(:reversed AS bigint[]))
                                  AS d(statement_id, month, currency, stage, orders, net, reversed)),
                cells AS (
                    INSERT INTO report_statement_cells AS m
                           (statement_id, month, currency, stage, orders, net, reversed)
                    SELECT * FROM d
                    ON CONFLICT (statement_id, month, currency) DO UPDATE
                    SET orders = m.orders + excluded.orders, net = m.net + excluded.net,
                        reversed = m.reversed + excluded.reversed)
                INSERT INTO report_billed_cells AS b (month, currency, stage, orders, net, reversed)
                SELECT month, currency, stage, sum(orders), sum(net), sum(reversed) FROM d GROUP BY 1, 2, 3
                ON CONFLICT (month, currency, stage) DO UPDATE
                SET orders = b.orders + excluded.orders, net = b.net + excluded.net,
                    reversed = b.reversed + excluded.reversed
                """
            ),
            columns,
        )
        await session.execute(text("DELETE FROM report_statement_cells WHERE orders = 0"))
    await session.execute(text("DELETE FROM report_billed_cells WHERE orders = 0"))
    await session.execute(
        text(
            f"""INSERT INTO report_merchants (merchant_id)
                SELECT DISTINCT merchant_id FROM orders WHERE donation_amount > 0 AND {_since("recorded_xid", lowest)}
                ON CONFLICT DO NOTHING"""  # noqa: S608 - fixed fragments and an integer from the database
        ),
        params,
    )
    return len(rows)


async def cells(session: AsyncSession, *, final_before: datetime) -> list[StageCell]:
    """The public report's cells (`repository.StageCell`), an unbilled order final when placed at or before
    `final_before`: from the rollups, and the unbilled orders of the one hour `final_before` falls in. Read in the
    transaction that brought the rollups up to date (`catch_up`), so that the two agree."""
    rows = await session.execute(
        text(
            """
            WITH boundary AS (
                SELECT to_char(placed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, currency, count(*) AS orders,
                       sum(donation_amount - reversed_amount) AS net, sum(reversed_amount) AS reversed
                FROM orders
                WHERE statement_id IS NULL AND placed_at >= :hour AND placed_at <= :final_before
                  AND donation_amount > 0 AND reversed_amount <> donation_amount
                GROUP BY 1, 2),
            unbilled AS (
                SELECT to_char(placed_hour AT TIME ZONE 'UTC', 'YYYY-MM') AS month, currency,
                       CASE WHEN fully_reversed THEN 'reversed' WHEN placed_hour < :hour THEN 'final'
                            ELSE 'pledged' END AS stage,
                       orders, net, reversed
                FROM report_unbilled_cells
                UNION ALL SELECT month, currency, 'final', orders, net, reversed FROM boundary
                UNION ALL SELECT month, currency, 'pledged', -orders, -net, -reversed FROM boundary)
            SELECT month, currency, stage, sum(orders) AS orders, sum(net) AS net, sum(reversed) AS reversed
            FROM unbilled GROUP BY 1, 2, 3 HAVING sum(orders) > 0
            UNION ALL
            SELECT month, currency, stage, orders, net, reversed FROM report_billed_cells WHERE orders > 0
            ORDER BY 1, 2, 3
            """
        ),
        {"hour": _hour_of(final_before), "final_before": final_before},
    )
    return [StageCell(r.month, r.currency, r.stage, int(r.orders), int(r.net), int(r.reversed)) for r in rows]


def _hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in (the rollups' unbilled cells are by UTC hour)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def merchants(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM report_merchants")) or 0)


async def full_cells(session: AsyncSession, *, final_before: datetime) -> list[StageCell]:
    """The same cells recomputed from every order (for the tests and `g4g audit`)."""
    return await repository.stage_cells(session, final_before=final_before)


async def mismatches(session: AsyncSession, now: datetime) -> list[dict[str, object]]:
    """Where the rollups, brought up to date in the caller's REPEATABLE READ transaction (which the caller rolls
    back), differ from a recomputation from every order in the same snapshot: cells (orders placed up to `now`
    counted final, so that the boundary falls inside the hour orders are arriving in) and the merchants' count."""
    await catch_up(session, now)
    kept = {(c.month, c.currency, c.stage): c for c in await cells(session, final_before=now)}
    full = {(c.month, c.currency, c.stage): c for c in await full_cells(session, final_before=now)}
    found: list[dict[str, object]] = [
        {"cell": "/".join(key), "rollup": repr(kept.get(key)), "orders": repr(full.get(key))}
        for key in sorted(kept.keys() | full.keys())
        if kept.get(key) != full.get(key)
    ]
    counted, recounted = await merchants(session), await repository.merchants_with_orders(session)
    if counted != recounted:
        found.append({"cell": "merchants", "rollup": counted, "orders": recounted})
    return found
