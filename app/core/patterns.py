"""Patterns that input must match, each with the sentence a person reads when it doesn't (a regular expression is
no answer for someone whose evidence URL was refused)."""

from __future__ import annotations

from typing import Any

SENTENCES: dict[str, str] = {}
FALLBACK = "is not in a form this field accepts"


def pattern(regex: str, says: str) -> str:
    """`regex`, remembered with what a refusal says (as `msg`, after the field's name)."""
    known = SENTENCES.setdefault(regex, says)
    if known != says:
        raise ValueError(f"{regex!r} already says {known!r}")
    return regex


def message(error: dict[str, Any]) -> str:
    """The message of one validation error: a pattern's sentence in place of pydantic's regex."""
    if error.get("type") == "string_pattern_mismatch":
        return SENTENCES.get(str((error.get("ctx") or {}).get("pattern")), FALLBACK)
    return str(error.get("msg", ""))
