from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from aperio_plugins import HostSettings, PluginHost, TrustMode
from aperio_plugins.testing import install_wheels


@dataclass
class AuditTrail:
    """Collects the host's audit events as (name, fields) pairs."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        event = dict(event_dict)
        self.events.append((event.pop("event"), event))
        raise structlog.DropEvent

    @property
    def logger(self) -> Any:
        return structlog.wrap_logger(structlog.ReturnLogger(), processors=[self])

    def names(self, plugin_id: str | None = None) -> list[str]:
        return [name for name, fields in self.events if plugin_id is None or fields.get("plugin_id") == plugin_id]

    def fields_of(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.events if event == name]


_INSTALLED = tuple({sys.prefix, sys.base_prefix})


def _installed_library(module: object) -> bool:
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    return origin.startswith(_INSTALLED) or origin in ("built-in", "frozen")


@pytest.fixture(autouse=True)
def _isolated_imports() -> Iterator[None]:
    """Plugins imported by one test must not leak into the next through sys.modules, sys.path or
    sys.meta_path. Libraries a test imported for the first time (sigstore, say) stay: re-importing
    them per test would only cost time."""
    modules = dict(sys.modules)
    path = list(sys.path)
    meta_path = list(sys.meta_path)
    yield
    for name, module in list(sys.modules.items()):
        # A new submodule of a package that is restored below would hold the test's copies.
        restored_parent = name.partition(".")[0] in modules
        if name not in modules and (restored_parent or not _installed_library(module)):
            del sys.modules[name]
    for name, module in modules.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
    sys.path[:] = path
    sys.meta_path[:] = meta_path


@pytest.fixture
def audit() -> AuditTrail:
    return AuditTrail()


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    path = tmp_path / "plugins"
    path.mkdir()
    return path


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    return tmp_path / "wheels"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "imported.txt"


@pytest.fixture
def install(plugins_dir: Path) -> Callable[..., None]:
    def install(*wheels: Path, target: Path | None = None) -> None:
        install_wheels(wheels, target=target or plugins_dir)

    return install


@pytest.fixture
def make_host(tmp_path: Path, plugins_dir: Path, audit: AuditTrail) -> Iterator[Callable[..., PluginHost]]:
    hosts: list[PluginHost] = []

    def make_host(trust: str = "warn", *, environment: str = "production", **kwargs: Any) -> PluginHost:
        settings = HostSettings(
            plugins_dir=kwargs.pop("plugins_dir", plugins_dir),
            state_dir=tmp_path / "state",
            plugin_trusted_keys_dir=kwargs.pop("keys_dir", tmp_path / "keys"),
            plugin_trusted_identities=tmp_path / "trusted-identities.toml",
            plugin_trust_mode=TrustMode(trust),
            environment=environment,
            **kwargs.pop("settings", {}),
        )
        kwargs.setdefault("search_path", [])
        kwargs.setdefault("audit_logger", audit.logger)
        host = PluginHost(settings, **kwargs)
        hosts.append(host)
        return host

    yield make_host
    for host in hosts:
        host.close()
