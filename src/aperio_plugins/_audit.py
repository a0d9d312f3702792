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


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _would_emit(logger: logging.Logger, level: int) -> bool:
    """Whether a record at `level` would reach a handler that is not a `NullHandler`."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    found = False
    while current is not None:
        found = found or bool(current.handlers)
        if any(not isinstance(handler, logging.NullHandler) for handler in current.handlers):
            return True
        if not current.propagate:
            break
        current = current.parent
    # No handler at all: Python's last-resort handler prints warnings and errors to stderr
    # (a NullHandler anywhere on the way counts as a handler and keeps it quiet).
    return not found and logging.lastResort is not None and level >= logging.lastResort.level


class _DeferredLogger:
    """The default structlog logger, built (and structlog imported) only when an event would be kept.

    Importing structlog costs about 90 ms here (its development renderer pulls in rich), more
    than a warm host start; and with nothing but the `NullHandler` listening, rendering an
    event to JSON only to drop it costs about 0.1 ms per event. So an event that no handler
    would keep is dropped before it is rendered; once one would be kept (the application
    configured logging, at any time), this logger forwards everything to structlog.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)
        if not any(isinstance(handler, logging.NullHandler) for handler in self._stdlib.handlers):
            self._stdlib.addHandler(logging.NullHandler())
        self._logger: Any = None

    def _structlog(self) -> Any:
        if self._logger is None:
            self._logger = _stdlib_structlog(self._name)
        return self._logger

    def __getattr__(self, attribute: str) -> Any:
        level = _LEVELS.get(attribute)
        if level is None or self._logger is not None:
            return getattr(self._structlog(), attribute)

        def event(*args: Any, **kwargs: Any) -> Any:
            if not _would_emit(self._stdlib, level):
                return None
            return getattr(self._structlog(), attribute)(*args, **kwargs)

        return event


def default_audit_logger(*recorders: Any) -> Any:
    """Return a structlog logger that renders audit events as JSON to `aperio.audit` (structlog is
    imported on the first event a handler would keep).

    `recorders` are structlog processors that see every event first, whatever the log level; with
    any, structlog is imported now, since every event is kept.
    """
    if recorders:
        return _stdlib_structlog(AUDIT_LOGGER_NAME, recorders)
    return _DeferredLogger(AUDIT_LOGGER_NAME)


def default_plugin_logger() -> Any:
    """Return the structlog logger that plugins' invocation loggers are bound from (built on first use)."""
    return _DeferredLogger(PLUGIN_LOGGER_NAME)
