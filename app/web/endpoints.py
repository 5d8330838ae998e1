"""The pages. HTTP only: what they show comes from `service.py`, how they look from `templates/`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import asyncpg
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.auth import Forbidden
from app.core.auth_failures import TooManyAttempts
from app.core.database import (
    PublicReadConnectionDep,
    ReadConnectionDep,
    ReportSessionDep,
    SessionDep,
    pooled,
    public_read_pool,
    usable_replica,
)
from app.core.errors import Unauthorized
from app.core.json_body import ExactJsonRoute
from app.core.patterns import pattern
from app.core.types import ResourceId
from app.merchants import repository as merchant_repository
from app.merchants.profile import public_figures
from app.receipts import service as receipts
from app.receipts.endpoints import RECEIPT_HEADERS, get_receipt, public_origin, receipt_for, receipt_json
from app.receipts.endpoints import router as receipts_router
from app.receipts.service import ReceiptNotFound
from app.settlement.schemas import SETUP_INTENT_ID
from app.web import badge, service
from app.web.i18n import FIELD_APP_LANGUAGES, LANGUAGE_COOKIE, LANGUAGES, Formatter, choose_language
from app.web.receipt import receipt_view
from app.web.service import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    SignedIn,
    SignInRefused,
)
from app.web.templating import SWAGGER_UI, render

router = APIRouter(include_in_schema=False, route_class=ExactJsonRoute)

_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9/_.-]*$")


def language_of(request: Request) -> str:
    return choose_language(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))


Language = Annotated[str, Depends(language_of)]


def https(request: Request) -> bool:
    return request.url.scheme == "https"


def same_origin(request: Request) -> bool:
    """A form posted from another site is refused even before its CSRF token is looked at."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True  # some browsers send neither on same-origin posts; the CSRF token still decides
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


# ---- the public page ----


@router.get("/", response_class=HTMLResponse)
async def public_page(request: Request, language: Language) -> HTMLResponse:
    snapshot = await request.app.state.transparency.current()
    page = service.public_page(snapshot.figures(), Formatter(language))
    return render(request, language, "public.html", {"page": page})


@router.get("/language/{code}")
async def choose_page_language(
    code: str, request: Request, next_page: Annotated[str, Query(alias="next", max_length=200)] = "/"
) -> Response:
    """The language switch: remember the choice for a year and go back to the page (a local path only)."""
    target = next_page if _LOCAL_PATH.match(next_page) and not next_page.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    if code in LANGUAGES or code in FIELD_APP_LANGUAGES:  # every page's languages and the field app's
        response.set_cookie(
            LANGUAGE_COOKIE,
            code,
            max_age=365 * 24 * 3600,
            samesite="lax",
            secure=https(request),
            httponly=True,
        )
    return response


# ---- a buyer's receipt: no cookie set or needed, kept out of search engines, caches and referrers ----


def cookieless_language(request: Request) -> str:
    """`?lang=` (the receipt's own switch) first, then the site's cookie and the browser's languages."""
    asked = request.query_params.get("lang")
    return asked if asked in LANGUAGES else language_of(request)


@router.get("/r/{token}", response_class=HTMLResponse)
async def receipt_page(token: str, request: Request, db: PublicReadConnectionDep) -> HTMLResponse:
    return await _receipt_page(token, request, db)


async def _receipt_page(token: str, request: Request, db: asyncpg.Connection) -> HTMLResponse:
    language = cookieless_language(request)
    try:
        receipt = await receipt_for(request, db, token)
    except ReceiptNotFound:
        return render(
            request,
            language,
            "receipt_missing.html",
            {"cookieless": True},
            status_code=404,
            headers=RECEIPT_HEADERS,
        )
    view = receipt_view(receipt, Formatter(language))
    return render(
        request, language, "receipt.html", {"view": view, "cookieless": True}, headers=RECEIPT_HEADERS
    )


class ReceiptFastPath:
    """Serves a buyer's receipt, `GET /r/{token}` (with at most `?lang=`) and `GET /v1/receipts/{token}`,
    straight from ASGI as `QuoteFastPath` does quotes: the same functions as the routes, without FastAPI's
    route matching and dependency solving, which cost about as much as rendering the page (docs/scaling.md).
    Anything else under those paths (another query, a QR code, another method) goes on to the routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        routes = {r.endpoint: r for r in router.routes if isinstance(r, APIRoute)}
        self._page = routes[receipt_page]
        (self._json,) = [
            r for r in receipts_router.routes if isinstance(r, APIRoute) and r.endpoint is get_receipt
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = self._served(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if served is None:
            await self.app(scope, receive, send)
            return
        route, token, answer = served
        scope["route"] = route  # the access line and metrics name the route, never the token
        scope["path_params"] = {"token": token}
        request = Request(scope, receive)
        state = scope[
            "app"
        ].state  # the replica's connections while it is within its lag bound, as the routes'
        pool = public_read_pool(state, await usable_replica(state))
        request.state.read_on_replica = pool is not state.read_pool
        async with pooled(pool) as db:
            response = await answer(token, request, db)
        await response(scope, receive, send)

    def _served(
        self, scope: Scope
    ) -> tuple[APIRoute, str, Callable[[str, Request, asyncpg.Connection], Awaitable[Response]]] | None:
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if path.startswith("/r/"):
            token = path[3:]
            if query and not _LANG_QUERY.fullmatch(query):
                return None
            return (self._page, token, _receipt_page) if _TOKEN_SEGMENT.fullmatch(token) else None
        if path.startswith("/v1/receipts/") and not query:
            token = path[13:]
            return (self._json, token, receipt_json) if _TOKEN_SEGMENT.fullmatch(token) else None
        return None


# One path segment: a QR code (`/r/{token}/qr.svg`) and anything longer are the routes' own.
_TOKEN_SEGMENT = re.compile(r"[^/]+")
_LANG_QUERY = re.compile(rb"lang=[A-Za-z_-]{1,16}")


@router.get("/r/{token}/qr.{kind}")
async def receipt_qr(
    token: str,
    kind: Annotated[str, Path(pattern=pattern("^(svg|png)$", "must be svg or png"))],
    request: Request,
    db: ReadConnectionDep,
) -> Response:
    """The receipt link as a QR code, for the platform's confirmation page or e-mail."""
    if not await receipts.link_exists(db, token):
        return Response("Not found", status_code=404, media_type="text/plain", headers=RECEIPT_HEADERS)
    url = f"{public_origin(request)}/r/{token}"
    if kind == "svg":
        return Response(receipts.qr_svg(url), media_type="image/svg+xml", headers=RECEIPT_HEADERS)
    return Response(receipts.qr_png(url), media_type="image/png", headers=RECEIPT_HEADERS)


# ---- a merchant's public page (opt-in) ----


@router.get("/m/{slug}", response_class=HTMLResponse)
async def merchant_public_page(
    slug: str, request: Request, session: ReportSessionDep, language: Language
) -> HTMLResponse:
    merchant = await merchant_repository.public_by_slug(session, slug) if len(slug) <= 80 else None
    if merchant is None:
        return render(request, language, "merchant_missing.html", {}, status_code=404)
    state = request.app.state
    figures = await public_figures(
        session,
        merchant,
        report=(await state.transparency.current()).figures(),
        now=state.clock.now(),
        window=timedelta(days=state.settings.return_window_days),
        base_currency=state.settings.base_currency,
    )
    fmt = Formatter(language)
    context = {"figures": figures, "gives": badge.gives(figures, fmt), "so_far": badge.so_far(figures, fmt)}
    return render(request, language, "merchant_public.html", context)


# ---- the API reference ----


@router.get("/docs", response_class=HTMLResponse)
async def api_reference(request: Request, language: Language) -> HTMLResponse:
    """Swagger UI over `/openapi.json`, from this service's own files, under the pages' policy."""
    context = {"swagger_ui": SWAGGER_UI, "openapi_url": request.app.openapi_url}
    return render(request, language, "docs.html", context, data_images=True)


@router.get("/redoc")
async def old_api_reference() -> RedirectResponse:
    return RedirectResponse("/docs", status_code=308)


# ---- the merchant's pages ----


async def current_merchant(request: Request, session: SessionDep) -> SignedIn | None:
    return await service.signed_in(
        session, request.cookies.get(SESSION_COOKIE), now=request.app.state.clock.now()
    )


Merchant = Annotated[SignedIn | None, Depends(current_merchant)]


def _sign_in_page(
    request: Request, language: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(SIGN_IN_CSRF_COOKIE) or service.new_sign_in_csrf()
    response = render(
        request,
        language,
        "merchant/sign_in.html",
        {"csrf_token": token, "csrf_field": CSRF_FIELD, "error": error},
        status_code=status_code,
        private=True,
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="lax", secure=https(request)
    )
    return response


@router.get("/merchant", response_class=HTMLResponse)
async def merchant_home(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Merchant,
    orders_before: Annotated[ResourceId | None, Query(description="the orders page's cursor")] = None,
) -> HTMLResponse:
    if signed_in is None:
        return _sign_in_page(request, language)
    settings = request.app.state.settings
    board = await service.dashboard(
        session,
        signed_in.merchant,
        now=request.app.state.clock.now(),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
        fmt=Formatter(language),
        orders_before=orders_before,
    )
    context: dict[str, Any] = {"board": board, "csrf_token": signed_in.csrf_token, "csrf_field": CSRF_FIELD}
    return render(request, language, "merchant/dashboard.html", context, private=True)


@router.post("/merchant/sign-in", response_class=HTMLResponse)
async def merchant_sign_in(
    request: Request,
    session: SessionDep,
    language: Language,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    fmt = Formatter(language)
    if not same_origin(request) or not service.same_secret(
        request.cookies.get(SIGN_IN_CSRF_COOKIE), csrf_token
    ):
        message = fmt.gettext("This form has expired. Please try again.")
        return _sign_in_page(request, language, error=message, status_code=403)
    state = request.app.state
    settings = state.settings
    try:
        async with state.auth_failures.guard(
            state.engine, request.client, api_key, now=state.clock.now(), refused=SignInRefused
        ):
            cookie_token = await service.sign_in(
                session, api_key, now=state.clock.now(), lifetime=timedelta(hours=settings.web_session_hours)
            )
    except TooManyAttempts as exc:
        message = fmt.gettext("Too many wrong keys from here. Wait %(seconds)s seconds, then try again.") % {
            "seconds": fmt.count(exc.retry_after)
        }
        page = _sign_in_page(request, language, error=message, status_code=429)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    except SignInRefused:
        message = fmt.gettext("That is not a valid merchant API key. Check the key and try again.")
        return _sign_in_page(request, language, error=message, status_code=401)
    response = RedirectResponse("/merchant", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie_token,
        max_age=settings.web_session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=https(request),
        path="/",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE)
    return response


@router.post("/merchant/sign-out")
async def merchant_sign_out(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Merchant,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if signed_in is not None:
        if not same_origin(request) or not service.same_secret(signed_in.csrf_token, csrf_token):
            return render(request, language, "merchant/expired.html", {}, status_code=403, private=True)
        await service.sign_out(session, signed_in)
    response = RedirectResponse("/merchant", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=https(request))
    return response


@router.get("/merchant/donations.csv")
async def merchant_donations_csv(request: Request, signed_in: Merchant) -> Response:
    if signed_in is None:
        return RedirectResponse("/merchant", status_code=303)
    state = request.app.state
    final_before = state.clock.now() - timedelta(days=state.settings.return_window_days)
    lines = service.donations_csv(state.sessionmaker, signed_in.merchant.id, final_before=final_before)
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="donations-{signed_in.merchant.id}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/merchant/statements/{statement_id}", response_class=HTMLResponse)
async def merchant_statement(
    statement_id: Annotated[str, Path(max_length=100)],
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Merchant,
) -> Response:
    """A statement's lines: the figures of `GET /v1/statements/{id}`; another merchant's statement is 404."""
    if signed_in is None:
        return RedirectResponse("/merchant", status_code=303)
    page = await service.statement_page(session, signed_in.merchant, statement_id, Formatter(language))
    if page is None:
        return render(request, language, "merchant/missing.html", {}, status_code=404, private=True)
    return render(request, language, "merchant/statement.html", {"page": page}, private=True)


@router.get("/merchant/orders/{order_id}", response_class=HTMLResponse)
async def merchant_order(
    order_id: Annotated[str, Path(max_length=100)],
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Merchant,
) -> Response:
    """An order's donation and trail: the figures of `GET /v1/orders/{order_id}`; another merchant's is 404."""
    if signed_in is None:
        return RedirectResponse("/merchant", status_code=303)
    state = request.app.state
    final_before = state.clock.now() - timedelta(days=state.settings.return_window_days)
    page = await service.order_page(
        session, signed_in.merchant, order_id, final_before=final_before, fmt=Formatter(language)
    )
    if page is None:
        return render(request, language, "merchant/missing.html", {}, status_code=404, private=True)
    return render(request, language, "merchant/order.html", {"page": page}, private=True)


# ---- the billing page: the merchant adds its card with Stripe.js ----


@router.get("/merchant/billing", response_class=HTMLResponse)
async def merchant_billing(request: Request, language: Language, signed_in: Merchant) -> Response:
    if signed_in is None:
        return RedirectResponse("/merchant", status_code=303)
    state = request.app.state
    page = service.billing_page(signed_in.merchant, state.stripe, Formatter(language))
    context: dict[str, Any] = {
        "page": page,
        "csrf_token": signed_in.csrf_token,
        "csrf_field": CSRF_FIELD,
        "stripe_js_url": state.settings.stripe_js_url,
    }
    # Only this page may load Stripe.js, and only when it offers a card form.
    stripe_js = state.settings.stripe_js_url if page.publishable_key else None
    return render(request, language, "merchant/billing.html", context, private=True, stripe_js_url=stripe_js)


def _script_caller(request: Request, signed_in: SignedIn | None) -> SignedIn:
    """The billing page's script: the signed-in merchant, its CSRF token in `X-CSRF-Token`, from this origin."""
    if signed_in is None:
        raise Unauthorized("Sign in first.")
    if not same_origin(request) or not service.same_secret(
        signed_in.csrf_token, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden("Missing or wrong CSRF token.")
    return signed_in


@router.post("/merchant/billing/setup-intent")
async def merchant_card_setup(request: Request, session: SessionDep, signed_in: Merchant) -> dict[str, str]:
    merchant = _script_caller(request, signed_in).merchant
    setup = await service.start_card_setup(session, request.app.state.stripe, merchant)
    return {"setup_intent_id": setup.setup_intent_id, "client_secret": setup.client_secret}


@router.post("/merchant/billing/setup-intent/{setup_intent_id}/complete")
async def merchant_card_setup_complete(
    setup_intent_id: Annotated[str, Path(pattern=SETUP_INTENT_ID)],
    request: Request,
    session: SessionDep,
    signed_in: Merchant,
) -> dict[str, str | None]:
    merchant = _script_caller(request, signed_in).merchant
    profile = await service.complete_card_setup(session, request.app.state.stripe, merchant, setup_intent_id)
    return {"card": profile.payment_method.label if profile.payment_method else None}
