"""Every query of evidence storage."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.evidence.images import CleanImage
from app.models import EvidenceBlob, ShipmentEvidence


async def store_blob(session: AsyncSession, sha256: bytes, image: CleanImage) -> None:
    """Keep the image once: the same bytes again (any shipment) add nothing."""
    await session.execute(
        insert(EvidenceBlob)
        .values(
            sha256=sha256,
            media_type=image.media_type,
            byte_size=len(image.content),
            width=image.width,
            height=image.height,
            content=image.content,
        )
        .on_conflict_do_nothing(index_elements=[EvidenceBlob.sha256])
    )


async def link(
    session: AsyncSession, *, evidence_id: str, shipment_id: str, sha256: bytes, api_key_id: str
) -> tuple[str, bool]:
    """The shipment's evidence row for this image: (its id, whether it is new). A concurrent twin waits for
    the other's commit, then finds its row."""
    created = await session.scalar(
        insert(ShipmentEvidence)
        .values(id=evidence_id, shipment_id=shipment_id, sha256=sha256, api_key_id=api_key_id)
        .on_conflict_do_nothing(index_elements=[ShipmentEvidence.shipment_id, ShipmentEvidence.sha256])
        .returning(ShipmentEvidence.id)
    )
    if created is not None:
        return created, True
    existing = await session.scalar(
        select(ShipmentEvidence.id).where(
            ShipmentEvidence.shipment_id == shipment_id, ShipmentEvidence.sha256 == sha256
        )
    )
    assert existing is not None
    return existing, False


async def described(
    session: AsyncSession, shipment_id: str, evidence_id: str
) -> tuple[ShipmentEvidence, str, int, int, int] | None:
    """The evidence row with its image's media type, size and dimensions (not the bytes)."""
    row = (
        await session.execute(
            select(
                ShipmentEvidence,
                EvidenceBlob.media_type,
                EvidenceBlob.byte_size,
                EvidenceBlob.width,
                EvidenceBlob.height,
            )
            .join(EvidenceBlob, EvidenceBlob.sha256 == ShipmentEvidence.sha256)
            .where(ShipmentEvidence.id == evidence_id, ShipmentEvidence.shipment_id == shipment_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


async def content(session: AsyncSession, shipment_id: str, evidence_id: str) -> tuple[bytes, str] | None:
    """The image's bytes and media type, if `evidence_id` was sent for `shipment_id`."""
    row = (
        await session.execute(
            select(EvidenceBlob.content, EvidenceBlob.media_type)
            .join(ShipmentEvidence, ShipmentEvidence.sha256 == EvidenceBlob.sha256)
            .where(ShipmentEvidence.id == evidence_id, ShipmentEvidence.shipment_id == shipment_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])
