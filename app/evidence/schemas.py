from __future__ import annotations

from pydantic import BaseModel


class EvidenceOut(BaseModel):
    """A photo kept by the service as proof for one shipment."""

    evidence_id: str
    """`evd_…`: name it in a `delivered` event's proof as `{"evidence_id": …}`."""
    sha256: str
    """SHA-256 of the image as stored (metadata removed; a photo without any is stored byte for byte)."""
    url: str
    """Where the shipment's partner and the programme read it back (this service, with their key)."""
    media_type: str
    byte_size: int
    width: int
    height: int


def evidence_url(shipment_id: str, evidence_id: str) -> str:
    """Where a shipment's evidence is read back."""
    return f"/v1/shipments/{shipment_id}/evidence/{evidence_id}"
