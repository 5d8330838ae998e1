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


# Billed on a statement, not yet paid. Debit balance.
BILLED_RECEIVABLE = "merchant:{merchant_id}:billed_receivable"
# Reversals on orders already billed: a credit the merchant gets on its next statement. Credit balance.
CREDITS_DUE = "merchant:{merchant_id}:credits_due"
# Paid by merchants, not yet turned into the base currency. Debit balance, per currency.
COLLECTED_UNCONVERTED = "programme:collected_unconverted"
# Where one currency is exchanged for another: the two legs of a conversion meet here.
FX_EXCHANGE = "programme:fx_exchange"
# The pooled fund, in the base currency, that buys Love Packages. Debit balance, never negative.
POOL = "programme:pool"
# Money in Love Packages, by where the boxes are (all debit balances, base currency). Their sum is what has been
# allocated: assigned to a student and on its way (planned shipment to out for delivery), delivered (accepted by
# the school), written off (damaged or missing), or in stock (came back; waits for a student of a later run).
PACKAGES_ASSIGNED = "programme:packages:assigned"
PACKAGES_DELIVERED = "programme:packages:delivered"
PACKAGES_WRITTEN_OFF = "programme:packages:written_off"
PACKAGES_IN_STOCK = "programme:packages:in_stock"


def billed_receivable(merchant_id: str) -> str:
    return BILLED_RECEIVABLE.format(merchant_id=merchant_id)


def credits_due(merchant_id: str) -> str:
    return CREDITS_DUE.format(merchant_id=merchant_id)
