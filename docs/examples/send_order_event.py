#!/usr/bin/env python3
"""Sign an order event the way Goods for Good expects (Standard Webhooks) and send it.

    pip install standardwebhooks
    python send_order_event.py --url http://127.0.0.1:8000 --platform-id plt_... --secret whsec_... \\
        --merchant shop-88 --order-id TM-1001

Sends `order.paid` for one line (`--sku`, `--quantity`, `--amount` in minor units, `--currency`), or with
`--refund-id R-1 --amount 6400` an `order.refunded`, or with `--cancel` an `order.cancelled`. Prints the HTTP
status and the answer. Re-running with the same `--webhook-id` is a retry: the service answers as it did the
first time and applies nothing twice. Uses only the standard library besides `standardwebhooks`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def build_event(args: argparse.Namespace) -> dict[str, object]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if args.cancel:
        return {
            "type": "order.cancelled",
            "timestamp": now,
            "data": {"order_id": args.order_id, "merchant_id": args.merchant},
        }
    if args.refund_id:
        return {
            "type": "order.refunded",
            "timestamp": now,
            "data": {
                "order_id": args.order_id,
                "merchant_id": args.merchant,
                "refund_id": args.refund_id,
                "currency": args.currency,
                "amount": args.amount,
            },
        }
    return {
        "type": "order.paid",
        "timestamp": now,
        "data": {
            "order_id": args.order_id,
            "merchant_id": args.merchant,
            "currency": args.currency,
            "placed_at": args.placed_at or now,
            "items": [{"sku": args.sku, "quantity": args.quantity, "amount": args.amount}],
        },
    }


def send(
    url: str, platform_id: str, secret: str, event: dict[str, object], webhook_id: str
) -> tuple[int, str]:
    # Sign the exact bytes you send: the signature covers "{webhook-id}.{timestamp}.{body}".
    body = json.dumps(event, separators=(",", ":"))
    sent_at = datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, sent_at, body)
    request = urllib.request.Request(  # noqa: S310 - the operator gives the URL
        f"{url.rstrip('/')}/v1/webhooks/orders/{platform_id}",
        data=body.encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:  # 4xx: the answer says what was wrong
        return error.code, error.read().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--platform-id", required=True)
    parser.add_argument(
        "--secret", default=os.environ.get("G4G_WEBHOOK_SECRET"), help="whsec_… (or G4G_WEBHOOK_SECRET)"
    )
    parser.add_argument("--merchant", required=True, help="your own id for the merchant")
    parser.add_argument("--order-id", required=True)
    parser.add_argument("--currency", default="CNY")
    parser.add_argument("--sku", default="TEA-01")
    parser.add_argument("--quantity", type=int, default=1)
    parser.add_argument("--amount", type=int, default=12800, help="line subtotal (or refund) in minor units")
    parser.add_argument("--placed-at", help="RFC 3339; default now")
    parser.add_argument("--refund-id")
    parser.add_argument("--cancel", action="store_true")
    parser.add_argument("--webhook-id", default=None, help="default: a new one; reuse it to retry")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret or G4G_WEBHOOK_SECRET is required")
    webhook_id = args.webhook_id or f"msg_{uuid.uuid4().hex}"
    status, answer = send(args.url, args.platform_id, args.secret, build_event(args), webhook_id)
    print(status, answer)
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
