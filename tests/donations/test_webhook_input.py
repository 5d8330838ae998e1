"""Bad input is a clear 4xx problem and changes nothing; secrets rotate without dropping a delivery."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Shop
from tests.helpers import assert_problem, get_order, order_paid, order_refunded, send_event, signed_headers


async def _business_state(app: object) -> tuple[int, ...]:
    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        return tuple(
            [
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
                for table in ("orders", "order_refunds", "ledger_entries", "ledger_postings")
            ]
        )


def _body(shop: Shop, **data: Any) -> bytes:
    event = order_paid("BAD-1", merchant=shop.external_id)
    event["data"].update(data)
    return json.dumps(event).encode()


def _with_headers(**changes: str | None) -> Callable[[Shop, bytes], dict[str, str]]:
    def make(shop: Shop, body: bytes) -> dict[str, str]:
        headers = signed_headers(shop.platform["webhook_secret"], body)
        for name, value in changes.items():
            key = name.replace("_", "-")
            if value is None:
                headers.pop(key)
            else:
                headers[key] = value
        return headers

    return make


def _signed_at(delta: timedelta) -> Callable[[Shop, bytes], dict[str, str]]:
    return lambda shop, body: signed_headers(
        shop.platform["webhook_secret"], body, at=datetime.now(UTC) + delta
    )


def _forged(shop: Shop, body: bytes) -> dict[str, str]:
    return signed_headers("whsec_" + "A" * 43 + "=", body)


def _signed(shop: Shop, body: bytes) -> dict[str, str]:
    return signed_headers(shop.platform["webhook_secret"], body)


SIGNATURE_CASES: dict[str, Callable[[Shop, bytes], dict[str, str]]] = {
    "forged": _forged,
    "no signature": _with_headers(webhook_signature=None),
    "no id": _with_headers(webhook_id=None),
    "no timestamp": _with_headers(webhook_timestamp=None),
    "garbage signature": _with_headers(webhook_signature="garbage"),
    "signature without comma": _with_headers(webhook_signature="v1"),
    "signature not base64": _with_headers(webhook_signature="v1,!!!not-base64!!!"),
    "unknown version only": _with_headers(webhook_signature="v9,AAAA"),
    "timestamp not a number": _with_headers(webhook_timestamp="yesterday"),
    "timestamp absurd": _with_headers(webhook_timestamp="1e300"),
    "stale timestamp": _signed_at(timedelta(minutes=-6)),
    "future timestamp": _signed_at(timedelta(minutes=6)),
    "overlong id": _with_headers(webhook_id="x" * 300),
}


@pytest.mark.parametrize("case", SIGNATURE_CASES, ids=list(SIGNATURE_CASES))
async def test_unverifiable_deliveries_are_401_and_change_nothing(
    client: httpx.AsyncClient, shop: Shop, app: object, case: str
) -> None:
    before = await _business_state(app)
    body = _body(shop)
    response = await client.post(
        f"/v1/webhooks/orders/{shop.platform['id']}", content=body, headers=SIGNATURE_CASES[case](shop, body)
    )
    assert_problem(response, 401, "unauthorized")
    assert await _business_state(app) == before


BODY_CASES: dict[str, tuple[Callable[[Shop], bytes], int, str]] = {
    "not json": (lambda shop: b"{this is not json", 400, "malformed-event"),
    "more values than any event has": (lambda shop: b"[" + b"0," * 100_000 + b"0]", 413, "malformed-event"),
    "nested deeper than any event": (lambda shop: b"[" * 33 + b"]" * 33, 422, "malformed-event"),
    "json but not an object": (lambda shop: b"[1, 2, 3]", 422, "invalid-event"),
    "unknown event type": (
        lambda shop: json.dumps(
            {"type": "order.teleported", "timestamp": "2026-11-28T10:00:00Z", "data": {}}
        ).encode(),
        422,
        "invalid-event",
    ),
    "unknown currency": (lambda shop: _body(shop, currency="ZZZ"), 422, "invalid-event"),
    "metal is not money": (lambda shop: _body(shop, currency="XAU"), 422, "invalid-event"),
    "negative amount": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": -1}]),
        422,
        "invalid-event",
    ),
    "zero quantity": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 0, "amount": 10}]),
        422,
        "invalid-event",
    ),
    "absurd amount": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": 10**30}]),
        422,
        "invalid-event",
    ),
    "fractional amount": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": 10.5}]),
        422,
        "invalid-event",
    ),
    "amount as string": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": "10"}]),
        422,
        "invalid-event",
    ),
    "no items": (lambda shop: _body(shop, items=[]), 422, "invalid-event"),
    "amount a binary float would round to a whole number": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": 7777}]).replace(
            b"7777", b"999999999999999.99"
        ),
        422,
        "invalid-event",
    ),
    "line over a trillion minor units": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": 10**12 + 1}]),
        422,
        "invalid-event",
    ),
    "order subtotal over a trillion minor units": (
        lambda shop: _body(
            shop, items=[{"sku": f"A{i}", "quantity": 1, "amount": 6 * 10**11} for i in range(2)]
        ),
        422,
        "invalid-event",
    ),
    "NaN amount": (
        lambda shop: _body(shop, items=[{"sku": "A", "quantity": 1, "amount": 7777}]).replace(
            b"7777", b"NaN"
        ),
        400,
        "malformed-event",
    ),
    "naive placed_at": (lambda shop: _body(shop, placed_at="2026-11-28T10:00:00"), 422, "invalid-event"),
    "unexpected field": (lambda shop: _body(shop, buyer_name="Alice"), 422, "invalid-event"),
    "refund of zero": (
        lambda shop: json.dumps(order_refunded("BAD-1", "R", 0, merchant=shop.external_id)).encode(),
        422,
        "invalid-event",
    ),
}


@pytest.mark.parametrize("case", BODY_CASES, ids=list(BODY_CASES))
async def test_authentic_but_invalid_events_are_4xx_and_change_nothing(
    client: httpx.AsyncClient, shop: Shop, app: object, case: str
) -> None:
    make_body, status, kind = BODY_CASES[case]
    before = await _business_state(app)
    body = make_body(shop)
    headers = _signed(shop, body)
    first = await client.post(f"/v1/webhooks/orders/{shop.platform['id']}", content=body, headers=headers)
    problem = assert_problem(first, status, kind)
    assert problem["detail"]
    assert await _business_state(app) == before
    # Kept with its answer: the same delivery again gets the same answer.
    again = await client.post(f"/v1/webhooks/orders/{shop.platform['id']}", content=body, headers=headers)
    assert (again.status_code, again.json()) == (first.status_code, first.json())


async def test_a_non_utf8_body_is_unauthenticated_like_any_unverifiable_one(
    client: httpx.AsyncClient, shop: Shop, app: object
) -> None:
    """It can't be JSON, and the scheme signs text: whatever its signature header says, it is a 401 (not the 400
    an authentic-but-malformed event gets) and nothing is kept."""
    before = await _business_state(app)
    body = b'{"type": "order.paid", "x": "\xff\xfe"}'
    for signature in ("v1,AAAA", "v1," + "A" * 43 + "="):
        headers = {
            "webhook-id": "msg_bin",
            "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
            "webhook-signature": signature,
        }
        response = await client.post(
            f"/v1/webhooks/orders/{shop.platform['id']}", content=body, headers=headers
        )
        assert_problem(response, 401, "unauthorized")
    assert await _business_state(app) == before
    assert await _deliveries(app) == 0


async def _deliveries(app: object) -> int:
    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        return int((await connection.execute(text("SELECT count(*) FROM webhook_deliveries"))).scalar_one())


async def test_any_matching_v1_entry_counts_whatever_else_the_header_lists(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    """Standard Webhooks: the header may list several entries, of other versions too; one match is enough."""
    for n, noise in enumerate(("v2", "v2,abc", "v1a,xyz", "v1,!!!", "v1,AAAA", "garbage")):
        body = json.dumps(order_paid(f"V-{n}", merchant=shop.external_id)).encode()
        headers = _signed(shop, body)
        for signature in (
            f"{noise} {headers['webhook-signature']}",
            f"{headers['webhook-signature']} {noise}",
        ):
            response = await client.post(
                f"/v1/webhooks/orders/{shop.platform['id']}",
                content=body,
                headers=headers | {"webhook-signature": signature},
            )
            assert response.status_code == 200, (noise, response.text)


async def test_several_signatures_and_both_secrets_during_a_rotation(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    old = shop.platform["webhook_secret"]
    rotated = await client.post(f"/v1/platforms/{shop.platform['id']}/rotate-webhook-secret", headers=admin)
    new = rotated.json()["webhook_secret"]

    assert (
        await send_event(client, shop.platform, order_paid("ROT-1", merchant=shop.external_id), secret=old)
    ).status_code == 200
    assert (
        await send_event(client, shop.platform, order_paid("ROT-2", merchant=shop.external_id), secret=new)
    ).status_code == 200

    body = json.dumps(order_paid("ROT-3", merchant=shop.external_id)).encode()
    headers = signed_headers(new, body)
    forged = signed_headers("whsec_" + "B" * 43 + "=", body, webhook_id=headers["webhook-id"])
    # A sender signing with several keys lists every signature; one valid entry is enough.
    headers["webhook-signature"] = f"{forged['webhook-signature']} v2,ignored {headers['webhook-signature']}"
    response = await client.post(f"/v1/webhooks/orders/{shop.platform['id']}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    for order_id in ("ROT-1", "ROT-2", "ROT-3"):
        assert (await get_order(client, admin, shop.platform["id"], order_id)).status_code == 200


async def test_a_secret_rotated_elsewhere_is_honoured_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    """Another API process rotated the secret: this one's cached list is stale, yet the new secret works."""
    assert (
        await send_event(client, shop.platform, order_paid("C-1", merchant=shop.external_id))
    ).status_code == 200
    from app.platforms.service import rotate_webhook_secret

    async with app.state.sessionmaker() as session, session.begin():  # type: ignore[attr-defined]
        from app.models import Platform

        platform = await session.get(Platform, shop.platform["id"])
        assert platform is not None
        new, _ = await rotate_webhook_secret(session, app.state.cipher, platform, grace=timedelta(0))  # type: ignore[attr-defined]
    app.state.webhook_secrets._entries[shop.platform["id"]] = (0.0, [shop.platform["webhook_secret"]])  # type: ignore[attr-defined]
    response = await send_event(
        client, shop.platform, order_paid("C-2", merchant=shop.external_id), secret=new
    )
    assert response.status_code == 200, response.text
    # …and with no grace period, the old one no longer works once the list is fresh.
    old = await send_event(client, shop.platform, order_paid("C-3", merchant=shop.external_id))
    assert_problem(old, 401, "unauthorized")


async def test_a_donation_too_large_to_hold_is_refused_not_a_500(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    from tests.helpers import set_rule

    await set_rule(
        client, admin, shop.merchant["id"], rate_bps=0, fixed_per_unit=[{"amount": 10**9, "currency": "CNY"}]
    )
    before = await _business_state(app)
    items = [{"sku": "A", "quantity": 1_000_000, "amount": 1}]
    response = await send_event(
        client, shop.platform, order_paid("HUGE", merchant=shop.external_id, items=items)
    )
    assert_problem(response, 422, "invalid-event")
    assert await _business_state(app) == before


async def test_whole_numbers_written_with_a_fraction_are_amounts(
    client: httpx.AsyncClient, shop: Shop
) -> None:
    """JSON Schema's integer: 12800.0 is 12800 (an exact reading, not a float's)."""
    body = _body(shop, order_id="FLOAT-1", items=[{"sku": "TEA-01", "quantity": 2, "amount": 7777}])
    response = await client.post(
        f"/v1/webhooks/orders/{shop.platform['id']}",
        content=body.replace(b"7777", b"12800.000"),
        headers=_signed(shop, body.replace(b"7777", b"12800.000")),
    )
    assert response.json() == {"status": "applied"}


async def test_order_ids_with_slashes_can_be_read_back(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    event = order_paid("TM/2026/1001", merchant=shop.external_id)
    assert (await send_event(client, shop.platform, event)).json() == {"status": "applied"}
    for path in ("/v1/orders/TM/2026/1001", "/v1/orders/TM%2F2026%2F1001"):
        read = await client.get(path, params={"platform_id": shop.platform["id"]}, headers=admin)
        assert read.status_code == 200, read.text
        assert read.json()["order_id"] == "TM/2026/1001" and read.json()["donation"]["amount"] == 196
    assert (await get_order(client, admin, shop.platform["id"], "TM/2026")).status_code == 404
