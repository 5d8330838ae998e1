from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.patterns import pattern
from app.core.types import ONE_LINE, PRINTABLE, Instant, Name, ResourceId, visible_text
from app.packages.schemas import ContentItem, TeacherContactOut


class LogisticsPartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class LogisticsPartnerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    created_at: datetime


# ---- shipments ----

ShipmentStatus = Literal[
    "planned",
    "handed_over",
    "in_transit",
    "customs_hold",
    "out_for_delivery",
    "delivered",
    "receipt_confirmed",
    "delivery_failed",
    "returning",
    "returned",
    "cancelled",
]
EventStatus = Literal[
    "handed_over",
    "in_transit",
    "customs_hold",
    "out_for_delivery",
    "delivered",
    "receipt_confirmed",
    "delivery_failed",
    "returning",
    "returned",
    "cancelled",
]
Outcome = Literal["accepted", "damaged", "missing"]
AllocationStatus = Literal[
    "allocated", "shipped", "delivered", "accepted", "damaged", "missing", "returned", "cancelled"
]

# The poster's own id for an event: printable ASCII, as carriers' tracking systems make them.
EventId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]
# Text a person wrote, stripped: no control characters (PostgreSQL refuses NUL; logs and CSVs hate the rest), except
# line breaks and tabs in remarks.
_ONE_LINE = ONE_LINE
_LINES = pattern(
    visible_text(r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"),
    "must be text, not blank, without control characters other than line breaks and tabs",
)
Remark = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000, pattern=_LINES)
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_LINES)
]
Place = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_ONE_LINE)
]
Role = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=_ONE_LINE)
]


def _https_url(value: str) -> str:
    """An https address of the evidence (a signature or photo), without credentials in it."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    return value


EvidenceUrl = Annotated[
    str,
    # A host name (letters, digits, dots, hyphens: no credentials, no bracketed address), an optional port, then
    # any printable path, query or fragment.
    StringConstraints(
        min_length=9,
        max_length=2000,
        pattern=pattern(
            r"^https://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:[/?#][\x21-\x7e]*)?$",
            "must be an https:// address with a host name, no user name or password, and no spaces",
        ),
    ),
    AfterValidator(_https_url),
]
Sha256Hex = Annotated[
    str,
    StringConstraints(pattern=pattern(r"^[0-9a-fA-F]{64}$", "must be a SHA-256: 64 hexadecimal digits")),
    AfterValidator(str.lower),
]


class Evidence(BaseModel):
    """Where the signature or photo is kept, and its SHA-256, so what was shown can be checked later."""

    model_config = ConfigDict(extra="forbid")
    url: EvidenceUrl
    sha256: Sha256Hex
    """64 hexadecimal digits (answered in lower case)."""


class Gps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: Annotated[float, Field(ge=-90, le=90, strict=True)]
    lon: Annotated[float, Field(ge=-180, le=180, strict=True)]


class DeliveryProof(BaseModel):
    """Who received the boxes at the school (normally the teacher), the evidence, and where."""

    model_config = ConfigDict(extra="forbid")
    receiver_name: Name
    receiver_role: Role
    """E.g. `teacher`, `head teacher`."""
    evidence: Evidence
    gps: Gps | None = None


class AcceptedPackageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    package_id: ResourceId
    outcome: Literal["accepted"]


class WrittenOffPackageIn(BaseModel):
    """A box the school did not get whole: it is written off, and its student comes first for a replacement."""

    model_config = ConfigDict(extra="forbid")
    package_id: ResourceId
    outcome: Literal["damaged", "missing"]
    reason: Reason
    """What the school found (or did not)."""


PackageOutcomeIn = Annotated[AcceptedPackageIn | WrittenOffPackageIn, Field(discriminator="outcome")]


class _EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: EventId
    """Your id for this event, unique within the shipment: sending it again is safe (the first answer comes
    back); sending it with other content is a 409."""
    occurred_at: Instant
    """When it happened (RFC 3339 with an offset); at most 5 minutes ahead of the service's clock."""
    location: Place | None = None
    note: Remark | None = None


class TrackingEventIn(_EventIn):
    """The boxes moved (or, for the programme, the shipment is cancelled before it left)."""

    status: Literal[
        "handed_over",
        "in_transit",
        "customs_hold",
        "out_for_delivery",
        "delivery_failed",
        "returning",
        "returned",
        "cancelled",
    ]


class DeliveredEventIn(_EventIn):
    """The boxes reached the school: who received them, and the evidence."""

    status: Literal["delivered"]
    proof: DeliveryProof


class ReceiptEventIn(_EventIn):
    """The school checked the boxes: an outcome for every one of the shipment's boxes (each once)."""

    status: Literal["receipt_confirmed"]
    packages: Annotated[list[PackageOutcomeIn], Field(min_length=1, max_length=10_000)]


# A tracking event, as the shipment's logistics partner (or the programme) reports it: what it carries depends
# on its status.
ShipmentEventIn = Annotated[
    TrackingEventIn | DeliveredEventIn | ReceiptEventIn, Field(discriminator="status")
]


class DeliveryProofOut(BaseModel):
    receiver_name: str
    receiver_role: str
    evidence: Evidence
    gps: Gps | None


class PackageOutcomeOut(BaseModel):
    package_id: str
    outcome: Outcome
    reason: str | None


class ShipmentEventOut(BaseModel):
    id: str
    """Our id for the recorded event (`sev_…`)."""
    event_id: str
    status: EventStatus
    occurred_at: datetime
    recorded_at: datetime
    location: str | None
    note: str | None
    proof: DeliveryProofOut | None
    packages: list[PackageOutcomeOut] | None
    result: Literal["applied", "recorded"]
    """`applied`: the shipment moved to `status`. `recorded`: kept in the history, the shipment unchanged (see
    `reason`)."""
    reason: Literal["older_than_current_status", "repeats_current_status"] | None
    """For `recorded`: it happened before the event that set the current status, or it reports the current
    status again (a tracking update)."""
    status_before: ShipmentStatus
    status_after: ShipmentStatus
    posted_by: Literal["logistics_partner", "programme"]


class ShipmentEventAnswer(ShipmentEventOut):
    allowed_next: list[EventStatus]
    """What the caller may post next (after this event)."""


class ShipmentSchoolOut(BaseModel):
    id: str
    name: str
    country: str
    region: str


class ShipmentSummaryOut(BaseModel):
    id: str
    run_id: str
    term: str
    status: ShipmentStatus
    status_changed_at: datetime
    """When the current status took effect (the `occurred_at` of the event that set it)."""
    last_event_at: datetime
    """The latest `occurred_at` of any event (creation, before the first)."""
    stale: bool
    """Not in a final state, and no event for `G4G_SHIPMENT_STALE_DAYS` days."""
    logistics_partner_id: str
    school: ShipmentSchoolOut
    package_count: int
    created_at: datetime


class ShipmentPackageOut(BaseModel):
    """A box in the shipment: what it is and for which grade. Never a student."""

    id: str
    kind_id: str
    kind_version_id: str
    name: str
    contents: list[ContentItem]
    grade: str
    status: AllocationStatus
    """Where this box stands on this shipment: allocated, shipped, delivered, then accepted, damaged or missing
    at receipt; returned; cancelled."""
    outcome_reason: str | None
    """Why it was damaged or missing, as the receipt said."""


class ShipmentOut(ShipmentSummaryOut):
    teacher_contact: TeacherContactOut
    """The school's teacher who receives the boxes (admin and the shipment's partner only)."""
    packages: list[ShipmentPackageOut]
    events: list[ShipmentEventOut]
    """The full history, in the order it was recorded."""
    allowed_next: list[EventStatus]
    """What the caller may post next."""
