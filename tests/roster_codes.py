"""Every roster code the suite uses comes from here, so the session can prove that none reached a log.

Each code starts with MARK, a string nothing else the service writes contains (ids, Fernet tokens, hex and
base64 never hold a `~`), and that stays readable when JSON escapes the rest. So a log, a dump or an error
message that holds any roster code — or any part of one that starts where a code starts — holds MARK. (The few
codes a test writes out by hand, e.g. in a malformed CSV, start with MARK as well.)"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable
from pathlib import Path

MARK = "rc~"

_issued: list[str] = []
_counter = itertools.count(1)


def roster_code(suffix: str | None = None) -> str:
    """A new roster code: MARK, then `suffix` (hypothesis draws it) or a unique readable tail."""
    code = MARK + (suffix if suffix is not None else f"{next(_counter):05d}-{secrets.token_hex(3)}")
    _issued.append(code)
    return code


def roster_codes(count: int) -> list[str]:
    return [roster_code() for _ in range(count)]


def issued() -> int:
    """How many roster codes the suite has used so far."""
    return len(_issued)


def leaks(texts: Iterable[tuple[str, str]]) -> list[str]:
    """Where (name and line number) any of the texts holds a roster code."""
    found = []
    for name, text in texts:
        if MARK not in text:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if MARK in line:
                found.append(f"{name}:{number}")
    return found


def read_logs(paths: Iterable[Path]) -> list[tuple[str, str]]:
    return [(str(path), path.read_text(errors="replace")) for path in paths if path.exists()]
