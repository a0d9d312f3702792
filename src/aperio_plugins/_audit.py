"""Audit events: structlog loggers that the library creates but never configures globally.

The default audit logger writes JSON lines to the stdlib logger `aperio.audit`,
so that a host application routes them with ordinary logging configuration;
an application that wants them elsewhere passes its own structlog logger.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

AUDIT_LOGGER_NAME = "aperio.audit"
PLUGIN_LOGGER_NAME = "aperio.plugin"


def _stdlib_structlog(name: str, first: Sequence[Any] = ()) -> Any:
    # Imported here, not at the top: a worker process imports this module but logs without
    # structlog, whose import (its dev renderer pulls in rich) would slow every worker's start.
    import structlog

    logger = logging.getLogger(name)
    # A library's loggers stay silent until the application configures
    # logging; without this, Python's last-resort handler would print warnings.
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())
    return structlog.wrap_logger(
        logger,
        processors=[
            # Before the level filter: a recorder here (the API's audit trail) keeps every event.
            *first,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def default_audit_logger(*recorders: Any) -> Any:
    """Return a structlog logger that renders audit events as JSON to `aperio.audit`.

    `recorders` are structlog processors that see every event first, whatever the log level.
    """
    return _stdlib_structlog(AUDIT_LOGGER_NAME, recorders)


def default_plugin_logger() -> Any:
    """Return the structlog logger that plugins' invocation loggers are bound from."""
    return _stdlib_structlog(PLUGIN_LOGGER_NAME)
