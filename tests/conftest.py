from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from app.core.clock import FrozenClock
from app.core.logging import configure_logging
from app.core.migrations import upgrade_to_head
from app.core.settings import Settings
from app.main import create_app
from tests import roster_codes
from tests.live import LIVE_LOGS
from tests.postgres import TestServer

_counter = itertools.count()
_postgres_tests_passed = 0
_screenshots: list[str] = []
DATA_KEY = Fernet.generate_key().decode()
LOOKUP_KEY = secrets.token_urlsafe(32)
# The run's logs live in one directory, shared by the pytest-xdist workers (they inherit it from the process
# that starts them): each process's in-process service log, JSON lines at debug level, and the list of the
# `g4g serve` logs it started. The session's last step checks them all for roster codes.
_LOGS_DIR_VARIABLE = "G4G_TEST_LOGS_DIR"
_suite_log = None


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _logs_dir() -> Path:
    return Path(os.environ[_LOGS_DIR_VARIABLE])


def pytest_configure(config: pytest.Config) -> None:
    global _suite_log
    if not _is_xdist_worker(config):
        os.environ[_LOGS_DIR_VARIABLE] = tempfile.mkdtemp(prefix="g4g-suite-logs-")
    _suite_log = (_logs_dir() / f"service-{os.getpid()}.log").open("w", encoding="utf-8")
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


@pytest.fixture
async def unmigrated_url(pg_server: TestServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh empty database, for a test that migrates it itself (to a revision, then over populated tables)."""
    name = f"{pg_server.prefix}_{next(_counter)}"
    url = await pg_server.create_database(name)
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
def clock() -> FrozenClock:
    """A clock the test moves by hand, starting now."""
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
async def app_on_clock(settings: Settings, clock: FrozenClock) -> AsyncIterator[object]:
    """The service on the test's `clock`: a module whose tests move time takes it as its `app`."""
    application = create_app(settings, clock=clock)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Schemathesis names each operation's test only in the item's name (`test_x[POST /v1/quotes]`), not in its
    node id; give those tests the full name as their id, so reports tell them apart and pytest-xdist (which knows a
    test by its id) runs every one of them."""
    from _pytest.nodeid import NodeId  # where pytest 9 keeps a node's id

    for item in items:
        if "[" in item.name and not item.nodeid.endswith("]"):
            item._id = NodeId.parse(item.nodeid.rpartition("::")[0] + "::" + item.name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if getattr(item, "uses_postgres", False):
        # On the report, which pytest-xdist carries from its workers to the process that counts.
        outcome.get_result().user_properties.append(("uses_postgres", True))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_tests_passed
    if report.when == "call" and report.passed and ("uses_postgres", True) in report.user_properties:
        _postgres_tests_passed += 1
    if report.when == "teardown":
        _screenshots.extend(value for name, value in report.user_properties if name == "screenshot")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The browser tests' page screenshots (tests/web), wherever they ran."""
    if _screenshots:
        terminalreporter.section("page screenshots")
        for path in _screenshots:
            terminalreporter.write_line(path)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave a count of passed PostgreSQL-backed tests where `.ci/run` can check it; fail the session if any
    log the run wrote holds a roster code. (In a pytest-xdist worker: only note the logs it wrote.)"""
    if _suite_log is not None:
        _suite_log.flush()
    (_logs_dir() / f"served-{os.getpid()}.txt").write_text(
        json.dumps({"logs": [str(path) for path in LIVE_LOGS], "roster_codes": roster_codes.issued()})
    )
    if _is_xdist_worker(session.config):
        return
    report = os.environ.get("G4G_TEST_REPORT")
    if report:
        Path(report).write_text(json.dumps({"postgres_tests_passed": _postgres_tests_passed}))
    problem = _roster_codes_in_logs()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problem is None:
        if exitstatus == 0:
            shutil.rmtree(_logs_dir(), ignore_errors=True)
        elif reporter is not None:
            reporter.write_line(f"the service's log lines of this run: {_logs_dir()}")
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "roster codes in the logs", red=True)
        reporter.write_line(problem)


# The access line of a student import, as our logs write it (no space after the colon) or the standard library's.
_STUDENT_IMPORT_LINE = re.compile(r'"route": ?"/v1/schools/\{school_id\}/students"')


def _roster_codes_in_logs() -> str | None:
    processes = [json.loads(path.read_text()) for path in _logs_dir().glob("served-*.txt")]
    issued = sum(process["roster_codes"] for process in processes)
    if issued == 0:
        return None
    served = [Path(log) for process in processes for log in process["logs"]]
    logs = roster_codes.read_logs([*_logs_dir().glob("service-*.log"), *served])
    leaks = roster_codes.leaks(logs)
    if leaks:
        return f"{len(leaks)} log lines hold a roster code, e.g. {', '.join(leaks[:10])}"
    # Not vacuous: the logs checked must show the imports that used the codes.
    if not any(_STUDENT_IMPORT_LINE.search(text) for _, text in logs):
        return f"{issued} roster codes were used, but no log shows a student import"
    return None
