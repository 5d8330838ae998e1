from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.core.money import Money, UnknownCurrency, round_half_even
from app.donations.calculation import (
    DonationTerms,
    Line,
    SkuOverride,
    base_amount,
    donation_for,
    exact_donation,
    reversed_total,
)

# The rule of SPEC §3: 1.5% by default, 2 fen per unit sold on CNY orders, TEA-01 at 5%, gift cards excluded.
SPEC_RULE = DonationTerms(
    rate_bps=150,
    fixed_per_unit=(Money(2, "CNY"),),
    sku_overrides=(SkuOverride(sku="TEA-01", rate_bps=500), SkuOverride(sku="GIFT-CARD", excluded=True)),
)


# --- donation of an order --------------------------------------------------------------------------------------


def test_spec_rule_on_a_cny_order() -> None:
    lines = [
        # default rule: 2500 * 1.5% = 37.5, plus 2 units * 2 fen = 41.5
        Line(sku="MUG-01", quantity=2, amount=2500),
        # override: 1100 * 5% = 55, and no fixed amount (the override replaced the default rule)
        Line(sku="TEA-01", quantity=3, amount=1100),
        # excluded: 0
        Line(sku="GIFT-CARD", quantity=1, amount=10000),
    ]
    assert exact_donation(SPEC_RULE, "CNY", lines) == Fraction(193, 2)  # 41.5 + 55 = 96.5
    assert donation_for(SPEC_RULE, "CNY", lines) == 96  # a tie: half-even goes to 96, not 97


def test_spec_rule_fixed_amounts_apply_only_to_orders_in_their_currency() -> None:
    lines = [
        Line(sku="MUG-01", quantity=2, amount=2500),  # 37.5; the CNY 2 per unit does not apply to a USD order
        Line(sku="TEA-01", quantity=3, amount=1100),  # 55
        Line(sku="GIFT-CARD", quantity=1, amount=10000),
    ]
    assert exact_donation(SPEC_RULE, "USD", lines) == Fraction(185, 2)  # 92.5
    assert donation_for(SPEC_RULE, "USD", lines) == 92


def test_spec_example_order_from_the_webhook() -> None:
    # SPEC §4's order.paid: two TEA-01 for ¥128.00 under the SPEC rule → 12800 * 5% = 640 fen.
    assert donation_for(SPEC_RULE, "CNY", [Line(sku="TEA-01", quantity=2, amount=12800)]) == 640


def test_donation_is_rounded_once_for_the_whole_order() -> None:
    # Each line is exactly 1.5 fen: rounding per line would give 2 + 2 + 2 = 6; the order's 4.5 rounds to 4.
    terms = DonationTerms(rate_bps=150)
    lines = [Line(sku=f"SKU-{i}", quantity=1, amount=100) for i in range(3)]
    assert [round_half_even(exact_donation(terms, "CNY", [line])) for line in lines] == [2, 2, 2]
    assert donation_for(terms, "CNY", lines) == 4

    # Three half units: per line 0 + 0 + 0, for the order 1.5 → 2.
    half = DonationTerms(rate_bps=5000)
    pennies = [Line(sku=f"SKU-{i}", quantity=1, amount=1) for i in range(3)]
    assert donation_for(half, "USD", [pennies[0]]) == 0
    assert donation_for(half, "USD", pennies) == 2


def test_override_replaces_the_default_rule_entirely() -> None:
    terms = DonationTerms(
        rate_bps=1000,
        fixed_per_unit=(Money(50, "JPY"),),
        sku_overrides=(SkuOverride(sku="BOOK", fixed_per_unit=(Money(10, "JPY"),)),),
    )
    # BOOK: no rate (the override's default is 0, not the merchant's 10%) and its own ¥10 per unit, not ¥50.
    assert donation_for(terms, "JPY", [Line(sku="BOOK", quantity=3, amount=3000)]) == 30
    # Any other SKU: 10% + ¥50 per unit.
    assert donation_for(terms, "JPY", [Line(sku="PEN", quantity=3, amount=3000)]) == 450


def test_excluded_sku_gives_nothing_whatever_else_its_override_says() -> None:
    terms = DonationTerms(
        rate_bps=150,
        fixed_per_unit=(Money(2, "CNY"),),
        sku_overrides=(
            SkuOverride(sku="GIFT-CARD", rate_bps=900, fixed_per_unit=(Money(5, "CNY"),), excluded=True),
        ),
    )
    assert exact_donation(terms, "CNY", [Line(sku="GIFT-CARD", quantity=4, amount=50000)]) == 0


def test_merchant_without_a_rule_donates_nothing() -> None:
    assert donation_for(None, "USD", [Line(sku="MUG-01", quantity=1, amount=10**9)]) == 0


def test_order_in_an_unknown_currency_is_refused() -> None:
    with pytest.raises(UnknownCurrency):
        donation_for(SPEC_RULE, "XAU", [Line(sku="MUG-01", quantity=1, amount=100)])


@pytest.mark.parametrize(
    "make",
    [
        lambda: DonationTerms(rate_bps=10001),
        lambda: DonationTerms(rate_bps=-1),
        lambda: DonationTerms(rate_bps=100, fixed_per_unit=(Money(1, "USD"), Money(2, "USD"))),
        lambda: DonationTerms(rate_bps=100, fixed_per_unit=(Money(-1, "USD"),)),
        lambda: DonationTerms(
            rate_bps=100, sku_overrides=(SkuOverride(sku="A"), SkuOverride(sku="A", rate_bps=5))
        ),
        lambda: SkuOverride(sku="A", rate_bps=20000),
        lambda: Line(sku="A", quantity=-1, amount=100),
        lambda: Line(sku="A", quantity=1, amount=-100),
    ],
)
def test_ambiguous_or_impossible_terms_and_lines_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


skus = st.sampled_from(["MUG-01", "TEA-01", "GIFT-CARD", "PEN-02"])
lines_strategy = st.lists(
    st.builds(
        Line,
        sku=skus,
        quantity=st.integers(min_value=0, max_value=1000),
        amount=st.integers(min_value=0, max_value=10**12),
    ),
    max_size=20,
)
terms_strategy = st.builds(
    DonationTerms,
    rate_bps=st.integers(min_value=0, max_value=10000),
    fixed_per_unit=st.sampled_from([(), (Money(2, "CNY"),), (Money(2, "CNY"), Money(5, "USD"))]),
    sku_overrides=st.sampled_from([(), SPEC_RULE.sku_overrides]),
)


@given(
    terms=terms_strategy,
    currency=st.sampled_from(["CNY", "USD", "JPY"]),
    lines=lines_strategy,
    data=st.data(),
)
def test_donation_does_not_depend_on_line_order(
    terms: DonationTerms, currency: str, lines: list[Line], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(lines))
    assert donation_for(terms, currency, shuffled) == donation_for(terms, currency, lines)


@given(terms=terms_strategy, currency=st.sampled_from(["CNY", "USD", "JPY"]), lines=lines_strategy)
def test_donation_is_the_sum_of_line_shares_rounded_once(
    terms: DonationTerms, currency: str, lines: list[Line]
) -> None:
    exact = exact_donation(terms, currency, lines)
    assert exact == sum((exact_donation(terms, currency, [line]) for line in lines), Fraction(0))
    assert exact >= 0
    donation = donation_for(terms, currency, lines)
    assert abs(donation - exact) <= Fraction(1, 2)
    # Never more than the whole order at 100% plus the fixed amounts it pledged.
    fixed = max((m.amount for m in terms.fixed_per_unit if m.currency == currency), default=0)
    assert donation <= base_amount(lines) + fixed * sum(line.quantity for line in lines)


def test_base_amount_is_the_sum_of_line_amounts() -> None:
    lines = [Line(sku="A", quantity=2, amount=2500), Line(sku="B", quantity=1, amount=0), Line("C", 3, 1100)]
    assert base_amount(lines) == 3600
    assert base_amount([]) == 0


# --- refunds and cancellations ---------------------------------------------------------------------------------


def reverse_step_by_step(
    *, donation: int, base: int, refunds: list[int], cancel_at_end: bool = False
) -> list[int]:
    """The reversal of each refund event (then of a cancellation), as the service records them."""
    reversals = []
    refunded = 0
    for refund in refunds:
        before = reversed_total(donation=donation, base=base, refunded=refunded, cancelled=False)
        refunded += refund
        after = reversed_total(donation=donation, base=base, refunded=refunded, cancelled=False)
        reversals.append(after - before)
    if cancel_at_end:
        before = reversed_total(donation=donation, base=base, refunded=refunded, cancelled=False)
        after = reversed_total(donation=donation, base=base, refunded=refunded, cancelled=True)
        reversals.append(after - before)
    return reversals


def test_worked_example_of_partial_refunds() -> None:
    # D = 5, base 4, four refunds of 1: the reversed total goes 1.25 → 1, 2.5 → 2, 3.75 → 4, 5.
    assert reverse_step_by_step(donation=5, base=4, refunds=[1, 1, 1, 1]) == [1, 1, 2, 1]
    # Rounding each refund on its own would reverse 1 + 1 + 1 + 1 = 4 of the 5.
    assert [round_half_even(Fraction(5 * 1, 4)) for _ in range(4)] == [1, 1, 1, 1]


def test_refund_beyond_the_base_reverses_no_more_than_the_donation() -> None:
    assert reversed_total(donation=244, base=20000, refunded=25000, cancelled=False) == 244


def test_order_with_only_fixed_donations_is_fully_reversed_by_any_refund() -> None:
    # Free items (base 0) still pledged 2 fen per unit; a refund means the sale did not happen.
    assert reversed_total(donation=6, base=0, refunded=0, cancelled=False) == 0
    assert reversed_total(donation=6, base=0, refunded=1, cancelled=False) == 6


def test_cancellation_reverses_the_whole_donation() -> None:
    assert reversed_total(donation=640, base=12800, refunded=0, cancelled=True) == 640
    assert reverse_step_by_step(donation=640, base=12800, refunds=[6400], cancel_at_end=True) == [320, 320]


@pytest.mark.parametrize(
    "arguments",
    [
        {"donation": -1, "base": 100, "refunded": 0},
        {"donation": 10, "base": -1, "refunded": 0},
        {"donation": 10, "base": 100, "refunded": -5},
    ],
)
def test_negative_figures_are_refused(arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        reversed_total(**arguments, cancelled=False)


@st.composite
def order_with_full_refunds(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A donation, its base, and refund amounts in any order and sizes totalling at least the base."""
    donation = draw(st.integers(min_value=0, max_value=10**12))
    base = draw(st.integers(min_value=1, max_value=10**12))
    refunds = draw(st.lists(st.integers(min_value=1, max_value=base), max_size=15))
    if sum(refunds) < base:
        # Top up so the order ends fully refunded, sometimes over-refunded (shipping, goodwill on top).
        refunds.append(base - sum(refunds) + draw(st.integers(min_value=0, max_value=base)))
    return donation, base, draw(st.permutations(refunds))


@given(order=order_with_full_refunds())
@example(order=(5, 4, [1, 1, 1, 1]))
@example(order=(1, 3, [1, 1, 1]))
@example(order=(3, 2, [1, 1]))
def test_full_refund_reverses_exactly_the_donation(order: tuple[int, int, list[int]]) -> None:
    donation, base, refunds = order
    reversals = reverse_step_by_step(donation=donation, base=base, refunds=refunds)
    assert all(reversal >= 0 for reversal in reversals)
    running = 0
    for reversal in reversals:
        running += reversal
        assert running <= donation  # never reverse money that was not donated, at any point
    assert sum(reversals) == donation


@st.composite
def order_with_partial_refunds(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A donation, its base, and refunds that may or may not add up to the base."""
    donation = draw(st.integers(min_value=0, max_value=10**12))
    base = draw(st.integers(min_value=0, max_value=10**12))
    refunds = draw(st.lists(st.integers(min_value=0, max_value=max(base, 1)), max_size=15))
    return donation, base, refunds


@given(order=order_with_partial_refunds())
def test_cancel_after_partial_refunds_reverses_exactly_the_donation(
    order: tuple[int, int, list[int]],
) -> None:
    donation, base, refunds = order
    reversals = reverse_step_by_step(donation=donation, base=base, refunds=refunds, cancel_at_end=True)
    assert all(reversal >= 0 for reversal in reversals)
    assert sum(reversals[:-1]) <= donation
    assert sum(reversals) == donation


@given(
    donation=st.integers(min_value=0, max_value=10**12),
    base=st.integers(min_value=0, max_value=10**12),
    refunded=st.lists(st.integers(min_value=0, max_value=2 * 10**12), min_size=2, max_size=2).map(sorted),
)
def test_reversed_total_grows_with_refunds_and_stays_within_the_donation(
    donation: int, base: int, refunded: list[int]
) -> None:
    less, more = refunded
    smaller = reversed_total(donation=donation, base=base, refunded=less, cancelled=False)
    larger = reversed_total(donation=donation, base=base, refunded=more, cancelled=False)
    assert 0 <= smaller <= larger <= donation
