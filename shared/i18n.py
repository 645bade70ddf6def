"""The languages Rapport speaks, for every page it serves (followups' customer pages, the console).

One way for all of them:
- **Which language**: `choose_language(wanted, accept_language)` picks one of LANGUAGES from a person's or
  customer's preference (a BCP 47 tag such as "hu-HU" or POSIX "lv_LV"), then the browser's
  Accept-Language, then English.
- **The words**: a page package keeps one catalogue per language, `locales/<language>.json`, a flat object of
  message ids to text with `{name}` placeholders. `Catalogues.load(folder)` reads them all and refuses a set
  where one language lacks an id another has, so no page shows an untranslated string; `words(language)`
  gives the `t(id, **values)` a template calls. `unknown_ids(templates, catalogues)` finds ids a template
  uses that no catalogue defines (a test runs it over every template).
- **Numbers, money and dates**: Babel (CLDR data), through `Formats(language)`.
- **Direction**: Persian is written right to left; `direction(language)` gives the `dir` attribute.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_timedelta
from babel.numbers import format_currency, format_decimal, format_percent

LANGUAGES = ("en", "hu", "sk", "fa", "hy", "lv")
FALLBACK = "en"
RIGHT_TO_LEFT = frozenset({"fa"})
NATIVE_NAMES = {
    "en": "English",
    "hu": "Magyar",
    "sk": "Slovenčina",
    "fa": "فارسی",
    "hy": "Հայերեն",
    "lv": "Latviešu",
}

# Babel formats with the locale's symbols but always Latin digits; Persian writes its own.
NATIVE_DIGITS = {"fa": str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TEMPLATE_ID = re.compile(r"""\bt\(\s*["']([\w.-]+)["']""")


def language_of(tag: str | None) -> str | None:
    """The Rapport language of a BCP 47 or POSIX tag ("hu-HU", "lv_LV" → "hu", "lv"), or None."""
    if not tag:
        return None
    language = re.split(r"[-_;]", tag.strip(), maxsplit=1)[0].lower()
    return language if language in LANGUAGES else None


def choose_language(wanted: str | None = None, accept_language: str | None = None) -> str:
    """The person's own choice if Rapport speaks it, else the browser's best match, else English."""
    chosen = language_of(wanted)
    if chosen:
        return chosen
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for position, part in enumerate(accept_language.split(",")):
            tag, _, quality = part.strip().partition(";q=")
            try:
                weight = float(quality) if quality else 1.0
            except ValueError:
                continue
            language = language_of(tag)
            if language and weight > 0:
                ranked.append((-weight, position, language))
        if ranked:
            return min(ranked)[2]
    return FALLBACK


def direction(language: str) -> Literal["ltr", "rtl"]:
    return "rtl" if language in RIGHT_TO_LEFT else "ltr"


class Words:
    """One language's catalogue: `t("today.calls_due", count=3)` → the text with its placeholders filled."""

    def __init__(self, language: str, messages: dict[str, str]) -> None:
        self.language = language
        self._messages = messages

    def __call__(self, message_id: str, **values: object) -> str:
        text = self._messages.get(message_id)
        if text is None:
            raise KeyError(f"no text for {message_id!r} in {self.language}")
        return text.format(**values) if values else text


@dataclass(frozen=True)
class Catalogues:
    by_language: dict[str, dict[str, str]]

    @classmethod
    def load(cls, folder: Path) -> "Catalogues":
        """Every language's `<folder>/<language>.json`; raises ValueError when one is missing or incomplete."""
        by_language: dict[str, dict[str, str]] = {}
        for language in LANGUAGES:
            path = folder / f"{language}.json"
            if not path.exists():
                raise ValueError(f"{path} is missing: every page speaks {', '.join(LANGUAGES)}")
            by_language[language] = json.loads(path.read_text(encoding="utf-8"))
        reference = by_language[FALLBACK]
        for language, messages in by_language.items():
            missing = sorted(set(reference) - set(messages))
            extra = sorted(set(messages) - set(reference))
            if missing or extra:
                raise ValueError(f"{folder}/{language}.json: missing {missing}, not in English {extra}")
            for message_id, text in messages.items():
                if set(_PLACEHOLDER.findall(text)) != set(_PLACEHOLDER.findall(reference[message_id])):
                    raise ValueError(f"{folder}/{language}.json: {message_id!r} has other placeholders than English")
        return cls(by_language)

    def words(self, language: str) -> Words:
        chosen = language if language in self.by_language else FALLBACK
        return Words(chosen, self.by_language[chosen])


def unknown_ids(templates: Path, catalogues: Catalogues) -> dict[str, list[str]]:
    """Per template file, the `t("…")` ids it uses that the catalogues do not define (empty when all are)."""
    known = set(catalogues.by_language[FALLBACK])
    unknown: dict[str, list[str]] = {}
    for path in sorted(templates.rglob("*.html")):
        used = set(_TEMPLATE_ID.findall(path.read_text(encoding="utf-8")))
        if used - known:
            unknown[str(path.relative_to(templates))] = sorted(used - known)
    return unknown


class Formats:
    """Numbers, money and dates as the language writes them (Babel, CLDR; Persian with its own digits)."""

    def __init__(self, language: str) -> None:
        try:
            self.locale = Locale.parse(language)
        except (UnknownLocaleError, ValueError):
            self.locale = Locale.parse(FALLBACK)
        self._digits = NATIVE_DIGITS.get(str(self.locale.language), {})

    def _written(self, text: str) -> str:
        return text.translate(self._digits) if self._digits else text

    def number(self, value: int | float | Decimal) -> str:
        return self._written(format_decimal(value, locale=self.locale, numbering_system="default"))

    def percent(self, value: float | Decimal) -> str:
        return self._written(format_percent(value, locale=self.locale, numbering_system="default"))

    def money(self, amount: Decimal | str, currency: str) -> str:
        formatted = format_currency(Decimal(amount), currency, locale=self.locale, numbering_system="default")
        return self._written(formatted)

    def date(self, value: datetime, width: Literal["short", "medium", "long", "full"] = "medium") -> str:
        return self._written(format_date(value, format=width, locale=self.locale))

    def datetime(self, value: datetime, width: Literal["short", "medium", "long", "full"] = "medium") -> str:
        return self._written(format_datetime(value, format=width, locale=self.locale))

    def duration(self, seconds: float) -> str:
        return self._written(format_timedelta(timedelta(seconds=seconds), locale=self.locale, add_direction=True))
