"""Every string a visitor can see is in every catalogue (Bahasa Indonesia, 简体中文; the field app's in Nepali, Khmer
and Burmese too), translated (not the English left in place), with the same placeholders, and one word for each
thing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app.web.i18n import TRANSLATIONS
from app.web.templating import templates

ROOT = Path(__file__).resolve().parents[2]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _key(message: str | tuple[str, ...], context: str | None) -> str:
    """A message as a catalogue holds it: a plural by its singular, a message in a context apart from the same
    words without one ("Delivered" as a receipt's step is not the field app's button)."""
    singular = message if isinstance(message, str) else message[0]
    return f"{context}\x04{singular}" if context else singular


def _extracted() -> set[str]:
    method_map = [("app/web/**.py", "python"), ("app/web/templates/**.html", "jinja2")]
    options = {"app/web/templates/**.html": {"trimmed": "true"}}
    found = set()
    for _, _, message, _, context in extract_from_dir(str(ROOT), method_map, options):
        found.add(_key(message, context))
    return found


CATALOGUES = sorted(path.parent.parent.name for path in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
# Strings that read the same in another language: names and codes.
SAME_EVERYWHERE = {"Goods for Good", "%(name)s — Goods for Good"}
# Words the language uses as English spells them (Indonesian: "final", "status", "total", "per unit").
SAME_IN = {"id": {"Admin", "Final", "Per unit", "Platform", "Status", "Total"}}
# Languages that only the field app (`/partner`) offers, and those it doesn't: what each catalogue covers.
FIELD_APP_ONLY = {"ne", "km", "my"}
SCOPE = {"zh_Hans": "the other pages"} | dict.fromkeys(FIELD_APP_ONLY, "field app")


def _catalogue(language: str) -> dict[str, Message]:
    """The catalogue's entries by message id (a plural by its singular)."""
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language.replace("-", "_"))
    return {_key(m.id, m.context): m for m in catalog if m.id}


def _forms(message: Message) -> list[str]:
    return [str(f) for f in message.string] if isinstance(message.string, tuple) else [str(message.string)]


def test_there_are_catalogues_besides_english() -> None:
    assert {"id", "zh_Hans", *FIELD_APP_ONLY} <= set(CATALOGUES)


@pytest.mark.parametrize("language", CATALOGUES)
def test_every_visible_string_is_translated(language: str) -> None:
    entries = _catalogue(language)
    extracted = _extracted()
    assert len(extracted) > 50
    missing = sorted(extracted - set(entries))
    assert not missing, (
        f"not in the {language} catalogue (run `make translations`, then translate): {missing}"
    )
    shown = {
        "field app": _field_app_strings,
        "the other pages": _other_pages_strings,
        "every page": lambda: extracted,
    }[SCOPE.get(language, "every page")]()
    untranslated = sorted(m for m in shown if entries[m].fuzzy or not all(_forms(entries[m])))
    assert not untranslated, f"untranslated or fuzzy in the {language} catalogue: {untranslated}"
    english = sorted(
        m
        for m in shown
        if m in _forms(entries[m])
        and re.search(
            "[a-z]{3}", _PLACEHOLDER.sub("", m)
        )  # placeholders alone ("%(region)s, %(country)s") aren't English
        and m not in SAME_EVERYWHERE | SAME_IN.get(language, set())
    )
    assert not english, f"left in English in the {language} catalogue: {english}"
    for message in shown:
        ids = entries[message].id
        wanted = set(_PLACEHOLDER.findall(ids if isinstance(ids, str) else ids[-1]))
        for form in _forms(entries[message]):
            assert set(_PLACEHOLDER.findall(form)) == wanted, message
    stale = sorted(set(entries) - extracted)
    assert not stale, f"no longer used (run `make translations`): {stale}"


def test_indonesian_has_one_word_for_a_love_package() -> None:
    translations = [str(m.string) for m in _catalogue("id").values()]
    assert sum("Paket Kasih" in t for t in translations) >= 5
    assert not [t for t in translations if "Love Package" in t]


def test_the_catalogue_is_what_the_pages_use() -> None:
    source = '{{ _("Where the money goes") }}'
    assert templates("id").env.from_string(source).render() == "Ke mana uangnya mengalir"
    assert templates("en").env.from_string(source).render() == "Where the money goes"
    assert templates("zh-Hans").env.from_string(source).render() == "善款去向"


def _other_pages_strings() -> set[str]:
    """What every page but the field app shows."""
    method_map = [
        ("app/web/partner/**.py", "ignore"),
        ("app/web/templates/partner/**.html", "ignore"),
        ("app/web/**.py", "python"),
        ("app/web/templates/**.html", "jinja2"),
    ]
    options = {"app/web/templates/**.html": {"trimmed": "true"}}
    return {
        _key(message, context)
        for _, _, message, _, context in extract_from_dir(str(ROOT), method_map, options)
    }


def _field_app_strings() -> set[str]:
    """What the field app (`/partner`) shows: its templates and its Python."""
    method_map = [("app/web/partner/**.py", "python"), ("app/web/templates/partner/**.html", "jinja2")]
    options = {"app/web/templates/partner/**.html": {"trimmed": "true"}}
    return {
        _key(message, context)
        for _, _, message, _, context in extract_from_dir(str(ROOT), method_map, options)
    }


def test_the_field_app_speaks_nepali_khmer_and_burmese() -> None:
    extracted = _field_app_strings()
    assert len(extracted) > 50
    for language in ("ne", "km", "my"):
        with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
            catalog = read_po(po, locale=language)
        entries = {_key(m.id, m.context): m for m in catalog if m.id}
        untranslated = sorted(
            m
            for m in extracted
            if m not in entries
            or entries[m].fuzzy
            or not all(entries[m].string if isinstance(entries[m].string, tuple) else [entries[m].string])
        )
        assert not untranslated, f"untranslated in the {language} catalogue: {untranslated}"
        for message in extracted:
            translated = entries[message].string
            for form in translated if isinstance(translated, tuple) else (translated,):
                assert set(_PLACEHOLDER.findall(str(form))) == set(_PLACEHOLDER.findall(message)), message
    assert templates("ne").env.from_string('{{ _("My shipments") }}').render() == "मेरा ढुवानीहरू"
    assert templates("km").env.from_string('{{ _("My shipments") }}').render() == "ការដឹកជញ្ជូនរបស់ខ្ញុំ"
    assert templates("my").env.from_string('{{ _("My shipments") }}').render() == "ကျွန်ုပ်၏ ပို့ဆောင်မှုများ"
