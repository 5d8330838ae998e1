"""`g4g`: serve the API, run background jobs, migrate the schema, create API keys, unlock a console key's second
factor, audit, run the demo, write the OpenAPI document. Exit codes: see `app/core/preflight.py` (0 ok, 1 the
command failed, 2 bad setting, 3 database unreachable, 4 schema not current, 5 data key can't read this
database)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from app.core.settings import Settings, get_settings


def _database_url(settings: Settings) -> tuple[object, str]:
    """The configured database, or the embedded one (started here and kept while this process lives)."""
    from app.core.database import Database

    database = Database(settings)
    return database, database.url


def _migrate(settings: Settings) -> int:
    from app.core.migrations import head_revision, upgrade_to_head

    _, url = _database_url(settings)
    upgrade_to_head(url)
    sys.stderr.write(f"g4g: schema at revision {head_revision()}\n")
    return 0


def _preflight(check: Coroutine[Any, Any, None]) -> int:
    """Run a start-up check; on failure print its one line and return its exit code (else 0)."""
    from app.core.preflight import PreflightError

    try:
        asyncio.run(check)
    except PreflightError as exc:
        sys.stderr.write(f"g4g: {exc}\n")
        return exc.exit_code
    return 0


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.core.http_protocol import OneWriteHttpToolsProtocol
    from app.core.logging import configure_logging
    from app.core.preflight import check_address_free, check_ready_to_serve

    configure_logging(settings.log_level)
    host, port = host or settings.host, port or settings.port
    keep_alive, url = _database_url(settings)
    if code := _preflight(check_ready_to_serve(url, settings)):
        return code
    if code := _preflight(check_address_free(host, port)):
        return code
    if settings.metrics_listener is not None:
        metrics_host, metrics_port = settings.metrics_listener
        if code := _preflight(check_address_free(metrics_host, metrics_port, variable="G4G_METRICS_ADDRESS")):
            return code
    metrics_dir = None
    if settings.workers > 1:
        # Each server process counts in files here; /metrics adds them up. Fresh per start: stale counts of dead
        # processes would otherwise add up forever.
        metrics_dir = tempfile.mkdtemp(prefix="g4g-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Worker processes reach the same database, the embedded one included, through DATABASE_URL.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it; exiting through SystemExit (rather than
    # dying of the signal) lets the embedded database, if any, be stopped with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    metrics_listener = None
    if settings.metrics_listener is not None:
        from app.core.observability import MetricsListener

        metrics_listener = MetricsListener(get_settings())  # with the database URL just settled
        metrics_listener.start()
    try:
        uvicorn.run(
            "app.main:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=settings.workers,
            http=OneWriteHttpToolsProtocol,  # a response's head and body in one write
            log_config=None,
            access_log=False,
            proxy_headers=True,
            server_header=False,
        )
    finally:
        if metrics_listener is not None:
            metrics_listener.stop()
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    del keep_alive  # the embedded server (if any) stops once this process lets go of it
    return 0


async def _create_api_key(settings: Settings, args: argparse.Namespace) -> str:
    from app.activity.service import record_activity
    from app.api_keys.service import create_api_key, key_details
    from app.core.auth import Role
    from app.core.database import make_sessionmaker, sqlalchemy_connect_args

    _, url = _database_url(settings)
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args=sqlalchemy_connect_args(settings))
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            key, token = await create_api_key(
                session,
                role=Role(args.role),
                name=args.name,
                platform_id=args.platform_id,
                merchant_id=args.merchant_id,
                logistics_partner_id=args.logistics_partner_id,
            )
            # The operator at the server's shell acts without a key: the entry says `via: cli`.
            await record_activity(
                session,
                key_id=None,
                action="api_key.create",
                resource_type="api_key",
                resource_id=key.id,
                merchant_id=key.merchant_id,
                details=key_details(key),
                via="cli",
            )
    finally:
        await engine.dispose()
    return token


async def _unlock_admin_factor(settings: Settings, key_id: str) -> str:
    """Unlock a console key's second factor, locked after too many wrong codes (recorded `via: cli`)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.core.database import make_sessionmaker, sqlalchemy_connect_args
    from app.web.admin.factors import unlock

    _, url = _database_url(settings)
    engine = create_async_engine(url, connect_args=sqlalchemy_connect_args(settings))
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            before = await unlock(session, key_id)
    finally:
        await engine.dispose()
    if before.locked:
        return f"unlocked the second factor of {key_id} ({before.failures} wrong codes forgotten)"
    return f"the second factor of {key_id} was not locked ({before.failures} wrong codes forgotten)"


def _worker(settings: Settings) -> int:
    from app.core.database import Database
    from app.core.logging import configure_logging
    from app.core.preflight import check_ready_to_serve
    from app.worker import run_worker_process

    configure_logging(settings.log_level)
    database = Database(settings)
    if code := _preflight(check_ready_to_serve(database.url, settings)):
        return code
    asyncio.run(run_worker_process(settings, database))
    return 0


async def _audit(settings: Settings) -> bool:
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.core.clock import SystemClock
    from app.core.database import make_sessionmaker, sqlalchemy_connect_args
    from app.ledger.audit import run_and_record_audit

    _, url = _database_url(settings)
    engine = create_async_engine(url, connect_args=sqlalchemy_connect_args(settings))
    try:
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session:
            report = await run_and_record_audit(session, sessionmaker, now=SystemClock().now(), via="cli")
    finally:
        await engine.dispose()
    sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    return report.ok


def _write_openapi(path: Path) -> int:
    from app.main import create_app

    document = create_app(get_settings()).openapi()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="g4g", description="Goods for Good service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    commands.add_parser("migrate", help="bring the database schema to the latest revision")
    key = commands.add_parser("create-api-key", help="create an API key and print its token alone on stdout")
    key.add_argument("--role", required=True, choices=["admin", "platform", "merchant", "logistics"])
    key.add_argument("--name", required=True)
    scope = key.add_mutually_exclusive_group()
    scope.add_argument("--platform-id")
    scope.add_argument("--merchant-id")
    scope.add_argument("--logistics-partner-id")
    factor = commands.add_parser("admin-factor", help="a console (/admin) key's second factor")
    factor_commands = factor.add_subparsers(dest="factor_command", required=True)
    unlock = factor_commands.add_parser(
        "unlock",
        help="unlock a key's second factor, locked after G4G_ADMIN_FACTOR_MAX_FAILURES wrong codes in a row, and "
        "forget its wrong codes",
    )
    unlock.add_argument(
        "--key-id", required=True, help="the API key's id (key_…), as `GET /v1/api-keys` lists it"
    )
    commands.add_parser("worker", help="run background jobs until SIGTERM (which lets running jobs finish)")
    commands.add_parser(
        "audit",
        help="recompute the ledger's invariants; exit 1 if any is broken, 3 if the database can't be reached, "
        "4 if its schema isn't current",
    )
    demo = commands.add_parser(
        "demo",
        help="seed a programme and drive it end to end through the HTTP API: orders, refunds, settlement, "
        "allocation, shipments to delivery, events out; against --url or a g4g serve it starts",
    )
    from app.demo.command import add_arguments

    add_arguments(demo)
    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", type=Path, default=Path("openapi/openapi.json"))
    args = parser.parse_args(argv)

    if args.command == "demo":
        from app.demo.command import run

        return run(args)
    settings = get_settings()
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "worker":
        return _worker(settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command in ("create-api-key", "audit", "admin-factor"):
        from app.core.preflight import check_database

        _, url = _database_url(settings)
        if code := _preflight(check_database(url)):
            return code
    if args.command == "create-api-key":
        from app.core.errors import ProblemError

        try:
            token = asyncio.run(_create_api_key(settings, args))
        except ProblemError as exc:
            sys.stderr.write(f"g4g: {exc}\n")
            return 1
        sys.stdout.write(token + "\n")
        return 0
    if args.command == "admin-factor":
        from app.core.errors import ProblemError

        try:
            said = asyncio.run(_unlock_admin_factor(settings, args.key_id))
        except ProblemError as exc:
            sys.stderr.write(f"g4g: {exc}\n")
            return 1
        sys.stderr.write(f"g4g: {said}\n")
        return 0
    if args.command == "audit":
        return 0 if asyncio.run(_audit(settings)) else 1
    if args.command == "openapi":
        return _write_openapi(args.output)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
