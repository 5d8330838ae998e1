"""The field app's pages and the two calls its script makes (events and photos, with the device's session).
HTTP only: what the pages show comes from `service.py`, sessions from `sessions.py`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from app.core.auth import Forbidden
from app.core.auth_failures import TooManyAttempts
from app.core.body_limit import BodyTooLarge
from app.core.database import SessionDep
from app.core.errors import Unauthorized, problem_response
from app.core.idempotency import REPLAY_HEADER
from app.core.json_body import ExactJsonRoute
from app.core.types import ResourceId
from app.evidence import service as evidence
from app.evidence.endpoints import image_bytes
from app.evidence.schemas import EvidenceOut
from app.logistics import machine, tracking
from app.logistics.schemas import ShipmentEventAnswer, ShipmentEventIn
from app.web.endpoints import https, same_origin
from app.web.i18n import FIELD_APP_LANGUAGES, LANGUAGE_COOKIE, Formatter, choose_language
from app.web.partner import service, sessions
from app.web.partner.sessions import SESSION_COOKIE, SignedInPartner, SignInRefused
from app.web.service import CSRF_FIELD, CSRF_HEADER, SIGN_IN_CSRF_COOKIE, new_sign_in_csrf, same_secret
from app.web.templating import STATIC, render

router = APIRouter(include_in_schema=False, route_class=ExactJsonRoute)

# The page may ask for the device's position (the delivered form) and show the photo it is about to send.
PERMISSIONS = "camera=(), microphone=(), geolocation=(self), payment=()"


def field_app_language(request: Request) -> str:
    return choose_language(
        request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"), FIELD_APP_LANGUAGES
    )


Language = Annotated[str, Depends(field_app_language)]


async def current_partner(request: Request, session: SessionDep) -> SignedInPartner | None:
    return await sessions.signed_in(
        session, request.cookies.get(SESSION_COOKIE), now=request.app.state.clock.now()
    )


Partner = Annotated[SignedInPartner | None, Depends(current_partner)]


def _page(
    request: Request, language: str, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    response = render(
        request,
        language,
        name,
        {
            "status_names": service.status_names(Formatter(language)),
            "languages": FIELD_APP_LANGUAGES,
            **context,
        },
        status_code=status_code,
        private=True,
        blob_images=True,
    )
    response.headers["Permissions-Policy"] = PERMISSIONS
    return response


def _sign_in_page(
    request: Request, language: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(SIGN_IN_CSRF_COOKIE) or new_sign_in_csrf()
    response = _page(
        request,
        language,
        "partner/sign_in.html",
        {"csrf_token": token, "csrf_field": CSRF_FIELD, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="lax", secure=https(request)
    )
    response.headers["X-G4G-Signed-Out"] = "1"  # the service worker drops the pages it kept (sw.js)
    return response


@router.get("/partner", response_class=HTMLResponse)
async def partner_home(
    request: Request, session: SessionDep, language: Language, signed_in: Partner
) -> HTMLResponse:
    if signed_in is None:
        return _sign_in_page(request, language)
    state = request.app.state
    shipments = await service.shipment_list(
        session,
        signed_in.principal,
        now=state.clock.now(),
        stale_days=state.settings.shipment_stale_days,
    )
    context = {"partner": signed_in.partner, "shipments": shipments, "csrf_token": signed_in.csrf_token}
    return _page(request, language, "partner/shipments.html", context)


@router.post("/partner/sign-in", response_class=HTMLResponse)
async def partner_sign_in(
    request: Request,
    session: SessionDep,
    language: Language,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    fmt = Formatter(language)
    if not same_origin(request) or not same_secret(request.cookies.get(SIGN_IN_CSRF_COOKIE), csrf_token):
        message = fmt.gettext("This form has expired. Please try again.")
        return _sign_in_page(request, language, error=message, status_code=403)
    state = request.app.state
    days = state.settings.partner_session_days
    try:
        async with state.auth_failures.guard(
            state.engine, request.client, api_key, now=state.clock.now(), refused=SignInRefused
        ):
            cookie_token = await sessions.sign_in(
                session, api_key, now=state.clock.now(), lifetime=timedelta(days=days)
            )
    except TooManyAttempts as exc:
        message = fmt.gettext("Too many wrong keys from here. Wait %(seconds)s seconds, then try again.") % {
            "seconds": fmt.count(exc.retry_after)
        }
        page = _sign_in_page(request, language, error=message, status_code=429)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    except SignInRefused:
        message = fmt.gettext("That is not a valid logistics partner key. Check the key and try again.")
        return _sign_in_page(request, language, error=message, status_code=401)
    response = RedirectResponse("/partner", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie_token,
        max_age=days * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=https(request),
        path="/partner",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE)
    return response


@router.post("/partner/sign-out")
async def partner_sign_out(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Partner,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if signed_in is not None:
        if not same_origin(request) or not same_secret(signed_in.csrf_token, csrf_token):
            return _page(request, language, "partner/expired.html", {}, status_code=403)
        await sessions.sign_out(session, signed_in)
    response = RedirectResponse("/partner", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/partner", httponly=True, samesite="lax", secure=https(request)
    )
    return response


@router.get("/partner/shipments/{shipment_id}", response_class=HTMLResponse)
async def partner_shipment(
    shipment_id: ResourceId, request: Request, session: SessionDep, language: Language, signed_in: Partner
) -> Response:
    if signed_in is None:
        return RedirectResponse("/partner", status_code=303)
    state = request.app.state
    shipment = await service.shipment_page(
        session,
        signed_in.principal,
        shipment_id,
        cipher=state.cipher,
        now=state.clock.now(),
        stale_days=state.settings.shipment_stale_days,
    )
    context = {
        "partner": signed_in.partner,
        "shipment": shipment,
        "machine": service.partner_machine(),
        "postable": [s for s in machine.POSTABLE if s not in machine.PROGRAMME_ONLY],
        "packages_json": service.packages_for_script(shipment),
        "csrf_token": signed_in.csrf_token,
        "csrf_field": CSRF_FIELD,
    }
    return _page(request, language, "partner/shipment.html", context)


# ---- the installable app: its manifest and service worker (the worker's scope is /partner/) ----


@router.get("/partner/manifest.webmanifest")
async def partner_manifest() -> FileResponse:
    return FileResponse(
        STATIC / "partner" / "manifest.webmanifest",
        media_type="application/manifest+json",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/partner/sw.js")
async def partner_service_worker() -> FileResponse:
    return FileResponse(
        STATIC / "partner" / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/partner"},
    )


# ---- what the page's script sends, queued on the device until the network is there ----


def script_caller(request: Request, signed_in: Partner) -> SignedInPartner:
    """The device's session, its CSRF token in `X-CSRF-Token`, from this origin (checked before the body is
    looked at)."""
    if signed_in is None:
        raise Unauthorized("Sign in again: the session has ended.")
    if not same_origin(request) or not same_secret(signed_in.csrf_token, request.headers.get(CSRF_HEADER)):
        raise Forbidden("Missing or wrong CSRF token.")
    return signed_in


ScriptCaller = Annotated[SignedInPartner, Depends(script_caller)]


@router.post(
    "/partner/api/shipments/{shipment_id}/events", status_code=201, response_model=ShipmentEventAnswer
)
async def partner_post_event(
    shipment_id: ResourceId,
    body: ShipmentEventIn,
    request: Request,
    response: Response,
    session: SessionDep,
    caller: ScriptCaller,
) -> ShipmentEventAnswer:
    """`POST /v1/shipments/{id}/events`, as the signed-in device (the same service, the same answers)."""
    state = request.app.state
    answer, replayed = await tracking.post_event(
        session,
        caller.principal,
        shipment_id,
        body,
        cipher=state.cipher,
        lookup_key=state.lookup_key,
        now=state.clock.now(),
    )
    if replayed:
        response.headers[REPLAY_HEADER] = "true"
    return answer


@router.post("/partner/api/shipments/{shipment_id}/evidence", status_code=201, response_model=EvidenceOut)
async def partner_post_evidence(
    shipment_id: ResourceId,
    request: Request,
    response: Response,
    session: SessionDep,
    caller: ScriptCaller,
) -> EvidenceOut | JSONResponse:
    """`POST /v1/shipments/{id}/evidence`, as the signed-in device."""
    limit = request.app.state.settings.max_evidence_bytes
    try:
        data = await image_bytes(request, limit)
    except BodyTooLarge as too_large:
        return problem_response(413, "payload-too-large", "Payload too large", str(too_large.detail))
    stored, created = await evidence.store(session, caller.principal, shipment_id, data)
    if not created:
        response.headers[REPLAY_HEADER] = "true"
    return stored
