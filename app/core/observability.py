"""Request ids, the one access-log line per request, unexpected errors, and Prometheus metrics — one pure ASGI
middleware.

Who may read them: on the main port an admin key (`GET /metrics`); with `G4G_METRICS_ADDRESS` set, `g4g serve`
answers them on that address instead, without a key, and the main port has no `/metrics` (`MetricsListener`).

Metrics with several server processes (`G4G_WORKERS` > 1): `g4g serve` points `PROMETHEUS_MULTIPROC_DIR` at a
fresh directory before the processes start, and `/metrics` then adds up every process's counters. Figures that
are the state of the database (statements by status, jobs by status, event deliveries by status) are read from it
at scrape time, so they are right whichever process (or `g4g worker` machine) changed them."""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.database import database_unavailable
from app.core.errors import problem_response
from app.core.settings import Settings

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

REQUESTS = Counter("g4g_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "g4g_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


@functools.lru_cache(maxsize=4096)
def labelled(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: the client's `labels` checks and converts every value and takes a
    lock on every call (~2 µs, three times a request on the order webhook's path), to return the same child. A child
    dropped from this cache is only looked up again."""
    return metric.labels(*values)


# Business figures. Counters count what this process did; the gauges are read from the database at scrape time.
ORDER_WEBHOOKS = Counter(
    "g4g_order_webhooks_total",
    "Order webhook deliveries by outcome (applied, duplicate, parked, conflict, rejected)",
    ["outcome"],
)
JOBS_ENQUEUED = Counter("g4g_jobs_enqueued_total", "Background jobs enqueued", ["task"])
JOBS_RUN = Counter(
    "g4g_jobs_run_total", "Background jobs run, by outcome (succeeded, failed)", ["task", "outcome"]
)
EVENT_ATTEMPTS = Counter(
    "g4g_event_delivery_attempts_total", "Attempts to send an event to an endpoint, by outcome", ["outcome"]
)
STATEMENTS = Gauge(
    "g4g_statements", "Statements by status (from the database)", ["status"], multiprocess_mode="mostrecent"
)
JOBS = Gauge(
    "g4g_jobs",
    "Jobs in the queue by task and status (from the database)",
    ["task", "status"],
    multiprocess_mode="mostrecent",
)
EVENT_DELIVERIES = Gauge(
    "g4g_event_deliveries",
    "Events out by delivery status: pending, delivered, failed (from the database)",
    ["status"],
    multiprocess_mode="mostrecent",
)

access_log = structlog.get_logger("g4g.access")
error_log = structlog.get_logger("g4g.errors")


# Seconds a client is asked to wait when the database is unavailable: about how long Patroni takes to promote a
# standby after the primary dies (docs/operating.md, "Running it highly available").
DATABASE_RETRY_AFTER_SECONDS = 2


def database_unavailable_response(request_id: str) -> JSONResponse:
    response = problem_response(
        503,
        "database-unavailable",
        "The database is unavailable",
        f"Retry in a moment; request id {request_id}.",
    )
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


# Paths whose text is itself a secret (a receipt's token opens the receipt): logged by their route, never as sent.
_SECRET_PATHS = ("/r/", "/v1/receipts/")


def _logged_path(scope: Scope) -> str:
    path: str = scope["path"]
    for prefix in _SECRET_PATHS:
        if path.startswith(prefix):
            route = _route_template(scope)
            return route if route != "unmatched" else prefix + "{token}"
    return path


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObservation:
    """Gives every request an id (the caller's `X-Request-ID` if well-formed), echoes it on the response,
    binds it to every log line written while the request runs, and records one access line and metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        # Else 128 random bits in hex, as a uuid4's `.hex` but without making a UUID object.
        request_id = request_id or os.urandom(16).hex()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if database_unavailable(exc):
                # No primary right now (a failover, SPEC §17). Never a 2xx: no commit was acknowledged. A retry is
                # safe (webhook ids and Idempotency-Key apply a change once), so say when.
                error_log.warning(
                    "database_unavailable",
                    error=type(exc).__name__,
                    method=scope["method"],
                    path=_logged_path(scope),
                )
                if response_started:
                    raise
                response = database_unavailable_response(request_id)
                await response(scope, receive, send_with_id)
                return
            # A bug. Logged once, here, with the request id bound; answered as problem+json with the id, so the
            # caller can quote it. Not re-raised: the server would log the same traceback a second time.
            error_log.error("unhandled_error", exc_info=exc, method=scope["method"], path=_logged_path(scope))
            if response_started:
                raise
            response = problem_response(
                500,
                "internal-error",
                "Internal server error",
                f"Quote request id {request_id} when reporting this.",
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            labelled(REQUESTS, method, route, str(status)).inc()
            labelled(LATENCY, method, route).observe(elapsed)
            access_log.info(
                "request",
                method=method,
                path=_logged_path(scope),
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


async def _read_state_gauges(request: Request) -> None:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return
    try:
        async with engine.connect() as connection:
            statements = (
                await connection.execute(text("SELECT status, count(*) FROM statements GROUP BY status"))
            ).all()
            jobs = (
                await connection.execute(
                    text("SELECT entrypoint, status::text, count(*) FROM pgqueuer GROUP BY 1, 2")
                )
            ).all()
            deliveries = (
                await connection.execute(
                    text("SELECT status, count(*) FROM event_deliveries GROUP BY status")
                )
            ).all()
    except Exception as exc:  # the database's figures are missing from this scrape; the process's own are not
        error_log.warning("metrics_state_unavailable", error=type(exc).__name__)
        return
    for gauge, rows, statuses in (
        (STATEMENTS, statements, ("pending_payment", "paid", "payment_failed", "needs_attention")),
        (EVENT_DELIVERIES, deliveries, ("pending", "delivered", "failed")),
    ):
        counts = {row[0]: row[1] for row in rows}
        for status in sorted(set(statuses) | set(counts)):
            gauge.labels(status).set(counts.get(status, 0))
    JOBS.clear()
    for task, status, count in jobs:
        JOBS.labels(task, status).set(count)


async def metrics(request: Request) -> Response:
    await _read_state_gauges(request)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsListener:
    """`GET /metrics` alone, on `G4G_METRICS_ADDRESS`, in a thread of the `g4g serve` process (so one listener,
    however many server processes there are: it adds up their counters as the main port would)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        listener = settings.metrics_listener
        assert listener is not None
        host, port = listener
        self.server = uvicorn.Server(
            uvicorn.Config(
                _metrics_app(settings),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="on",
            )
        )
        self._thread = threading.Thread(target=self.server.run, name="metrics-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


def _metrics_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from app.core.database import Database

        engine = Database(settings).engine(pool_size=1)  # for the figures read from the database
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.dispose()

    return Starlette(routes=[Route("/metrics", metrics)], lifespan=lifespan)
