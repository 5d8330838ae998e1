"""ORM models, one per file. Importing this package registers every table on `Base.metadata`."""

from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.idempotency_record import IdempotencyRecord
from app.models.logistics_partner import LogisticsPartner
from app.models.merchant import Merchant
from app.models.platform import Platform
from app.models.platform_webhook_secret import PlatformWebhookSecret

__all__ = [
    "ApiKey",
    "Base",
    "IdempotencyRecord",
    "LogisticsPartner",
    "Merchant",
    "Platform",
    "PlatformWebhookSecret",
]
