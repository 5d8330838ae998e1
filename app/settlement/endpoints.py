from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from sqlalchemy import select

from app.core.auth import Authorized, Principal, Role
from app.core.database import SessionDep, driver_connection
from app.core.errors import NotFound, ProblemError, Unauthorized
from app.core.money import CurrencyCode, MoneyOut
from app.core.pagination import Page, PageParams, page_of
from app.core.types import ResourceId
from app.merchants.service import get_visible_merchant
from app.models import FxRate, Order, Statement, StripeEvent
from app.settlement import repository, service
from app.settlement.funds import funds_view
from app.settlement.schemas import (
    BillingProfileIn,
    BillingProfileOut,
    FundsOut,
    FxRateIn,
    FxRateOut,
    SettlementRunIn,
    SettlementRunOut,
    StatementLineOut,
    StatementOut,
    StatementWithLines,
)
from app.settlement.stripe_gateway import construct_event

router = APIRouter(prefix="/v1", tags=["settlement"])
stripe_webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class StripeNotConfigured(ProblemError):
    status, kind, title = 503, "stripe-not-configured", "Stripe is not configured on this service"


def statement_out(statement: Statement) -> StatementOut:
    return StatementOut(
        id=statement.id,
        run_id=statement.run_id,
        merchant_id=statement.merchant_id,
        currency=statement.currency,
        as_of=statement.as_of,
        total=MoneyOut(amount=statement.total, currency=statement.currency),
        status=statement.status,
        payment_attempts=statement.payment_attempts,
        payment_intent_id=statement.payment_intent_id,
        last_payment_error=statement.last_payment_error,
        paid_at=statement.paid_at,
        created_at=statement.created_at,
    )


@router.put(
    "/merchants/{merchant_id}/billing", response_model=BillingProfileOut, operation_id="set_billing_profile"
)
async def set_billing_profile(
    merchant_id: ResourceId,
    body: BillingProfileIn,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.merchant),
) -> BillingProfileOut:
    """The Stripe customer charged for the merchant's statements (off-session, default payment method)."""
    merchant = await get_visible_merchant(session, principal, merchant_id)
    await service.set_billing_profile(session, merchant, body.stripe_customer_id)
    return BillingProfileOut(merchant_id=merchant.id, stripe_customer_id=merchant.stripe_customer_id)


@router.post(
    "/settlement-runs", status_code=201, response_model=SettlementRunOut, operation_id="run_settlement"
)
async def run_settlement(
    body: SettlementRunIn, request: Request, principal: Principal = Authorized(Role.admin)
) -> SettlementRunOut:
    """Bill final donations on statements (one per merchant and currency), then charge every unpaid statement
    through Stripe. Re-running never bills an order twice; it charges failed or unanswered statements again."""
    state = request.app.state
    now = state.clock.now()
    settings = state.settings
    async with state.sessionmaker() as session, session.begin():
        run, statements, carried = await service.run_settlement(
            session,
            as_of=body.as_of or now,
            now=now,
            window=timedelta(days=settings.return_window_days),
            min_invoice=settings.min_invoice,
        )
    # Charged after the statements are committed: a charge never happens for a statement that isn't recorded.
    if state.stripe is not None:
        await service.charge_due_statements(
            state.sessionmaker, state.stripe, now=now, base_currency=settings.base_currency
        )
    async with state.sessionmaker() as session:
        fresh = [await session.get(Statement, s.id) for s in statements]
    return SettlementRunOut(
        id=run.id,
        as_of=run.as_of,
        statements=[statement_out(s) for s in fresh if s is not None],
        carried_forward=carried,
        created_at=run.created_at,
    )


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
    lines = await repository.statement_lines(session, statement.id)
    external = {
        o.id: o.external_id
        for o in await session.scalars(select(Order).where(Order.id.in_([line.order_id for line in lines])))
    }
    return StatementWithLines(
        **statement_out(statement).model_dump(),
        lines=[
            StatementLineOut(
                order_id=external[line.order_id],
                kind=line.kind,
                amount=MoneyOut(amount=line.amount, currency=statement.currency),
            )
            for line in lines
        ],
    )


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
        raise StripeNotConfigured("Set STRIPE_WEBHOOK_SECRET.")
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
    db = await driver_connection(session)
    inserted = await db.fetchval(
        """INSERT INTO stripe_events (id, type, payload, outcome) VALUES ($1, $2, $3::jsonb, 'processing')
           ON CONFLICT (id) DO NOTHING RETURNING id""",
        event_id,
        str(payload.get("type", "")),
        body.decode(),
    )
    if inserted is None:
        return StripeWebhookAnswer(status="duplicate")
    outcome = await service.apply_stripe_event(
        session, payload, now=state.clock.now(), base_currency=state.settings.base_currency
    )
    event = await session.get(StripeEvent, event_id)
    assert event is not None
    event.outcome = outcome
    return StripeWebhookAnswer(status="processed", outcome=outcome)


@router.put("/fx-rates/{currency}", response_model=FxRateOut, operation_id="set_fx_rate")
async def set_fx_rate(
    currency: Annotated[CurrencyCode, Path()],
    body: FxRateIn,
    request: Request,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin),
) -> FxRateOut:
    """The rate in force from now for turning collected `currency` into the base currency. Money that waited for
    a rate is converted at once."""
    rate, _ = await service.set_fx_rate(
        session, currency=currency, rate=body.rate, base_currency=request.app.state.settings.base_currency
    )
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
