"""Standard Webhooks verification (the `standardwebhooks` package), wrapped so no header or body, however
malformed, becomes a 5xx: anything that isn't a valid signature within tolerance is a 401."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from functools import lru_cache

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.errors import Unauthorized


@lru_cache(maxsize=1024)
def _verifier(secret: str) -> Webhook:
    return Webhook(secret)


def _v1_entries(header: str) -> str:
    """The well-formed `v1,<base64 of 32 bytes>` entries of a signature header. Entries of other versions
    (`v2`, `v1a,…`) and malformed ones are skipped, not fatal: any one matching entry is enough."""
    kept = []
    for entry in header.split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            if len(base64.b64decode(signature, validate=True)) == 32:
                kept.append(entry)
        except (ValueError, binascii.Error):
            continue
    return " ".join(kept)


class SignedHeaders(dict[str, str]):
    """The three signature headers as `signed_headers` checked them: verifying takes them as they are."""


def signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The three signature headers, refused with 401 if any is missing or none carries a well-formed `v1`
    signature. It needs no body, so a request that could never verify is answered before its body is read."""
    if isinstance(headers, SignedHeaders):
        return headers
    wanted = SignedHeaders(
        (name, headers.get(name, "")) for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not all(wanted.values()):
        raise Unauthorized("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    if len(wanted["webhook-id"]) > 255:
        raise Unauthorized("webhook-id is too long.")
    wanted["webhook-signature"] = _v1_entries(wanted["webhook-signature"])
    if not wanted["webhook-signature"]:
        raise Unauthorized("No well-formed v1 signature in webhook-signature.")
    return wanted


def verify_standard_webhook(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """Check `webhook-signature` against each secret (several during a rotation); returns the webhook id.

    The signature may list several space-separated entries; one `v1` entry matching one secret is enough.
    The timestamp must be within 5 minutes either way (fixed by the package). A body that isn't UTF-8 can't be
    JSON and can't be checked (the scheme signs text): it is unauthenticated like any other unverifiable one."""
    wanted = signed_headers(headers)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unauthorized("The body is not UTF-8, so its signature cannot be verified.") from None
    reason = "No matching signature."
    for secret in secrets:
        try:
            _verifier(secret).verify(text, wanted, json_parse=False)
            return wanted["webhook-id"]
        except WebhookVerificationError as exc:
            reason = str(exc) or reason
            if "timestamp" in reason.lower() or "headers" in reason.lower():
                break  # the same for every secret
        except (ValueError, TypeError, IndexError):  # garbage in the signature header
            reason = "Malformed webhook-signature header."
            break
    raise Unauthorized(reason.rstrip(".") + ".")
