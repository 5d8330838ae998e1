from __future__ import annotations

from sqlalchemy import CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class EvidenceBlob(CreatedAt, Base):
    """An image kept as photo proof, addressed by the SHA-256 of its bytes (as stored: metadata removed), so the
    same photo is kept once however often it is sent. Never updated. `content` is stored uncompressed
    out of line (`STORAGE EXTERNAL`, in the migration): JPEG, PNG and WebP are compressed already."""

    __tablename__ = "evidence_blobs"
    __table_args__ = (
        CheckConstraint("octet_length(sha256) = 32", name="sha256_length"),
        CheckConstraint("media_type IN ('image/jpeg', 'image/png', 'image/webp')", name="media_type"),
        CheckConstraint("byte_size = octet_length(content)", name="byte_size"),
    )

    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(20), nullable=False)
    byte_size: Mapped[int] = mapped_column(Integer, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
