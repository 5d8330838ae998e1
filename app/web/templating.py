"""Jinja2 environments, one per language (each with its gettext catalogue installed), and page rendering with
the headers every page carries."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

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
    environment.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    environment.globals.update(
        fmt=Formatter(language), language=language, languages=LANGUAGES, language_names=LANGUAGE_NAMES
    )
    return Jinja2Templates(env=environment)


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
