"""Jinja2 environments, one per language (each with its gettext catalogue installed), and page rendering with
the headers every page carries."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.nodes import EvalContext
from markupsafe import Markup

from app.web.i18n import LANGUAGE_NAMES, LANGUAGES, Formatter, translations
from app.web.security import csp

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
# The API reference's Swagger UI, pinned: the folder names its version (see its SOURCE file).
SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"


@cache
def templates(language: str) -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        extensions=["jinja2.ext.i18n", LiteralTranslations],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the code: no file check on every render
    )
    environment.policies["ext.i18n.trimmed"] = True
    _install_gettext(environment, language)
    environment.globals.update(
        fmt=Formatter(language), language=language, languages=LANGUAGES, language_names=LANGUAGE_NAMES
    )
    return Jinja2Templates(env=environment)


def _install_gettext(environment: jinja2.Environment, language: str) -> None:
    """Jinja's "newstyle" gettext (the translation is a format string; `%(name)s` values are escaped), with the
    language's catalogue, at a fraction of the cost. Jinja's own goes through three context calls per `_()` and
    makes a new `Markup` each time (about 15 % of a receipt page's CPU, docs/scaling.md); an environment here serves
    one language, so each message's translation is looked up once (bounded: templates only translate literals,
    but nothing should grow with what a request sends)."""
    catalogue = translations(language)
    environment.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]

    @lru_cache(maxsize=2048)
    def translated(message: str) -> Markup:
        return Markup(catalogue.gettext(message))  # noqa: S704 - our own catalogue, reviewed like a template

    @lru_cache(maxsize=2048)
    def without_values(message: str) -> Markup:
        return translated(message) % {}  # as Jinja's: always a format string, so "%%" is "%"

    @jinja2.pass_eval_context
    def gettext(context: EvalContext, message: str, /, **values: Any) -> str:
        if not context.autoescape:
            return catalogue.gettext(message) % values
        return translated(message) % values if values else without_values(message)

    @jinja2.pass_eval_context
    def ngettext(context: EvalContext, singular: str, plural: str, count: int, /, **values: Any) -> str:
        text = catalogue.ngettext(singular, plural, count)
        values.setdefault("num", count)
        return (Markup(text) if context.autoescape else text) % values  # noqa: S704 - as above

    # `_` is Jinja's alias for whatever `gettext` is; calling ours directly saves a context call per message.
    environment.globals.update(gettext=gettext, _=gettext, ngettext=ngettext)
    # `LiteralTranslations` compiles in what a call without values gives at render time: the same function.
    environment.extend(literal_translation=without_values)


class LiteralTranslations(Extension):
    """Translates a message written as one string literal, `_("Where")` or `gettext("Where")`, when the template
    is compiled rather than on every render: an environment serves one language, so such a call always gives the
    same text. It becomes `("Dimana"|safe)`, a constant Jinja folds into the template's own text — what the call
    gave at render time (a translation is trusted like the template; `%%` reads `%`), without the call and the
    escaping (a receipt page made 22 such calls). Calls with values, or with anything else, stay calls."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        translate: Callable[[str], str] | None = getattr(self.environment, "literal_translation", None)
        tokens = list(stream)
        at = 0
        while at < len(tokens):
            call = tokens[at : at + 4]
            if translate is not None and _is_literal_message(call, tokens[at - 1] if at else None):
                try:
                    text = translate(call[2].value)
                except (KeyError, TypeError, ValueError):
                    text = None  # a placeholder without its value: left for render time to report
                if text is not None:
                    line = call[0].lineno
                    yield from (
                        Token(line, "lparen", "("),
                        Token(line, "string", text),
                        Token(line, "pipe", "|"),
                        Token(line, "name", "safe"),
                        Token(line, "rparen", ")"),
                    )
                    at += 4
                    continue
            yield tokens[at]
            at += 1


def _is_literal_message(call: list[Token], before: Token | None) -> bool:
    """`_("…")` or `gettext("…")`, not an attribute such as `x._("…")`."""
    return (
        len(call) == 4
        and call[0].type == "name"
        and call[0].value in ("_", "gettext")
        and (before is None or before.type != "dot")
        and [t.type for t in call[1:]] == ["lparen", "string", "rparen"]
    )


def render(
    request: Request,
    language: str,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    private: bool = False,
    stripe_js_url: str | None = None,
    data_images: bool = False,
    blob_images: bool = False,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page in `language`. Private pages (a merchant's) are never stored by a cache. `headers` are added to
    (or replace) the usual ones."""
    template = templates(language).get_template(name)
    content = template.render({"request": request, "path": request.scope["path"], **context})
    all_headers = {
        "Content-Language": language,
        "Vary": "Accept-Language, Cookie",
        "Cache-Control": "no-store" if private else "no-cache",
        "Content-Security-Policy": csp(
            stripe_js_url=stripe_js_url, data_images=data_images, blob_images=blob_images
        ),
        **(headers or {}),
    }
    return HTMLResponse(content, status_code=status_code, headers=all_headers)
