"""Every string a visitor can see is in the Indonesian catalogue, translated, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app.web.i18n import TRANSLATIONS
from app.web.templating import templates

ROOT = Path(__file__).resolve().parents[2]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _extracted() -> set[str]:
    method_map = [("app/web/**.py", "python"), ("app/web/templates/**.html", "jinja2")]
    options = {"app/web/templates/**.html": {"trimmed": "true"}}
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_visible_string_has_an_indonesian_translation() -> None:
    with (TRANSLATIONS / "id" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale="id")
    entries = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog if m.id}  # plurals by singular
    extracted = _extracted()
    assert len(extracted) > 50
    missing = sorted(extracted - set(entries))
    assert not missing, f"not in the id catalogue (run `make translations`, then translate): {missing}"
    untranslated = sorted(m for m in extracted if not entries[m].string or entries[m].fuzzy)
    assert not untranslated, f"untranslated or fuzzy in the id catalogue: {untranslated}"
    for message in extracted:
        translated = str(entries[message].string)
        assert set(_PLACEHOLDER.findall(translated)) == set(_PLACEHOLDER.findall(str(message))), message
    stale = sorted(set(entries) - extracted)
    assert not stale, f"no longer used (run `make translations`): {stale}"


def test_the_catalogue_is_what_the_pages_use() -> None:
    source = '{{ _("Where the money goes") }}'
    assert templates("id").env.from_string(source).render() == "Ke mana uangnya mengalir"
    assert templates("en").env.from_string(source).render() == "Where the money goes"


def _field_app_strings() -> set[str]:
    """What the field app (`/partner`) shows: its templates and its Python."""
    method_map = [("app/web/partner/**.py", "python"), ("app/web/templates/partner/**.html", "jinja2")]
    options = {"app/web/templates/partner/**.html": {"trimmed": "true"}}
    return {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options)
    }


def test_the_field_app_speaks_nepali_khmer_and_burmese() -> None:
    extracted = _field_app_strings()
    assert len(extracted) > 50
    for language in ("ne", "km", "my"):
        with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
            catalog = read_po(po, locale=language)
        entries = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog if m.id}
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
