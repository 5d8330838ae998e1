"""Donation arithmetic (SPEC §3): the donation of an order and how much of it refunds reverse.

Pure functions on integers and exact fractions, no I/O, so the quote, the recorded donation and every reversal
come from the same code and agree to the minor unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from app.core.money import Money, currency_exponent, round_half_even

BPS_PER_UNIT = 10_000  # basis points in 100%


def _require_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    # bool is an int subclass; a `True` rate or quantity is a bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_fixed_per_unit(fixed_per_unit: tuple[Money, ...]) -> None:
    currencies = [money.currency for money in fixed_per_unit]
    # Two amounts for one currency would make "the fixed amount of this order" ambiguous.
    if len(set(currencies)) != len(currencies):
        raise ValueError("fixed_per_unit has more than one amount for a currency")
    for money in fixed_per_unit:
        if money.amount < 0:
            raise ValueError("fixed_per_unit amounts must not be negative")


@dataclass(frozen=True, slots=True)
class SkuOverride:
    """The rule for one SKU, replacing the merchant's default rule for it entirely.

    Fields left out mean nothing, not "inherit": an override `{"sku": "TEA-01", "rate_bps": 500}` gives TEA-01
    lines 5% and no fixed amount per unit. `excluded=True` means TEA-01 lines donate nothing at all.
    """

    sku: str
    rate_bps: int = 0
    fixed_per_unit: tuple[Money, ...] = ()
    excluded: bool = False

    def __post_init__(self) -> None:
        _require_int("rate_bps", self.rate_bps, low=0, high=BPS_PER_UNIT)
        _check_fixed_per_unit(self.fixed_per_unit)


@dataclass(frozen=True, slots=True)
class DonationTerms:
    """A merchant's donation rule as the arithmetic needs it (the effective date is the caller's business)."""

    rate_bps: int
    fixed_per_unit: tuple[Money, ...] = ()
    sku_overrides: tuple[SkuOverride, ...] = ()

    def __post_init__(self) -> None:
        _require_int("rate_bps", self.rate_bps, low=0, high=BPS_PER_UNIT)
        _check_fixed_per_unit(self.fixed_per_unit)
        skus = [override.sku for override in self.sku_overrides]
        if len(set(skus)) != len(skus):
            raise ValueError("sku_overrides has more than one override for a SKU")


@dataclass(frozen=True, slots=True)
class Line:
    """One order line: `quantity` units of `sku` for `amount` minor units in total (in the order's currency)."""

    sku: str
    quantity: int
    amount: int

    def __post_init__(self) -> None:
        _require_int("quantity", self.quantity, low=0)
        _require_int("amount", self.amount, low=0)


def _fixed_in(fixed_per_unit: tuple[Money, ...], currency: str) -> int:
    # A fixed amount is pledged in one currency and applies only to orders in it: we never convert it.
    for money in fixed_per_unit:
        if money.currency == currency:
            return money.amount
    return 0


def exact_donation(terms: DonationTerms | None, currency: str, lines: Sequence[Line]) -> Fraction:
    """The unrounded donation of an order in `currency`, in (fractional) minor units of it.

    Σ over lines of `amount * rate_bps / 10000 + fixed * quantity`, each line under its SKU's override if it has
    one, else the default rule. `None` terms (the merchant has no rule in effect) donate nothing.
    """
    currency_exponent(currency)  # raises UnknownCurrency: an order in a code we can't price has no donation
    if terms is None:
        return Fraction(0)
    overrides = {override.sku: override for override in terms.sku_overrides}
    total = 0  # in ten-thousandths of a minor unit, exactly: one Fraction at the end, not one per line
    for line in lines:
        override = overrides.get(line.sku)
        if override is None:
            rate_bps, fixed_per_unit = terms.rate_bps, terms.fixed_per_unit
        elif override.excluded:
            continue
        else:
            rate_bps, fixed_per_unit = override.rate_bps, override.fixed_per_unit
        total += line.amount * rate_bps + _fixed_in(fixed_per_unit, currency) * line.quantity * BPS_PER_UNIT
    return Fraction(total, BPS_PER_UNIT)


def donation_for(terms: DonationTerms | None, currency: str, lines: Sequence[Line]) -> int:
    """The donation of an order, in minor units of `currency`.

    The exact sum over all lines is rounded half-even once; rounding each line first would let the rounding
    errors of many lines add up (three lines of 1.5 units are 4.5 → 4, not 2 + 2 + 2 = 6).
    """
    return round_half_even(exact_donation(terms, currency, lines))


def base_amount(lines: Sequence[Line]) -> int:
    """The order's base for refunds: the sum of its line amounts."""
    return sum(line.amount for line in lines)


def reversed_total(*, donation: int, base: int, refunded: int, cancelled: bool) -> int:
    """How much of an order's `donation` is reversed once refunds total `refunded` (SPEC §3).

    `round_half_even(donation * min(refunded, base) / base)`; a cancelled order reverses the whole donation. When
    `base` is 0 (every line free, the donation came from fixed amounts only) any refund reverses all of it.

    Each refund or cancellation event reverses `reversed_total(after) - reversed_total(before)`. That is never
    negative and the events never reverse more than `donation` in total, because the figure is monotone
    non-decreasing in `refunded` (a non-decreasing share, rounded by a non-decreasing rounding), never exceeds
    `donation`, and equals `donation` on a full refund or a cancellation. So a full refund reverses exactly the
    donation whatever the order and sizes of the partial refunds before it.
    """
    _require_int("donation", donation, low=0)  # monotonicity above needs a non-negative donation
    _require_int("base", base, low=0)
    _require_int("refunded", refunded, low=0)
    if cancelled:
        return donation
    if base == 0:
        return donation if refunded > 0 else 0
    return round_half_even(Fraction(donation * min(refunded, base), base))
