"""Pages translate a literal message when the template is compiled (`LiteralTranslations`): what a visitor reads
must be exactly what the call gave at render time, in every language, escaped the same way."""

from __future__ import annotations

import pytest

from app.web.i18n import LANGUAGES, translations
from app.web.templating import templates


def _literal_messages(language: str) -> list[str]:
    """Every message of the language's catalogue that has no placeholder (those are the ones compiled in)."""
    catalogue = translations(language)
    messages = getattr(catalogue, "_catalog", {})
    found = [m for m in messages if isinstance(m, str) and m and "%(" not in m and "\x04" not in m]
    return found or ["Where the money goes", "Transparency", "100%% of it"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_literal_message_reads_as_the_same_message_given_at_render_time(language: str) -> None:
    environment = templates(language).env
    at_render = environment.from_string('{{ _(m) }}|<a title="{{ _(m) }}">{{ gettext(m) }}</a>')
    plain_at_render = environment.from_string("{% autoescape false %}{{ _(m) }}{% endautoescape %}")
    messages = _literal_messages(language)
    assert len(messages) > 20 or language == "en"
    for message in messages:
        literal = repr(message)
        folded = environment.from_string(
            f'{{{{ _({literal}) }}}}|<a title="{{{{ _({literal}) }}}}">{{{{ gettext({literal}) }}}}</a>'
        )
        assert folded.render() == at_render.render(m=message), message
        unescaped = environment.from_string(
            f"{{% autoescape false %}}{{{{ _({literal}) }}}}{{% endautoescape %}}"
        )
        assert unescaped.render() == plain_at_render.render(m=message), message


def test_a_literal_message_is_compiled_into_the_template_text() -> None:
    source = templates("id").env.compile('<h2>{{ _("Where the money goes") }}</h2>', raw=True)
    assert "Ke mana uangnya mengalir" in source
    assert "context.call" not in source  # no call left: the text is part of the template


def test_calls_that_are_not_a_single_literal_stay_calls() -> None:
    environment = templates("id").env
    # Values are escaped at render time; a percent sign doubled reads once.
    with_values = environment.from_string('{{ _("Grade %(grade)s", grade=g) }}')
    assert with_values.render(g="<b>") == "Kelas &lt;b&gt;"
    assert "context.call" in environment.compile('{{ _("Grade %(grade)s", grade=g) }}', raw=True)
    # Another object's `_` is that object's, not a translation.
    assert environment.from_string('{{ x._("Transparency") }}').render(x={"_": lambda m: "own " + m}) == (
        "own Transparency"
    )
    # A placeholder without its value still fails when rendered, as the call would.
    with pytest.raises(KeyError):
        environment.from_string('{{ _("Grade %(grade)s") }}').render()
