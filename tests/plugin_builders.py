"""Small plugin sources and wheel builders shared by the tests.

Each plugin is an ordinary module with hookimpls; `marker` plugins append a
line to a file when imported, so a test can prove which plugins' code ran.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from aperio_hookspecs import Finding, Resource, Severity
from aperio_plugins.testing import PluginWheel

# A finding to broadcast through `aperio_finding_raised`; its content does not matter to the host.
FINDING = Finding(
    id="f",
    provider="test",
    title="t",
    severity=Severity.LOW,
    resource=Resource(type="file", id="1"),
    detected_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
)

CONNECTOR_SOURCE = """
from aperio_hookspecs import Connector, SyncResult, hookimpl

class {cls}(Connector):
    name = "{name}"
    provider = "test"

    def sync(self, context, request):
        return SyncResult(connector="{name}", next_cursor="{version}")

@hookimpl
def aperio_register_connectors(register):
    register({cls}())

@hookimpl
def aperio_finding_raised(finding):
    return "{plugin_id}"
"""

# In a worker under bubblewrap the filesystem is read-only outside the worker's own directory: there
# the marker goes to stderr, which the host logs (`plugin.worker.stderr`), instead of failing the import.
MARKER_PREFIX = """
import pathlib as _pathlib, sys as _sys
try:
    with _pathlib.Path({marker!r}).open("a") as _marker:
        _marker.write("{plugin_id}\\n")
except OSError:
    print("aperio-test-marker {plugin_id}", file=_sys.stderr, flush=True)
"""


def connector_wheel(
    directory: Path,
    plugin_id: str,
    *,
    package: str | None = None,
    distribution: str | None = None,
    connector: str | None = None,
    version: str = "1.0.0",
    marker: Path | None = None,
    extra_source: str = "",
    **options: object,
) -> Path:
    """Build a working connector plugin wheel; return its path."""
    package = package or plugin_id.replace(".", "_").replace("-", "_")
    connector = connector or package
    source = CONNECTOR_SOURCE.format(cls="TestConnector", name=connector, version=version, plugin_id=plugin_id)
    if marker is not None:
        source = MARKER_PREFIX.format(marker=str(marker), plugin_id=plugin_id) + source
    wheel = PluginWheel(
        distribution or package.replace("_", "-"),
        plugins={plugin_id: package},
        files={f"{package}/__init__.py": source + extra_source},
        version=version,
        **options,  # type: ignore[arg-type]
    )
    return wheel.build(directory)


def imported_ids(marker: Path, audit: Any = None) -> list[str]:
    """Return the plugin ids whose module ran, in import order: from the marker file, then (given the
    audit trail) from sandboxed workers' stderr as logged so far."""
    ran = marker.read_text().split() if marker.exists() else []
    for fields in audit.fields_of("plugin.worker.stderr") if audit is not None else ():
        if fields["line"].startswith("aperio-test-marker "):
            ran.append(fields["line"].split()[1])
    return ran
