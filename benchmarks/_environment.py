"""Write a site-packages-like directory: ordinary distributions with aperio plugins among them.

Files are written directly, the way pip leaves them after an install (METADATA,
WHEEL, INSTALLER, RECORD with sha256 digests, entry_points.txt where the
distribution has entry points, and the package itself). Plugins use the exact
layout of `aperio_plugins.testing.PluginWheel.contents()`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aperio_plugins.testing import PluginWheel, manifest_toml

# About the size of a real README embedded as the long description.
_DESCRIPTION = "\n".join(
    f"Paragraph {n}: this distribution does something useful; see the documentation for details."
    " It is installed here only so that discovery has a realistic amount of metadata to skip."
    for n in range(24)
)

_CLASSIFIERS = (
    "Development Status :: 5 - Production/Stable",
    "Intended Audience :: Developers",
    "License :: OSI Approved :: Apache Software License",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Topic :: Software Development :: Libraries",
)

PLUGIN_SOURCE = '''\
"""Benchmark plugin {index}: a connector, and a finding listener that does nothing."""

from __future__ import annotations

from collections.abc import Callable

from aperio_hookspecs import Connector, Finding, InvocationContext, SyncRequest, SyncResult, hookimpl


class BenchConnector(Connector):
    name = "{connector}"
    provider = "bench"
    description = "Benchmark connector {index}"

    def sync(self, context: InvocationContext, request: SyncRequest) -> SyncResult:
        return SyncResult(connector=self.name, next_cursor=request.cursor)


@hookimpl
def aperio_register_connectors(register: Callable[[Connector], None]) -> None:
    register(BenchConnector())


@hookimpl
def aperio_finding_raised(finding: Finding) -> None:
    return None
'''


@dataclass(frozen=True)
class PluginSpec:
    """One benchmark plugin: its distribution, package, plugin id and entry point."""

    prefix: str
    index: int

    @property
    def package(self) -> str:
        return f"{self.prefix}_plugin_{self.index:03d}"

    @property
    def distribution(self) -> str:
        return f"{self.prefix}-plugin-{self.index:03d}"

    @property
    def plugin_id(self) -> str:
        return f"bench.{self.prefix}-{self.index:03d}"

    @property
    def module(self) -> str:
        return f"{self.package}.plugin"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{path},sha256={digest},{len(data)}"


def _install(root: Path, dist_info: str, files: Mapping[str, bytes]) -> None:
    """Write `files` under `root`, then INSTALLER and a RECORD listing everything, as pip does."""
    contents = {**files, f"{dist_info}/INSTALLER": b"pip\n"}
    for directory in {(root / relative).parent for relative in contents}:
        directory.mkdir(parents=True, exist_ok=True)
    for relative, data in contents.items():
        (root / relative).write_bytes(data)
    record = [_record_line(relative, data) for relative, data in contents.items()]
    record.append(f"{dist_info}/RECORD,,")
    (root / dist_info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")


def _metadata_lines(summary: str) -> list[str]:
    return [
        f"Summary: {summary}",
        "Home-page: https://example.invalid/project",
        "Author: Example Maintainers",
        "License: Apache-2.0",
        *(f"Classifier: {classifier}" for classifier in _CLASSIFIERS),
        "Requires-Python: >=3.10",
        "Description-Content-Type: text/markdown",
    ]


def _entry_points(index: int) -> str | None:
    # Like a real environment: some distributions have console scripts, a few
    # register plugins of other tools, most have no entry points at all.
    sections = []
    if index % 3 == 0:
        sections.append(f"[console_scripts]\ndep-tool-{index} = dep_{index:04d}.cli:main\n")
    if index % 7 == 0:
        sections.append(f"[pytest11]\ndep_{index:04d} = dep_{index:04d}.pytest_plugin\n")
    if index % 11 == 0:
        sections.append(f"[flake8.extension]\nD{index:04d} = dep_{index:04d}.checker:Checker\n")
    return "\n".join(sections) if sections else None


def write_ordinary_distribution(root: Path, index: int) -> None:
    """Write one non-plugin distribution: metadata, maybe entry points of other groups, a small package."""
    name, version = f"dep-{index:04d}", f"{1 + index % 5}.{index % 13}.{index % 3}"
    dist_info = f"dep_{index:04d}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *_metadata_lines(f"Ordinary dependency number {index}"),
        *(f"Requires-Dist: dep-{(index + step) % 997:04d}>=1.0" for step in (1, 2, 3)),
        "",
        _DESCRIPTION,
    ]
    files = {
        f"dep_{index:04d}/__init__.py": f'"""Dependency {index}."""\n\nVALUE = {index}\n'.encode(),
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.41.2)\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{dist_info}/top_level.txt": f"dep_{index:04d}\n".encode(),
    }
    entry_points = _entry_points(index)
    if entry_points is not None:
        files[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    _install(root, dist_info, files)


def plugin_wheel(spec: PluginSpec) -> PluginWheel:
    """Return the `PluginWheel` of one benchmark plugin (a connector with a finding listener)."""
    source = PLUGIN_SOURCE.format(index=spec.index, connector=f"bench-{spec.prefix}-{spec.index:03d}")
    return PluginWheel(
        spec.distribution,
        plugins={spec.plugin_id: spec.module},
        files={
            f"{spec.package}/__init__.py": f'"""Benchmark plugin {spec.index}."""\n',
            f"{spec.package}/plugin.py": source,
        },
        extra_metadata=[*_metadata_lines(f"Benchmark plugin {spec.index}"), "", _DESCRIPTION],
        # Declaring the hooks, as the project templates do, lets the host activate the plugin lazily.
        manifest=manifest_toml(
            {
                spec.plugin_id: {
                    "summary": f"{spec.plugin_id} benchmark plugin",
                    "kinds": ["connector"],
                    "hooks": ["aperio_finding_raised", "aperio_register_connectors"],
                }
            }
        ),
    )


def write_plugin_distribution(root: Path, spec: PluginSpec) -> None:
    """Write one installed plugin distribution (package, manifest, metadata) under `root`."""
    wheel = plugin_wheel(spec)
    _install(root, wheel.dist_info, wheel.contents())


def write_plugins(root: Path, prefix: str, count: int) -> list[PluginSpec]:
    """Write `count` plugin distributions under `root` and return them."""
    specs = [PluginSpec(prefix, index) for index in range(count)]
    for spec in specs:
        write_plugin_distribution(root, spec)
    return specs


def write_environment(root: Path, prefix: str, distributions: int, plugins: int) -> list[PluginSpec]:
    """Write `distributions` installed distributions under `root`, `plugins` of them aperio plugins."""
    for index in range(distributions - plugins):
        write_ordinary_distribution(root, index)
    return write_plugins(root, prefix, plugins)
