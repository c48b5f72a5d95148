"""Structured logs (structlog). Secrets never reach a log line: keys and passwords are
never passed to a logger, and the redactor below masks known secret-looking fields."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, cast

import structlog

SECRET_FIELDS = {"password", "secret", "secret_key", "api_key", "authorization", "token", "key"}


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for field in list(event):
        if field.lower() in SECRET_FIELDS:
            event[field] = "[redacted]"
    return event


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(format="%(message)s", level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return cast(structlog.stdlib.BoundLogger, structlog.get_logger(name))
