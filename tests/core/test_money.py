from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.core.json_body import parse_json
from app.core.money import (
    KNOWN_CURRENCIES,
    MAX_MINOR_UNITS,
    CurrencyCode,
    Money,
    MoneyIn,
    MoneyOut,
    UnknownCurrency,
    currency_exponent,
    is_known_currency,
    major_units,
    round_half_even,
    split,
)

# --- currencies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "exponent"), [("JPY", 0), ("USD", 2), ("KWD", 3), ("CNY", 2), ("EUR", 2)])
def test_exponents_follow_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent
    assert is_known_currency(code)
    assert code in KNOWN_CURRENCIES


# ABC is not a currency; XAU (gold), XXX (no currency), XDR (SDR) and XTS (testing) have no minor unit;
# lower case and padded spellings are refused rather than guessed at.
@pytest.mark.parametrize("code", ["ABC", "XAU", "XXX", "XDR", "XTS", "usd", "US", "USDX", " USD", ""])
def test_unknown_or_unitless_codes_are_not_money(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        currency_exponent(code)
    assert not is_known_currency(code)
    assert code not in KNOWN_CURRENCIES
    with pytest.raises(UnknownCurrency):
        Money(100, code)


def test_unknown_currency_is_a_value_error() -> None:
    # Callers that validate input catch ValueError; an unknown code must be caught with the rest.
    assert issubclass(UnknownCurrency, ValueError)


def test_known_currencies_are_sorted_and_all_usable() -> None:
    assert list(KNOWN_CURRENCIES) == sorted(set(KNOWN_CURRENCIES))
    assert len(KNOWN_CURRENCIES) > 150  # the whole ISO list, not a hand-typed handful
    for code in KNOWN_CURRENCIES:
        assert currency_exponent(code) in range(5)


# --- Money -----------------------------------------------------------------------------------------------------


def test_money_arithmetic_in_one_currency() -> None:
    price = Money(1999, "USD")
    assert price + Money(1, "USD") == Money(2000, "USD")
    assert price - Money(2000, "USD") == Money(-1, "USD")
    assert -price == Money(-1999, "USD")
    assert Money.zero("JPY") == Money(0, "JPY")
    assert price.as_dict() == {"amount": 1999, "currency": "USD"}


def test_money_never_mixes_currencies() -> None:
    with pytest.raises(ValueError, match="USD and CNY"):
        Money(1, "USD") + Money(1, "CNY")
    with pytest.raises(ValueError, match="USD and CNY"):
        Money(1, "USD") - Money(1, "CNY")


@pytest.mark.parametrize("amount", [12.5, 12.0, Decimal("12"), Fraction(25, 2), "12", True, None])
def test_money_amount_must_be_an_int(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]


def test_money_is_immutable() -> None:
    price = Money(1999, "USD")
    with pytest.raises(AttributeError):
        price.amount = 1  # type: ignore[misc]


# --- round_half_even -------------------------------------------------------------------------------------------


def decimal_reference(value: Fraction) -> int:
    """Half-even rounding by the decimal module, independent of the implementation under test.

    A tie k + 1/2 has a terminating decimal expansion, so with 300 significant digits the quotient of a tie is
    computed exactly; any other value is at least 1/(2·denominator) > 1e-13 from a tie, far more than the
    quotient's error, so the reference's decision is exact for the operands generated here.
    """
    with decimal.localcontext() as context:
        context.prec = 300
        context.traps[decimal.Inexact] = False
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return int(quotient.to_integral_value(rounding=ROUND_HALF_EVEN))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(5, 2), 2),
        (Fraction(7, 2), 4),
        (Fraction(-5, 2), -2),
        (Fraction(-7, 2), -4),
        (Fraction(1, 2), 0),
        (Fraction(-1, 2), 0),
        (Fraction(3, 2), 2),
        (Fraction(24999, 10000), 2),
        (Fraction(25001, 10000), 3),
        (Fraction(-25001, 10000), -3),
        (Fraction(2, 3), 1),
        (Fraction(-1, 3), 0),
        (Fraction(7), 7),
        (Fraction(10**40 + 1, 2), 10**40 // 2),  # exact far beyond any float's precision
    ],
)
def test_round_half_even_worked_examples(value: Fraction, expected: int) -> None:
    assert round_half_even(value) == expected


@given(
    numerator=st.integers(min_value=-(10**30), max_value=10**30),
    denominator=st.integers(min_value=1, max_value=10**12),
)
def test_round_half_even_matches_decimal_on_any_fraction(numerator: int, denominator: int) -> None:
    value = Fraction(numerator, denominator)
    rounded = round_half_even(value)
    assert rounded == decimal_reference(value)
    assert abs(value - rounded) <= Fraction(1, 2)


@given(whole=st.integers(min_value=-(10**18), max_value=10**18))
def test_round_half_even_on_exact_ties_goes_to_even(whole: int) -> None:
    tie = whole + Fraction(1, 2)
    rounded = round_half_even(tie)
    assert rounded == decimal_reference(tie)
    assert rounded % 2 == 0
    assert rounded in (whole, whole + 1)


@given(value=st.fractions(max_denominator=10**9))
def test_round_half_even_is_symmetric(value: Fraction) -> None:
    # A refund of a negative amount rounds like the positive one: no drift between a charge and its reversal.
    assert round_half_even(-value) == -round_half_even(value)


@pytest.mark.parametrize("value", [2.5, Decimal("2.5"), 2])
def test_round_half_even_takes_only_exact_fractions(value: object) -> None:
    with pytest.raises(TypeError):
        round_half_even(value)  # type: ignore[arg-type]


# --- split -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),  # equal remainders: the earliest part gets the odd unit
        (-100, [1, 1, 1], [-34, -33, -33]),
        (10, [1, 2], [3, 7]),  # 3.33 / 6.67: the largest remainder gets the unit
        (5, [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]),
        (7, [0, 3, 0, 4], [0, 3, 0, 4]),
        (1, [0, 5, 5], [0, 1, 0]),
        (0, [2, 3], [0, 0]),
        (999, [1], [999]),
    ],
)
def test_split_worked_examples(amount: int, weights: list[int], parts: list[int]) -> None:
    assert split(amount, weights) == parts


amounts = st.integers(min_value=-(10**15), max_value=10**15)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30).filter(
    lambda weights: sum(weights) > 0
)


@given(amount=amounts, weights=weight_lists)
@example(amount=1, weights=[0, 1, 1, 1])
@example(amount=-7, weights=[3, 0, 3, 3])
def test_split_sums_exactly_and_stays_within_a_unit_of_each_share(amount: int, weights: list[int]) -> None:
    parts = split(amount, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == amount
    total = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(part - Fraction(amount * weight, total)) < 1
        if weight == 0:
            assert part == 0


@given(amount=amounts, weights=weight_lists)
def test_split_of_a_negative_amount_mirrors_the_positive(amount: int, weights: list[int]) -> None:
    assert split(-amount, weights) == [-part for part in split(amount, weights)]


@given(amount=st.integers(min_value=0, max_value=10**15), weights=weight_lists)
def test_split_gives_left_over_units_to_the_largest_remainders(amount: int, weights: list[int]) -> None:
    total = sum(weights)
    remainders = [(amount * weight) % total for weight in weights]
    parts = split(amount, weights)
    rounded_up = [
        i for i, (part, w) in enumerate(zip(parts, weights, strict=True)) if part * total > amount * w
    ]
    kept = [i for i in range(len(weights)) if i not in rounded_up]
    # Every part that got a unit beats (or ties with an earlier index) every part that did not.
    for up in rounded_up:
        for down in kept:
            assert (remainders[up], -up) > (remainders[down], -down)


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [-3]])
def test_split_refuses_weights_without_a_positive_total_or_with_negatives(weights: list[int]) -> None:
    with pytest.raises(ValueError):
        split(100, weights)


# --- API types -------------------------------------------------------------------------------------------------


def test_money_in_accepts_integer_minor_units_of_a_known_currency() -> None:
    money = MoneyIn.model_validate_json('{"amount": 1999, "currency": "USD"}')
    assert money.to_money() == Money(1999, "USD")
    # JSON Schema's integer: 1999.0 is 1999 (exact below 2**53, and the bound keeps every amount there).
    assert MoneyIn.model_validate_json('{"amount": 1999.0, "currency": "USD"}').amount == 1999
    assert MoneyIn.model_validate({"amount": MAX_MINOR_UNITS, "currency": "KWD"}).amount == MAX_MINOR_UNITS


@pytest.mark.parametrize(
    "body",
    [
        '{"amount": "12.5", "currency": "USD"}',
        '{"amount": 12.5, "currency": "USD"}',
        '{"amount": "1999", "currency": "USD"}',
        '{"amount": true, "currency": "USD"}',
        '{"amount": null, "currency": "USD"}',
        '{"amount": -1, "currency": "USD"}',
        f'{{"amount": {MAX_MINOR_UNITS + 1}, "currency": "USD"}}',
        '{"amount": 1999, "currency": "usd"}',
        '{"amount": 1999, "currency": "ABC"}',
        '{"amount": 1999, "currency": "XAU"}',
        '{"amount": 1999, "currency": 840}',
        '{"amount": 1999}',
        '{"amount": 1999, "currency": "USD", "exponent": 2}',
    ],
)
def test_money_in_refuses_anything_but_an_exact_amount(body: str) -> None:
    with pytest.raises(ValidationError):
        MoneyIn.model_validate_json(body)


@pytest.mark.parametrize("amount", [12.5, "1999", True, Decimal("12.5"), Decimal("NaN"), Decimal("1E+30")])
def test_money_in_refuses_python_values_that_are_not_ints(amount: object) -> None:
    with pytest.raises(ValidationError):
        MoneyIn.model_validate({"amount": amount, "currency": "USD"})


@pytest.mark.parametrize(
    ("text", "amount"),
    [("12", 12), ("12.0", 12), ("1.2e1", 12), ("1999.000", 1999), ("1e15", 10**15)],
)
def test_json_numbers_that_are_whole_are_amounts(text: str, amount: int) -> None:
    body = f'{{"amount": {text}, "currency": "USD"}}'.encode()
    assert MoneyIn.model_validate(parse_json(body)).amount == amount


@pytest.mark.parametrize("text", ["999999999999999.99", "12.000000000000000001", "1e-400", "NaN", "Infinity"])
def test_json_numbers_are_never_rounded_into_amounts(text: str) -> None:
    """A binary float would read 999999999999999.99 as 10**15 and accept it; exact parsing refuses it."""
    body = f'{{"amount": {text}, "currency": "USD"}}'.encode()
    with pytest.raises((ValidationError, ValueError)):
        MoneyIn.model_validate(parse_json(body))


def test_currency_code_schema_lists_every_known_currency() -> None:
    schema = TypeAdapter(CurrencyCode).json_schema()
    assert schema == {
        "type": "string",
        "enum": list(KNOWN_CURRENCIES),
        "description": "ISO 4217 currency code",
    }
    amount_schema = MoneyIn.model_json_schema()["properties"]["amount"]
    assert amount_schema["type"] == "integer"
    assert (amount_schema["minimum"], amount_schema["maximum"]) == (0, MAX_MINOR_UNITS)


def test_currency_code_validates_in_any_model() -> None:
    class Price(BaseModel):
        currency: CurrencyCode

    assert Price.model_validate({"currency": "JPY"}).currency == "JPY"
    with pytest.raises(ValidationError):
        Price.model_validate({"currency": "XXX"})


def test_money_out_has_the_api_shape() -> None:
    out = MoneyOut.from_money(Money(256, "CNY"))
    assert out.model_dump(mode="json") == {"amount": 256, "currency": "CNY"}


@pytest.mark.parametrize(
    ("amount", "currency", "major"),
    [
        (196, "CNY", "1.96"),
        (200, "USD", "2.00"),
        (-98, "USD", "-0.98"),
        (500, "JPY", "500"),
        (5, "KWD", "0.005"),
    ],
)
def test_major_units_is_exact_to_the_currencys_places(amount: int, currency: str, major: str) -> None:
    assert str(major_units(amount, currency)) == major
