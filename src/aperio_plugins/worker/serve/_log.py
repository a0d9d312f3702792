"""The worker's own logging: JSON lines on stderr, which the host turns into `plugin.worker.stderr` events.

The worker does not import structlog to write them: structlog imports its
development renderer, and with it rich and asyncio, which was about a fifth of
a worker's start (docs/worker-protocol.md). A plugin that imports structlog
itself finds it configured to the same JSON lines on stderr, never stdout.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any


class StderrLogger:
    """A structlog-shaped logger (`info(event, **fields)`, `bind`) that writes one JSON line per event.

    The keys are those of structlog's `JSONRenderer(sort_keys=True)` after
    `add_log_level` and an ISO `TimeStamper`: `event`, `level`, `timestamp`.
    """

    def __init__(self, bound: dict[str, Any] | None = None) -> None:
        self._bound = bound or {}

    def bind(self, **fields: Any) -> StderrLogger:
        return StderrLogger({**self._bound, **fields})

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        record = {**self._bound, **fields, "event": str(event), "level": level, "timestamp": now}
        sys.stderr.write(json.dumps(record, sort_keys=True, default=repr) + "\n")
        sys.stderr.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)


def configure_logging() -> StderrLogger:
    """Send the standard library's logging to stderr (never stdout, the protocol's pipe); return the
    audit logger for the worker's own host."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return StderrLogger()


def configure_structlog_if_imported() -> None:
    """Configure structlog to write JSON lines to stderr, if the plugin imported it.

    Called once the plugin is loaded: structlog is then in `sys.modules` if the
    plugin uses it at all, and importing it only to configure it would cost
    every worker what only some plugins need. Unconfigured, structlog would print
    to stdout, which the worker has pointed at stderr: a plugin that imports it
    later still logs to the host's log, only not as JSON.
    """
    structlog = sys.modules.get("structlog")
    if structlog is None:
        return
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(sort_keys=True),
    ]
    structlog.configure(processors=processors, logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
