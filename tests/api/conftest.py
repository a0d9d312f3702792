"""A host with test plugins in its plugins directory, served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import Api

from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.api._trail import recording_audit_logger
from aperio_plugins.testing import PluginWheel

# A connector whose behaviour the payload's config chooses; it writes a line to MARKER for every sync it runs.
PROBE_SOURCE = """
import pathlib, threading, time
from aperio_hookspecs import Connector, SyncResult, hookimpl

MARKER = pathlib.Path({marker!r})
RELEASE = pathlib.Path({release!r})
VERSION = "{version}"

class Probe(Connector):
    name = "{connector}"
    provider = "test"

    def sync(self, context, request):
        mode = request.config.get("mode", "ok")
        with MARKER.open("a") as marker:
            marker.write(f"{plugin_id} {{VERSION}} {{mode}}\\n")
        if mode == "raise":
            raise ConnectionError("provider unreachable")
        if mode == "hang":
            # Hangs until the test creates RELEASE (or 20 s pass), so no thread outlives the test for long.
            deadline = time.monotonic() + 20
            while not RELEASE.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        if mode == "slow":
            time.sleep(float(request.config.get("seconds", 0.2)))
        return SyncResult(connector="{connector}", next_cursor=VERSION)

@hookimpl
def aperio_register_connectors(register):
    register(Probe())
"""


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return tmp_path / "release-hung-plugins"


@pytest.fixture
def probe_wheel(wheel_dir: Path, marker: Path, release: Path) -> Callable[..., Path]:
    def build(plugin_id: str = "acme.probe", *, version: str = "1.0.0", source: str | None = None) -> Path:
        package = plugin_id.replace(".", "_").replace("-", "_")
        code = source or PROBE_SOURCE.format(
            marker=str(marker), release=str(release), version=version, connector=package, plugin_id=plugin_id
        )
        wheel = PluginWheel(
            package.replace("_", "-"),
            plugins={plugin_id: package},
            files={f"{package}/__init__.py": code},
            version=version,
        )
        return wheel.build(wheel_dir / version)

    return build


@pytest.fixture
def api_store(tmp_path: Path) -> SQLiteStateStore:
    # The host closes it (PluginHost.close closes its state store).
    return SQLiteStateStore.in_directory(tmp_path / "state")


@pytest.fixture
def served(make_host: Callable[..., Any], api_store: SQLiteStateStore, release: Path) -> Iterator[Callable[..., Api]]:
    """Start the API over a host (trust `warn`, the test plugins unsigned) with the given plugins installed."""
    started: list[Api] = []

    def serve(*, trust: str = "warn", settings: dict[str, Any] | None = None, **app_options: Any) -> Api:
        host = make_host(
            trust, state_store=api_store, audit_logger=recording_audit_logger(api_store), settings=settings or {}
        )
        host.load()
        api = Api(host, api_store, **app_options).__enter__()
        started.append(api)
        return api

    yield serve
    release.touch()  # let any hung plugin thread finish
    for api in started:
        api.__exit__(None, None, None)
