from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role, ensure_role, principal_for
from app.core.database import ReadConnectionDep, SessionDep, pooled
from app.core.errors import (
    PROBLEM_MEDIA_TYPE,
    NotFound,
    ProblemError,
    Unauthorized,
    http_problem_for,
    problem_for,
)
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute, parse_json
from app.core.pagination import Page, PageParams, page_of
from app.core.responses import FastJSONResponse
from app.core.signatures import SignedHeaders, signed_headers, verify_standard_webhook
from app.core.types import PRINTABLE, ResourceId
from app.donations import ingest, repository, service
from app.donations.schemas import (
    AnomalyOut,
    DonationRow,
    DonationRuleIn,
    DonationRuleOut,
    OrderDonationOut,
    OrderEvent,
    ParkedEventOut,
    QuoteIn,
    QuoteOut,
    WebhookAnswer,
)
from app.merchants.service import get_visible_merchant

router = APIRouter(prefix="/v1", tags=["donations"], route_class=ExactJsonRoute)
webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=ExactJsonRoute)

MAX_EVENT_BYTES = 256 * 1024


# ---- rules ----


@router.put(
    "/merchants/{merchant_id}/donation-rule", response_model=DonationRuleOut, operation_id="set_donation_rule"
)
async def set_donation_rule(
    merchant_id: ResourceId,
    body: DonationRuleIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin, Role.merchant),
    activity: ActivityNote = Recorded("donation_rule.set", "merchant", resource_id="merchant_id"),
) -> DonationRuleOut | JSONResponse:
    """Add a version of the merchant's donation rule, in effect from `effective_from` (default now, never in
    the past). Orders placed before it keep the rule they were placed under."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    now = request.app.state.clock.now()

    async def create() -> DonationRuleOut:
        rule = await service.set_rule(session, merchant, body, now=now)
        activity.details = {"rule_id": rule.id, "effective_from": rule.effective_from.isoformat()}
        in_effect = await service.rule_in_effect_id(session, merchant.id, now)
        return service.rule_out(rule, in_effect_id=in_effect, now=now)

    return await idempotency.run(principal, create, status=200)


@router.get(
    "/merchants/{merchant_id}/donation-rules",
    response_model=Page[DonationRuleOut],
    operation_id="list_donation_rules",
)
async def list_donation_rules(
    merchant_id: ResourceId,
    request: Request,
    session: SessionDep,
    page: PageParams,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> Page[DonationRuleOut]:
    """Every version of the rule, newest first, each marked scheduled, in effect or superseded."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    now = request.app.state.clock.now()
    rows = await repository.rules_newest_first(session, merchant.id, before=page.after, limit=page.limit + 1)
    in_effect = await service.rule_in_effect_id(session, merchant.id, now)
    return page_of(
        [service.rule_out(r, in_effect_id=in_effect, now=now) for r in rows], [r.id for r in rows], page.limit
    )


# ---- quotes ----

_QUOTE_ROLES = frozenset({Role.platform, Role.admin})


@router.post("/quotes", response_model=QuoteOut, operation_id="create_quote")
async def create_quote(
    body: QuoteIn,
    request: Request,
    principal: Principal = Authorized(*_QUOTE_ROLES),
    *,
    db: ReadConnectionDep,  # after the caller is known: a request holds one pooled connection at a time
) -> QuoteOut:
    """The donation this order would get if placed now (or at `placed_at`), for display at checkout."""
    return await _quote(request.app.state, principal, body, db)


async def _quote(state: State, principal: Principal, body: QuoteIn, db: asyncpg.Connection) -> QuoteOut:
    return await service.quote(
        db,
        platform_id=principal.acting_platform(body.platform_id),
        merchant_external_id=body.merchant_id,
        currency=body.currency,
        placed_at=body.placed_at or state.clock.now(),
        items=body.items,
    )


class QuoteFastPath:
    """Serves `POST /v1/quotes`, asked at every checkout, straight from ASGI as `OrderWebhookFastPath` does the
    webhook (FastAPI's routing and dependency solving cost more than the quote itself, see docs/scaling.md).
    Like the route, it checks the bearer key and its role before reading the body, answering those errors
    itself; then it answers a valid quote in a JSON body, and the errors the route would give it (unknown
    merchant): same bodies and headers. Any other request (no bearer key, another content type, bad JSON, an
    invalid quote, a query string) goes on to the FastAPI route with its body, so those errors stay the
    route's own, in the route's order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        (self._route,) = [
            route for route in router.routes if isinstance(route, APIRoute) and route.endpoint is create_quote
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = (
            _bearer_token(scope["headers"])
            if scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/v1/quotes"
            and not scope["query_string"]
            else None
        )
        if token is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route  # the access line and metrics name the route
        state = scope["app"].state
        try:
            principal = await principal_for(state, token, scope.get("client"))
            ensure_role(principal, _QUOTE_ROLES)
        except ProblemError as exc:
            await problem_for(exc)(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except ClientDisconnect:
            return
        except StarletteHTTPException as exc:  # the body limit
            await http_problem_for(exc)(scope, receive, send)
            return
        quote_in = _plain_quote(scope["headers"], body)
        if quote_in is None:
            scope.setdefault("state", {})["principal"] = principal  # the route need not look the key up again
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            async with pooled(state.read_pool) as db:
                quote = await _quote(state, principal, quote_in, db)
            response: Response = Response(quote.model_dump_json(), media_type="application/json")
        except ProblemError as exc:
            response = problem_for(exc)
        await response(scope, receive, send)


def _bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer …` header, else None. (The first of repeated headers counts, as
    in Starlette.)"""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _plain_quote(headers: list[tuple[bytes, bytes]], body: bytes) -> QuoteIn | None:
    """The quote in a JSON body the route would read the same way, else None."""
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        return None
    try:
        return QuoteIn.model_validate(parse_json(body))
    except (ValueError, ProblemError):  # not JSON, over the limits, or not a valid quote
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app downstream, after the body was read here."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# ---- order events in ----

_EVENT_SCHEMA: dict[str, Any] = TypeAdapter(OrderEvent).json_schema(
    ref_template="#/components/schemas/{model}"
)
_EVENT_DEFS = _EVENT_SCHEMA.pop("$defs", {})
_SIGNATURE_HEADERS = [
    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
    for name, text in (
        ("webhook-id", "Unique per message; a redelivery reuses it"),
        ("webhook-timestamp", "Unix seconds; within 5 minutes of now"),
        ("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>`"),
    )
]


@webhooks.post(
    "/orders/{platform_id}",
    response_model=WebhookAnswer,
    operation_id="receive_order_event",
    responses={
        202: {"model": WebhookAnswer, "description": "Parked: applied as soon as what it waits for arrives"},
        413: {"description": "Body over 256 KiB"},
    },
    openapi_extra={
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}},
        "x-component-schemas": _EVENT_DEFS,
    },
)
async def receive_order_event(platform_id: ResourceId, request: Request) -> JSONResponse:
    """An order event from a platform, signed per Standard Webhooks. 2xx means it is durably stored: `applied`,
    `parked` (waits for its merchant or its payment) or `duplicate` (already applied under another webhook id).
    The same webhook id again gets the same answer and changes nothing; the same order, refund or cancellation
    with other content is a 409 and an anomaly for the operator."""
    secrets, signed = await _signing_secrets(request.app.state, platform_id, request.headers)
    body = await request.body()  # at most MAX_EVENT_BYTES: bounded while it streams (app/core/body_limit.py)
    return await _answer_order_event(request.app.state, platform_id, signed, secrets, body)


async def _signing_secrets(
    state: State, platform_id: str, headers: Mapping[str, str]
) -> tuple[list[str], SignedHeaders]:
    """The platform's secrets and the signature headers, once they could carry a signature: checked before the
    body is read."""
    secrets: list[str] | None = await state.webhook_secrets.get(platform_id)
    if secrets is None:
        raise NotFound(f"No platform {platform_id}.")
    return secrets, signed_headers(headers)


async def _answer_order_event(
    state: State, platform_id: str, headers: SignedHeaders, secrets: list[str], body: bytes
) -> JSONResponse:
    try:
        webhook_id = verify_standard_webhook(body, headers, secrets)
    except Unauthorized:
        if state.webhook_secrets.age(platform_id) < 1.0:
            raise
        # The platform may have rotated its secret since we cached it: check once against fresh secrets.
        webhook_id = verify_standard_webhook(
            body, headers, await state.webhook_secrets.get(platform_id, fresh=True) or []
        )
    outcome = await state.order_inbox.submit(ingest.parse_delivery(platform_id, webhook_id, body))
    media_type = PROBLEM_MEDIA_TYPE if outcome.is_problem else "application/json"
    return FastJSONResponse(outcome.body, status_code=outcome.http_status, media_type=media_type)


_WEBHOOK_PATH = re.compile(r"/v1/webhooks/orders/([A-Za-z0-9_]{1,64})")
_SIGNATURE_HEADER_NAMES = (b"webhook-id", b"webhook-timestamp", b"webhook-signature")


class OrderWebhookFastPath:
    """Serves `POST /v1/webhooks/orders/{platform_id}` straight from ASGI, skipping FastAPI's routing,
    dependency solving and exception middleware (about a fifth of the hottest path's CPU, see
    docs/scaling.md). It sits inside the request-id, security-header and body-limit middlewares, so the
    answers are the route's own: same bodies, same problem+json, same headers, same access line and metrics.
    Anything unusual (a query string, a platform id the route would refuse) goes on to the FastAPI route,
    which stays the documented one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        (self._route,) = [
            route
            for route in webhooks.routes
            if isinstance(route, APIRoute) and route.endpoint is receive_order_event
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = (
            _WEBHOOK_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]
            else None
        )
        if matched is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route  # the access line and metrics name the route
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _SIGNATURE_HEADER_NAMES:
                headers.setdefault(name.decode(), value.decode("latin-1"))  # the first, as Starlette's
        state = scope["app"].state
        try:
            secrets, signed = await _signing_secrets(state, matched[1], headers)
            body = await _read_body(receive)
            response = await _answer_order_event(state, matched[1], signed, secrets, body)
        except ClientDisconnect:
            return  # nobody to answer; nothing was submitted
        except ProblemError as exc:
            response = problem_for(exc)
        except StarletteHTTPException as exc:  # the body limit
            response = http_problem_for(exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


# ---- reads ----


@router.get("/orders/{order_id:path}", response_model=OrderDonationOut, operation_id="get_order_donation")
async def get_order_donation(
    order_id: Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)],
    request: Request,
    session: SessionDep,
    platform_id: Annotated[ResourceId | None, Query(description="Admin only: whose order id this is")] = None,
    principal: Principal = Authorized(Role.platform, Role.admin),
) -> OrderDonationOut:
    """The order's donation, what was reversed, its stage and its trail to the packages it helped fund."""
    return await service.order_donation(
        session, principal.acting_platform(platform_id), order_id, final_before=_final_before(request)
    )


@router.get(
    "/merchants/{merchant_id}/donations",
    response_model=Page[DonationRow],
    operation_id="list_merchant_donations",
)
async def list_merchant_donations(
    merchant_id: ResourceId,
    request: Request,
    session: SessionDep,
    page: PageParams,
    principal: Principal = Authorized(Role.admin, Role.platform, Role.merchant),
) -> Page[DonationRow]:
    """One row per order, oldest first."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    rows = await repository.merchant_orders(session, merchant.id, after=page.after, limit=page.limit + 1)
    final_before = _final_before(request)
    return page_of(
        [service.donation_row(o, status, final_before=final_before) for o, status in rows],
        [o.id for o, _ in rows],
        page.limit,
    )


def _final_before(request: Request) -> datetime:
    """Orders placed at or before this instant are past their return window."""
    now: datetime = request.app.state.clock.now()
    return now - timedelta(days=request.app.state.settings.return_window_days)


def _encode_delivery_cursor(platform_id: str, webhook_id: str) -> str:
    return base64.urlsafe_b64encode(f"{platform_id}\n{webhook_id}".encode()).decode().rstrip("=")


def _decode_delivery_cursor(cursor: str) -> tuple[str, str] | None:
    try:
        platform_id, webhook_id = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("\n", 1)
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None  # not one of ours: treated as the position before everything
    return platform_id, webhook_id


@router.get("/parked-events", response_model=Page[ParkedEventOut], operation_id="list_parked_events")
async def list_parked_events(
    session: SessionDep,
    page: PageParams,
    platform_id: Annotated[ResourceId | None, Query()] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[ParkedEventOut]:
    """Order events kept until what they wait for arrives (`merchant:<id>` or `order:<id>`)."""
    after = _decode_delivery_cursor(page.after) if page.after else None
    rows = await repository.parked_deliveries(
        session, platform_id=platform_id, after=after, limit=page.limit + 1
    )
    return page_of(
        [ParkedEventOut.model_validate(r, from_attributes=True) for r in rows],
        [_encode_delivery_cursor(r.platform_id, r.webhook_id) for r in rows],
        page.limit,
    )


@router.get("/webhook-anomalies", response_model=Page[AnomalyOut], operation_id="list_webhook_anomalies")
async def list_webhook_anomalies(
    session: SessionDep,
    page: PageParams,
    platform_id: Annotated[
        ResourceId | None, Query(description="Admin only: one platform's anomalies")
    ] = None,
    principal: Principal = Authorized(Role.admin, Role.platform),
) -> Page[AnomalyOut]:
    """Order events the operator and their platform should look at: a natural key reused with other content,
    an event that didn't match its order, an order placed more than a day ahead (refused), a refund of more
    than was left (applied as the rest). A platform key sees its own; an admin sees all, or one platform's."""
    scope = principal.acting_platform(platform_id) if platform_id or not principal.is_admin else None
    rows = await repository.anomalies(session, platform_id=scope, after=page.after, limit=page.limit + 1)
    return page_of([service.anomaly_out(r) for r in rows], [r.id for r in rows], page.limit)
