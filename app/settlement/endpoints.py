from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep
from app.core.errors import NotFound, Unauthorized
from app.core.idempotency import IdempotencyDep
from app.core.json_body import ExactJsonRoute
from app.core.money import CurrencyCode, MoneyOut
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.merchants.service import get_visible_merchant
from app.models import FxRate, SettlementRun, Statement
from app.settlement import billing, repository, service
from app.settlement.funds import funds_view
from app.settlement.schemas import (
    SETUP_INTENT_ID,
    BankTransferIn,
    BillingProfileIn,
    BillingProfileOut,
    CarriedForward,
    FundsOut,
    FxRateIn,
    FxRateOut,
    RunProgress,
    SettlementRunIn,
    SettlementRunOut,
    SetupIntentOut,
    StatementLineOut,
    StatementOut,
    StatementStatus,
    StatementWithLines,
    StripeBillingIn,
)
from app.settlement.stripe_gateway import construct_event

router = APIRouter(prefix="/v1", tags=["settlement"], route_class=ExactJsonRoute)
stripe_webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=ExactJsonRoute)


def statement_out(statement: Statement) -> StatementOut:
    return StatementOut(
        id=statement.id,
        run_id=statement.run_id,
        merchant_id=statement.merchant_id,
        currency=statement.currency,
        as_of=statement.as_of,
        total=MoneyOut(amount=statement.total, currency=statement.currency),
        billing_method=statement.billing_method,
        status=statement.status,
        payment_attempts=statement.payment_attempts,
        payment_intent_id=statement.payment_intent_id,
        last_payment_error=statement.last_payment_error,
        paid_at=statement.paid_at,
        paid_via=statement.paid_via,
        payment_reference=statement.payment_reference,
        anomaly=statement.anomaly,
        created_at=statement.created_at,
    )


# ---- billing profiles ----


@router.get(
    "/merchants/{merchant_id}/billing", response_model=BillingProfileOut, operation_id="get_billing_profile"
)
async def get_billing_profile(
    merchant_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin, Role.merchant)
) -> BillingProfileOut:
    """How the merchant's statements are paid, and the card they are charged to."""
    return billing.profile_of(await get_visible_merchant(session, principal, merchant_id))


@router.put(
    "/merchants/{merchant_id}/billing",
    response_model=BillingProfileOut,
    operation_id="set_billing_profile",
    responses={503: {"description": "Stripe is not configured or did not answer (method `stripe`)"}},
)
async def set_billing_profile(
    merchant_id: ResourceId,
    body: BillingProfileIn,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("billing.set_profile", "merchant", resource_id="merchant_id"),
) -> BillingProfileOut:
    """Admin only. `bank_transfer`: statements are paid by transfer; `stripe`: link an existing Stripe customer,
    which Stripe must say belongs to this merchant (metadata `g4g_merchant_id`) and no other merchant uses.
    Merchants add their card themselves through `…/billing/setup-intent`."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    if isinstance(body, StripeBillingIn):
        gateway = billing.require_gateway(request.app.state.stripe)
        merchant = await billing.link_stripe_customer(session, gateway, merchant, body.stripe_customer_id)
    else:
        merchant = await billing.use_bank_transfer(session, merchant)
    activity.details = {"method": body.method}
    return billing.profile_of(merchant)


@router.post(
    "/merchants/{merchant_id}/billing/setup-intent",
    status_code=201,
    response_model=SetupIntentOut,
    operation_id="create_billing_setup_intent",
    responses={503: {"description": "Stripe is not configured or did not answer"}},
)
async def create_billing_setup_intent(
    merchant_id: ResourceId,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin, Role.merchant),
    activity: ActivityNote = Recorded("billing.start_card_setup", "merchant", resource_id="merchant_id"),
) -> SetupIntentOut | JSONResponse:
    """Start adding the merchant's card: a Stripe SetupIntent on the customer the service keeps for the merchant.
    Confirm its `client_secret` with Stripe.js, then call `…/setup-intent/{id}/complete`."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    gateway = billing.require_gateway(request.app.state.stripe)

    async def create() -> SetupIntentOut:
        started = await billing.start_card_setup(session, gateway, merchant)
        activity.details = {"setup_intent_id": started.setup_intent_id}
        return started

    return await idempotency.run(principal, create)


@router.post(
    "/merchants/{merchant_id}/billing/setup-intent/{setup_intent_id}/complete",
    response_model=BillingProfileOut,
    operation_id="complete_billing_setup_intent",
    responses={503: {"description": "Stripe is not configured or did not answer"}},
)
async def complete_billing_setup_intent(
    merchant_id: ResourceId,
    setup_intent_id: Annotated[str, Path(pattern=SETUP_INTENT_ID)],
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.merchant),
    activity: ActivityNote = Recorded("billing.complete_card_setup", "merchant", resource_id="merchant_id"),
) -> BillingProfileOut:
    """The card the merchant confirmed becomes the one its statements are charged to (as read from Stripe)."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    gateway = billing.require_gateway(request.app.state.stripe)
    activity.details = {"setup_intent_id": setup_intent_id}
    return billing.profile_of(await billing.complete_card_setup(session, gateway, merchant, setup_intent_id))


# ---- runs and statements ----


@router.post(
    "/settlement-runs", status_code=202, response_model=SettlementRunOut, operation_id="run_settlement"
)
async def run_settlement(
    body: SettlementRunIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("settlement_run.create", "settlement_run"),
) -> SettlementRunOut | JSONResponse:
    """Start a settlement run, as a background job: bill final donations on statements (one per merchant and
    currency), then charge every unpaid Stripe statement. Answers at once with the queued run; read its progress
    with `GET /v1/settlement-runs/{id}`. Re-running never bills an order twice; it charges failed or unanswered
    statements again."""

    async def create() -> SettlementRunOut:
        run = await service.queue_settlement(session, as_of=body.as_of, now=request.app.state.clock.now())
        activity.resource_id, activity.details = run.id, {"as_of": run.as_of.isoformat()}
        return await run_out(session, run)

    return await idempotency.run(principal, create, status=202)


@router.get("/settlement-runs", response_model=Page[SettlementRunOut], operation_id="list_settlement_runs")
async def list_settlement_runs(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[SettlementRunOut]:
    """Every run, newest first."""
    runs = await repository.runs_page(session, after=page.after, limit=page.limit + 1)
    return page_of([await run_out(session, r) for r in runs], [r.id for r in runs], page.limit)


@router.get("/settlement-runs/{run_id}", response_model=SettlementRunOut, operation_id="get_settlement_run")
async def get_settlement_run(
    run_id: ResourceId, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> SettlementRunOut:
    """A run's status, its statements as they are now, what it carried forward, and its progress."""
    run = await session.get(SettlementRun, run_id)
    if run is None:
        raise NotFound(f"No settlement run {run_id}.")
    return await run_out(session, run)


async def run_out(session: AsyncSession, run: SettlementRun) -> SettlementRunOut:
    statements = await repository.run_statements(session, run.id)
    return SettlementRunOut(
        id=run.id,
        status=run.status,
        as_of=run.as_of,
        statements=[statement_out(s) for s in statements],
        carried_forward=[CarriedForward.model_validate(c) for c in run.summary.get("carried_forward", [])],
        progress=RunProgress(
            statements=len(statements),
            paid=sum(s.status == "paid" for s in statements),
            awaiting_payment=sum(s.status in ("pending_payment", "payment_failed") for s in statements),
            needs_attention=sum(s.status == "needs_attention" for s in statements),
        ),
        error=run.error,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


@router.get("/statements", response_model=Page[StatementOut], operation_id="list_statements")
async def list_statements(
    session: SessionDep,
    page: PageParams,
    status: Annotated[StatementStatus | None, Query()] = None,
    anomalous: Annotated[bool | None, Query(description="Only statements with an anomaly noted")] = None,
    principal: Principal = Authorized(Role.admin),
) -> Page[StatementOut]:
    """Every statement, oldest first; e.g. `?status=needs_attention` for the operator's queue."""
    rows = await repository.statements(
        session, status=status, anomalous=bool(anomalous), after=page.after, limit=page.limit + 1
    )
    return page_of([statement_out(s) for s in rows], [s.id for s in rows], page.limit)


@router.get(
    "/merchants/{merchant_id}/statements",
    response_model=Page[StatementOut],
    operation_id="list_merchant_statements",
)
async def list_merchant_statements(
    merchant_id: ResourceId,
    session: SessionDep,
    page: PageParams,
    principal: Principal = Authorized(Role.admin, Role.merchant),
) -> Page[StatementOut]:
    merchant = await get_visible_merchant(session, principal, merchant_id)
    rows = await repository.merchant_statements(session, merchant.id, after=page.after, limit=page.limit + 1)
    return page_of([statement_out(s) for s in rows], [s.id for s in rows], page.limit)


@router.get("/statements/{statement_id}", response_model=StatementWithLines, operation_id="get_statement")
async def get_statement(
    statement_id: ResourceId,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.merchant),
) -> StatementWithLines:
    """A statement with its lines: each order's final donation, and credits for reversals after billing."""
    statement = await session.get(Statement, statement_id)
    if statement is None or (not principal.is_admin and principal.merchant_id != statement.merchant_id):
        raise NotFound(f"No statement {statement_id}.")
    return await statement_with_lines(session, statement)


async def statement_with_lines(session: AsyncSession, statement: Statement) -> StatementWithLines:
    """`GET /v1/statements/{id}`'s answer for a statement already found (the merchant's dashboard shows it too)."""
    lines = await repository.statement_lines(session, statement.id)
    return StatementWithLines(
        **statement_out(statement).model_dump(),
        lines=[
            StatementLineOut(
                order_id=order_id,
                kind=kind,
                amount=MoneyOut(amount=amount, currency=statement.currency),
            )
            for order_id, kind, amount in lines
        ],
    )


@router.post(
    "/statements/{statement_id}/payments", response_model=StatementOut, operation_id="record_bank_transfer"
)
async def record_bank_transfer(
    statement_id: ResourceId,
    body: BankTransferIn,
    request: Request,
    session: SessionDep,
    idempotency: IdempotencyDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded(
        "statement.record_bank_transfer", "statement", resource_id="statement_id"
    ),
) -> StatementOut | JSONResponse:
    """A bank transfer paid this statement: it must be the open amount; the statement is then paid exactly as
    through Stripe. The same transfer again changes nothing; a statement paid by card refuses it."""
    state = request.app.state

    async def create() -> StatementOut:
        statement = await service.record_bank_transfer(
            session,
            statement_id,
            reference=body.reference,
            amount=body.amount.to_money(),
            now=state.clock.now(),
            base_currency=state.settings.base_currency,
        )
        activity.merchant_id = statement.merchant_id
        activity.details = {"reference": body.reference, "amount": body.amount.model_dump(mode="json")}
        return statement_out(statement)

    return await idempotency.run(principal, create, status=200)


@router.post(
    "/statements/{statement_id}/reopen", response_model=StatementOut, operation_id="reopen_statement"
)
async def reopen_statement(
    statement_id: ResourceId,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("statement.reopen", "statement", resource_id="statement_id"),
) -> StatementOut:
    """A statement that needed attention is charged again by the next run, as a new attempt."""
    statement = await service.reopen(session, statement_id)
    activity.merchant_id = statement.merchant_id
    return statement_out(statement)


class StripeWebhookAnswer(BaseModel):
    status: str
    outcome: str | None = None


@stripe_webhooks.post(
    "/stripe",
    response_model=StripeWebhookAnswer,
    operation_id="receive_stripe_event",
    openapi_extra={
        "parameters": [
            {"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    },
    responses={503: {"description": "STRIPE_WEBHOOK_SECRET is not set"}},
)
async def receive_stripe_event(request: Request, session: SessionDep) -> StripeWebhookAnswer:
    """A Stripe event, verified with the official SDK against `STRIPE_WEBHOOK_SECRET`, applied once per event id."""
    state = request.app.state
    secret = state.settings.stripe_webhook_secret
    if secret is None:
        raise billing.StripeNotConfigured("Set STRIPE_WEBHOOK_SECRET.")
    body = await request.body()
    signature = request.headers.get("stripe-signature")
    if not signature:
        raise Unauthorized("Missing Stripe-Signature header.")
    try:
        construct_event(body, signature, secret.get_secret_value())
        payload = json.loads(body)
    except ValueError:
        raise Unauthorized(
            "Stripe-Signature does not verify (wrong secret, altered body or stale timestamp)."
        ) from None
    event_id = str(payload.get("id", ""))
    if not await repository.claim_stripe_event(session, event_id, str(payload.get("type", "")), body):
        return StripeWebhookAnswer(status="duplicate")
    outcome = await service.apply_stripe_event(
        session,
        payload,
        gateway=state.stripe,
        now=state.clock.now(),
        base_currency=state.settings.base_currency,
    )
    await repository.set_stripe_event_outcome(session, event_id, outcome)
    return StripeWebhookAnswer(status="processed", outcome=outcome)


@router.put("/fx-rates/{currency}", response_model=FxRateOut, operation_id="set_fx_rate")
async def set_fx_rate(
    currency: Annotated[CurrencyCode, Path()],
    body: FxRateIn,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
    activity: ActivityNote = Recorded("fx_rate.set", "fx_rate", resource_id="currency"),
) -> FxRateOut:
    """The rate in force from now for turning collected `currency` into the base currency. Money that waited for
    a rate is converted at once."""
    rate, _ = await service.set_fx_rate(
        session, currency=currency, rate=body.rate, base_currency=request.app.state.settings.base_currency
    )
    activity.details = {"rate_id": rate.id, "rate": str(rate.rate)}
    return _rate_out(rate)


def _rate_out(rate: FxRate) -> FxRateOut:
    return FxRateOut(
        id=rate.id,
        currency=rate.currency,
        base_currency=rate.base_currency,
        rate=format(rate.rate.normalize(), "f"),
        created_at=rate.created_at,
    )


@router.get("/fx-rates", response_model=Page[FxRateOut], operation_id="list_fx_rates")
async def list_fx_rates(
    session: SessionDep, page: PageParams, principal: Principal = Authorized(Role.admin)
) -> Page[FxRateOut]:
    """Every rate ever set, newest first (the newest per currency is in force)."""
    rows = await repository.rates_newest_first(session, after=page.after, limit=page.limit + 1)
    return page_of([_rate_out(r) for r in rows], [r.id for r in rows], page.limit)


@router.get("/funds", response_model=FundsOut, operation_id="get_funds")
async def get_funds(
    request: Request, session: SessionDep, principal: Principal = Authorized(Role.admin)
) -> FundsOut:
    """Money per stage and currency, the pool in the base currency, and how far it is to the next package."""
    settings = request.app.state.settings
    return await funds_view(
        session,
        now=request.app.state.clock.now(),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
    )
