"""ORM models, one per file. Importing this package registers every table on `Base.metadata`."""

from app.models.activity_entry import ActivityEntry
from app.models.admin_factor import AdminFactor, AdminRecoveryCode
from app.models.admin_session import AdminSession
from app.models.allocation import Allocation
from app.models.allocation_run import AllocationRun
from app.models.api_key import ApiKey
from app.models.audit_run import AuditRun
from app.models.auth_failure_count import AuthFailureCount
from app.models.base import Base
from app.models.data_key_canary import DataKeyCanary
from app.models.donation_rule import DonationRule
from app.models.event import Event
from app.models.event_delivery import EventDelivery
from app.models.event_delivery_attempt import EventDeliveryAttempt
from app.models.evidence_blob import EvidenceBlob
from app.models.funding_source import FundingSource
from app.models.fx_conversion import FxConversion
from app.models.fx_rate import FxRate
from app.models.idempotency_record import IdempotencyRecord
from app.models.ledger_entry import LedgerEntry
from app.models.ledger_posting import LedgerPosting
from app.models.logistics_partner import LogisticsPartner
from app.models.love_package import LovePackage
from app.models.merchant import Merchant
from app.models.order import Order
from app.models.order_refund import OrderRefund
from app.models.package_kind import PackageKind
from app.models.package_kind_version import PackageKindVersion
from app.models.partner_session import PartnerSession
from app.models.platform import Platform
from app.models.platform_webhook_secret import PlatformWebhookSecret
from app.models.receipt_link import ReceiptLink
from app.models.report_rollup import (
    ReportBilledCell,
    ReportMerchant,
    ReportOrderChange,
    ReportStatementCell,
    ReportUnbilledCell,
    ReportWatermark,
)
from app.models.report_summary import ReportSummary
from app.models.school import School
from app.models.settlement_run import SettlementRun
from app.models.shipment import Shipment
from app.models.shipment_event import ShipmentEvent
from app.models.shipment_evidence import ShipmentEvidence
from app.models.shipment_package_outcome import ShipmentPackageOutcome
from app.models.statement import Statement
from app.models.statement_carryover import StatementCarryover
from app.models.statement_line import StatementLine
from app.models.stripe_event import StripeEvent
from app.models.student import Student
from app.models.web_session import WebSession
from app.models.webhook_anomaly import WebhookAnomaly
from app.models.webhook_delivery import WebhookDelivery
from app.models.webhook_endpoint import WebhookEndpoint
from app.models.webhook_endpoint_secret import WebhookEndpointSecret

__all__ = [
    "ActivityEntry",
    "AdminFactor",
    "AdminRecoveryCode",
    "AdminSession",
    "Allocation",
    "AllocationRun",
    "ApiKey",
    "AuditRun",
    "AuthFailureCount",
    "Base",
    "DataKeyCanary",
    "DonationRule",
    "Event",
    "EventDelivery",
    "EventDeliveryAttempt",
    "EvidenceBlob",
    "FundingSource",
    "FxConversion",
    "FxRate",
    "IdempotencyRecord",
    "LedgerEntry",
    "LedgerPosting",
    "LogisticsPartner",
    "LovePackage",
    "Merchant",
    "Order",
    "OrderRefund",
    "PackageKind",
    "PackageKindVersion",
    "PartnerSession",
    "Platform",
    "PlatformWebhookSecret",
    "ReceiptLink",
    "ReportBilledCell",
    "ReportMerchant",
    "ReportOrderChange",
    "ReportStatementCell",
    "ReportSummary",
    "ReportUnbilledCell",
    "ReportWatermark",
    "School",
    "SettlementRun",
    "Shipment",
    "ShipmentEvent",
    "ShipmentEvidence",
    "ShipmentPackageOutcome",
    "Statement",
    "StatementCarryover",
    "StatementLine",
    "StripeEvent",
    "Student",
    "WebSession",
    "WebhookAnomaly",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointSecret",
]
