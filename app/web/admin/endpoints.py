"""The console's pages (`/admin`). HTTP only: sessions and the second factor come from `sessions.py`, what a page
shows from `service.py`, and every change from the same domain service the API's endpoint calls, in the
request's one unit of work (a refused change is rolled back to a savepoint, and the page says why)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.activity.recording import ActivityNote, write_note
from app.api_keys import service as api_keys
from app.core.auth_failures import TooManyAttempts, client_address
from app.core.database import SessionDep
from app.core.errors import ProblemError
from app.core.ids import new_id
from app.core.json_body import ExactJsonRoute
from app.core.money import CurrencyCode, Money
from app.evidence import service as evidence
from app.ledger.audit import last_audit_run, run_and_record_audit
from app.logistics import tracking
from app.logistics.schemas import TrackingEventIn
from app.merchants import repository as merchant_repository
from app.models import AdminSession
from app.packages import allocation, roster
from app.packages import service as packages
from app.packages.roster import InvalidRoster
from app.packages.schemas import AllocationRunIn, SchoolIn, SchoolPatch
from app.settlement import service as settlement
from app.web.admin import service, sessions
from app.web.admin.factors import FactorLocked
from app.web.admin.sessions import SESSION_COOKIE, CodeRefused, SignedInAdmin, SignInRefused
from app.web.endpoints import Language, https, same_origin
from app.web.i18n import Formatter
from app.web.partner.service import status_names
from app.web.service import CSRF_FIELD, SIGN_IN_CSRF_COOKIE, new_sign_in_csrf, same_secret
from app.web.templating import render

router = APIRouter(include_in_schema=False, route_class=ExactJsonRoute)
log = structlog.get_logger("g4g.web.admin")

# The console's POST routes that change nothing the activity log keeps, and why. Every other one records its
# change as the API's route for it does (`_change`); `tests/web/admin/test_console_activity.py` walks them all.
NOT_RECORDED: dict[str, str] = {
    "/admin/sign-in": "Signing in changes nothing of the programme's: it starts a session of the key's own.",
    "/admin/enrol": "Enrolling the key's second factor changes only how that key signs in.",
    "/admin/second-factor": "A code checked starts a session of the key's own; nothing of the programme's.",
    "/admin/sign-out": "Signing out ends the key's own session.",
    "/admin/audit": "The audit reads the ledger and changes nothing (its run is kept in `audit_runs`, not here).",
    "/admin/schools/{school_id}/import": "A preview writes nothing; the confirmation is the change (and recorded).",
}

Id = Annotated[str, Path(max_length=100)]
Text = Annotated[str, Form(max_length=500)]
Csrf = Annotated[str, Form(max_length=200)]


async def current_admin(request: Request, session: SessionDep) -> SignedInAdmin | None:
    state = request.app.state
    return await sessions.signed_in(
        session,
        request.cookies.get(SESSION_COOKIE),
        now=state.clock.now(),
        minutes=state.settings.admin_session_minutes,
    )


Admin = Annotated[SignedInAdmin | None, Depends(current_admin)]


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    # A browser-session cookie: the server ends the session (sliding), the browser forgets it when closed.
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=https(request), path="/admin"
    )


def _drop_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/admin", httponly=True, samesite="strict", secure=https(request)
    )


def _page(
    request: Request,
    language: str,
    name: str,
    context: dict[str, Any],
    *,
    signed_in: SignedInAdmin | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    extra: dict[str, Any] = {
        "csrf_field": CSRF_FIELD,
        "signed_in": signed_in,
        "status_names": status_names(Formatter(language)),
    }
    if signed_in is not None:
        extra["csrf_token"] = signed_in.csrf_token
    return render(request, language, name, {**extra, **context}, status_code=status_code, private=True)


def _sign_in_page(
    request: Request, language: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(SIGN_IN_CSRF_COOKIE) or new_sign_in_csrf()
    response = _page(
        request,
        language,
        "admin/sign_in.html",
        {"csrf_token": token, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="lax", secure=https(request)
    )
    return response


def _valid_form(request: Request, signed_in: SignedInAdmin, csrf_token: str) -> bool:
    return same_origin(request) and same_secret(signed_in.csrf_token, csrf_token)


def _expired(request: Request, language: str) -> HTMLResponse:
    return _page(request, language, "admin/expired.html", {}, status_code=403)


def _failed(
    request: Request, language: str, signed_in: SignedInAdmin, reason: str, back: str
) -> HTMLResponse:
    return _page(
        request,
        language,
        "admin/failed.html",
        {"reason": reason, "back": back},
        signed_in=signed_in,
        status_code=409,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    if isinstance(exc, ProblemError):
        return str(exc.detail or exc.title)
    return str(exc)


async def _act(session: AsyncSession, action: Callable[[], Awaitable[Any]]) -> tuple[Any, str | None]:
    """Run one change through its service; if the service refuses it, nothing of it stays (a savepoint) and the
    service's reason comes back."""
    try:
        async with session.begin_nested():
            return await action(), None
    except (ProblemError, ValidationError) as exc:
        return None, _reason(exc)


async def _change(
    request: Request,
    session: AsyncSession,
    admin: SignedInAdmin,
    note: ActivityNote,
    action: Callable[[], Awaitable[Any]],
) -> tuple[Any, str | None]:
    """A change, by the signed-in key, through its service (as `_act`): every one passes here. `note` names it
    as the API's route for the same change does (action, resource; the change fills in what it learns: the id
    it created, the merchant, a few details), and its activity entry is written in the change's own savepoint,
    so a refused change leaves neither. Also logged without any secret: the key, the action, the outcome."""

    async def change_and_record() -> Any:
        result = await action()
        await write_note(session, request, note, key_id=admin.key.id, via="console")
        return result

    result, reason = await _act(session, change_and_record)
    log.info(
        "console_change",
        key_id=admin.key.id,
        key_name=admin.key.name,
        action=note.action,
        resource=note.resource_id,
        address=client_address(request.client),
        outcome="refused" if reason else "done",
    )
    return result, reason


def _back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _context(request: Request) -> tuple[Any, Any]:
    return request.app.state, request.app.state.settings


# ---- signing in: the key, then the second factor ----


def _code_page(
    request: Request,
    language: str,
    signed_in: SignedInAdmin,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return _page(
        request,
        language,
        "admin/second_factor.html",
        {"csrf_token": signed_in.csrf_token, "error": error},
        status_code=status_code,
    )


@router.get("/admin", response_class=HTMLResponse)
async def admin_home(request: Request, session: SessionDep, language: Language, signed_in: Admin) -> Response:
    if signed_in is None:
        return _sign_in_page(request, language)
    if not signed_in.verified:
        if await sessions.enrolment_pending(session, signed_in.key.id):
            # The QR code is shown once, in the answer to the key: start again for a fresh one.
            return _sign_in_page(request, language)
        return _code_page(request, language, signed_in)
    state, settings = _context(request)
    board = await service.overview(
        session,
        signed_in.principal,
        now=state.clock.now(),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
        stale_days=settings.shipment_stale_days,
    )
    return _page(
        request,
        language,
        "admin/overview.html",
        {"board": board, "audit": None, "last_audit": await last_audit_run(session)},
        signed_in=signed_in,
    )


@router.post("/admin/audit", response_class=HTMLResponse)
async def admin_audit(
    request: Request, session: SessionDep, language: Language, signed_in: Admin, csrf_token: Csrf = ""
) -> Response:
    """`g4g audit` (`GET /v1/audit`) on demand: the ledger's invariants recomputed now."""
    if signed_in is None or not signed_in.verified:
        return _back("/admin")
    if not _valid_form(request, signed_in, csrf_token):
        return _expired(request, language)
    state, settings = _context(request)
    audit = await run_and_record_audit(
        session, state.sessionmaker, now=state.clock.now(), via="console", key_id=signed_in.key.id
    )
    board = await service.overview(
        session,
        signed_in.principal,
        now=state.clock.now(),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
        stale_days=settings.shipment_stale_days,
    )
    return _page(
        request,
        language,
        "admin/overview.html",
        {"board": board, "audit": audit, "last_audit": await last_audit_run(session)},
        signed_in=signed_in,
    )


def _too_many(
    request: Request, language: str, exc: TooManyAttempts, page: Callable[..., HTMLResponse]
) -> HTMLResponse:
    fmt = Formatter(language)
    message = fmt.gettext("Too many wrong keys from here. Wait %(seconds)s seconds, then try again.") % {
        "seconds": fmt.count(exc.retry_after)
    }
    answer = page(error=message, status_code=429)
    answer.headers["Retry-After"] = str(exc.retry_after)
    return answer


@router.post("/admin/sign-in", response_class=HTMLResponse)
async def admin_sign_in(
    request: Request,
    session: SessionDep,
    language: Language,
    api_key: Text = "",
    csrf_token: Csrf = "",
) -> Response:
    fmt = Formatter(language)
    if not same_origin(request) or not same_secret(request.cookies.get(SIGN_IN_CSRF_COOKIE), csrf_token):
        return _sign_in_page(
            request, language, error=fmt.gettext("This form has expired. Please try again."), status_code=403
        )
    state = request.app.state
    try:
        async with state.auth_failures.guard(
            state.engine, request.client, api_key, now=state.clock.now(), refused=SignInRefused
        ):
            cookie_token, enrolment = await sessions.sign_in(
                session, api_key, cipher=state.cipher, now=state.clock.now()
            )
    except TooManyAttempts as exc:
        return _too_many(request, language, exc, lambda **kw: _sign_in_page(request, language, **kw))
    except SignInRefused:
        message = fmt.gettext("That is not a valid admin API key. Check the key and try again.")
        return _sign_in_page(request, language, error=message, status_code=401)
    except FactorLocked:
        return _sign_in_page(request, language, error=_locked_message(fmt), status_code=403)
    if enrolment is None:
        response: Response = _back("/admin")
    else:
        signed = await sessions.signed_in(
            session, cookie_token, now=state.clock.now(), minutes=state.settings.admin_session_minutes
        )
        assert signed is not None
        response = _page(
            request,
            language,
            "admin/enrol.html",
            {"enrolment": enrolment, "csrf_token": signed.csrf_token, "error": None},
        )
    _set_session_cookie(request, response, cookie_token)
    response.delete_cookie(SIGN_IN_CSRF_COOKIE)
    return response


def _locked_message(fmt: Formatter) -> str:
    return fmt.gettext(
        "Too many wrong codes: this key's second factor is locked. Ask whoever runs the service to unlock it."
    )


async def _check_code(
    request: Request,
    session: SessionDep,
    language: str,
    signed_in: SignedInAdmin,
    code: str,
    check: Callable[[], Awaitable[Any]],
    page: Callable[..., HTMLResponse],
) -> Any:
    """Run a code check under the sign-in limits (a wrong code counts like a wrong key, against this key's
    prefix and the address); answers the page to show instead when it is refused."""
    fmt = Formatter(language)
    state = request.app.state
    try:
        async with state.auth_failures.guard(
            state.engine,
            request.client,
            signed_in.key.token_prefix,
            now=state.clock.now(),
            refused=CodeRefused,
        ):
            return await check()
    except TooManyAttempts as exc:
        return _too_many(request, language, exc, page)
    except (CodeRefused, FactorLocked) as refused:
        if isinstance(refused, FactorLocked) or refused.locked:
            response = _sign_in_page(request, language, error=_locked_message(fmt), status_code=403)
            _drop_session_cookie(request, response)
            return response
        if refused.attempts_left <= 0:
            response = _sign_in_page(
                request,
                language,
                error=fmt.gettext("Too many wrong codes. Sign in with your key again."),
                status_code=401,
            )
            _drop_session_cookie(request, response)
            return response
        if refused.replayed:
            message = fmt.gettext("That code was already used. Wait for the next one.")
        else:
            message = fmt.gettext("That code is not right. Check your authenticator app and try again.")
        return page(error=message, status_code=401)


@router.post("/admin/enrol", response_class=HTMLResponse)
async def admin_enrol(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    code: Annotated[str, Form(max_length=50)] = "",
    csrf_token: Csrf = "",
) -> Response:
    """The first code from the new factor: the factor is confirmed, the recovery codes shown once."""
    if signed_in is None or signed_in.verified:
        return _back("/admin")
    if not _valid_form(request, signed_in, csrf_token):
        return _expired(request, language)
    state = request.app.state

    def again(**kw: Any) -> HTMLResponse:
        # The QR code is not shown again; a wrong first code means starting over with the key.
        return _sign_in_page(request, language, **kw)

    answer = await _check_code(
        request,
        session,
        language,
        signed_in,
        code,
        lambda: sessions.confirm_enrolment(
            session,
            signed_in,
            code,
            cipher=state.cipher,
            now=state.clock.now(),
            minutes=state.settings.admin_session_minutes,
        ),
        again,
    )
    if isinstance(answer, Response):
        return answer
    cookie_token, codes = answer
    response = _page(request, language, "admin/recovery_codes.html", {"codes": codes})
    _set_session_cookie(request, response, cookie_token)
    return response


@router.post("/admin/second-factor", response_class=HTMLResponse)
async def admin_second_factor(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    code: Annotated[str, Form(max_length=50)] = "",
    csrf_token: Csrf = "",
) -> Response:
    if signed_in is None or signed_in.verified:
        return _back("/admin")
    if not _valid_form(request, signed_in, csrf_token):
        return _expired(request, language)
    state = request.app.state
    answer = await _check_code(
        request,
        session,
        language,
        signed_in,
        code,
        lambda: sessions.verify(
            session,
            signed_in,
            code,
            cipher=state.cipher,
            now=state.clock.now(),
            minutes=state.settings.admin_session_minutes,
            max_failures=state.settings.admin_factor_max_failures,
            address=client_address(request.client),
        ),
        lambda **kw: _code_page(request, language, signed_in, **kw),
    )
    if isinstance(answer, Response):
        return answer
    cookie_token, left = answer
    response = _back("/admin" if left is None else f"/admin?recovery_codes_left={left}")
    _set_session_cookie(request, response, cookie_token)
    return response


@router.post("/admin/sign-out")
async def admin_sign_out(
    request: Request, session: SessionDep, language: Language, signed_in: Admin, csrf_token: Csrf = ""
) -> Response:
    if signed_in is not None:
        if not _valid_form(request, signed_in, csrf_token):
            return _expired(request, language)
        await sessions.sign_out(session, signed_in)
    response = _back("/admin")
    _drop_session_cookie(request, response)
    return response


# ---- pages behind the second factor ----


def _verified(signed_in: SignedInAdmin | None) -> SignedInAdmin | None:
    return signed_in if signed_in is not None and signed_in.verified else None


@router.get("/admin/schools", response_class=HTMLResponse)
async def admin_schools(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    state = request.app.state
    context = {
        "schools": await service.schools(session, state.cipher),
        "partners": await service.partners(session),
    }
    return _page(request, language, "admin/schools.html", context, signed_in=admin)


def _school_in(form: dict[str, str]) -> dict[str, Any]:
    contact = {"name": form.get("teacher_name", "")}
    for field in ("phone", "email"):
        if form.get(field):
            contact[field] = form[field]
    return {"teacher_contact": contact}


@router.post("/admin/schools", response_class=HTMLResponse)
async def admin_create_school(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    name: Text = "",
    country: Annotated[str, Form(max_length=2)] = "",
    region: Text = "",
    logistics_partner_id: Text = "",
    teacher_name: Text = "",
    phone: Text = "",
    email: Text = "",
    csrf_token: Csrf = "",
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    cipher = request.app.state.cipher
    form = {"teacher_name": teacher_name, "phone": phone, "email": email}

    async def create() -> Any:
        body = SchoolIn.model_validate(
            {
                "name": name,
                "country": country.upper(),
                "region": region,
                "logistics_partner_id": logistics_partner_id,
                **_school_in(form),
            }
        )
        school = await packages.register_school(session, body, cipher=cipher)
        note.resource_id = school.id
        note.details = {"country": school.country, "logistics_partner_id": school.logistics_partner_id}
        return school

    note = ActivityNote("school.create", "school")
    school, reason = await _change(request, session, admin, note, create)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/schools")
    return _back(f"/admin/schools/{school.id}?done=created")


@router.get("/admin/schools/{school_id}", response_class=HTMLResponse)
async def admin_school(
    school_id: Id, request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    state = request.app.state
    page, reason = await _act(session, lambda: service.school_page(session, school_id, state.cipher))
    if reason is not None:
        return _page(request, language, "admin/missing.html", {}, signed_in=admin, status_code=404)
    context = {"page": page, "partners": await service.partners(session), "preview": None, "problems": None}
    return _page(request, language, "admin/school.html", context, signed_in=admin)


@router.post("/admin/schools/{school_id}", response_class=HTMLResponse)
async def admin_update_school(
    school_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    region: Text = "",
    logistics_partner_id: Text = "",
    teacher_name: Text = "",
    phone: Text = "",
    email: Text = "",
    csrf_token: Csrf = "",
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    cipher = request.app.state.cipher
    form = {"teacher_name": teacher_name, "phone": phone, "email": email}

    async def update() -> Any:
        patch = SchoolPatch.model_validate(
            {"region": region, "logistics_partner_id": logistics_partner_id, **_school_in(form)}
        )
        note.details = {"changed": sorted(patch.model_dump(exclude_unset=True))}
        return await packages.update_school(session, school_id, patch, cipher=cipher)

    note = ActivityNote("school.update", "school", school_id)
    _, reason = await _change(request, session, admin, note, update)
    if reason is not None:
        return _failed(request, language, admin, reason, f"/admin/schools/{school_id}")
    return _back(f"/admin/schools/{school_id}?done=saved")


async def _pending_session(session: AsyncSession, admin: SignedInAdmin) -> AdminSession:
    row = await session.get(AdminSession, admin.session_id, with_for_update=True)
    assert row is not None
    return row


@router.post("/admin/schools/{school_id}/import", response_class=HTMLResponse)
async def admin_import_preview(
    school_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csv_file: Annotated[UploadFile, File()],
    csrf_token: Csrf = "",
) -> Response:
    """A class list (the API's CSV) read and checked, nothing written: what would be created, updated or left
    unchanged, by row, or every problem by row (never a roster code). The file waits, encrypted, on the session
    until confirmed."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    state = request.app.state
    body = await csv_file.read(state.settings.max_import_bytes + 1)
    page, reason = await _act(session, lambda: service.school_page(session, school_id, state.cipher))
    if reason is not None:
        return _page(request, language, "admin/missing.html", {}, signed_in=admin, status_code=404)
    context: dict[str, Any] = {"page": page, "partners": await service.partners(session), "preview": None}
    pending = await _pending_session(session, admin)
    pending.pending_import_school_id = pending.pending_import_encrypted = None
    try:
        if len(body) > state.settings.max_import_bytes:
            raise InvalidRoster("too large", errors=[{"loc": ["body"], "msg": "the file is too large"}])
        rows = roster.read_csv(body)
    except InvalidRoster as exc:
        context["problems"] = service.problem_lines(exc.extensions.get("errors", []))
        context["problem_count"] = exc.extensions.get("error_count", len(context["problems"]))
        return _page(request, language, "admin/school.html", context, signed_in=admin, status_code=422)
    context["problems"] = None
    context["preview"] = await packages.preview_import(session, school_id, rows, lookup_key=state.lookup_key)
    pending.pending_import_school_id = school_id
    pending.pending_import_encrypted = state.cipher.encrypt(body).decode()
    return _page(request, language, "admin/school.html", context, signed_in=admin)


@router.post("/admin/schools/{school_id}/import/confirm", response_class=HTMLResponse)
async def admin_import_confirm(
    school_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csrf_token: Csrf = "",
) -> Response:
    """The previewed class list, imported as `POST /v1/schools/{id}/students` would (all or nothing)."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    state = request.app.state
    pending = await _pending_session(session, admin)
    if pending.pending_import_school_id != school_id or pending.pending_import_encrypted is None:
        return _failed(
            request,
            language,
            admin,
            Formatter(language).gettext("There is no class list waiting for this school. Upload it again."),
            f"/admin/schools/{school_id}",
        )
    body = state.cipher.decrypt(pending.pending_import_encrypted.encode())
    pending.pending_import_school_id = pending.pending_import_encrypted = None

    async def run() -> Any:
        imported = await packages.import_students(
            session, school_id, roster.read_csv(body), cipher=state.cipher, lookup_key=state.lookup_key
        )
        note.details = imported.model_dump(include={"received", "created", "updated", "unchanged"})
        return imported

    note = ActivityNote("students.import", "school", school_id)
    result, reason = await _change(request, session, admin, note, run)
    if reason is not None:
        return _failed(request, language, admin, reason, f"/admin/schools/{school_id}")
    return _back(
        f"/admin/schools/{school_id}?done=imported&created={result.created}&updated={result.updated}"
        f"&unchanged={result.unchanged}"
    )


@router.get("/admin/students/{student_id}/erase", response_class=HTMLResponse)
async def admin_erase_confirmation(
    student_id: Id, request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    student, reason = await _act(session, lambda: packages.get_student(session, student_id))
    if reason is not None:
        return _page(request, language, "admin/missing.html", {}, signed_in=admin, status_code=404)
    view = packages.student_out(student, request.app.state.cipher)
    return _page(request, language, "admin/erase.html", {"student": view}, signed_in=admin)


@router.post("/admin/students/{student_id}/erase", response_class=HTMLResponse)
async def admin_erase(
    student_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csrf_token: Csrf = "",
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    now = request.app.state.clock.now()
    student, reason = await _change(
        request,
        session,
        admin,
        ActivityNote("student.erase", "student", student_id),
        lambda: packages.erase_student(session, student_id, now=now),
    )
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/schools")
    return _back(f"/admin/schools/{student.school_id}?done=erased")


# ---- package kinds, FX rates ----


@router.get("/admin/package-kinds", response_class=HTMLResponse)
async def admin_package_kinds(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    kinds = await service.package_kinds(session)
    return _page(request, language, "admin/package_kinds.html", {"kinds": kinds}, signed_in=admin)


@router.get("/admin/fx-rates", response_class=HTMLResponse)
async def admin_fx_rates(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    from app.settlement import repository as settlement_repository

    rates = await settlement_repository.rates_newest_first(session, after=None, limit=service.LIST_LIMIT)
    context = {"rates": rates, "base_currency": request.app.state.settings.base_currency}
    return _page(request, language, "admin/fx_rates.html", context, signed_in=admin)


@router.post("/admin/fx-rates", response_class=HTMLResponse)
async def admin_set_fx_rate(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    currency: Annotated[str, Form(max_length=3)] = "",
    rate: Annotated[str, Form(max_length=40)] = "",
    csrf_token: Csrf = "",
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    from app.settlement.schemas import FxRateIn

    base = request.app.state.settings.base_currency

    async def set_rate() -> Any:
        # As `PUT /v1/fx-rates/{currency}` reads its path and body: a known ISO 4217 code, a rate.
        code = TypeAdapter(CurrencyCode).validate_python(currency.strip().upper())
        body = FxRateIn.model_validate({"rate": rate.strip()})
        saved, _ = await settlement.set_fx_rate(session, currency=code, rate=body.rate, base_currency=base)
        note.resource_id, note.details = code, {"rate_id": saved.id, "rate": str(saved.rate)}
        return saved

    note = ActivityNote("fx_rate.set", "fx_rate")
    _, reason = await _change(request, session, admin, note, set_rate)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/fx-rates")
    return _back("/admin/fx-rates?done=saved")


# ---- shipments ----


@router.get("/admin/shipments", response_class=HTMLResponse)
async def admin_shipments(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    state = request.app.state
    board = await service.shipment_board(
        session, admin.principal, now=state.clock.now(), stale_days=state.settings.shipment_stale_days
    )
    return _page(request, language, "admin/shipments.html", {"board": board}, signed_in=admin)


@router.get("/admin/shipments/{shipment_id}", response_class=HTMLResponse)
async def admin_shipment(
    shipment_id: Id, request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    state = request.app.state
    shipment, reason = await _act(
        session,
        lambda: service.shipment(
            session,
            admin.principal,
            shipment_id,
            cipher=state.cipher,
            now=state.clock.now(),
            stale_days=state.settings.shipment_stale_days,
        ),
    )
    if reason is not None:
        return _page(request, language, "admin/missing.html", {}, signed_in=admin, status_code=404)
    return _page(request, language, "admin/shipment.html", {"shipment": shipment}, signed_in=admin)


@router.get("/admin/shipments/{shipment_id}/evidence/{evidence_id}")
async def admin_evidence(
    shipment_id: Id, evidence_id: Id, request: Request, session: SessionDep, signed_in: Admin
) -> Response:
    """A delivery photo, as `GET /v1/shipments/{id}/evidence/{evidence_id}` serves it."""
    if (admin := _verified(signed_in)) is None:
        return Response(status_code=404)
    found, reason = await _act(
        session, lambda: evidence.read(session, admin.principal, shipment_id, evidence_id)
    )
    if reason is not None:
        return Response(status_code=404)
    content, media_type = found
    return Response(
        content,
        media_type=media_type,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@router.post("/admin/shipments/{shipment_id}/cancel", response_class=HTMLResponse)
async def admin_cancel_shipment(
    shipment_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    note: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/shipments/{id}/events` with `cancelled`, as the programme: its boxes go back to the pool."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    state = request.app.state
    now = state.clock.now()

    async def cancel() -> Any:
        body = TrackingEventIn.model_validate(
            {
                "event_id": new_id("console"),
                "status": "cancelled",
                "occurred_at": now.isoformat(),
                **({"note": note.strip()} if note.strip() else {}),
            }
        )
        answer, _ = await tracking.post_event(
            session,
            admin.principal,
            shipment_id,
            body,
            cipher=state.cipher,
            lookup_key=state.lookup_key,
            now=now,
        )
        entry.details = {
            "event_id": answer.id,
            "status": answer.status,
            "result": answer.result,
            "status_after": answer.status_after,
        }
        return answer

    entry = ActivityNote("shipment.post_event", "shipment", shipment_id)
    _, reason = await _change(request, session, admin, entry, cancel)
    if reason is not None:
        return _failed(request, language, admin, reason, f"/admin/shipments/{shipment_id}")
    return _back(f"/admin/shipments/{shipment_id}?done=cancelled")


# ---- statements ----


@router.get("/admin/statements", response_class=HTMLResponse)
async def admin_statements(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    statements = await service.statements_needing_attention(session)
    names = await merchant_repository.names(session, [s.merchant_id for s in statements])
    context = {"statements": statements, "merchant_names": names}
    return _page(request, language, "admin/statements.html", context, signed_in=admin)


@router.post("/admin/statements/{statement_id}/bank-transfer", response_class=HTMLResponse)
async def admin_bank_transfer(
    statement_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    reference: Text = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    currency: Annotated[str, Form(max_length=3)] = "",
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/statements/{id}/payments`: the transfer must be the open amount."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    state = request.app.state
    from app.settlement.schemas import BankTransferIn

    async def record() -> Any:
        body = BankTransferIn.model_validate(
            {
                "reference": reference.strip(),
                "amount": {"amount": service.minor_units(amount, currency), "currency": currency},
            }
        )
        statement = await settlement.record_bank_transfer(
            session,
            statement_id,
            reference=body.reference,
            amount=Money(body.amount.amount, body.amount.currency),
            now=state.clock.now(),
            base_currency=state.settings.base_currency,
        )
        note.merchant_id = statement.merchant_id
        note.details = {"reference": body.reference, "amount": body.amount.model_dump(mode="json")}
        return statement

    note = ActivityNote("statement.record_bank_transfer", "statement", statement_id)
    _, reason = await _change(request, session, admin, note, record)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/statements")
    return _back("/admin/statements?done=paid")


@router.post("/admin/statements/{statement_id}/retry", response_class=HTMLResponse)
async def admin_retry_charge(
    statement_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/statements/{id}/reopen`: the next settlement run charges the card again."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    note = ActivityNote("statement.reopen", "statement", statement_id)

    async def reopen() -> Any:
        statement = await settlement.reopen(session, statement_id)
        note.merchant_id = statement.merchant_id
        return statement

    _, reason = await _change(request, session, admin, note, reopen)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/statements")
    return _back("/admin/statements?done=reopened")


# ---- webhooks and event endpoints ----


@router.get("/admin/webhooks", response_class=HTMLResponse)
async def admin_webhooks(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    platforms, endpoints = await service.webhooks(session)
    context = {"platforms": platforms, "endpoints": endpoints}
    return _page(request, language, "admin/webhooks.html", context, signed_in=admin)


@router.post(
    "/admin/event-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", response_class=HTMLResponse
)
async def admin_replay_delivery(
    endpoint_id: Id,
    delivery_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry`: sent again now, same `webhook-id`."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    from app.events import service as events

    now = request.app.state.clock.now()

    async def replay() -> Any:
        endpoint = await events.get_visible_endpoint(session, admin.principal, endpoint_id)
        note.merchant_id, note.details = endpoint.merchant_id, {"delivery_id": delivery_id}
        return await events.replay(session, endpoint, delivery_id, now=now)

    note = ActivityNote("webhook_endpoint.retry_delivery", "webhook_endpoint", endpoint_id)
    _, reason = await _change(request, session, admin, note, replay)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/webhooks")
    return _back("/admin/webhooks?done=replayed")


# ---- API keys ----


@router.get("/admin/api-keys", response_class=HTMLResponse)
async def admin_api_keys(
    request: Request, session: SessionDep, language: Language, signed_in: Admin
) -> Response:
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    context = {
        "keys": await service.api_keys(session),
        "scopes": await service.key_scopes(session),
        "created": None,
    }
    return _page(request, language, "admin/api_keys.html", context, signed_in=admin)


@router.post("/admin/api-keys", response_class=HTMLResponse)
async def admin_create_api_key(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    role: Annotated[str, Form(max_length=20)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    scope_id: Annotated[str, Form(max_length=100)] = "",
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/api-keys`: the token is in this answer only."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    from app.api_keys.schemas import ApiKeyCreate

    async def create() -> Any:
        body: dict[str, Any] = {"role": role, "name": name.strip()}
        scope_field = {
            "platform": "platform_id",
            "merchant": "merchant_id",
            "logistics": "logistics_partner_id",
        }
        if role in scope_field:
            body[scope_field[role]] = scope_id.split(":", 1)[-1] if scope_id.startswith(role + ":") else ""
        parsed: Any = TypeAdapter(ApiKeyCreate).validate_python(body)
        scope = parsed.model_dump(exclude={"role", "name"})
        key, token = await api_keys.create_api_key(session, role=parsed.role, name=parsed.name, **scope)
        note.resource_id, note.merchant_id = key.id, key.merchant_id
        note.details = api_keys.key_details(key)
        return key, token

    note = ActivityNote("api_key.create", "api_key")
    created, reason = await _change(request, session, admin, note, create)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/api-keys")
    key, token = created
    context = {
        "keys": await service.api_keys(session),
        "scopes": await service.key_scopes(session),
        "created": {"key": key, "token": token},
    }
    return _page(request, language, "admin/api_keys.html", context, signed_in=admin)


@router.post("/admin/api-keys/{key_id}/revoke", response_class=HTMLResponse)
async def admin_revoke_api_key(
    key_id: Id,
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    csrf_token: Csrf = "",
) -> Response:
    """`DELETE /v1/api-keys/{id}`: requests with it are refused from now on, and its console or dashboard
    sessions end (revoking the key you signed in with signs you out)."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    note = ActivityNote("api_key.revoke", "api_key", key_id)

    async def revoke() -> Any:
        key = await api_keys.revoke_api_key(session, key_id)
        note.merchant_id, note.details = key.merchant_id, api_keys.key_details(key)
        return key

    _, reason = await _change(request, session, admin, note, revoke)
    if reason is not None:
        return _failed(request, language, admin, reason, "/admin/api-keys")
    request.app.state.api_keys.forget(key_id)
    return _back("/admin/api-keys?done=revoked")


# ---- allocation: a dry run's plan, then exactly that plan ----


@router.get("/admin/allocation", response_class=HTMLResponse)
async def admin_allocation(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    term: Annotated[str | None, Query(max_length=100)] = None,
    package_kind_id: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """The kinds and latest runs; with a term and a kind, the dry run's plan (`POST /v1/allocation-runs` with
    `dry_run`): nothing is written, and the plan's fingerprint goes into the form that runs it."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    state = request.app.state
    asked = term is not None and package_kind_id is not None

    async def look() -> service.AllocationPage:
        dry_run = None
        if asked:
            dry_run = AllocationRunIn.model_validate({"term": term, "package_kind_id": package_kind_id})
        return await service.allocation_page(
            session, dry_run, base_currency=state.settings.base_currency, now=state.clock.now()
        )

    page, reason = await _act(session, look)
    if reason is not None:  # the dry run was refused (an unknown kind, a bad term): the page, with why
        page = await service.allocation_page(
            session, None, base_currency=state.settings.base_currency, now=state.clock.now()
        )
    context = {"page": page, "term": term or "", "package_kind_id": package_kind_id or "", "reason": reason}
    status_code = 200 if reason is None else 409
    return _page(
        request, language, "admin/allocation.html", context, signed_in=admin, status_code=status_code
    )


@router.post("/admin/allocation", response_class=HTMLResponse)
async def admin_allocate(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    term: Annotated[str, Form(max_length=100)] = "",
    package_kind_id: Annotated[str, Form(max_length=100)] = "",
    expected_plan_fingerprint: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Csrf = "",
) -> Response:
    """`POST /v1/allocation-runs` with the dry run's `expected_plan_fingerprint`: exactly the plan shown, or
    refused (409 `plan-changed`, saying what changed) with nothing written."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    if not _valid_form(request, admin, csrf_token):
        return _expired(request, language)
    state = request.app.state
    note = ActivityNote("allocation.run", "allocation_run")

    async def run() -> Any:
        body = AllocationRunIn.model_validate(
            {
                "term": term,
                "package_kind_id": package_kind_id,
                "expected_plan_fingerprint": expected_plan_fingerprint,
            }
        )
        made = await allocation.run_allocation(
            session, body, base_currency=state.settings.base_currency, now=state.clock.now()
        )
        note.resource_id = made.id
        note.details = allocation.run_details(made, body)
        return made

    made, reason = await _change(request, session, admin, note, run)
    if reason is not None:
        again = "/admin/allocation?" + urlencode({"term": term, "package_kind_id": package_kind_id})
        return _failed(request, language, admin, reason, again)
    return _back(f"/admin/allocation?done=allocated#run-{made.id}")


# ---- the activity log ----


@router.get("/admin/activity", response_class=HTMLResponse)
async def admin_activity(
    request: Request,
    session: SessionDep,
    language: Language,
    signed_in: Admin,
    key_id: Annotated[str, Query(max_length=100)] = "",
    action: Annotated[str, Query(max_length=100)] = "",
    resource_type: Annotated[str, Query(max_length=100)] = "",
    after: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """`GET /v1/activity`: who did what, newest first, filtered by key, action and resource type, a page at a
    time. A filter that could match nothing (not an action's shape) is said so, not ignored."""
    if (admin := _verified(signed_in)) is None:
        return _back("/admin")
    filters = {"key_id": key_id, "action": action, "resource_type": resource_type, "after": after}
    problem = service.activity_filter_problem(**filters)
    found = None
    if problem is None:
        found = await service.activity(
            session,
            admin.principal,
            key_id=key_id or None,
            action=action or None,
            resource_type=resource_type or None,
            after=after or None,
        )
    older = None
    if found is not None and found.next_after is not None:
        older = "/admin/activity?" + urlencode({**filters, "after": found.next_after})
    context = {
        "found": found,
        "filters": filters,
        "problem": problem,
        "older": older,
        "keys": await service.api_keys(session),
    }
    status_code = 200 if problem is None else 422
    return _page(request, language, "admin/activity.html", context, signed_in=admin, status_code=status_code)
