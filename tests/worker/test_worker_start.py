"""What a worker imports and how it logs: the start path carries only what serving a plugin needs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from aperio_hookspecs import SyncRequest
from worker.helpers import connector_of, sync

MODULES_SEEN = """
import sys
from aperio_hookspecs import Connector, SyncResult, hookimpl

LOADED_AT_IMPORT = sorted(name for name in ("structlog", "rich") if name in sys.modules)


class Seen(Connector):
    name = "seen"
    provider = "test"

    def sync(self, context, request):
        return SyncResult(connector="seen", next_cursor=",".join(LOADED_AT_IMPORT) or "none")


@hookimpl
def aperio_register_connectors(register):
    register(Seen())
"""

USES_STRUCTLOG = """
import structlog
from aperio_hookspecs import Connector, SyncRequest, SyncResult, hookimpl


class Logs(Connector):
    name = "logs"
    provider = "test"

    def sync(self, context, request):
        structlog.get_logger().info("plugin.own.event", answer=42)
        return SyncResult(connector="logs")


@hookimpl
def aperio_register_connectors(register):
    register(Logs())
"""


def test_a_worker_loads_its_plugin_without_importing_structlog_or_rich(start_worker, make_context):
    plugin = start_worker("acme.seen", source=MODULES_SEEN)

    result = connector_of(plugin).sync(make_context(), _request("seen"))

    assert result.next_cursor == "none"


def test_a_plugin_that_imports_structlog_logs_json_lines_to_stderr_never_to_the_protocol(
    start_worker, make_context, audit
):
    plugin = start_worker("acme.logs", source=USES_STRUCTLOG)

    connector_of(plugin).sync(make_context(), _request("logs"))
    connector_of(plugin).sync(make_context(), _request("logs"))  # the protocol still works after the log line

    lines = [
        fields["line"] for fields in audit.fields_of("plugin.worker.stderr") if "plugin.own.event" in fields["line"]
    ]
    assert lines, "the plugin's structlog event did not reach the host's log"
    record = json.loads(lines[0])
    assert (record["event"], record["answer"], record["level"]) == ("plugin.own.event", 42, "info")


def test_the_worker_logger_writes_sorted_json_lines_with_level_and_utc_timestamp():
    code = (
        "from aperio_plugins.worker.serve._log import StderrLogger\n"
        "StderrLogger().bind(plugin_id='acme.x').warning('plugin.loaded', n=1, odd={1})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    record: dict[str, Any] = json.loads(done.stderr)
    assert done.stdout == ""
    assert list(record) == sorted(record)
    assert (record["event"], record["level"], record["plugin_id"], record["n"]) == (
        "plugin.loaded",
        "warning",
        "acme.x",
        1,
    )
    assert record["odd"] == "{1}"  # what JSON cannot hold is written as its repr, never an exception
    assert record["timestamp"].endswith("Z")


def _request(connector: str) -> SyncRequest:
    return SyncRequest(connector=connector)


def test_frames_larger_than_a_pipe_cross_both_ways_whole(start_worker, make_context):
    plugin = start_worker()
    value = "x" * (3 << 20)  # 3 MiB: the host writes it in pieces, the worker answers it in pieces

    result = sync(plugin, make_context(timeout=60), mode="echo", value=value)
    after = sync(plugin, make_context(timeout=60), mode="echo", value="small")

    assert result.next_cursor == value
    assert after.next_cursor == "small"
