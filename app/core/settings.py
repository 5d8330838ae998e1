"""Typed settings from the environment, validated once at start."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="G4G_", extra="ignore", frozen=True)

    # Unset: an embedded PostgreSQL under `data_dir` is started by the process that needs it.
    database_url: Annotated[
        str | None, Field(validation_alias=AliasChoices("DATABASE_URL", "G4G_DATABASE_URL"))
    ] = None
    # Optional streaming replica (SPEC §17) for the reads that may be a little behind (reports, the public figures,
    # receipts, public merchant pages), used while its replay lag is within `max_replica_lag_seconds` (else the
    # primary answers). libpq multi-host form allowed, e.g. with
    # `target_session_attrs=prefer-standby`.
    database_read_url: Annotated[
        str | None, Field(validation_alias=AliasChoices("DATABASE_READ_URL", "G4G_DATABASE_READ_URL"))
    ] = None
    max_replica_lag_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # `DATABASE_URL` goes through a pooler in transaction mode (PgBouncer `pool_mode = transaction`, SPEC §17): a
    # client's statements may reach a different server connection in each transaction, so no statement stays
    # prepared across transactions (asyncpg's and SQLAlchemy's statement caches are off, and SQLAlchemy's
    # prepared statements get unique names) and no startup setting other than PgBouncer's tracked ones is sent.
    transaction_pooling: bool = False
    # Where the job queue's listener connects (LISTEN needs a session of its own: not through a transaction
    # pooler). Unset: `DATABASE_URL`.
    database_listen_url: Annotated[
        str | None, Field(validation_alias=AliasChoices("DATABASE_LISTEN_URL", "G4G_DATABASE_LISTEN_URL"))
    ] = None
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    data_dir: Path = Path(".g4g")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    environment: Literal["development", "test", "production"] = "development"
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    # API keys are remembered this long per process (0: looked up on every request); a revoked key is refused
    # at once by the process that revoked it and by every other process within this bound.
    api_key_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    # Wrong API keys (API and dashboard sign-in) allowed per minute from one client address (IPv6: its /64) and with
    # one key prefix; beyond them, 429 with Retry-After until the minute has passed.
    auth_failures_per_address: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    auth_failures_per_key: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    idempotency_ttl_hours: Annotated[int, Field(ge=24, le=24 * 30)] = 48
    webhook_secret_grace_hours: Annotated[int, Field(ge=0, le=24 * 7)] = 24
    # Order webhooks: the deliveries waiting are shared among the idle transactions, at least `ingest_batch` to
    # each and at most `ingest_max_batch`; `ingest_concurrency` transactions run at once.
    ingest_batch: Annotated[int, Field(ge=1, le=1000)] = 16
    ingest_max_batch: Annotated[int, Field(ge=1, le=1000)] = 64
    ingest_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # Settlement: a donation is final this many days after its order was placed, unless fully reversed.
    return_window_days: Annotated[int, Field(ge=0, le=365)] = 30
    # Statements below this many minor units (and negative ones) are not charged; they carry forward.
    min_invoice: Annotated[int, Field(ge=1, le=10**9)] = 100
    # The programme's currency: package costs and the pool.
    base_currency: str = "USD"
    stripe_api_key: Annotated[SecretStr | None, Field(validation_alias=AliasChoices("STRIPE_API_KEY"))] = None
    stripe_webhook_secret: Annotated[
        SecretStr | None, Field(validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET"))
    ] = None
    stripe_api_base: Annotated[str | None, Field(validation_alias=AliasChoices("STRIPE_API_BASE"))] = None
    # Handed to Stripe.js (the merchant's billing page) with each SetupIntent; not a secret.
    stripe_publishable_key: Annotated[
        str | None, Field(validation_alias=AliasChoices("STRIPE_PUBLISHABLE_KEY"))
    ] = None
    stripe_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 20.0
    # Request bodies, bounded while they stream (413 beyond): most endpoints, and bulk student imports.
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    max_import_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 16 * 1024 * 1024
    # Shipments: one not in a final state with no event for this many days is listed by `GET /v1/shipments?stale=true`.
    shipment_stale_days: Annotated[int, Field(ge=1, le=365)] = 14
    # Photo proof of delivery (`POST /v1/shipments/{id}/evidence`): the largest image accepted, in bytes.
    max_evidence_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 8 * 1024 * 1024

    # Public transparency report: figures are recomputed in the background once they are this old (0: on
    # every read, before answering).
    transparency_refresh_seconds: Annotated[int, Field(ge=0, le=24 * 3600)] = 60
    # Web pages: how long a merchant's dashboard session lasts, and the Stripe.js the billing page loads.
    web_session_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 8
    # The service's public origin (e.g. "https://give.example.org"): what buyers' receipt links and their QR codes
    # point at. Unset: the origin each request came in on.
    public_url: str | None = None
    stripe_js_url: str = "https://js.stripe.com/v3/"
    # The partners' field app (`/partner`): how long a device stays signed in (revoking the key ends it sooner).
    partner_session_days: Annotated[int, Field(ge=1, le=365)] = 30
    # The programme's console (`/admin`): a session ends this many minutes after its last request.
    admin_session_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    # Wrong codes in a row (across sign-ins) after which a console key's second factor is locked until an
    # operator runs `g4g admin-factor unlock`.
    admin_factor_max_failures: Annotated[int, Field(ge=1, le=1000)] = 10

    # Background jobs. `g4g serve` runs a worker in each server process unless this is false (then run
    # `g4g worker` processes beside it, as production does).
    embedded_worker: bool = True
    worker_concurrency: Annotated[int, Field(ge=1, le=200)] = 10
    # A job whose worker stopped sending heartbeats for this long (killed, frozen) is run again by another.
    job_heartbeat_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # A job that fails (raises) is tried again after a pause that doubles from `job_retry_seconds` (at most 10
    # minutes), up to `job_attempts` tries in all; then it is kept as `failed` in the queue for the operator.
    job_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    job_retry_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    # Settlement on a schedule (cron syntax, in UTC, e.g. "0 3 * * *"); unset: only when an operator asks.
    settlement_schedule: str | None = None
    # Retention: order-webhook inbox rows are kept longer than platforms retry (Standard Webhooks senders retry for
    # about 75 hours), so a late redelivery is still recognised; sent events' delivery records.
    inbox_retention_days: Annotated[int, Field(ge=4, le=3650)] = 30
    event_delivery_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # Events out: per-call timeout, and whether endpoints may resolve to private, loopback or link-local addresses
    # (unset: refused in production, allowed elsewhere).
    events_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    events_allow_private_urls: bool | None = None

    # Prometheus metrics on a listener of their own ("host:port", e.g. "127.0.0.1:9100"), answered without a key,
    # started by `g4g serve`; the main port then has no /metrics. Unset: /metrics on the main port, admin key only.
    metrics_address: str | None = None

    # Key(s) that encrypt secrets at rest, held outside the database: comma-separated Fernet keys, newest
    # first. Unset: a key file under `data_dir` is created and used (fine for a laptop, not for production).
    data_key: SecretStr | None = None
    # Key of the keyed hash (HMAC-SHA256) that finds a student by roster code without storing the code: base64url
    # of at least 32 random bytes, held outside the database. Never the data key: data keys rotate, and a hash
    # made with a rotated-out key would no longer find its student. Unset: a key file under `data_dir`.
    lookup_key: SecretStr | None = None

    @field_validator("data_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from cryptography.fernet import Fernet

        try:
            for key in value.get_secret_value().split(","):
                Fernet(key.strip())
        except ValueError:
            raise ValueError(
                "must be comma-separated Fernet keys (32 url-safe base64-encoded bytes)"
            ) from None
        return value

    @field_validator("lookup_key")
    @classmethod
    def _lookup_key_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from app.core.secrets import decode_lookup_key

        decode_lookup_key(value.get_secret_value())  # raises ValueError with the reason
        return value

    @field_validator("database_url", "database_read_url", "database_listen_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL (PostgreSQL is the only supported database)")
        return value

    @field_validator("base_currency")
    @classmethod
    def _known_base_currency(cls, value: str) -> str:
        from app.core.money import is_known_currency

        if not is_known_currency(value):
            raise ValueError("must be an ISO 4217 currency code with a minor unit, e.g. USD")
        return value

    @field_validator("settlement_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from croniter import croniter

        if not croniter.is_valid(value.strip()):
            raise ValueError('must be a cron expression, e.g. "0 3 * * *" (03:00 UTC daily)')
        return value.strip()

    @field_validator("metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        host, _, port = value.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError('must be host:port, e.g. "127.0.0.1:9100" (IPv6: "[::1]:9100")')
        return f"{host}:{int(port)}" if ":" not in host else f"[{host}]:{int(port)}"

    @property
    def metrics_listener(self) -> tuple[str, int] | None:
        """`metrics_address` as (host, port), if set."""
        if self.metrics_address is None:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @property
    def private_urls_allowed(self) -> bool:
        if self.events_allow_private_urls is not None:
            return self.events_allow_private_urls
        return self.environment != "production"

    @field_validator("stripe_api_base", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else None

    @field_validator("stripe_js_url")
    @classmethod
    def _script_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("must be an https URL (http only on 127.0.0.1 or localhost, for tests)")
        return value

    @model_validator(mode="after")
    def _production_keeps_keys_outside(self) -> Settings:
        if self.environment == "production" and self.data_key is None:
            # A key file beside the data would let a copy of the disk reveal every secret.
            raise ValueError("G4G_DATA_KEY: required when G4G_ENVIRONMENT=production")
        if self.environment == "production" and self.lookup_key is None:
            raise ValueError("G4G_LOOKUP_KEY: required when G4G_ENVIRONMENT=production")
        if self.lookup_key is not None and self.data_key is not None:
            data_keys = {k.strip() for k in self.data_key.get_secret_value().split(",")}
            if self.lookup_key.get_secret_value().strip() in data_keys:
                raise ValueError("G4G_LOOKUP_KEY: must not be one of the data keys (G4G_DATA_KEY)")
        return self


def _variable_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field.isupper():  # an alias, already the variable's own name
        return field
    return f"G4G_{field.upper()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once; a bad value stops the process with one line naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            message = f"{_variable_name(error['loc'])}: {message}"
        sys.stderr.write(f"g4g: invalid setting {message}\n")
        raise SystemExit(2) from None
