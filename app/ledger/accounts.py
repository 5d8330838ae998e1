"""Account names. An account is a string; its balance in a currency is the sum of its postings.

Sign convention: debits are positive, credits negative. Balances below are stated from the side that makes them
positive in normal operation."""

from __future__ import annotations

# What merchants have pledged to the programme on paid orders and not (yet) had reversed. Debit balance.
PLEDGES_RECEIVABLE = "merchant:{merchant_id}:pledges_receivable"
# The programme's side of the pledges: donations promised to it. Credit balance.
DONATIONS_PLEDGED = "programme:donations_pledged"


def pledges_receivable(merchant_id: str) -> str:
    return PLEDGES_RECEIVABLE.format(merchant_id=merchant_id)
