"""Donation rule versions as stored (JSON) ↔ the terms the calculation uses."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from app.core.money import Money
from app.donations.calculation import DonationTerms, SkuOverride
from app.donations.schemas import DonationRuleIn


def _money_tuple(raw: list[dict[str, Any]] | None) -> tuple[Money, ...]:
    return tuple(Money(int(m["amount"]), str(m["currency"])) for m in raw or [])


def terms_from_stored(rate_bps: int, fixed_per_unit: Any, sku_overrides: Any) -> DonationTerms:
    """Terms from a `donation_rules` row (JSONB columns may arrive as text from the raw driver)."""
    fixed = json.loads(fixed_per_unit) if isinstance(fixed_per_unit, str) else fixed_per_unit
    overrides = json.loads(sku_overrides) if isinstance(sku_overrides, str) else sku_overrides
    return DonationTerms(
        rate_bps=rate_bps,
        fixed_per_unit=_money_tuple(fixed),
        sku_overrides=tuple(
            SkuOverride(
                sku=o["sku"],
                rate_bps=o.get("rate_bps") or 0,
                fixed_per_unit=_money_tuple(o.get("fixed_per_unit")),
                excluded=bool(o.get("excluded", False)),
            )
            for o in overrides
        ),
    )


def stored_from_input(rule: DonationRuleIn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The JSON kept for `fixed_per_unit` and `sku_overrides`: exactly what was asked, nothing inferred."""
    fixed = [m.model_dump() for m in rule.fixed_per_unit]
    overrides = [o.model_dump(exclude_none=True) for o in rule.sku_overrides]
    return fixed, overrides


class TermsCache:
    """Parsed terms by rule version id. A version never changes once stored, so an entry never goes stale; the
    cache only spares each order and quote the parsing of its merchant's rule (which may hold hundreds of SKU
    overrides)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._terms: OrderedDict[str, DonationTerms] = OrderedDict()

    async def terms_for(
        self,
        rule_ids: Iterable[str],
        load: Callable[[list[str]], Awaitable[list[tuple[str, int, Any, Any]]]],
    ) -> dict[str, DonationTerms]:
        """Terms for each id; `load` fetches (id, rate_bps, fixed_per_unit, sku_overrides) of those not cached."""
        wanted = set(rule_ids)
        missing = sorted(wanted - self._terms.keys())
        if missing:
            for rule_id, rate_bps, fixed, overrides in await load(missing):
                self._terms[rule_id] = terms_from_stored(rate_bps, fixed, overrides)
        found = {}
        for rule_id in wanted:
            self._terms.move_to_end(rule_id)
            found[rule_id] = self._terms[rule_id]
        while len(self._terms) > self._size:
            self._terms.popitem(last=False)
        return found


RULE_TERMS = TermsCache()
