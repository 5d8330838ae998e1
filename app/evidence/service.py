"""Photo proof kept by the service: stored content-addressed in PostgreSQL, readable by the shipment's partner and
the programme only (photos at a school may show children: never public, never merchants).

Why PostgreSQL (bytea) and not a bucket: one backup, one transaction (the photo and the event that names it
commit or fail together), no second set of credentials on the servers; a delivery photo is 0.1–8 MiB and a
programme makes a few thousand a year. `bench/evidence.py` measures what it costs."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.errors import InvalidRequest, NotFound
from app.core.ids import new_id
from app.evidence import images, repository
from app.evidence.schemas import EvidenceOut, evidence_url
from app.logistics import repository as shipments
from app.logistics.tracking import visible

MEDIA_TYPES = tuple(images.FORMATS.values())


class NotAnImage(InvalidRequest):
    kind, title = "not-an-image", "The body is not a JPEG, PNG or WebP image"


_DECODING = asyncio.Semaphore(2)


async def _visible_shipment(session: AsyncSession, principal: Principal, shipment_id: str) -> None:
    row = await shipments.shipment(session, shipment_id)
    if row is None or not visible(principal, row.shipment.logistics_partner_id):
        raise NotFound(f"No shipment {shipment_id}.")


async def store(
    session: AsyncSession, principal: Principal, shipment_id: str, data: bytes
) -> tuple[EvidenceOut, bool]:
    """Keep `data` as evidence for the shipment (its partner or the programme): the image without its metadata,
    once by its SHA-256. Returns the evidence and whether it is new (the same image again for the same shipment
    answers with the first evidence)."""
    await _visible_shipment(session, principal, shipment_id)
    try:
        # Decoding a 50-megapixel photo takes a while (not on the event loop) and up to a few hundred MB of
        # memory: two at a time per process, so parallel uploads can't run it out of memory.
        async with _DECODING:
            image = await asyncio.to_thread(images.clean, data)
    except images.NotAnImage as refused:
        raise NotAnImage(f"body: {refused}.") from None
    digest = hashlib.sha256(image.content).digest()
    await repository.store_blob(session, digest, image)
    evidence_id, created = await repository.link(
        session,
        evidence_id=new_id("evd"),
        shipment_id=shipment_id,
        sha256=digest,
        api_key_id=principal.key_id,
    )
    out = EvidenceOut(
        evidence_id=evidence_id,
        sha256=digest.hex(),
        url=evidence_url(shipment_id, evidence_id),
        media_type=image.media_type,
        byte_size=len(image.content),
        width=image.width,
        height=image.height,
    )
    return out, created


async def describe(session: AsyncSession, shipment_id: str, evidence_id: str) -> EvidenceOut | None:
    """The evidence `evidence_id` of this shipment (no visibility check: the caller made it)."""
    found = await repository.described(session, shipment_id, evidence_id)
    if found is None:
        return None
    row, media_type, byte_size, width, height = found
    return EvidenceOut(
        evidence_id=row.id,
        sha256=row.sha256.hex(),
        url=evidence_url(shipment_id, row.id),
        media_type=media_type,
        byte_size=byte_size,
        width=width,
        height=height,
    )


async def read(
    session: AsyncSession, principal: Principal, shipment_id: str, evidence_id: str
) -> tuple[bytes, str]:
    """The image and its media type, for the shipment's partner or the programme."""
    await _visible_shipment(session, principal, shipment_id)
    found = await repository.content(session, shipment_id, evidence_id)
    if found is None:
        raise NotFound(f"No evidence {evidence_id} for shipment {shipment_id}.")
    return found
