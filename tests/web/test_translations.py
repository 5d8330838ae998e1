"""Every string a visitor can see is in the Indonesian and Simplified Chinese catalogues, translated, with the same
placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app.web.i18n import TRANSLATIONS
from app.web.templating import templates

ROOT = Path(__file__).resolve().parents[2]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _strings(string: str | tuple[str, ...]) -> list[str]:
    """A message's translation(s), each plural form its own; none when any form is empty."""
    forms = [string] if isinstance(string, str) else list(string)
    return forms if all(forms) else []


def _extracted() -> set[str]:
    method_map = [("app/web/**.py", "python"), ("app/web/templates/**.html", "jinja2")]
    options = {"app/web/templates/**.html": {"trimmed": "true"}}
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options):
        found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("folder", ["id", "zh_Hans"])
def test_every_visible_string_has_a_translation(folder: str) -> None:
    with (TRANSLATIONS / folder / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=folder)
    entries = {(m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog if m.id}
    extracted = _extracted()
    assert len(extracted) > 50
    missing = sorted(extracted - set(entries))
    assert not missing, f"not in the {folder} catalogue (run `make translations`, then translate): {missing}"
    untranslated = sorted(m for m in extracted if not _strings(entries[m].string) or entries[m].fuzzy)
    assert not untranslated, f"untranslated or fuzzy in the {folder} catalogue: {untranslated}"
    for message in extracted:
        ids = entries[message].id
        wanted = set(_PLACEHOLDER.findall(ids if isinstance(ids, str) else ids[-1]))
        for translated in _strings(entries[message].string):
            assert set(_PLACEHOLDER.findall(translated)) == wanted, message
    stale = sorted(set(entries) - extracted)
    assert not stale, f"no longer used (run `make translations`): {stale}"


def test_the_catalogue_is_what_the_pages_use() -> None:
    source = '{{ _("Where the money goes") }}'
    assert templates("id").env.from_string(source).render() == "Ke mana uangnya mengalir"
    assert templates("en").env.from_string(source).render() == "Where the money goes"
    chinese = templates("zh-Hans").env.from_string(source).render()
    assert chinese == "善款去向"
