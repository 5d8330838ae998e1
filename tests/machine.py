"""A running service on an event loop of its own, for hypothesis state machines (sync rules, async calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from app.core.clock import Clock
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import create_token_directly
from tests.postgres import TestServer

T = TypeVar("T")


class ServiceLoop:
    """The service on a fresh database; `run` drives one coroutine to the end. Use as a context manager."""

    def __init__(
        self, pg_server: TestServer, tmp_path: Path, name: str, *, clock: Clock | None = None, **settings: Any
    ) -> None:
        self._pg_server = pg_server
        self._tmp_path = tmp_path
        self._database = f"{pg_server.prefix}_{name}"
        self._clock = clock
        self._settings = settings
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def __enter__(self) -> ServiceLoop:
        url = self.run(self._pg_server.create_database(self._database, template=self._pg_server.template))
        self.app = create_app(make_settings(url, self._tmp_path, **self._settings), clock=self._clock)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.run(self._lifespan.__aenter__())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://g4g.test"
        )
        token = self.run(create_token_directly(self.app, role="admin", name="machine"))
        self.admin = {"Authorization": f"Bearer {token}"}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self.run(self.client.aclose())
            self.run(self._lifespan.__aexit__(None, None, None))
            self.run(self._pg_server.drop_database(self._database))
        finally:
            self.loop.close()
