"""Validated field types shared by API schemas."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import pycountry
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints, WithJsonSchema

from app.core.patterns import pattern


def _known_country(code: str) -> str:
    if pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


_COUNTRY_CODES = sorted(country.alpha_2 for country in pycountry.countries)

CountryCode = Annotated[
    str,
    StringConstraints(pattern=pattern(r"^[A-Z]{2}$", "must be two capital letters (ISO 3166-1 alpha-2)")),
    AfterValidator(_known_country),
    WithJsonSchema({"type": "string", "enum": _COUNTRY_CODES, "description": "ISO 3166-1 alpha-2"}),
]
# Whitespace that stripping removes (Python's str.strip and pydantic's alike), spelt out rather than `\s`, which
# JSON Schema's (ECMA) regexes and Python's read differently.
_SPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
ONE_LINE_CONTROLS = r"\x00-\x1f\x7f-\x9f"


def visible_text(controls: str) -> str:
    """The pattern of text a person wrote: none of `controls`, and not blank once stripped, so that what the
    published schema allows is what the service keeps."""
    return rf"^[^{controls}]*[^{controls}{_SPACE}][^{controls}]*$"


ONE_LINE = pattern(
    visible_text(ONE_LINE_CONTROLS), "must be text on one line, not blank, without control characters"
)


# Free text a person reads: no control characters (PostgreSQL refuses NUL; logs and CSVs hate the rest).
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE),
]
# Our own ids (`mer_01J…`); anything else cannot name a resource of ours.
ResourceId = Annotated[
    str,
    StringConstraints(pattern=pattern(r"^[A-Za-z0-9_]{1,64}$", "must be one of our ids, such as mer_01J…")),
]
PRINTABLE = pattern(r"^[\x21-\x7e]+$", "must be printable ASCII characters, without spaces")
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]


_WHOLE_NUMBER_RANGE = 2**63


def _exact_whole_number(value: object) -> object:
    """JSON Schema counts 12.0 as the integer 12, so the contract accepts it; 12.5, "12" and true stay errors.

    Request bodies arrive with exact numbers (`app.core.json_body`): 12.0 is `Decimal("12.0")`, and
    999999999999999.99 stays a fraction (refused) instead of rounding to 10**15 as a binary float would."""
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value() and abs(value) < _WHOLE_NUMBER_RANGE:
            return int(value)
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# Use as `Annotated[int, Field(ge=…, le=…, strict=True), WholeNumber]` (constraints first, so the schema keeps them): strict refuses strings, booleans and
# fractions; this lets through only what JSON Schema itself calls an integer.
WholeNumber = BeforeValidator(_exact_whole_number)


def _rfc3339_text(value: object) -> object:
    if not isinstance(value, str) and not isinstance(value, datetime):
        raise ValueError("an RFC 3339 date-time string with an offset, e.g. 2026-12-01T00:00:00Z")
    return value


# An instant a client sends: an RFC 3339 string with an offset; a bare number is not read as a Unix time.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_in_query(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("an RFC 3339 date-time with an offset, e.g. 2026-12-01T00:00:00Z")
    return value


# The same in a query string, where every value is text: only the RFC 3339 form (`0.5` is not a time).
QueryInstant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_in_query)]
