"""Writing to the ledger, and checking it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg

from app.core.ids import new_id
from app.ledger import repository


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    currency: str
    amount: int  # debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """A ledger entry about to be written: its cause and its legs."""

    cause_type: str
    cause_id: str
    memo: str
    postings: tuple[Posting, ...]
    order_id: str | None = None
    id: str = field(default_factory=lambda: new_id("ent"))

    def __post_init__(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for posting in self.postings:
            if posting.amount == 0:
                raise ValueError("a posting moves money; zero legs are not written")
            totals[posting.currency] += posting.amount
        unbalanced = {currency: total for currency, total in totals.items() if total}
        if unbalanced or not self.postings:
            raise ValueError(f"entry for {self.cause_type} {self.cause_id} does not balance: {unbalanced}")


def transfer(
    *,
    cause_type: str,
    cause_id: str,
    memo: str,
    debit: str,
    credit: str,
    currency: str,
    amount: int,
    order_id: str | None = None,
) -> EntryDraft:
    """A two-leg entry moving `amount` (> 0) from `credit` to `debit`."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return EntryDraft(
        cause_type=cause_type,
        cause_id=cause_id,
        memo=memo,
        order_id=order_id,
        postings=(Posting(debit, currency, amount), Posting(credit, currency, -amount)),
    )


async def post(db: asyncpg.Connection, entries: list[EntryDraft]) -> None:
    """Write balanced entries, all legs in one statement (the database re-checks the balance)."""
    if entries:
        await repository.insert_entries(db, entries)
