"""Every query of the field app's own: device sessions, like the merchants' dashboard sessions."""

from __future__ import annotations

from app.models import LogisticsPartner, PartnerSession
from app.web.repository import SignedInSessions

PARTNER_SESSIONS: SignedInSessions[PartnerSession, LogisticsPartner] = SignedInSessions(
    PartnerSession, LogisticsPartner, PartnerSession.logistics_partner_id, "logistics"
)
