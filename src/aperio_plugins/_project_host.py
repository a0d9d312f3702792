"""A temporary strict host around the author's own plugin: build, sign with a throwaway key, install, load.

What an operator's host would do with the published wheel, in a private directory: its own plugins
directory, state directory and trusted keys directory, trust mode `strict`, and discovery limited to
that plugins directory. The project's own source folder (on the test process's import path when the
project is installed in editable mode) is set aside while the host runs, with the project's modules
already imported by unit tests: an operator's host has neither, and the host would rightly refuse a
plugin whose modules are importable from somewhere it did not verify.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ._host import PluginHost
from ._model import Activation, TrustMode
from ._ownership import import_names
from ._settings import HostSettings
from ._wheel import read_wheel


def host_settings(directory: Path, **overrides: Any) -> HostSettings:
    """Return settings for a strict host whose every directory is under `directory`."""
    keys = directory / "trusted-keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    values: dict[str, Any] = {
        "plugins_dir": directory / "plugins",
        "state_dir": directory / "state",
        "plugin_trusted_keys_dir": keys,
        "plugin_trusted_identities": directory / "trusted-identities.toml",
        "plugin_trust_mode": TrustMode.STRICT,
        # Loaded eagerly: the author's test sees a refusal (signature, hooks declaration) at load.
        "plugin_activation": Activation.EAGER,
        **overrides,
    }
    return HostSettings.from_environment(**values)


@contextlib.contextmanager
def _set_aside(tops: frozenset[str]) -> Iterator[None]:
    """Hide the import path entries that provide `tops` and forget their modules; restore both after."""
    saved_path = list(sys.path)
    prefixes = tuple(f"{top}." for top in tops)
    saved_modules: dict[str, ModuleType] = {
        name: module for name, module in sys.modules.items() if name in tops or name.startswith(prefixes)
    }

    def provides(entry: str) -> bool:
        root = Path(entry or ".")
        return any((root / top).is_dir() or (root / f"{top}.py").is_file() for top in tops)

    sys.path[:] = [entry for entry in sys.path if not provides(entry)]
    for name in saved_modules:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name in tops or name.startswith(prefixes)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


@contextlib.contextmanager
def strict_host(
    wheels: Sequence[Path], directory: Path, *, public_keys: Sequence[Path], **settings: Any
) -> Iterator[PluginHost]:
    """Install `wheels` with pip into a plugins directory under `directory`, trust `public_keys`, and yield
    a loaded host in strict trust mode that discovers only that directory. Closed on exit."""
    from .testing import install_wheels

    config = host_settings(directory, **settings)
    for key in public_keys:
        (config.plugin_trusted_keys_dir / key.name).write_bytes(key.read_bytes())
    install_wheels(wheels, target=config.plugins_dir)
    tops = frozenset().union(*(import_names(read_wheel(wheel).members) for wheel in wheels))
    with _set_aside(tops), PluginHost(config, search_path=[]) as host:
        host.load()
        yield host


@contextlib.contextmanager
def project_host(project: Path, directory: Path, **settings: Any) -> Iterator[PluginHost]:
    """Build the project at `project`, sign the wheel with a throwaway Ed25519 key, and yield a loaded
    strict host (see `strict_host`) with it installed. Raises `PluginCheckError` if it does not build."""
    from .testing import build_project_wheel, generate_signing_key, sign_wheel_with_key

    wheel = build_project_wheel(project, directory / "dist")
    private_key, public_key = generate_signing_key(directory / "signing-key", "throwaway")
    sign_wheel_with_key(wheel, private_key)
    with strict_host([wheel], directory / "host", public_keys=[public_key], **settings) as host:
        yield host
