"""Fixtures for worker tests: real plugin wheels, installed with real pip, served by real
`python -m aperio_plugins.worker` processes. Nothing here is a mock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aperio_hookspecs import Credential
from aperio_plugins._context import HostInvocationContext, new_context
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.testing import install_wheels
from aperio_plugins.worker import WorkerPlugin, WorkerSettings
from worker.helpers import FAST, PROBE_ID, PROBE_SOURCE, build_plugin, host_settings


@pytest.fixture(scope="session")
def probe_plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    wheel = build_plugin(root / "wheels", PROBE_ID, PROBE_SOURCE, credential_scopes=("probe:read", "probe:write"))
    install_wheels([wheel], target=root / "plugins")
    return root / "plugins"


@pytest.fixture
def start_worker(
    probe_plugins_dir: Path, plugins_dir: Path, tmp_path: Path, audit: Any
) -> Iterator[Callable[..., WorkerPlugin]]:
    """Start a worker: the shared probe plugin by default, or `source` built and installed for this test."""
    started: list[WorkerPlugin] = []

    def start(
        plugin_id: str = PROBE_ID, *, source: str | None = None, options: WorkerSettings = FAST, **kwargs: Any
    ) -> WorkerPlugin:
        directory = probe_plugins_dir
        if source is not None:
            install_wheels([build_plugin(tmp_path / "wheels", plugin_id, source)], target=plugins_dir)
            directory = plugins_dir
        kwargs.setdefault("audit_logger", audit.logger)
        kwargs.setdefault("logger", audit.logger)
        plugin = WorkerPlugin.start(
            plugin_id, settings=host_settings(directory, tmp_path), search_path=[], options=options, **kwargs
        )
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        plugin.stop(timeout=1.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStateStore]:
    opened = SQLiteStateStore.in_directory(tmp_path / "host-state")
    yield opened
    opened.close()


@pytest.fixture
def minted() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def make_context(
    store: SQLiteStateStore, minted: list[tuple[str, str]], audit: Any
) -> Callable[..., HostInvocationContext]:
    """The host's own invocation context, as `PluginHost.run` builds it, with a credential provider."""

    def provider(plugin_id: str, scope: str) -> Credential | str:
        minted.append((plugin_id, scope))
        return f"token-for-{plugin_id}-{scope}"

    def make(timeout: float = 10.0, scopes: tuple[str, ...] = ("probe:read",)) -> HostInvocationContext:
        return new_context(
            plugin_id=PROBE_ID, scopes=scopes, store=store, provider=provider, base_logger=audit.logger, timeout=timeout
        )

    return make
