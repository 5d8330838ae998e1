"""Talking to Stripe: the official SDK, async, with a timeout, a pinned API version and idempotency keys from our
own ids. The only module that calls Stripe; amounts arrive here already in Stripe's units
(`app.settlement.stripe_amounts`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import stripe
import structlog

from app.core.settings import Settings

log = structlog.get_logger("g4g.stripe")

# Pinned: the shape of the objects we read (PaymentIntent status, metadata, last_payment_error) is stable in it.
STRIPE_API_VERSION = "2024-06-20"
# The metadata key naming the merchant a customer (or SetupIntent) belongs to. Linking a customer to a
# merchant requires it: nobody can point a merchant's statements at a card that isn't the merchant's.
MERCHANT_METADATA_KEY = "g4g_merchant_id"


class HTTPXClient(stripe.HTTPXClient):
    """stripe's async httpx transport, handing the form body to httpx as `content` (stripe 16.1 passes `data=`
    a string, which httpx 0.28 deprecates with a warning on every call)."""

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        kwargs["content"] = kwargs.pop("data") or None
        return [args, kwargs]


class StripeUnavailable(Exception):
    """Stripe did not answer (network, timeout, rate limit, 5xx): try again later."""


class StripeRefused(Exception):
    """Stripe answered that the request itself is wrong (no such object, bad parameters)."""


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """What became of one charge attempt.

    `succeeded` and `declined` are Stripe's final word; `needs_attention` means retrying cannot help (Stripe
    refused the request itself, or the card needs its holder to authenticate); `unknown` means we could not
    tell (unreachable, timeout, 5xx, still processing): the same attempt is looked at again later."""

    outcome: Literal["succeeded", "declined", "needs_attention", "unknown"]
    payment_intent_id: str | None = None
    amount: int | None = None  # Stripe's units
    currency: str | None = None  # upper-case ISO code
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    id: str
    merchant_id: str | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class SetupIntentInfo:
    id: str
    status: str
    customer_id: str | None
    payment_method_id: str | None
    merchant_id: str | None


def idempotency_key(statement_id: str, attempt: int) -> str:
    return f"g4g:statement:{statement_id}:attempt:{attempt}"


def _expandable_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value.id)


def _metadata(obj: Any) -> dict[str, Any]:
    metadata = getattr(obj, "metadata", None)
    return dict(metadata.to_dict()) if metadata is not None else {}


def _result_of(intent: Any) -> ChargeResult:
    """A PaymentIntent's status as the outcome of the attempt it belongs to."""
    common = {
        "payment_intent_id": intent.id,
        "amount": intent.amount,
        "currency": str(intent.currency).upper(),
    }
    status = intent.status
    if status == "succeeded":
        return ChargeResult("succeeded", **common)
    if status in ("requires_payment_method", "canceled"):
        error = intent.last_payment_error
        message = (error.get("message") if isinstance(error, dict) else getattr(error, "message", None)) or ""
        return ChargeResult("declined", error=message or f"payment intent {status}", **common)
    if status == "requires_action":
        return ChargeResult(
            "needs_attention",
            error="the card needs its holder to authenticate this charge; the merchant must update its card",
            **common,
        )
    return ChargeResult("unknown", error=f"payment intent {status}", **common)


class StripeGateway:
    def __init__(
        self, *, api_key: str, api_base: str | None, timeout: float, publishable_key: str | None = None
    ) -> None:
        self.publishable_key = publishable_key
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=HTTPXClient(timeout=timeout),
            max_network_retries=2,
            stripe_version=STRIPE_API_VERSION,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway | None:
        """The gateway the settings describe; None when no Stripe key is set (statements are then not charged)."""
        if settings.stripe_api_key is None:
            return None
        return cls(
            api_key=settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout=settings.stripe_timeout_seconds,
            publishable_key=settings.stripe_publishable_key,
        )

    # ---- customers and their cards ----

    async def create_customer(self, *, merchant_id: str, name: str) -> str:
        """A Stripe customer for the merchant, its metadata naming it (one per merchant: the key says so)."""
        try:
            customer = await self._client.v1.customers.create_async(
                {"name": name, "metadata": {MERCHANT_METADATA_KEY: merchant_id}},
                options={"idempotency_key": f"g4g:merchant:{merchant_id}:customer"},
            )
        except stripe.InvalidRequestError as exc:
            raise StripeRefused(exc.user_message or str(exc)) from None
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        return str(customer.id)

    async def customer(self, customer_id: str) -> CustomerInfo | None:
        """The customer and the merchant its metadata names, or None if Stripe has no such customer."""
        try:
            customer = await self._client.v1.customers.retrieve_async(customer_id)
        except stripe.InvalidRequestError:
            return None
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        metadata = _metadata(customer)
        return CustomerInfo(
            id=str(customer.id),
            merchant_id=metadata.get(MERCHANT_METADATA_KEY),
            deleted=bool(getattr(customer, "deleted", False)),
        )

    async def create_setup_intent(self, *, customer_id: str, merchant_id: str) -> tuple[str, str]:
        """A SetupIntent for saving a card for later off-session charges; returns (id, client secret)."""
        try:
            params: stripe.params.SetupIntentCreateParams = {
                "customer": customer_id,
                "usage": "off_session",
                "metadata": {MERCHANT_METADATA_KEY: merchant_id},
            }
            intent = await self._client.v1.setup_intents.create_async(params)
        except stripe.InvalidRequestError as exc:
            raise StripeRefused(exc.user_message or str(exc)) from None
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        return str(intent.id), str(intent.client_secret)

    async def setup_intent(self, setup_intent_id: str) -> SetupIntentInfo | None:
        try:
            intent = await self._client.v1.setup_intents.retrieve_async(setup_intent_id)
        except stripe.InvalidRequestError:
            return None
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        metadata = _metadata(intent)
        return SetupIntentInfo(
            id=str(intent.id),
            status=str(intent.status),
            customer_id=_expandable_id(intent.customer),
            payment_method_id=_expandable_id(intent.payment_method),
            merchant_id=metadata.get(MERCHANT_METADATA_KEY),
        )

    async def make_default_payment_method(self, *, customer_id: str, payment_method_id: str) -> str:
        """Attach the card to the customer (if it isn't yet) and make it the one off-session charges use.
        Returns a label for people ("visa •••• 4242")."""
        try:
            method = await self._client.v1.payment_methods.retrieve_async(payment_method_id)
            if _expandable_id(method.customer) != customer_id:
                method = await self._client.v1.payment_methods.attach_async(
                    payment_method_id, {"customer": customer_id}
                )
            await self._client.v1.customers.update_async(
                customer_id, {"invoice_settings": {"default_payment_method": payment_method_id}}
            )
        except stripe.InvalidRequestError as exc:
            raise StripeRefused(exc.user_message or str(exc)) from None
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        card = getattr(method, "card", None)
        if card is not None:
            return f"{card.brand} •••• {card.last4}"
        return str(method.type)

    # ---- charges ----

    async def charge(
        self, *, statement_id: str, attempt: int, customer_id: str, amount: int, currency: str
    ) -> ChargeResult:
        """One off-session PaymentIntent for a statement attempt, confirmed against the customer's default
        payment method. `amount` is in Stripe's units. Repeating the call with the same attempt within 24 hours
        is safe: Stripe answers the same idempotency key with the first answer."""
        try:
            customer = await self._client.v1.customers.retrieve_async(customer_id)
            settings = customer.invoice_settings
            payment_method = _expandable_id(settings.default_payment_method if settings else None)
            if not payment_method:
                return ChargeResult("declined", error="the customer has no default payment method")
            intent = await self._client.v1.payment_intents.create_async(
                {
                    "customer": customer_id,
                    "amount": amount,
                    "currency": currency.lower(),
                    "payment_method": payment_method,
                    "off_session": True,
                    "confirm": True,
                    "metadata": {"statement_id": statement_id, "attempt": str(attempt)},
                },
                options={"idempotency_key": idempotency_key(statement_id, attempt)},
            )
        except stripe.CardError as exc:
            intent_id = _expandable_id(getattr(exc.error, "payment_intent", None)) if exc.error else None
            return ChargeResult("declined", payment_intent_id=intent_id, error=exc.user_message or str(exc))
        except stripe.InvalidRequestError as exc:
            # Not a decline: the request itself is wrong (no such customer, an amount Stripe refuses, a reused
            # idempotency key). Repeating it cannot help; the operator must look.
            return ChargeResult(
                "needs_attention", error=f"Stripe refused the request: {exc.user_message or exc}"
            )
        except stripe.StripeError as exc:  # connection, timeout, rate limit, 5xx: we don't know yet
            log.warning("stripe_charge_unknown", statement_id=statement_id, error=type(exc).__name__)
            return ChargeResult("unknown", error=type(exc).__name__)
        return _result_of(intent)

    async def payment_intent(self, payment_intent_id: str) -> ChargeResult:
        """Where a PaymentIntent we created stands now."""
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.InvalidRequestError as exc:
            return ChargeResult(
                "needs_attention", error=f"Stripe refused the request: {exc.user_message or exc}"
            )
        except stripe.StripeError as exc:
            return ChargeResult("unknown", payment_intent_id=payment_intent_id, error=type(exc).__name__)
        return _result_of(intent)

    async def find_attempt(self, statement_id: str, attempt: int) -> ChargeResult | None:
        """The PaymentIntent made for this statement attempt, found by its metadata, or None if there is none.
        Raises `StripeUnavailable` when Stripe can't be asked (then nobody may create another)."""
        query = f"metadata['statement_id']:'{statement_id}' AND metadata['attempt']:'{attempt}'"
        try:
            found = await self._client.v1.payment_intents.search_async({"query": query, "limit": 1})
        except stripe.StripeError as exc:
            raise StripeUnavailable(type(exc).__name__) from None
        return _result_of(found.data[0]) if found.data else None

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
