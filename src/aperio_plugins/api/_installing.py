"""`POST /plugins/install`: the CLI's install (the registry client's checks), then the host loads it.

Over the API only registry references (`ID`, `ID@VERSION`) and `oci://` artifacts are accepted: a
wheel path or `file:` URL would name a file on the server, which an API caller should not choose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .._host import PluginHost
from .._model import PluginInfo, PluginState
from ..errors import InstallError, UnknownPluginError
from ..registry import InstallResult, RegistryClient

Installer = Callable[[str, bool], InstallResult]
# A plugin id (an entry point name) with an optional version; no path separators, no scheme.
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}(@[A-Za-z0-9.+!_-]{1,100})?")


def check_spec(spec: str) -> None:
    """Raise `InstallError` unless `spec` is `ID[@VERSION]` or `oci://…`."""
    if spec.startswith("oci://") and len(spec) > len("oci://") and all("!" <= c <= "~" for c in spec):
        return
    if _REFERENCE.fullmatch(spec) is None or spec.endswith(".whl"):
        raise InstallError(
            f"{spec!r} is not a registry reference: the API installs ID, ID@VERSION or oci://HOST/REPO:TAG,"
            " never a file on the server"
        )


def registry_installer(host: PluginHost, audit_logger: Any = None) -> Installer:
    """Return an installer that uses a `RegistryClient` made from the host's settings, as the CLI does;
    its audit events (refusals included) go to `audit_logger` when given."""
    options = {} if audit_logger is None else {"audit": audit_logger}

    def install(spec: str, pre: bool) -> InstallResult:
        with RegistryClient.from_settings(host.settings, **options) as client:
            return client.install(spec, pre=pre)

    return install


def install_into(
    host: PluginHost, spec: str, pre: bool, installer: Installer | None
) -> tuple[dict[str, Any], list[PluginInfo]]:
    """Install `spec`, then bring its plugins up in `host` (reload those already loaded).

    Raises `RegistryError` for a refused install (nothing changed), `PluginLoadError` if a reload fails.
    """
    check_spec(spec)
    result = (installer or registry_installer(host))(spec, pre)
    plugins: list[PluginInfo] = []
    for plugin_id in result.plugin_ids:
        try:
            current: PluginInfo | None = host.get(plugin_id)
        except UnknownPluginError:
            current = None
        loaded = current is not None and current.state in (PluginState.ENABLED, PluginState.DISABLED)
        if loaded and current is not None and result.unchanged:
            plugins.append(current)
        else:
            plugins.append(host.reload(plugin_id) if loaded else _load_one(host, plugin_id))
    return result.as_dict(), plugins


def _load_one(host: PluginHost, plugin_id: str) -> PluginInfo:
    report = host.load(only=[plugin_id])
    return next((info for info in report.plugins if info.id == plugin_id), host.get(plugin_id))
