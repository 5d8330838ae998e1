"""Our money (ISO 4217 minor units) as Stripe's API takes it, and back. The one place that knows Stripe's
per-currency rules; every amount sent to or read from Stripe goes through it.

Stripe's rules, from its currency documentation, kept here as data:
- zero-decimal currencies: the amount is in whole units, whatever ISO 4217 says (MGA has two ISO decimals, so
  an ISO amount of 12345 ariary-cents is charged as 123 and 45 carry forward);
- ISK: zero-decimal in ISO 4217 but two-decimal in Stripe's API, with amounts divisible by 100 (ISO 6000 kr is
  Stripe 600000, never 6000 = 60 kr);
- three-decimal currencies (BHD, JOD, KWD, OMR, TND): thousandths, and the last digit must be 0;
- HUF and TWD: two-decimal in the API like in ISO (only payouts are in whole units), nothing special here;
- a minimum charge per currency (about USD 0.50), and at most eight digits in the unit Stripe uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from app.core.money import Money, currency_exponent

ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# Stripe's exponent where it differs from ISO 4217 for a reason other than the two lists above.
EXPONENT_OVERRIDES = {"ISK": 2}
# Amounts Stripe's API requires to be a multiple of this (in Stripe's units).
MULTIPLE_OF = {"ISK": 100, **{code: 10 for code in THREE_DECIMAL}}
# Stripe's published minimum charge, in Stripe's units. Other currencies: about USD 0.50 converted at the day's
# rate, which Stripe alone knows; a charge it refuses as too small is left for the operator (needs_attention).
MINIMUM_CHARGE = {
    "USD": 50, "AED": 200, "AUD": 50, "BGN": 100, "BRL": 50, "CAD": 50, "CHF": 50, "CZK": 1500, "DKK": 250,
    "EUR": 50, "GBP": 30, "HKD": 400, "HUF": 17500, "INR": 50, "JPY": 50, "MXN": 1000, "MYR": 200,
    "NOK": 300, "NZD": 50, "PLN": 200, "RON": 200, "SEK": 300, "SGD": 50, "THB": 1000,
}  # fmt: skip
MAXIMUM_CHARGE = 99_999_999  # eight digits, in Stripe's units


class NotChargeable(ValueError):
    """An amount Stripe's API cannot take exactly in its currency."""


def stripe_exponent(currency: str) -> int:
    """How many decimals Stripe's API uses for `currency`."""
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return EXPONENT_OVERRIDES.get(currency, currency_exponent(currency))


def _pow10(exponent: int) -> int:
    assert exponent >= 0
    return int(10**exponent)


def _shift(currency: str) -> int:
    return stripe_exponent(currency) - currency_exponent(currency)


def to_stripe(money: Money) -> int:
    """The `amount` Stripe's API takes for `money`. Raises `NotChargeable` unless exact and allowed."""
    shift = _shift(money.currency)
    if shift >= 0:
        amount = money.amount * _pow10(shift)
    else:
        amount, rest = divmod(money.amount, _pow10(-shift))
        if rest:
            raise NotChargeable(f"{money.amount} {money.currency} is not a whole amount in Stripe's units")
    if amount % MULTIPLE_OF.get(money.currency, 1):
        raise NotChargeable(
            f"Stripe takes {money.currency} amounts in multiples of {MULTIPLE_OF[money.currency]}"
        )
    return amount


def from_stripe(amount: int, currency: str) -> Money:
    """The money a Stripe `amount` in `currency` (upper-case ISO code) stands for, in ISO minor units."""
    shift = _shift(currency)
    if shift >= 0:
        iso, rest = divmod(amount, _pow10(shift))
        if rest:
            raise NotChargeable(f"Stripe amount {amount} {currency} is not a whole ISO minor unit")
        return Money(iso, currency)
    return Money(amount * _pow10(-shift), currency)


def _step(currency: str) -> int:
    """The smallest ISO amount, and the spacing of ISO amounts, that Stripe can take exactly."""
    shift, multiple = _shift(currency), MULTIPLE_OF.get(currency, 1)
    if shift >= 0:
        return multiple // gcd(multiple, _pow10(shift))
    return multiple * _pow10(-shift)


@dataclass(frozen=True, slots=True)
class Chargeable:
    """What of an amount Stripe can be asked for (`charge`), and what must carry forward (`rest`)."""

    charge: Money
    rest: Money
    below_minimum: bool

    @property
    def stripe_amount(self) -> int:
        return to_stripe(self.charge)


def maximum_charge(currency: str) -> Money:
    """The largest amount one PaymentIntent can carry, in ISO minor units."""
    step = _step(currency)
    largest = from_stripe(MAXIMUM_CHARGE - MAXIMUM_CHARGE % MULTIPLE_OF.get(currency, 1), currency)
    return Money(largest.amount - largest.amount % step, currency)


def chargeable(money: Money) -> Chargeable:
    """Split `money` into the largest part Stripe takes exactly (at most its maximum charge) and the rest.

    `below_minimum` when that part is under Stripe's minimum charge for the currency: then nothing should be
    charged now and all of it carries forward."""
    if money.amount < 0:
        raise ValueError("a charge is never negative")
    step = _step(money.currency)
    charge = min(money.amount - money.amount % step, maximum_charge(money.currency).amount)
    minimum = MINIMUM_CHARGE.get(money.currency, 1)
    below = charge == 0 or to_stripe(Money(charge, money.currency)) < minimum
    return Chargeable(Money(charge, money.currency), Money(money.amount - charge, money.currency), below)
