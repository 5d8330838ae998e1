"""Charging statements through Stripe: the official SDK, async, with a timeout, and idempotency keys from our
own ids. The only module that talks to Stripe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import stripe
import structlog

log = structlog.get_logger("g4g.stripe")

# Pinned: the shape of the objects we read (PaymentIntent status, metadata, last_payment_error) is stable in it.
STRIPE_API_VERSION = "2024-06-20"


class HTTPXClient(stripe.HTTPXClient):
    """stripe's async httpx transport, handing the form body to httpx as `content` (stripe 16.1 passes `data=`
    a string, which httpx 0.28 deprecates with a warning on every call)."""

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        kwargs["content"] = kwargs.pop("data") or None
        return [args, kwargs]


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """`succeeded` and `declined` are Stripe's final word on this attempt; `unknown` means we could not tell
    (unreachable, timeout, 5xx): the attempt is retried later with the same idempotency key."""

    outcome: Literal["succeeded", "declined", "unknown"]
    payment_intent_id: str | None = None
    error: str | None = None


def idempotency_key(statement_id: str, attempt: int) -> str:
    return f"g4g:statement:{statement_id}:attempt:{attempt}"


class StripeGateway:
    def __init__(self, *, api_key: str, api_base: str | None, timeout: float) -> None:
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=HTTPXClient(timeout=timeout),
            max_network_retries=2,
            stripe_version=STRIPE_API_VERSION,
        )

    async def charge(
        self, *, statement_id: str, attempt: int, customer_id: str, amount: int, currency: str
    ) -> ChargeResult:
        """One off-session PaymentIntent for a statement, confirmed against the customer's default payment
        method."""
        try:
            customer = await self._client.v1.customers.retrieve_async(customer_id)
            settings = customer.invoice_settings
            payment_method = settings.default_payment_method if settings else None
            if not payment_method:
                return ChargeResult("declined", error="the customer has no default payment method")
            intent = await self._client.v1.payment_intents.create_async(
                {
                    "customer": customer_id,
                    "amount": amount,
                    "currency": currency.lower(),
                    "payment_method": payment_method
                    if isinstance(payment_method, str)
                    else payment_method.id,
                    "off_session": True,
                    "confirm": True,
                    "metadata": {"statement_id": statement_id, "attempt": str(attempt)},
                },
                options={"idempotency_key": idempotency_key(statement_id, attempt)},
            )
        except stripe.CardError as exc:
            return ChargeResult("declined", error=exc.user_message or str(exc))
        except stripe.InvalidRequestError as exc:
            # e.g. no such customer: this attempt can't succeed, a later run retries with a fixed profile.
            return ChargeResult("declined", error=exc.user_message or str(exc))
        except stripe.StripeError as exc:  # connection, timeout, rate limit, 5xx: we don't know yet
            log.warning("stripe_charge_unknown", statement_id=statement_id, error=type(exc).__name__)
            return ChargeResult("unknown", error=type(exc).__name__)
        if intent.status == "succeeded":
            return ChargeResult("succeeded", payment_intent_id=intent.id)
        if intent.status in ("requires_payment_method", "canceled"):
            return ChargeResult(
                "declined", payment_intent_id=intent.id, error=f"payment intent {intent.status}"
            )
        return ChargeResult("unknown", payment_intent_id=intent.id, error=f"payment intent {intent.status}")

    async def close(self) -> None:
        http_client = self._client._requestor._client  # stripe 16 has no public close for its transport
        if http_client is not None:
            await http_client.close_async()  # type: ignore[no-untyped-call]


def construct_event(payload: bytes, signature: str, secret: str) -> stripe.Event:
    """Verify `Stripe-Signature` with the SDK (5 minute tolerance). Raises ValueError on anything not verified."""
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            payload.decode("utf-8"), signature, secret, tolerance=300
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return event
