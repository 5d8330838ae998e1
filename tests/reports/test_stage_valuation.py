"""The steps on the way to the pool, valued in the base currency, never show a later step above an earlier one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from app.reports.repository import StageCell
from app.reports.service import build_transparency, fold_by_currency, raised, stages_in_base


def test_a_rate_that_fell_after_conversion_leaves_the_pool_no_higher_than_the_money_raised() -> None:
    # 1000 CNY fetched 141 USD at conversion (0.141); the latest rate is 0.14, at which it is worth 140.
    cells = [
        StageCell("2026-11", "CNY", "in_pool", 10, 1000, 0),
        StageCell("2026-11", "USD", "in_pool", 3, 977, 0),
    ]
    report = build_transparency(
        cells,
        merchants=2,
        pool_received=141 + 977,
        pool_balance=141 + 977,
        rates={"CNY": Decimal("0.14")},
        base_currency="USD",
        updated_at=datetime(2026, 12, 5, tzinfo=UTC),
        pool_by_currency={"CNY": 141, "USD": 977},
    )
    assert report.raised.amount == report.reached_pool.amount == 1118
    assert report.money_by_stage_in_base_currency.in_pool == 1118
    assert report.reached_pool_share_bps == 10_000
    assert report.by_month[0].in_base_currency.in_pool == 1118


amounts = st.integers(min_value=0, max_value=10**7)


@given(
    stages=st.lists(st.tuples(amounts, amounts, amounts, amounts), min_size=1, max_size=3),
    rates=st.lists(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("500"), places=4), min_size=3),
    fetched=st.lists(st.fractions(min_value=Fraction(1, 10**4), max_value=500), min_size=3),
)
def test_raised_billed_collected_and_pooled_never_increase_along_the_way(
    stages: list[tuple[int, int, int, int]], rates: list[Decimal], fetched: list[Fraction]
) -> None:
    currencies = ["CNY", "JPY", "IDR"]
    cells = []
    pooled = {}
    for currency, (final, billed, collecting, in_pool), fetched_rate in zip(
        currencies, stages, fetched, strict=False
    ):
        cells += [
            StageCell("2026-11", currency, "final", 1, final, 0),
            StageCell("2026-11", currency, "billed", 1, billed, 0),
            StageCell("2026-11", currency, "collected", 1, collecting, 0),
            StageCell("2026-11", currency, "in_pool", 1, in_pool, 0),
        ]
        pooled[currency] = Fraction(round(in_pool * fetched_rate))
    valued, _ = stages_in_base(
        fold_by_currency(cells), dict(zip(currencies, rates, strict=False)), "USD", pooled
    )
    billed = valued.billed + valued.collected
    assert raised(valued) >= billed >= valued.collected >= valued.in_pool == sum(pooled.values())
    assert min(valued.final, valued.billed, valued.collected - valued.in_pool) >= 0
