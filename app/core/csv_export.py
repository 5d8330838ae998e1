"""Every CSV file the service writes, written here, so that no cell of one runs as a spreadsheet formula.

A spreadsheet reads a cell as a formula when it begins with `=`, `+`, `-` or `@` (or their full-width forms, which
some East Asian locales accept too), and OWASP adds a leading tab or carriage return. The file is split into cells
by whatever separator the reader's spreadsheet uses: a comma here, a semicolon where the decimal mark is a comma
(Indonesia, most of Europe), or what the person picks on import. So a text cell is checked at its start and after
every comma, semicolon, tab, pipe and line break in it — each place where a spreadsheet splitting on another
separator would start a cell — skipping spaces there (a spreadsheet may trim them) and double quotes (it may take
them for a quoted cell's own).

Wherever such a fragment begins a formula, an apostrophe is put before it: the mark that spreadsheets take for "this
is text" (hidden when it starts a cell). `INV-7;=cmd|'/C calc'!A0;` is written `INV-7;'=cmd|'/C calc'!A0;`, which is
inert split on commas or on semicolons. We add a character rather than drop one so that nothing is lost: the exact
value is in the API, and a reader sees a changed value as changed. (`defusedcsv` looks only at a cell's first
character, which misses the semicolon case, hence our own.)

Numbers are not text: an `int`, or a `Decimal` written in plain notation, is a bare number, so `-0.98` stays a
number a spreadsheet can add up.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

Cell = str | int | Decimal | None
"""Text, a whole number, an exact decimal (e.g. money in major units), or nothing (an empty cell)."""

_SEPARATORS = ",;\t|\r\n"
_FORMULA_START = "=+\\-@\t\r\n\uff1d\uff0b\uff0d\uff20"
# A place where a cell could start (the text's start, or just after a separator), followed by spaces or quotes and
# a character that starts a formula. Zero-width: the apostrophe goes in at that place.
_DANGER = re.compile(rf"(?:^|(?<=[{_SEPARATORS}]))(?=[ \u00a0\"]*[{_FORMULA_START}])")


def inert(text: str) -> str:
    """`text` with an apostrophe before every fragment a spreadsheet could read as a formula (see the module)."""
    return _DANGER.sub("'", text)


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # an int subclass, but never a number we mean to write
        raise TypeError("a CSV cell is text, a number or None, not a bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"a CSV number must be finite, not {value}")
        return format(value, "f")
    if isinstance(value, str):
        return inert(value)
    raise TypeError(f"a CSV cell is text, a number or None, not {type(value).__name__}")


def csv_text(rows: Iterable[Sequence[Cell]]) -> str:
    """`rows` as CSV (RFC 4180: commas, CRLF, quotes only where needed), every text cell made inert. A long file
    is written a batch of rows at a time, each call's text following the last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()
