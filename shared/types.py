"""Value types of the event contract: money, currency, locale, country, ratings, timestamps.

Each type validates on the way in, serialises back to the contract's JSON form
and carries a JSON-schema description and example for the AsyncAPI document.
"""

import functools
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    validate_email,
)

_MONEY = re.compile(r"^\d{1,12}(\.\d{1,4})?$")
# RFC 5646 well-formed tag, restricted to the parts shops actually send:
# language, optional script, optional region, optional variants.
_BCP47 = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})"
    r"(-[A-Za-z]{4})?"
    r"(-(?:[A-Za-z]{2}|\d{3}))?"
    r"(-(?:[A-Za-z\d]{5,8}|\d[A-Za-z\d]{3}))*$"
)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    # A number would be read as seconds since 1970 and an order dated wrongly without a word: strings only.
    if isinstance(value, datetime):
        return value  # built in Python, not read from a message: AwareDatetime still wants its offset
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be an RFC 3339 string with an offset, not {type(value).__name__}")
    if not _RFC3339.match(value):
        raise ValueError(f"timestamp must be RFC 3339 with an offset such as 2026-11-02T10:15:00+01:00, got {value!r}")
    return value


def _money_from_string(value: Any) -> Decimal:
    # Floats lose cents; the contract carries money as a decimal string only.
    if not isinstance(value, str) and not isinstance(value, Decimal):
        raise ValueError('money must be a decimal string such as "49.90", not a number')
    text = str(value)
    if not _MONEY.match(text):
        raise ValueError(f'money must be a non-negative decimal string such as "49.90", got {text!r}')
    return Decimal(text)


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value) or pycountry.currencies.get(alpha_3=value) is None:
        raise ValueError(f"currency must be an upper-case ISO 4217 code such as EUR, got {value!r}")
    return value


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value) or pycountry.countries.get(alpha_2=value) is None:
        raise ValueError(f"country must be an upper-case ISO 3166 alpha-2 code such as SK, got {value!r}")
    return value


@functools.lru_cache(maxsize=100_000)
def _email(value: str) -> str:
    """The address as pydantic's EmailStr gives it back. Checking one costs more than the rest of an
    order event together, and a shop's regulars come back with the same address: each is checked once."""
    return validate_email(value)[1]


def _locale(value: str) -> str:
    match = _BCP47.match(value)
    language = match.group("language").lower() if match else ""
    known = pycountry.languages.get(alpha_2=language) if len(language) == 2 else None
    known = known or (pycountry.languages.get(alpha_3=language) if len(language) == 3 else None)
    if known is None:
        raise ValueError(f"locale must be a BCP 47 language tag such as hu-HU, got {value!r}")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_money_from_string),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _MONEY.pattern,
            "description": "A non-negative amount as a decimal string, never a float.",
            "examples": ["49.90"],
        }
    ),
]

Currency = Annotated[
    str,
    AfterValidator(_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code.", "examples": ["EUR"]}),
]

Country = Annotated[
    str,
    AfterValidator(_country),
    WithJsonSchema(
        {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2 code.", "examples": ["SK"]}
    ),
]

Locale = Annotated[
    str,
    AfterValidator(_locale),
    WithJsonSchema({"type": "string", "description": "BCP 47 language tag.", "examples": ["hu-HU"]}),
]


def _whole(value: Any) -> Any:
    # JSON Schema's integer admits 4.0; a fraction, a string or a bool stays refused by the strict int.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# For a strict int in an HTTP body: take what JSON Schema calls an integer (4 and 4.0), nothing else ("4", true,
# 4.5). Put it last: `Annotated[int, Field(ge=1, strict=True), WholeFloats]` keeps the bounds in the schema.
WholeFloats = BeforeValidator(_whole)

Rating = Annotated[int, Field(ge=1, le=5, strict=True)]
Nps = Annotated[int, Field(ge=0, le=10, strict=True)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Email = Annotated[str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email"})]
# Surrounding spaces are stripped, so an id must hold something else; the pattern says so in the schema too
# (a character that is a space neither to JSON Schema's ECMAScript regex nor to Python's str.strip).
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True, pattern=r"[^\s\x1c-\x1f\x85]")
]
ShortText = Annotated[str, StringConstraints(max_length=200)]
