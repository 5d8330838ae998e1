"""Languages of the pages: gettext catalogues (`translations/<lang>/LC_MESSAGES/messages.po`, compiled in memory
at start, so a fresh checkout needs no build step), the choice from a cookie or `Accept-Language`, and
locale-aware numbers, money and dates (Babel's CLDR data)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime, format_skeleton
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import NullTranslations, Translations

from app.core.money import major_units

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LANGUAGES = ("en", "id", "zh-Hans")  # English is the source language; the others have a catalogue
# The logistics partners' field app (`/partner`) also speaks the languages of the drivers who deliver: Nepali,
# Khmer, Burmese. Their catalogues translate the field app's strings; the other pages stay in `LANGUAGES`.
FIELD_APP_LANGUAGES = ("en", "ne", "km", "my", "id")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {
    "en": "English",
    "id": "Bahasa Indonesia",
    "zh-Hans": "简体中文",
    "ne": "नेपाली",
    "km": "ខ្មែរ",
    "my": "မြန်မာ",
}
# The language tags pages use (BCP 47, as in `<html lang>`) and the CLDR locales Babel formats with: Simplified
# Chinese as written in China, so CNY is "¥" and dates read 2026年12月1日.
_BABEL_LOCALES = {"zh-Hans": "zh_Hans_CN"}
_CATALOGUE_DIRS = {"zh-Hans": "zh_Hans"}
# Chinese tags that mean Traditional script: not served Simplified Chinese unasked.
_TRADITIONAL = ("zh-hant", "zh-tw", "zh-hk", "zh-mo")


def babel_locale(language: str) -> str:
    return _BABEL_LOCALES.get(language, language)


@cache
def _locale(language: str) -> Locale:
    """The parsed CLDR locale, once per language (Babel would parse the name again on every call)."""
    return Locale.parse(babel_locale(language))


LANGUAGE_COOKIE = "g4g_lang"


@cache
def translations(language: str) -> NullTranslations:
    """The language's catalogue, compiled from its `.po` file on first use."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    folder = _CATALOGUE_DIRS.get(language, language)
    with (TRANSLATIONS / folder / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=folder)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def _accepted(header: str) -> list[str]:
    """Language tags from an `Accept-Language` header, most wanted first (q=0 means not wanted)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


@lru_cache(maxsize=256)  # browsers send a few distinct headers; bounded whatever a client sends
def choose_language(
    cookie: str | None, accept_language: str | None, languages: tuple[str, ...] = LANGUAGES
) -> str:
    """The visitor's own choice (the switch's cookie) first, then what the browser asks for, then English;
    among `languages` (the pages', or the field app's). Remembered per header (parsing it on every request was
    about 2 % of a receipt page's CPU)."""
    if cookie in languages:
        return cookie
    if accept_language:
        for tag in _accepted(accept_language):
            chosen = _language_for(tag, languages)
            if chosen is not None:
                return chosen
    return DEFAULT_LANGUAGE


def _language_for(tag: str, languages: tuple[str, ...]) -> str | None:
    """One `Accept-Language` tag as one of `languages`, if it is one: any Chinese but Traditional is zh-Hans."""
    lowered = tag.lower()
    if lowered == "zh" or lowered.startswith("zh-"):
        return "zh-Hans" if "zh-Hans" in languages and not lowered.startswith(_TRADITIONAL) else None
    if tag == "*":
        return None
    try:
        chosen = Locale.negotiate([tag], [code for code in languages if code != "zh-Hans"], sep="-")
    except (ValueError, TypeError):
        return None
    return str(chosen) if chosen is not None and str(chosen) in languages else None


@dataclass(frozen=True, slots=True)
class Formatter:
    """Numbers, money and dates written the way a reader of `language` expects."""

    language: str

    @property
    def locale(self) -> Locale:
        return _locale(self.language)

    def gettext(self, message: str) -> str:
        return _gettext(self.language, message)

    def pgettext(self, context: str, message: str) -> str:
        """A message whose translation depends on where it is used (e.g. a receipt's step, not a money stage)."""
        return _pgettext(self.language, context, message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return translations(self.language).ngettext(singular, plural, count)

    def count(self, value: int | str) -> str:
        return value if isinstance(value, str) else _count(self.language, value)

    def country(self, code: str) -> str:
        """An ISO 3166-1 code as the country's name in the reader's language (CLDR data, through Babel)."""
        return str(self.locale.territories.get(code, code))

    def money(self, amount: int, currency: str) -> str:
        """Minor units as an amount in the currency (exact: Decimal from the integer, never a float)."""
        return _money(self.language, amount, currency)

    def percent_bps(self, bps: int) -> str:
        return format_percent(Decimal(bps).scaleb(-4), "#,##0.#%", locale=self.locale)

    def month(self, month: str) -> str:
        """`2026-11` → "Nov 2026"."""
        year, number = month.split("-")
        return format_skeleton("yMMM", date(int(year), int(number), 1), locale=self.locale)

    def day(self, value: datetime) -> str:
        """The date of an instant in UTC, e.g. "Dec 1, 2026" or "2026年12月1日"."""
        return _day(self.language, value.astimezone(UTC).date())

    def timestamp(self, value: datetime) -> str:
        """An instant in UTC, e.g. "Nov 29, 2026, 8:52:20 AM UTC"."""
        return format_datetime(value, "medium", tzinfo=UTC, locale=self.locale) + " UTC"


# The messages and counts pages write from Python (a receipt's timeline, a badge), kept per language like the
# amounts and days below.
@lru_cache(maxsize=4096)
def _gettext(language: str, message: str) -> str:
    return translations(language).gettext(message)


@lru_cache(maxsize=4096)
def _pgettext(language: str, context: str, message: str) -> str:
    return str(translations(language).pgettext(context, message))


@lru_cache(maxsize=4096)
def _count(language: str, value: int) -> str:
    return format_decimal(value, locale=_locale(language))


# Babel works a pattern out afresh on every call (~50 µs each); a receipt page writes about ten amounts and dates,
# and the same ones recur across pages (package costs, shares, the days things happened). Results are pure
# functions of their arguments, so a bounded cache of them is exact.
@lru_cache(maxsize=8192, typed=True)
def _money(language: str, amount: int, currency: str) -> str:
    return format_currency(major_units(amount, currency), currency, locale=_locale(language))


@lru_cache(maxsize=4096)
def _day(language: str, day: date) -> str:
    return format_date(day, "medium", locale=_locale(language))
