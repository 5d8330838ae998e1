"""Sending one signed message to a receiver: address checks, Standard Webhooks signatures, bounded reads."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

MAX_RESPONSE_BYTES = 4096  # of a receiver's answer we read and keep; the rest is never read
KEPT_RESPONSE_CHARS = 1000


class UnsafeAddress(Exception):
    """The URL's host resolves to an address events may not be sent to."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def check_public_address(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, a private, loopback, link-local (cloud metadata), multicast or
    reserved address. Every address it resolves to counts: one private answer is enough to refuse."""
    host = urlsplit(url).hostname
    if not host:
        raise UnsafeAddress("the URL has no host")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeAddress(f"{host} does not resolve ({exc.strerror or exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _forbidden(address):
            raise UnsafeAddress(f"{host} resolves to {address}, a private, loopback or link-local address")


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


async def send(
    client: httpx.AsyncClient,
    url: str,
    message_id: str,
    body: str,
    secrets: Sequence[str],
    *,
    check_address: bool,
) -> SendResult:
    """POST the message. 2xx is success; anything else (another status, a refused address, a timeout, a
    connection error) is a failure with its reason. Never raises for what the receiver does."""
    started = time.perf_counter()

    def result(ok: bool, status: int | None, error: str | None, text: str | None = None) -> SendResult:
        return SendResult(ok, status, round((time.perf_counter() - started) * 1000), error, text)

    try:
        if check_address:
            await check_public_address(url)
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
    except httpx.TimeoutException as exc:
        return result(False, None, f"timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return result(False, None, f"{type(exc).__name__}: {exc}"[:500])
