"""Our ISO 4217 amounts as Stripe's API takes them: one case per rule Stripe publishes, and properties for all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.money import KNOWN_CURRENCIES, Money
from app.settlement.stripe_amounts import (
    MAXIMUM_CHARGE,
    NotChargeable,
    chargeable,
    from_stripe,
    maximum_charge,
    stripe_exponent,
    to_stripe,
)


@pytest.mark.parametrize(
    ("money", "stripe_amount"),
    [
        (Money(1999, "USD"), 1999),  # two decimals both sides
        (Money(500, "JPY"), 500),  # zero-decimal both sides
        (Money(6000, "ISK"), 600000),  # ISO: whole krónur; Stripe: two decimals, divisible by 100
        (Money(12340, "KWD"), 12340),  # three decimals, ending in 0
        (Money(12300, "MGA"), 123),  # ISO two decimals; Stripe whole ariary
        (Money(17500, "HUF"), 17500),  # two-decimal in the API
        (Money(999, "TWD"), 999),
        (Money(1000, "BHD"), 1000),
    ],
)
def test_special_cases(money: Money, stripe_amount: int) -> None:
    assert to_stripe(money) == stripe_amount
    assert from_stripe(stripe_amount, money.currency) == money


def test_isk_is_never_charged_a_hundred_times_too_little() -> None:
    """The defect the review reproduced: 6,000 kr sent as 6000 is 60 kr in Stripe."""
    assert to_stripe(Money(6000, "ISK")) == 600000
    assert stripe_exponent("ISK") == 2


@pytest.mark.parametrize("money", [Money(12345, "KWD"), Money(12345, "MGA"), Money(1, "TND")])
def test_what_stripe_cannot_take_exactly_is_refused(money: Money) -> None:
    with pytest.raises(NotChargeable):
        to_stripe(money)


@pytest.mark.parametrize(
    ("money", "charge", "rest", "below"),
    [
        (Money(12345, "KWD"), 12340, 5, False),
        (Money(12345, "MGA"), 12300, 45, False),
        (Money(49, "USD"), 49, 0, True),  # Stripe's minimum is USD 0.50
        (Money(50, "USD"), 50, 0, False),
        (Money(17499, "HUF"), 17499, 0, True),  # HUF 175.00 minimum
        (Money(49, "JPY"), 49, 0, True),  # ¥50 minimum
        (Money(9, "KWD"), 0, 9, True),  # nothing chargeable at all
        (Money(10**8, "USD"), 99_999_999, 1, False),  # eight digits at most
    ],
)
def test_chargeable_part_and_what_carries_forward(money: Money, charge: int, rest: int, below: bool) -> None:
    part = chargeable(money)
    assert (part.charge.amount, part.rest.amount, part.below_minimum) == (charge, rest, below)


def test_maximum_charge_in_iso_units() -> None:
    assert maximum_charge("USD") == Money(99_999_999, "USD")
    assert maximum_charge("ISK") == Money(999_999, "ISK")
    assert maximum_charge("KWD") == Money(99_999_990, "KWD")
    assert to_stripe(maximum_charge("MGA")) == MAXIMUM_CHARGE


@given(st.sampled_from(KNOWN_CURRENCIES), st.integers(min_value=0, max_value=10**15))
def test_a_split_for_stripe_always_sums_and_is_exact(currency: str, amount: int) -> None:
    part = chargeable(Money(amount, currency))
    assert part.charge.amount + part.rest.amount == amount
    assert part.charge.amount >= 0 and part.rest.amount >= 0
    stripe_amount = to_stripe(part.charge)  # never raises: the charged part is exact in Stripe's units
    assert from_stripe(stripe_amount, currency) == part.charge
    assert stripe_amount <= MAXIMUM_CHARGE
    if amount <= maximum_charge(currency).amount:
        # Only a fraction of Stripe's unit (a multiple, for ISK and three-decimal currencies) carries forward.
        assert (
            part.rest.amount < max(1, 10 ** (currency_exponent_of(currency) - stripe_exponent(currency))) * 10
        )


def currency_exponent_of(currency: str) -> int:
    from app.core.money import currency_exponent

    return currency_exponent(currency)
