from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, StrictBool

from app.core.types import CountryCode, ExternalId, Name, ResourceId
from app.reports.schemas import Count


class MerchantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: ExternalId
    """The platform's own id for the merchant, as it appears in order events."""
    name: Name
    country: CountryCode
    platform_id: ResourceId | None = None
    """Admin only: the platform the merchant sells on. A platform key registers on its own platform."""


class MerchantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_profile: StrictBool
    """Opt in (or out) of a public profile: the badge for product pages and the page `/m/{public_slug}`."""


class MerchantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    platform_id: str
    external_id: str
    name: str
    country: str
    created_at: datetime
    public_profile: bool
    public_slug: str | None
    """The public page's address, `/m/{public_slug}`, once the merchant has opted in."""


class BadgeOut(BaseModel):
    merchant_id: str
    name: str
    language: str
    """The language of the texts: `lang` if given, else the best match of `Accept-Language` (en, id, zh-Hans)."""
    rate_bps: int | None
    """The share of sales its donation rule in effect gives (null without a rule in effect)."""
    text: str
    """One sentence for a product page, e.g. "5% of this shop's sales buy school supplies; 312 Love Packages so
    far."."""
    gives: str
    so_far: str
    packages_funded: Count
    """Whole Love Packages its donations paid for; under 5 shown as "<5"."""
    students_reached: Count
    countries: list[str]
    page_url: str
    """Its public page, `/m/{slug}`."""
