"""Sending one signed message to a receiver: Standard Webhooks signatures, bounded reads, and failures told in
words that say nothing about the network behind the receiver. Which addresses may be reached is `destinations`'
business (its client does the connecting)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from app.events.destinations import UnsafeAddress

MAX_RESPONSE_BYTES = 4096  # of a receiver's answer we read and keep; the rest is never read
KEPT_RESPONSE_CHARS = 1000
# Every failure to get an answer reads the same: a refused connection, a timeout and a TLS failure told apart would
# let an endpoint's owner use the service to scan ports. The cause goes to the service's own log only.
NO_ANSWER = "could not deliver: the endpoint did not answer"


def signature_headers(message_id: str, body: str, secrets: Sequence[str], *, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers; during a rotation one signature per valid secret, space-separated."""
    signatures = " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "GoodsForGood-Webhooks/1",
    }


@dataclass(frozen=True, slots=True)
class SendResult:
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    cause: str | None = None  # for the service's log: what really went wrong, when `error` keeps it vague


async def send(
    client: httpx.AsyncClient,
    url: str,
    message_id: str,
    body: str,
    secrets: Sequence[str],
) -> SendResult:
    """POST the message with the events client (`destinations.events_client`, which refuses addresses that are
    not public when told to). 2xx is success; anything else (another status, a refused address, no answer) is a
    failure with its reason. Never raises for what the receiver does."""
    started = time.perf_counter()

    def result(
        ok: bool, status: int | None, error: str | None, text: str | None = None, cause: str | None = None
    ) -> SendResult:
        return SendResult(ok, status, round((time.perf_counter() - started) * 1000), error, text, cause)

    try:
        headers = signature_headers(message_id, body, secrets, at=datetime.now(UTC))
        async with client.stream("POST", url, content=body.encode(), headers=headers) as response:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received.extend(chunk[: MAX_RESPONSE_BYTES - len(received)])
                if len(received) >= MAX_RESPONSE_BYTES:
                    break
            text = bytes(received).decode("utf-8", "replace")[:KEPT_RESPONSE_CHARS] or None
            ok = 200 <= response.status_code < 300
            return result(ok, response.status_code, None if ok else f"HTTP {response.status_code}", text)
    except UnsafeAddress as exc:
        return result(False, None, f"refused: {exc}")
    except (httpx.HTTPError, OSError) as exc:
        return result(False, None, NO_ANSWER, cause=f"{type(exc).__name__}: {exc}"[:500])
