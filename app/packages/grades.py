"""School grades, as short strings: "K" (kindergarten), then "1" to "12". Students and package kinds share them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, WithJsonSchema

GRADES: tuple[str, ...] = ("K", *(str(n) for n in range(1, 13)))


def _stripped(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# JSON numbers are refused (a grade is a label: "K" has no number), so 3 is an error and "3" is grade 3.
Grade = Annotated[
    Literal["K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"],
    BeforeValidator(_stripped),
    WithJsonSchema(
        {"type": "string", "enum": list(GRADES), "description": 'A school grade: "K" or "1".."12"'}
    ),
]


def in_grade_order(grades: set[str]) -> list[str]:
    """The grades in school order (K, 1, 2, …, 12), each once."""
    return [grade for grade in GRADES if grade in grades]


def sql_grade_list() -> str:
    """The grades as a SQL list of literals, for check constraints."""
    return ", ".join(f"'{grade}'" for grade in GRADES)
