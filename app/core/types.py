"""Validated field types shared by API schemas."""

from __future__ import annotations

from typing import Annotated

import pycountry
from pydantic import AfterValidator, StringConstraints, WithJsonSchema


def _known_country(code: str) -> str:
    if pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


_COUNTRY_CODES = sorted(country.alpha_2 for country in pycountry.countries)

CountryCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}$"),
    AfterValidator(_known_country),
    WithJsonSchema({"type": "string", "enum": _COUNTRY_CODES, "description": "ISO 3166-1 alpha-2"}),
]
# Free text a person reads: no control characters (PostgreSQL refuses NUL; logs and CSVs hate the rest).
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
# Our own ids (`mer_01J…`); anything else cannot name a resource of ours.
ResourceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,64}$")]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
