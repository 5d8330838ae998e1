from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class ReceiptLink(CreatedAt, Base):
    """A buyer's link to follow one order's donation (`/r/{token}`), made at its platform's request.

    The token is never stored: it is an HMAC, under a key derived from the lookup key, of the order id and this
    row's random `nonce`, so asking again gives the same link back; `token_hash` (SHA-256 of the token) finds the
    row when the link is opened. Revoking deletes the row, so a revoked token and one never issued look alike."""

    __tablename__ = "receipt_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True, nullable=False)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(16), nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    # What the platform chose to show its buyer: the merchant's name (or not), and an order reference of its own
    # choosing (its order id may be internal, so nothing is shown unless it sends one).
    show_merchant: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    order_reference: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The step the platform last heard of in a `receipt.updated` event (or the step when the link was made).
    notified_step: Mapped[str | None] = mapped_column(String(20), nullable=True)
