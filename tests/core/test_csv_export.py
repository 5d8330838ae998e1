from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.core.csv_export import csv_text, inert
from tests.helpers import formula_cells

ATTACKS = [
    '=HYPERLINK("http://evil.example","Click")',
    "INV-7;=cmd|'/Ccalc'!A0;",  # one cell in a comma file, a formula in Excel splitting on semicolons
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "a\n=1+1",
    "ok, =1+1",
    'ok;"=1+1"',
    "ok|@SUM(A1)",
    "ok\t-1+1",
    "\uff1dSUM(A1)",  # a full-width equals sign
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_piece_of_an_attack_starts_a_formula_whatever_the_separator(attack: str) -> None:
    written = csv_text([["pkg_1", attack, 3]])
    assert formula_cells(written) == []
    # Read back with the file's own separator, the cell is the text with apostrophes put in, nothing taken out.
    [[package, cell, count]] = list(csv.reader(io.StringIO(written, newline="")))
    assert (package, count) == ("pkg_1", "3")
    assert cell == inert(attack) and cell.replace("'", "") == attack.replace("'", "")


def test_the_semicolon_attack_is_quoted_at_the_formula() -> None:
    assert inert("INV-7;=cmd|'/Ccalc'!A0;") == "INV-7;'=cmd|'/Ccalc'!A0;"
    assert inert('=HYPERLINK("http://evil.example")') == '\'=HYPERLINK("http://evil.example")'


@pytest.mark.parametrize(
    "text", ["Buku & pensil - SD", "O'Brien", "user@example.org", "TEA-ORDER-1", "rc~00001-ab12cd", "1-2", ""]
)
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert inert(text) == text


@given(st.text())
@example("\t\t=1")
@example(';;"\u00a0-x')
def test_any_text_is_made_inert_by_adding_apostrophes_only(text: str) -> None:
    written = csv_text([[text]])
    assert formula_cells(written) == []
    assert inert(text).replace("'", "") == text.replace("'", "")


def test_numbers_stay_bare_numbers() -> None:
    row = [
        196,
        -98,
        Decimal("1.96"),
        Decimal("-0.98"),
        Decimal("500"),
        Decimal("1E+2"),
        Decimal("5E-8"),
        None,
    ]
    assert csv_text([row]) == "196,-98,1.96,-0.98,500,100,0.00000005,\r\n"


@pytest.mark.parametrize("value", [True, 1.5, Decimal("NaN"), Decimal("Infinity"), b"=1"])
def test_a_cell_that_is_neither_text_nor_an_exact_number_is_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        csv_text([[value]])  # type: ignore[list-item]
