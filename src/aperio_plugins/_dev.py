"""`aperio plugin dev`: a plugin project loaded by a development host, rebuilt and reloaded on change.

A development build is the project built by its own backend, with any signature taken out and a
marker file (`aperio-dev.json`, naming the source folder) added to its `.dist-info`, installed
with pip into the plugins directory. The marker is what the host goes by: it lists such a
plugin as a development build, admits it only when `APERIO_ENVIRONMENT=development`, and never
under a signature (there is none; `sign` and `check` refuse a wheel that carries the marker).
Trust is decided as for any unsigned plugin, in the one place it is decided: a development host
runs in `warn` or `disabled` trust mode.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._statement import SIGNATURE_FILE_NAME
from .errors import AperioError, PluginCheckError

DEV_MARKER = "aperio-dev.json"
# Folders a build or a test run writes into: watching them would rebuild forever.
_IGNORED = frozenset({"dist", "build", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"})


def is_development_build(metadata_dir: Path) -> bool:
    """Whether the installed distribution at `metadata_dir` was installed by `aperio plugin dev`."""
    return (metadata_dir / DEV_MARKER).is_file()


def development_wheel(project: Path, out: Path) -> Path:
    """Build `project` into a development wheel in `out` (the marker added); return it.

    Raises `PluginCheckError` when the project does not build, or its build carries a signature
    file (a build backend never writes one: something in the project put it there).
    """
    from ._check import build_project  # _check imports this module for DEV_MARKER
    from ._wheel import read_wheel, write_wheel  # the wheel reader: only building needs it

    built = build_project(project, out / "built")
    wheel = read_wheel(built)
    if f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}" in wheel.members:
        raise PluginCheckError(
            f"{built.name}: the build already carries {SIGNATURE_FILE_NAME}; remove it from the project"
        )
    marker = json.dumps({"source": str(project.resolve())}).encode()
    target = out / built.name
    write_wheel(wheel, {f"{wheel.dist_info}/{DEV_MARKER}": marker}, target)
    return target


def snapshot(project: Path) -> dict[str, float]:
    """Return the modification time of every file of `project` a build reads (not build outputs)."""
    times: dict[str, float] = {}
    for root, directories, files in os.walk(project):
        directories[:] = [d for d in directories if d not in _IGNORED and not d.endswith(".egg-info")]
        for name in files:
            path = os.path.join(root, name)
            try:
                times[path] = os.stat(path).st_mtime_ns / 1e9
            except OSError:
                continue
    return times


@dataclass
class Watcher:
    """Polls a project's files; `changes()` yields once per settled change (no new dependency for a
    file-watching library: a poll a second is what a person editing files needs)."""

    project: Path
    interval: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def changes(self) -> Iterator[None]:
        seen = snapshot(self.project)
        while True:
            self.sleep(self.interval)
            now = snapshot(self.project)
            if now != seen:
                # Let an editor finish writing (save-as-rename, formatters) before building.
                self.sleep(self.interval / 2)
                seen = snapshot(self.project)
                yield


def install_development_build(project: Path, plugins_dir: Path) -> tuple[str, ...]:
    """Build `project` as a development wheel and install it with pip into `plugins_dir`, replacing an
    earlier build; return its plugin ids. Raises `PluginCheckError` or `WheelInstallError`."""
    from ._wheel import read_wheel
    from .registry._artifact import wheel_plugin_ids
    from .testing import install_wheels

    with tempfile.TemporaryDirectory(prefix="aperio-dev-") as scratch:
        wheel = development_wheel(project, Path(scratch))
        try:
            plugin_ids = wheel_plugin_ids(read_wheel(wheel))
        except AperioError as exc:
            raise PluginCheckError(f"{wheel.name}: {exc.message}") from None
        install_wheels([wheel], target=plugins_dir)
    return plugin_ids
