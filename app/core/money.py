"""Money: integer minor units plus an ISO 4217 code, exact rounding and exact splitting.

Everything that touches money goes through this module. Amounts are `int` counts of the currency's minor unit;
intermediate values that are not whole minor units are `fractions.Fraction`, so nothing is ever approximated
until the single, explicit `round_half_even` at the end of a computation. No floats, no `Decimal` contexts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

import iso4217
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from app.core.patterns import pattern
from app.core.types import WholeNumber

_CODE_SHAPE = re.compile(r"[A-Z]{3}")


class UnknownCurrency(ValueError):
    """A code that is not an ISO 4217 currency with a minor unit, so it cannot carry money here."""


def currency_exponent(code: str) -> int:
    """Return the ISO 4217 minor-unit exponent of `code` (JPY 0, USD 2, KWD 3).

    Raises `UnknownCurrency` for codes the data package does not know, for lower-case spellings (we never
    guess what a client meant), and for codes without a minor unit (metals, funds units, `XXX`, `XTS`).
    """
    # Check the type and shape before the cached lookup: the cache must only ever see plain strings.
    if not isinstance(code, str) or _CODE_SHAPE.fullmatch(code) is None:
        raise UnknownCurrency(f"{code!r} is not an ISO 4217 currency code")
    return _exponent_of(code)


# Only successful lookups are cached (a raised exception is not), so client-supplied junk cannot grow it.
@functools.cache
def _exponent_of(code: str) -> int:
    try:
        currency = iso4217.Currency(code)
    except ValueError:  # the package's Enum lookup raises ValueError for a code it does not list
        raise UnknownCurrency(f"{code!r} is not an ISO 4217 currency code") from None
    exponent = currency.exponent
    # `None` is ISO's "N.A." (gold, SDR, test codes): such a unit has no minor unit, so no integer amount.
    if not isinstance(exponent, int):
        raise UnknownCurrency(f"{code!r} has no minor unit in ISO 4217 and cannot be used as money")
    return exponent


def major_units(amount: int, currency: str) -> Decimal:
    """`amount` minor units as an exact decimal of the major unit, to the currency's places: 196 USD is 1.96,
    500 JPY is 500. For showing and exporting only; nothing computes with it."""
    # Exact: an int of at most 19 digits moved by at most a few places fits the default 28-digit context.
    return Decimal(amount).scaleb(-currency_exponent(currency))


def is_known_currency(code: str) -> bool:
    """Whether `code` is an ISO 4217 currency that can carry money here."""
    try:
        currency_exponent(code)
    except UnknownCurrency:
        return False
    return True


KNOWN_CURRENCIES: tuple[str, ...] = tuple(
    sorted(currency.value for currency in iso4217.Currency if is_known_currency(currency.value))
)


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: `amount` minor units of `currency` (1999 USD is $19.99, 1999 JPY is ¥1999)."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; `Money(True, "USD")` is a bug, never one cent.
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError(f"a money amount is an int of minor units, not {type(self.amount).__name__}")
        currency_exponent(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in `currency`."""
        return cls(0, currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency} amounts")

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def as_dict(self) -> dict[str, Any]:
        """The API shape: `{"amount": 1999, "currency": "USD"}`."""
        return {"amount": self.amount, "currency": self.currency}


def round_half_even(value: Fraction) -> int:
    """Round an exact rational to the nearest integer, ties to the even neighbour (2.5 → 2, 3.5 → 4, -2.5 → -2).

    Exact for any `Fraction`: the decision compares integers, so there is no precision to run out of.
    """
    if not isinstance(value, Fraction):
        raise TypeError(f"round_half_even takes an exact Fraction, not {type(value).__name__}")
    # divmod floors, so for any sign `value == floor + remainder / denominator` with 0 <= remainder < denominator.
    floor, remainder = divmod(value.numerator, value.denominator)
    twice = 2 * remainder
    if twice < value.denominator:
        return floor
    if twice > value.denominator:
        return floor + 1
    return floor if floor % 2 == 0 else floor + 1


def split(amount: int, weights: Sequence[int]) -> list[int]:
    """Split `amount` in proportion to `weights` into integer parts that always sum exactly to `amount`.

    Each part starts as the floor of its exact share; the units left over go one at a time to the parts with
    the largest fractional remainder, ties to the earliest index. So every part is within one unit of its exact
    share and a zero weight always gets 0. A negative amount is split as its absolute value, then negated, so
    `split(-a, w) == [-p for p in split(a, w)]`.
    """
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"split takes an int amount, not {type(amount).__name__}")
    for weight in weights:
        if not isinstance(weight, int) or isinstance(weight, bool):
            raise TypeError(f"split weights are ints, not {type(weight).__name__}")
        if weight < 0:
            raise ValueError("split weights must not be negative")
    total = sum(weights)
    if total <= 0:
        raise ValueError("split needs at least one positive weight")
    if amount < 0:
        return [-part for part in split(-amount, weights)]

    shares = [divmod(amount * weight, total) for weight in weights]
    parts = [quotient for quotient, _ in shares]
    left_over = amount - sum(parts)
    # Σ remainders == left_over * total and each remainder < total, so more than `left_over` parts have a
    # positive remainder: the units below never reach a part whose share was already whole (zero weights).
    by_remainder = sorted(range(len(shares)), key=lambda index: (-shares[index][1], index))
    for index in by_remainder[:left_over]:
        parts[index] += 1
    return parts


def _known_currency(code: str) -> str:
    if not is_known_currency(code):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code with a minor unit")
    return code


CurrencyCode = Annotated[
    str,
    StringConstraints(pattern=pattern(r"^[A-Z]{3}$", "must be three capital letters (an ISO 4217 code)")),
    AfterValidator(_known_currency),
    WithJsonSchema(
        {"type": "string", "enum": list(KNOWN_CURRENCIES), "description": "ISO 4217 currency code"}
    ),
]

# A quadrillion minor units: far above any real order, far below where JSON clients lose integer precision
# (2**53 ≈ 9.007e15), so an amount survives a round trip through a JavaScript client unchanged.
MAX_MINOR_UNITS = 10**15
# One order line, one order's subtotal, one refund, one order's donation: a trillion minor units (IDR 10 billion,
# JPY 1 trillion). Bounded tighter than amounts in general so that sums over millions of orders stay far inside
# a bigint.
MAX_ORDER_MINOR_UNITS = 10**12


class MoneyIn(BaseModel):
    """An amount a client sends: integer minor units and a known ISO 4217 code."""

    model_config = ConfigDict(extra="forbid")

    # strict: "12.5", 12.5, "1999" and true are refused rather than coerced into some amount (12.0 is 12).
    amount: Annotated[int, Field(ge=0, le=MAX_MINOR_UNITS, strict=True), WholeNumber]
    currency: CurrencyCode

    def to_money(self) -> Money:
        """The validated amount as a `Money` value."""
        return Money(self.amount, self.currency)


class MoneyOut(BaseModel):
    """An amount the API returns: `{"amount": 1999, "currency": "USD"}`."""

    amount: int
    currency: str

    @classmethod
    def from_money(cls, money: Money) -> MoneyOut:
        """The API shape of `money`."""
        return cls(amount=money.amount, currency=money.currency)
