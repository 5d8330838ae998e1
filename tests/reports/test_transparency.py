"""The public transparency report: programme totals from a seeded programme, small counts banded, kept current,
served with ETags."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.jobs import Periodic
from app.reports import repository, rollups
from app.reports.schemas import TransparencyOut
from app.reports.service import TransparencyReport, merchant_figures
from app.worker import periodic_tasks
from tests.helpers import create_merchant, order_cancelled, order_paid, order_refunded, send_event
from tests.jobs import run_task
from tests.settlement.conftest import Programme
from tests.stripe_server import create_chargeable_customer

TEA = [{"sku": "TEA-01", "quantity": 2, "amount": 12800}]  # 12800 × 1.5% + 2 × ¥0.02 = 196 fen
BOOK = [{"sku": "BOOK", "quantity": 1, "amount": 10000}]  # 10000 × 1.5% = 150 cents


async def pay(p: Programme, shop: dict[str, Any], order_id: str, currency: str, items: Any) -> None:
    event = order_paid(
        order_id, merchant=shop["external_id"], currency=currency, items=items, placed_at=p.clock.now()
    )
    assert (await send_event(p.client, p.platform, event)).json() == {"status": "applied"}


async def seed(p: Programme) -> dict[str, dict[str, Any]]:
    """July: tea (CNY) and books (USD) sell, one tea order refunded in full. August: pens (no billing profile)
    and tea sell. Mid-September: settlement charges tea and books, a CNY rate is set, tea sells once more."""
    tea = await p.shop("tea", customer=(await create_chargeable_customer(p.stripe)).customer_id)
    books = await p.shop("books", customer=(await create_chargeable_customer(p.stripe)).customer_id)
    pens = await p.shop("pens", customer=None)
    for n in range(1, 7):
        await pay(p, tea, f"T-{n}", "CNY", TEA)
    for n in range(1, 4):
        await pay(p, books, f"B-{n}", "USD", BOOK)
    refund = order_refunded("T-6", "R-1", 25600, merchant="tea")
    assert (await send_event(p.client, p.platform, refund)).json() == {"status": "applied"}
    p.clock.advance(timedelta(days=35))
    for n in (1, 2):
        await pay(p, pens, f"P-{n}", "CNY", TEA)
    await pay(p, tea, "T-7", "CNY", TEA)
    p.clock.advance(timedelta(days=41))
    run = await p.settle()
    assert sorted((s["total"]["amount"], s["status"]) for s in run["statements"]) == [
        (450, "paid"),
        (1176, "paid"),
    ]
    rate = await p.client.put("/v1/fx-rates/CNY", json={"rate": "0.14"}, headers=p.admin)
    assert rate.status_code == 200
    await pay(p, tea, "T-8", "CNY", TEA)
    return {"tea": tea, "books": books, "pens": pens}


async def test_programme_totals_for_the_public(reported_programme: Programme) -> None:
    p = reported_programme
    await seed(p)

    response = await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=p.app), base_url="http://g4g.test"
    ).get("/v1/transparency")  # no key
    assert response.status_code == 200
    report = response.json()

    assert report["base_currency"] == "USD"
    assert report["merchants_taking_part"] == "<5"  # three merchants
    assert report["orders"] == 10  # 13, rounded down to a multiple of 5
    # pledged 1 (T-8), final 2 (pens), billed 0, collected 9, reversed 1 (T-6): each rounded down to a multiple of
    # 5, the zero as well (so that "<5" is not known to be at least one).
    assert {c["stage"]: c["orders"] for c in report["orders_by_stage"]} == {
        "pledged": "<5",
        "final": "<5",
        "billed": "<5",
        "collected": 5,
        "reversed": "<5",
    }
    cny, usd = report["money_by_stage"]
    assert cny == {
        "currency": "CNY",
        "pledged": 196,
        "final": 392,
        "billed": 0,
        "collected": 1176,
        "in_pool": 1176,
        "reversed": 196,
    }
    assert usd == {
        "currency": "USD",
        "pledged": 0,
        "final": 0,
        "billed": 0,
        "collected": 450,
        "in_pool": 450,
        "reversed": 0,
    }
    # CNY at 0.14: 196 → 27.44 → 27; 392 → 54.88 → 55; 1176 → 164.64, plus 450 → 614.64 → 615.
    assert report["money_by_stage_in_base_currency"] == {
        "currency": "USD",
        "pledged": 27,
        "final": 55,
        "billed": 0,
        "collected": 615,
        "in_pool": 615,
        "reversed": 27,
    }
    assert report["raised"] == {"amount": 670, "currency": "USD"}  # never the pledged 27
    assert report["pledged"] == {"amount": 27, "currency": "USD"}
    assert report["reached_pool"] == {"amount": 615, "currency": "USD"}
    assert report["pool_balance"] == {"amount": 615, "currency": "USD"}
    assert report["reached_pool_share_bps"] == 9179  # 615 / 670
    assert report["rates"] == [{"currency": "CNY", "rate": "0.14"}]
    assert report["not_valued"] == []
    # 9, 3 and 1 orders.
    assert [(m["month"], m["orders"]) for m in report["by_month"]] == [
        ("2026-07", 5),
        ("2026-08", "<5"),
        ("2026-09", "<5"),
    ]
    july, august, september = report["by_month"]
    assert [m["currency"] for m in july["money"]] == ["CNY", "USD"]
    assert (july["money"][0]["collected"], july["money"][1]["collected"]) == (980, 450)  # T-1..T-5, B-1..B-3
    # Money in the pool is valued at what its conversion fetched: the 1176 CNY became 165 USD, July's 980 of them
    # 165 × 980 / 1176 = 137.5, plus 450, rounded once (half-even).
    assert july["in_base_currency"]["collected"] == july["in_base_currency"]["in_pool"] == 588
    assert (august["money"][0]["final"], august["money"][0]["collected"]) == (392, 196)  # pens; T-7
    assert september["money"][0]["pledged"] == 196  # T-8


async def test_the_sql_stage_rule_agrees_with_the_donation_rows(reported_programme: Programme) -> None:
    p = reported_programme
    shops = await seed(p)
    from_rows: Counter[str] = Counter()
    for shop in shops.values():
        page = await p.client.get(f"/v1/merchants/{shop['id']}/donations", headers=p.admin)
        from_rows.update(row["stage"] for row in page.json()["data"] if row["donation"]["amount"] > 0)
    async with p.app.state.sessionmaker() as session:
        cells = await repository.stage_cells(session, final_before=p.clock.now() - timedelta(days=30))
    from_sql: Counter[str] = Counter()
    for cell in cells:
        from_sql["collected" if cell.stage == "in_pool" else cell.stage] += cell.orders
    assert from_sql == from_rows


async def test_a_cancellation_through_the_webhook_moves_the_public_figures(
    reported_programme: Programme,
) -> None:
    """A cancellation reverses an order with no refund row: the public figures (kept in rollups) see it, an
    order refunded in part before as well, and the rollups still equal a recomputation from every order."""
    p = reported_programme
    tea = await p.shop("tea", customer=None)
    for n in (1, 2, 3):
        await pay(p, tea, f"T-{n}", "CNY", TEA)  # 196 fen each
    refund = order_refunded("T-2", "R-1", 6400, merchant="tea")  # half of T-2: 98 fen reversed
    assert (await send_event(p.client, p.platform, refund)).json() == {"status": "applied"}

    async def money() -> dict[str, Any]:
        cny = (await p.client.get("/v1/transparency")).json()["money_by_stage"][0]
        return {stage: cny[stage] for stage in ("pledged", "reversed")}

    assert await money() == {"pledged": 490, "reversed": 98}
    for order in ("T-1", "T-2"):
        cancel = order_cancelled(order, merchant="tea")
        assert (await send_event(p.client, p.platform, cancel)).json() == {"status": "applied"}
    assert await money() == {"pledged": 196, "reversed": 392}

    async with AsyncSession(p.app.state.engine) as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        assert await rollups.mismatches(session, p.clock.now()) == []
        await session.rollback()


async def test_conditional_requests_and_caching(reported_programme: Programme) -> None:
    p = reported_programme
    first = await p.client.get("/v1/transparency")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"  # refreshed on every read in this set-up
    assert first.json()["orders"] == "<5" and first.json()["reached_pool_share_bps"] is None

    again = await p.client.get("/v1/transparency", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # Nothing changed: recomputing keeps the ETag and the time the figures were last updated.
    p.clock.advance(timedelta(minutes=5))
    same = await p.client.get("/v1/transparency")
    assert same.headers["etag"] == etag and same.json()["updated_at"] == first.json()["updated_at"]
    listed = await p.client.get("/v1/transparency", headers={"If-None-Match": f'"nope", W/{etag}'})
    assert listed.status_code == 304

    shop = await p.shop("tea", customer=None)
    await pay(p, shop, "T-1", "CNY", TEA)
    changed = await p.client.get("/v1/transparency", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["orders"] == "<5"
    assert changed.json()["pledged"] == {"amount": 0, "currency": "USD"}  # no CNY rate yet
    assert changed.json()["not_valued"] == ["CNY"]


async def test_older_figures_are_served_while_a_refresh_runs_in_the_background(
    reported_programme: Programme,
) -> None:
    p = reported_programme
    settings = p.app.state.settings
    report = p.app.state.transparency = TransparencyReport(
        p.app.state.sessionmaker,
        p.clock,
        refresh=timedelta(seconds=60),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
    )
    shop = await p.shop("tea", customer=None)
    await pay(p, shop, "T-1", "CNY", TEA)
    assert (await p.client.get("/v1/transparency")).json()["orders"] == "<5"  # the first read computes
    for n in range(2, 7):
        await pay(p, shop, f"T-{n}", "CNY", TEA)
    assert (await p.client.get("/v1/transparency")).json()["orders"] == "<5"  # less than a minute old
    assert not report.refreshing

    p.clock.advance(timedelta(seconds=61))
    stale = await p.client.get("/v1/transparency")
    assert stale.json()["orders"] == "<5"  # served at once, while the refresh runs
    assert stale.headers["cache-control"] == "public, max-age=60"
    assert report.refreshing
    await report.refreshed()
    fresh = await p.client.get("/v1/transparency")
    assert fresh.json()["orders"] == 5 and fresh.headers["etag"] != stale.headers["etag"]


async def test_the_report_takes_no_key_and_no_unknown_parameters(reported_programme: Programme) -> None:
    p = reported_programme
    bad = await p.client.get("/v1/transparency", params={"currency": "USD"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert (
        await p.client.get("/v1/transparency", headers={"Authorization": "Bearer nonsense"})
    ).status_code == 200


async def test_every_process_serves_the_same_figures(
    reported_programme: Programme, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes (two reports on one database): what one computes, the other serves with the same ETag once
    it looks at the shared row again."""
    p = reported_programme
    settings = p.app.state.settings

    def process(refresh: timedelta) -> TransparencyReport:
        return TransparencyReport(
            p.app.state.sessionmaker,
            p.clock,
            refresh=refresh,
            window=timedelta(days=settings.return_window_days),
            base_currency=settings.base_currency,
        )

    # The second never refreshes by itself here: what it serves can only come from the first, through the row.
    first, second = process(timedelta(seconds=60)), process(timedelta(hours=1))
    shop = await p.shop("tea", customer=None)
    await pay(p, shop, "T-1", "CNY", TEA)
    computed = await first.current()
    assert (await second.current()).etag == computed.etag  # read from the row, not computed again

    for n in range(2, 7):
        await pay(p, shop, f"T-{n}", "CNY", TEA)
    p.clock.advance(timedelta(seconds=61))
    await first.current()
    await first.refreshed()
    fresh = await first.current()
    assert fresh.figures().orders == 5
    assert (await second.current()).etag == computed.etag  # its copy, for up to a second
    monkeypatch.setattr("app.reports.service.RECHECK_SECONDS", 0.0)
    caught_up = await second.current()
    assert caught_up.etag == fresh.etag and caught_up.body == fresh.body
    assert not second.refreshing


async def test_a_worker_keeps_the_figures_current_while_nobody_reads_them(
    reported_programme: Programme,
) -> None:
    """The scheduled job recomputes the stored figures once they are due, so the next read finds them fresh."""
    p = reported_programme
    p.app.state.settings = p.app.state.settings.model_copy(update={"transparency_refresh_seconds": 60})
    assert Periodic("reports.refresh_transparency", "* * * * *") in periodic_tasks(p.app.state.settings)
    await run_task(p.app, "reports.refresh_transparency")  # nothing stored yet: computed
    async with p.app.state.sessionmaker() as session:
        first = await repository.summary(session, "transparency")
    assert first is not None and TransparencyOut.model_validate_json(first.body).orders == "<5"

    shop = await p.shop("tea", customer=None)
    for n in range(1, 7):
        await pay(p, shop, f"T-{n}", "CNY", TEA)
    await run_task(p.app, "reports.refresh_transparency")  # not due yet: untouched
    async with p.app.state.sessionmaker() as session:
        assert (await repository.summary(session, "transparency")).etag == first.etag  # type: ignore[union-attr]

    p.clock.advance(timedelta(seconds=60))
    await run_task(p.app, "reports.refresh_transparency")
    async with p.app.state.sessionmaker() as session:
        stored = await repository.summary(session, "transparency")
    assert stored is not None and TransparencyOut.model_validate_json(stored.body).orders == 5


async def test_orders_that_gave_nothing_are_at_no_stage(reported_programme: Programme) -> None:
    """An order placed before the merchant's first rule, or while it had none, gives nothing: it is not one of
    the "orders that gave", nor pledged forever, on the public report or the merchant's figures."""
    p = reported_programme
    shops = await seed(p)

    async def figures() -> tuple[list[Any], int]:
        async with p.app.state.sessionmaker() as session:
            now = p.clock.now()
            cells = await repository.stage_cells(session, final_before=now - timedelta(days=30))
            mine = await merchant_figures(session, shops["tea"]["id"], now=now, window=timedelta(days=30))
        return cells, mine.orders

    before = await figures()
    old = order_paid(
        "T-OLD", merchant="tea", currency="CNY", items=TEA, placed_at=p.clock.now() - timedelta(days=400)
    )
    assert (await send_event(p.client, p.platform, old)).json() == {"status": "applied"}
    await create_merchant(p.client, p.admin, platform_id=p.platform["id"], external_id="no-rule")
    for n in range(6):
        ruleless = order_paid(
            f"NR-{n}", merchant="no-rule", currency="CNY", items=TEA, placed_at=p.clock.now()
        )
        assert (await send_event(p.client, p.platform, ruleless)).json() == {"status": "applied"}
    rows = (await p.client.get(f"/v1/merchants/{shops['tea']['id']}/donations", headers=p.admin)).json()[
        "data"
    ]
    assert [r["donation_reason"] for r in rows if r["order_id"] == "T-OLD"] == ["before-first-rule"]

    assert await figures() == before
    report = (await p.client.get("/v1/transparency")).json()
    assert report["orders"] == 10 and report["merchants_taking_part"] == "<5"
    assert {c["stage"]: c["orders"] for c in report["orders_by_stage"]}["pledged"] == "<5"
