from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from app.core.logging import configure_logging
from app.core.migrations import upgrade_to_head
from app.core.settings import Settings
from app.main import create_app
from tests import roster_codes
from tests.live import LIVE_LOGS
from tests.postgres import TestServer

_counter = itertools.count()
_postgres_tests_passed = 0
DATA_KEY = Fernet.generate_key().decode()
LOOKUP_KEY = secrets.token_urlsafe(32)
# The in-process service's log for the whole session, JSON lines at debug level, checked at the end for roster
# codes (with every `g4g serve` log of the session).
SUITE_LOG = Path(tempfile.gettempdir()) / f"g4g-suite-{os.getpid()}.log"
_suite_log = None


def pytest_configure(config: pytest.Config) -> None:
    global _suite_log
    _suite_log = SUITE_LOG.open("w", encoding="utf-8")
    configure_logging("debug", stream=_suite_log)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    server = TestServer()
    asyncio.run(server.create_database(server.template))
    upgrade_to_head(server.url_for(server.template))
    yield server
    asyncio.run(server.drop_database(server.template))
    server.close()


@pytest.fixture
async def database_url(pg_server: TestServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database with the migrated schema, just for this test."""
    name = f"{pg_server.prefix}_{next(_counter)}"
    url = await pg_server.create_database(name, template=pg_server.template)
    request.node.uses_postgres = True
    yield url
    await pg_server.drop_database(name)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_key": DATA_KEY,
        "lookup_key": LOOKUP_KEY,
        "data_dir": tmp_path / "g4g",
        "environment": "test",
        "db_pool_size": 25,
        # Tests run jobs when they mean to (tests/jobs.py), not in the background.
        "embedded_worker": False,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as http:
        yield http


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, app: object) -> str:
    from tests.helpers import create_token_directly

    return await create_token_directly(app, role="admin", name="test operator")


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


@dataclass
class Shop:
    """A platform with one registered merchant whose rule is 150 bps plus ¥0.02 a unit on CNY orders."""

    platform: dict[str, Any]
    merchant: dict[str, Any]

    @property
    def external_id(self) -> str:
        return str(self.merchant["external_id"])


# TEA-01 × 2 at 12800: 12800 × 150 / 10000 + 2 × 2 = 196.
DEFAULT_DONATION = 196


@pytest.fixture
async def shop(client: httpx.AsyncClient, admin: dict[str, str]) -> Shop:
    from tests.helpers import create_merchant, create_platform, set_rule

    platform = await create_platform(client, admin, name="Tmall")
    merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="shop-88")
    await set_rule(
        client, admin, merchant["id"], rate_bps=150, fixed_per_unit=[{"amount": 2, "currency": "CNY"}]
    )
    return Shop(platform, merchant)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    global _postgres_tests_passed
    if report.when == "call" and report.passed and getattr(item, "uses_postgres", False):
        _postgres_tests_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave a count of passed PostgreSQL-backed tests where `.ci/run` can check it; fail the session if any
    log it wrote holds a roster code."""
    report = os.environ.get("G4G_TEST_REPORT")
    if report:
        Path(report).write_text(json.dumps({"postgres_tests_passed": _postgres_tests_passed}))
    if _suite_log is not None:
        _suite_log.flush()
    problem = _roster_codes_in_logs()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problem is None:
        if exitstatus == 0:
            SUITE_LOG.unlink(missing_ok=True)
        elif reporter is not None:
            reporter.write_line(f"the service's log lines of this run: {SUITE_LOG}")
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "roster codes in the logs", red=True)
        reporter.write_line(problem)


def _roster_codes_in_logs() -> str | None:
    if roster_codes.issued() == 0:
        return None
    logs = roster_codes.read_logs([SUITE_LOG, *LIVE_LOGS])
    leaks = roster_codes.leaks(logs)
    if leaks:
        return f"{len(leaks)} log lines hold a roster code, e.g. {', '.join(leaks[:10])}"
    # Not vacuous: the logs checked must show the imports that used the codes.
    if not any('"route": "/v1/schools/{school_id}/students"' in text for _, text in logs):
        return f"{roster_codes.issued()} roster codes were used, but no log shows a student import"
    return None
