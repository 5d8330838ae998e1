"""Standard Webhooks verification (the `standardwebhooks` package), wrapped so no header or body, however
malformed, becomes a 5xx: anything that isn't a valid signature within tolerance is a 401."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.errors import ProblemError, Unauthorized


class MalformedBody(ProblemError):
    status, kind, title = 400, "malformed-event", "The event body is malformed"


@lru_cache(maxsize=1024)
def _verifier(secret: str) -> Webhook:
    return Webhook(secret)


def verify_standard_webhook(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """Check `webhook-signature` against each secret (several during a rotation); returns the webhook id.

    The signature may list several space-separated `v1,<base64>` entries; one match with one secret is enough.
    The timestamp must be within 5 minutes either way (fixed by the package)."""
    wanted = {
        name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(wanted.values()):
        raise Unauthorized("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    if len(wanted["webhook-id"]) > 255:
        raise Unauthorized("webhook-id is too long.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("The body is not UTF-8.") from None
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
