"""The application: every router and middleware, in one screen."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from app.activity.endpoints import router as activity
from app.api_keys.endpoints import router as api_keys
from app.core.auth import ApiKeyCache, Authorized, Role
from app.core.auth_failures import AuthFailures
from app.core.body_limit import BodyAllowance, BodySizeLimit
from app.core.clock import Clock, SystemClock
from app.core.database import Database, ReadReplica, make_sessionmaker
from app.core.errors import install_error_handlers
from app.core.json_body import ExactJsonRoute
from app.core.logging import configure_logging
from app.core.migrations import head_revision
from app.core.observability import RequestObservation, metrics
from app.core.openapi import install_openapi
from app.core.secrets import cipher_for, lookup_key_for
from app.core.settings import Settings, get_settings
from app.core.strict_query import reject_unknown_query_parameters
from app.donations.endpoints import MAX_EVENT_BYTES, OrderWebhookFastPath, QuoteFastPath, webhooks
from app.donations.endpoints import router as donations
from app.donations.inbox import OrderEventInbox
from app.events.endpoints import router as webhook_endpoints
from app.evidence.endpoints import MULTIPART_OVERHEAD
from app.evidence.endpoints import router as evidence
from app.health.endpoints import router as health
from app.ledger.endpoints import router as ledger
from app.logistics.endpoints import MAX_SHIPMENT_EVENT_BYTES, shipments
from app.logistics.endpoints import router as logistics_partners
from app.merchants.endpoints import router as merchants
from app.packages.endpoints import router as packages
from app.platforms.endpoints import router as platforms
from app.platforms.service import WebhookSecretCache
from app.receipts.endpoints import router as receipts
from app.receipts.service import PublicRegions, receipt_key
from app.reports.endpoints import router as reports
from app.reports.service import TransparencyReport
from app.settlement.endpoints import router as settlement
from app.settlement.endpoints import stripe_webhooks
from app.settlement.stripe_gateway import StripeGateway
from app.web.admin.endpoints import router as admin_console
from app.web.endpoints import ReceiptFastPath
from app.web.endpoints import router as web_pages
from app.web.partner.endpoints import router as partner_app
from app.web.security import SecurityHeaders
from app.web.templating import STATIC

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        engine = database.engine(pool_size=settings.db_pool_size)
        app.state.database = database
        app.state.engine = engine
        app.state.read_pool = await database.read_pool(size=settings.db_pool_size)
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.replica = (
            ReadReplica(
                settings.database_read_url,
                max_lag_seconds=settings.max_replica_lag_seconds,
                pool_size=settings.db_pool_size,
            )
            if settings.database_read_url
            else None
        )
        if app.state.replica is not None:
            await app.state.replica.open()
        app.state.webhook_secrets = WebhookSecretCache(app.state.sessionmaker, app.state.cipher)
        app.state.inbox_pool = await database.inbox_pool(size=settings.ingest_concurrency)
        app.state.order_inbox = OrderEventInbox(
            app.state.inbox_pool,
            app.state.clock,
            batch=settings.ingest_batch,
            max_batch=settings.ingest_max_batch,
            concurrency=settings.ingest_concurrency,
        )
        app.state.order_inbox.start()
        app.state.transparency = TransparencyReport(
            app.state.sessionmaker,
            app.state.clock,
            replica=app.state.replica,
            refresh=timedelta(seconds=settings.transparency_refresh_seconds),
            window=timedelta(days=settings.return_window_days),
            base_currency=settings.base_currency,
        )
        app.state.public_regions = PublicRegions(app.state.transparency)
        app.state.stripe = StripeGateway.from_settings(settings)
        worker_task = start_embedded_worker(app) if settings.embedded_worker else None
        try:
            yield
        finally:
            if worker_task is not None:
                app.state.worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
                await app.state.worker.context.http.aclose()
            await app.state.order_inbox.stop()
            await app.state.inbox_pool.close()
            await app.state.transparency.close()
            if app.state.stripe is not None:
                await app.state.stripe.close()
            await app.state.read_pool.close()
            if app.state.replica is not None:
                await app.state.replica.close()
            await engine.dispose()

    app = FastAPI(
        dependencies=[Depends(reject_unknown_query_parameters)],
        title="Goods for Good",
        version=API_VERSION,
        summary="Checkout donations turned into Love Packages of school supplies, traceable end to end.",
        lifespan=lifespan,
        # The API reference is one of our pages (`app/web`), from vendored files rather than FastAPI's CDN ones.
        docs_url=None,
        redoc_url=None,
        # Metrics are ours (Prometheus, below); FastAPI's built-in OpenTelemetry hooks would cost every request
        # an environment lookup for a provider nobody configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.cipher = cipher_for(settings)
    app.state.lookup_key = lookup_key_for(settings)
    app.state.receipt_key = receipt_key(app.state.lookup_key)
    app.state.api_keys = ApiKeyCache(settings.api_key_cache_seconds)
    app.state.auth_failures = AuthFailures(
        per_address=settings.auth_failures_per_address, per_key=settings.auth_failures_per_key
    )
    app.state.schema_head = head_revision()

    install_error_handlers(app)
    install_openapi(app)
    # Innermost: the hottest routes (order webhooks, checkout quotes, buyers' receipts), answered without the
    # framework.
    app.add_middleware(OrderWebhookFastPath)
    app.add_middleware(QuoteFastPath)
    app.add_middleware(ReceiptFastPath)
    app.add_middleware(
        BodySizeLimit,
        default=settings.max_body_bytes,
        allowances=[
            BodyAllowance("POST", re.compile(r"/v1/webhooks/orders/[^/]+"), MAX_EVENT_BYTES),
            BodyAllowance("POST", re.compile(r"/v1/schools/[^/]+/students"), settings.max_import_bytes),
            BodyAllowance(
                "POST",
                re.compile(r"/admin/schools/[^/]+/import"),
                settings.max_import_bytes + MULTIPART_OVERHEAD,
            ),
            BodyAllowance("POST", re.compile(r"/v1/shipments/[^/]+/events"), MAX_SHIPMENT_EVENT_BYTES),
            BodyAllowance(
                "POST",
                re.compile(r"(/v1|/partner/api)/shipments/[^/]+/evidence"),
                settings.max_evidence_bytes + MULTIPART_OVERHEAD,
            ),
            BodyAllowance(
                "POST", re.compile(r"/partner/api/shipments/[^/]+/events"), MAX_SHIPMENT_EVENT_BYTES
            ),
        ],
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestObservation)  # outermost: every answer, a 413 included, gets a request id

    app.include_router(webhooks)  # the hottest path, matched first
    app.include_router(stripe_webhooks)
    app.include_router(health)
    # The pages before the API: none is under /v1, so neither shadows the other, and a page (a buyer's receipt)
    # isn't matched against every API route first.
    app.include_router(web_pages)
    app.include_router(partner_app)
    app.include_router(admin_console)
    if settings.metrics_address is None:  # else only on that address (`g4g serve`)
        app.router.add_api_route(
            "/metrics",
            metrics,
            include_in_schema=False,
            route_class_override=ExactJsonRoute,
            dependencies=[Authorized(Role.admin)],
        )
    app.include_router(api_keys)
    app.include_router(activity)
    app.include_router(platforms)
    app.include_router(merchants)
    app.include_router(logistics_partners)
    app.include_router(shipments)
    app.include_router(evidence)
    app.include_router(receipts)  # before `GET /v1/orders/{order_id:path}`, which would take …/receipt-link
    app.include_router(donations)
    app.include_router(ledger)
    app.include_router(settlement)
    app.include_router(webhook_endpoints)
    app.include_router(packages)
    app.include_router(reports)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def start_embedded_worker(app: FastAPI) -> asyncio.Task[None]:
    """Background jobs in the server process (G4G_EMBEDDED_WORKER, on by default), so `make run` needs nothing
    else; production turns it off and runs `g4g worker` processes."""
    from app.core.jobs import JobContext
    from app.worker import http_client, make_worker

    state = app.state
    state.worker = make_worker(
        JobContext(
            settings=state.settings,
            clock=state.clock,
            engine=state.engine,
            sessionmaker=state.sessionmaker,
            cipher=state.cipher,
            http=http_client(state.settings),
            stripe=state.stripe,
        )
    )
    return asyncio.create_task(state.worker.run(), name="embedded-worker")


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory` (each worker process builds its own app)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Everything allocated so far lives as long as the process: keep the cyclic collector from rescanning it,
    # and let it run less often (request garbage is mostly freed by reference counting anyway).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    return app
