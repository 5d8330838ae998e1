"""Jinja2 environments, one per language (each with its gettext catalogue installed), and page rendering with
the headers every page carries."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
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
        extensions=["jinja2.ext.i18n"],
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
) -> HTMLResponse:
    """A page in `language`. Private pages (a merchant's) are never stored by a cache."""
    response = templates(language).TemplateResponse(
        request, name, {"path": request.url.path, **context}, status_code=status_code
    )
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language, Cookie"
    response.headers["Cache-Control"] = "no-store" if private else "no-cache"
    response.headers["Content-Security-Policy"] = csp(
        stripe_js_url=stripe_js_url, data_images=data_images, blob_images=blob_images
    )
    assert isinstance(response, HTMLResponse)
    return response
