"""Every string a visitor can see is in every catalogue (Bahasa Indonesia, 简体中文), translated (not the English left
in place), with the same placeholders, and one word for each thing."""

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


def _extracted() -> set[str]:
    method_map = [("app/web/**.py", "python"), ("app/web/templates/**.html", "jinja2")]
    options = {"app/web/templates/**.html": {"trimmed": "true"}}
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options):
        found.add(message if isinstance(message, str) else message[0])
    return found


CATALOGUES = sorted(path.parent.parent.name for path in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
# Strings that read the same in another language: names and codes.
SAME_EVERYWHERE = {"Goods for Good", "%(name)s — Goods for Good"}
# Words the language uses as English spells them (Indonesian: "final", "status", "total", "per unit").
SAME_IN = {"id": {"Final", "Per unit", "Status", "Total"}}


def _catalogue(language: str) -> dict[str, Message]:
    """Messages by their id (a plural one by its singular, as extraction names it)."""
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return {
            (m.id if isinstance(m.id, str) else m.id[0]): m
            for m in read_po(po, locale=language.replace("-", "_"))
            if m.id
        }


def _strings(string: str | tuple[str, ...]) -> list[str]:
    """A message's translation(s), each plural form its own; none when any form is empty."""
    forms = [string] if isinstance(string, str) else list(string)
    return forms if all(forms) else []


def test_there_are_catalogues_besides_english() -> None:
    assert "id" in CATALOGUES


@pytest.mark.parametrize("language", CATALOGUES)
def test_every_visible_string_is_translated(language: str) -> None:
    entries = _catalogue(language)
    extracted = _extracted()
    assert len(extracted) > 50
    missing = sorted(extracted - set(entries))
    assert not missing, (
        f"not in the {language} catalogue (run `make translations`, then translate): {missing}"
    )
    untranslated = sorted(m for m in extracted if not _strings(entries[m].string) or entries[m].fuzzy)
    assert not untranslated, f"untranslated or fuzzy in the {language} catalogue: {untranslated}"
    english = sorted(
        m
        for m in extracted
        if entries[m].string == m
        and re.search(
            "[a-z]{3}", _PLACEHOLDER.sub("", m)
        )  # placeholders alone ("%(region)s, %(country)s") are no English
        and m not in SAME_EVERYWHERE | SAME_IN.get(language, set())
    )
    assert not english, f"left in English in the {language} catalogue: {english}"
    for message in extracted:
        ids = entries[message].id
        wanted = set(_PLACEHOLDER.findall(ids if isinstance(ids, str) else ids[-1]))
        for translated in _strings(entries[message].string):
            assert set(_PLACEHOLDER.findall(translated)) == wanted, message
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
