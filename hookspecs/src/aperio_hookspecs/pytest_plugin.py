"""The SDK's pytest plugin: fixtures for testing a plugin's code without a host.

Installed with aperio-hookspecs (entry point `pytest11`), so a plugin's tests use
them with no import:

    @pytest.mark.aperio_plugin("acme.hello", credentials={"hello:read": "token"})
    def test_sync(aperio_context, aperio_envelopes, aperio_logs):
        result = HelloConnector().sync(aperio_context, aperio_envelopes.sync_request("hello"))
        assert aperio_logs[0].event == "hello.sync.started"

The marker sets the context's plugin id, credentials and timeout; without it the
context belongs to `test.plugin` and holds no credentials.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from . import testing

_MARKER = "aperio_plugin"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(plugin_id, credentials=None, timeout=30.0): the invocation context the aperio fixtures build",
    )


@pytest.fixture
def aperio_kv() -> testing.MemoryKeyValueStore:
    """The in-memory key-value store behind `aperio_context`."""
    return testing.MemoryKeyValueStore()


@pytest.fixture
def make_aperio_context(aperio_kv: testing.MemoryKeyValueStore) -> Any:
    """A factory for further contexts: `make_aperio_context("acme.hello", credentials={...})`; they share
    `aperio_kv` unless given their own `kv=`."""

    def make(plugin_id: str, **options: Any) -> testing.MemoryContext:
        options.setdefault("kv", aperio_kv)
        return testing.make_context(plugin_id, **options)

    return make


@pytest.fixture
def aperio_context(request: pytest.FixtureRequest, make_aperio_context: Any) -> testing.MemoryContext:
    """An invocation context for one call: in-memory KV, the marker's credentials, captured logs."""
    marker = request.node.get_closest_marker(_MARKER)
    plugin_id = "test.plugin"
    options: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            plugin_id = str(marker.args[0])
        options = {key: marker.kwargs[key] for key in ("credentials", "timeout") if key in marker.kwargs}
    context: testing.MemoryContext = make_aperio_context(plugin_id, **options)
    return context


@pytest.fixture
def aperio_logs(aperio_context: testing.MemoryContext) -> list[testing.LogRecord]:
    """What the plugin logged through `aperio_context` (and loggers it bound), in order."""
    return aperio_context.logger.records


@pytest.fixture
def aperio_envelopes() -> types.SimpleNamespace:
    """Envelope factories with plausible defaults: `.event(...)`, `.finding(...)`, `.resource(...)`,
    `.sync_request(connector)`, `.remediation_request(action)`, `.delivery_batch(destination, envelopes)`."""
    return types.SimpleNamespace(
        event=testing.make_event,
        finding=testing.make_finding,
        resource=testing.make_resource,
        sync_request=testing.make_sync_request,
        remediation_request=testing.make_remediation_request,
        delivery_batch=testing.make_delivery_batch,
    )
