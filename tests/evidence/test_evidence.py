"""Photo proof kept by the service: who may send and read it, what is kept of it, and that sending it again
changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.evidence.photos import GPS_IFD, ORIENTATION, metadata, photo, pixels
from tests.helpers import assert_problem, bearer, create_key, create_partner, row_counts
from tests.logistics.conftest import Shipping, proof

TABLES = ("evidence_blobs", "shipment_evidence")


def url(shipment_id: str) -> str:
    return f"/v1/shipments/{shipment_id}/evidence"


async def send(
    shipping: Shipping,
    shipment_id: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "image/jpeg",
) -> httpx.Response:
    return await shipping.client.post(
        url(shipment_id),
        content=data,
        headers={**(headers or shipping.partner_key), "Content-Type": content_type},
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
async def test_a_photo_is_kept_without_its_metadata_but_with_its_orientation_and_pixels(
    shipping: Shipping, fmt: str
) -> None:
    shipment = await shipping.shipment(["3"])
    original = photo(fmt, camera_metadata=True)
    answer = await send(shipping, shipment["id"], original, content_type="application/octet-stream")
    assert answer.status_code == 201, answer.text
    evidence = answer.json()
    assert evidence["evidence_id"].startswith("evd_")
    assert evidence["url"] == f"/v1/shipments/{shipment['id']}/evidence/{evidence['evidence_id']}"
    assert evidence["media_type"] == f"image/{fmt.lower()}"

    stored = await shipping.client.get(evidence["url"], headers=shipping.partner_key)
    assert stored.status_code == 200
    assert stored.headers["content-type"] == evidence["media_type"]
    assert stored.headers["cache-control"] == "private, no-store"
    assert hashlib.sha256(stored.content).hexdigest() == evidence["sha256"]
    exif, gps = metadata(stored.content)
    assert exif == {ORIENTATION: 6}  # the maker's name is gone; the photo still shows upright
    assert gps == {}
    assert GPS_IFD not in exif
    assert pixels(stored.content) == pixels(original)  # nothing re-encoded


async def test_a_photo_without_metadata_is_kept_byte_for_byte_so_its_hash_is_the_senders(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["3"])
    original = photo("JPEG")
    answer = await send(shipping, shipment["id"], original)
    assert answer.status_code == 201
    assert answer.json()["sha256"] == hashlib.sha256(original).hexdigest()
    stored = await shipping.client.get(answer.json()["url"], headers=shipping.admin)  # the programme reads it
    assert stored.content == original


async def test_a_multipart_form_works_like_a_raw_body(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["3"])
    original = photo("PNG")
    answer = await shipping.client.post(
        url(shipment["id"]),
        files={"file": ("delivery.png", original, "image/png")},
        headers=shipping.partner_key,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["sha256"] == hashlib.sha256(original).hexdigest()


async def test_the_same_photo_again_answers_with_the_same_evidence_and_stores_nothing(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["3"])
    original = photo("JPEG", camera_metadata=True)
    first = await send(shipping, shipment["id"], original)
    before = await row_counts(shipping.pool.app, *TABLES)
    again = await send(shipping, shipment["id"], original)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert await row_counts(shipping.pool.app, *TABLES) == before
    # The same image for another shipment is another evidence (readable by that shipment's readers) over the
    # same stored bytes.
    other = await shipping.shipment(["2"])
    elsewhere = await send(shipping, other["id"], original)
    assert elsewhere.status_code == 201
    assert elsewhere.json()["sha256"] == first.json()["sha256"]
    assert elsewhere.json()["evidence_id"] != first.json()["evidence_id"]
    after = await row_counts(shipping.pool.app, *TABLES)
    assert after == {
        "evidence_blobs": before["evidence_blobs"],
        "shipment_evidence": before["shipment_evidence"] + 1,
    }


@pytest.fixture
async def rival(shipping: Shipping) -> AsyncIterator[dict[str, str]]:
    partner = await create_partner(shipping.client, shipping.admin, name="Other Carrier")
    key = await create_key(
        shipping.client, shipping.admin, role="logistics", logistics_partner_id=partner["id"]
    )
    yield bearer(key["token"])


async def test_only_the_shipments_partner_and_the_programme_send_or_read_evidence(
    shipping: Shipping, rival: dict[str, str]
) -> None:
    shipment = await shipping.shipment(["3"])
    evidence = (await send(shipping, shipment["id"], photo())).json()
    merchant = await shipping.pool.merchant()
    merchant_key = bearer(
        (await create_key(shipping.client, shipping.admin, role="merchant", merchant_id=merchant["id"]))[
            "token"
        ]
    )
    before = await row_counts(shipping.pool.app, *TABLES)

    # Another partner: the shipment does not exist for it, nor its photos.
    assert_problem(await send(shipping, shipment["id"], photo("PNG"), headers=rival), 404, "not-found")
    assert_problem(await shipping.client.get(evidence["url"], headers=rival), 404, "not-found")
    # A merchant (whose orders paid for the boxes) never sees photos taken at a school.
    assert_problem(await send(shipping, shipment["id"], photo("PNG"), headers=merchant_key), 403, "forbidden")
    assert_problem(await shipping.client.get(evidence["url"], headers=merchant_key), 403, "forbidden")
    # Nobody without a key.
    assert_problem(await shipping.client.post(url(shipment["id"]), content=photo("PNG")), 401, "unauthorized")
    assert_problem(await shipping.client.get(evidence["url"]), 401, "unauthorized")
    # An evidence id of another shipment is not found under this one.
    other = await shipping.shipment(["2"])
    moved = evidence["url"].replace(shipment["id"], other["id"])
    assert_problem(await shipping.client.get(moved, headers=shipping.partner_key), 404, "not-found")

    assert await row_counts(shipping.pool.app, *TABLES) == before


async def test_what_is_not_a_real_image_is_refused_and_changes_nothing(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["3"])
    jpeg = photo("JPEG")
    gif = photo("GIF")
    before = await row_counts(shipping.pool.app, *TABLES)
    for body, content_type in [
        (b"", "image/jpeg"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/jpeg"),  # claims to be a JPEG
        (b"\xff\xd8\xff\xe0" + b"\0" * 200, "image/jpeg"),  # a JPEG's first bytes only
        (jpeg[: len(jpeg) // 2], "image/jpeg"),  # cut short
        (gif, "image/gif"),  # a real image, of a kind not taken
        (b"%PDF-1.7\n" + jpeg, "application/pdf"),
    ]:
        refused = await send(shipping, shipment["id"], body, content_type=content_type)
        assert_problem(refused, 422, "not-an-image")
    assert await row_counts(shipping.pool.app, *TABLES) == before


async def test_a_photo_over_the_limit_is_413_while_it_streams(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["3"])
    limit = shipping.pool.app.state.settings.max_evidence_bytes
    assert limit == 8 * 1024 * 1024  # the default
    before = await row_counts(shipping.pool.app, *TABLES)
    too_big = b"\xff\xd8" + b"\0" * (limit - 1)  # one byte over
    assert_problem(await send(shipping, shipment["id"], too_big), 413, "payload-too-large")

    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only counting while reading can tell
        nonlocal sent
        for _ in range(limit // 65536 + 64):
            sent += 65536
            yield b"\0" * 65536

    streamed = await shipping.client.post(
        url(shipment["id"]), content=chunks(), headers={**shipping.partner_key, "Content-Type": "image/jpeg"}
    )
    assert_problem(streamed, 413, "payload-too-large")
    multipart = await shipping.client.post(
        url(shipment["id"]), files={"file": ("big.jpg", too_big, "image/jpeg")}, headers=shipping.partner_key
    )
    assert_problem(multipart, 413, "payload-too-large")
    assert await row_counts(shipping.pool.app, *TABLES) == before


async def test_a_delivery_names_its_photo_by_evidence_id(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["2", "3"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    original = photo("JPEG")
    evidence = (await send(shipping, shipment["id"], original)).json()

    # A photo of another shipment, or none, can't be named.
    other = await shipping.shipment(["1"])
    elsewhere = (await send(shipping, other["id"], photo("PNG"))).json()
    for evidence_id in (elsewhere["evidence_id"], "evd_01JX0000000000000000000000"):
        refused = await shipping.post(
            shipment["id"], "delivered", proof=proof(evidence={"evidence_id": evidence_id})
        )
        assert_problem(refused, 422, "invalid-request")

    named = proof(evidence={"evidence_id": evidence["evidence_id"]})
    at = shipping.now()
    delivered = await shipping.post(shipment["id"], "delivered", event_id="D-1", at=at, proof=named)
    assert delivered.status_code == 201, delivered.text
    assert delivered.json()["proof"]["evidence"] == {
        "evidence_id": evidence["evidence_id"],
        "url": evidence["url"],
        "sha256": hashlib.sha256(original).hexdigest(),
    }
    # Sent again (a phone's queue after a lost answer): the first answer, nothing new.
    again = await shipping.post(shipment["id"], "delivered", event_id="D-1", at=at, proof=named)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == delivered.json()
    read = await shipping.read(shipment["id"])
    assert [e["event_id"] for e in read["events"]].count("D-1") == 1
    assert read["status"] == "delivered"


async def test_a_delivery_with_its_own_url_and_hash_still_works(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["3"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    delivered = await shipping.post(shipment["id"], "delivered")
    assert delivered.status_code == 201, delivered.text
    assert delivered.json()["proof"]["evidence"] == {**proof()["evidence"], "evidence_id": None}
