"""Prefixed, time-ordered identifiers (`mer_01J…`): readable in logs, sortable for cursors."""

from __future__ import annotations

import base64
import os

from ulid import ULID

# Crockford's base32 (ULID's alphabet) from RFC 4648's, for the random part made in bulk.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def new_ids_in_bulk(prefix: str, count: int) -> list[str]:
    """`count` ids of this millisecond at once, as `new_id` would make them (a ULID: 48 bits of time in the first
    ten characters, 80 random bits in the last sixteen) but one system call for all the randomness: a run that
    makes 50,000 packages spends milliseconds here, not half a second."""
    if count <= 0:
        return []
    head = f"{prefix}_{str(ULID())[:10]}"
    tails = base64.b32encode(os.urandom(10 * count)).translate(_CROCKFORD).decode()
    return [head + tails[i : i + 16] for i in range(0, 16 * count, 16)]
