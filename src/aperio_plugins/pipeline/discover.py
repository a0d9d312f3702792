"""Discover: installed distributions and their `aperio.plugins` entry points.

Reads metadata only; never imports plugin code. The search path is walked in
order, so "first on the search path" is well defined for duplicate ids.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from aperio_hookspecs import ENTRY_POINT_GROUP

from .._cache import DiscoveryCache, file_key
from .._model import Candidate, Origin
from .._ownership import HostModules, PluginsDirLayout, scan_plugins_dir


class SearchRoot(msgspec.Struct, frozen=True):
    """One directory to look for distributions in, and where it came from."""

    path: Path
    origin: Origin


class BrokenDistribution(msgspec.Struct, frozen=True):
    """A distribution whose entry points or metadata could not be read."""

    root: Path
    name: str
    reason: str


class Discovery(msgspec.Struct, frozen=True):
    candidates: tuple[Candidate, ...]
    broken: tuple[BrokenDistribution, ...]


def search_roots(environment: Iterable[str | Path], plugins_dir: Path | None) -> tuple[SearchRoot, ...]:
    """Return the existing directories to search, environment first, plugins dir last, without repeats.

    The plugins directory keeps its origin even when it is also listed in `environment`:
    its files are served only by finders scoped to each distribution, never from a path entry.
    """
    roots: list[SearchRoot] = []
    seen: set[Path] = set()
    if plugins_dir is not None:
        with contextlib.suppress(OSError):
            seen.add(plugins_dir.resolve())
    entries = [(Path(entry), Origin.ENVIRONMENT) for entry in environment if entry]
    for path, origin in entries:
        try:
            resolved = path.resolve()
        except OSError:
            continue
        if resolved in seen or not resolved.is_dir():
            continue
        seen.add(resolved)
        roots.append(SearchRoot(resolved, origin))
    if plugins_dir is not None:
        try:
            resolved = plugins_dir.resolve()
        except OSError:
            return tuple(roots)
        if resolved.is_dir():
            roots.append(SearchRoot(resolved, Origin.PLUGINS_DIR))
    return tuple(roots)


_METADATA_SUFFIXES = (".dist-info", ".egg-info")


def _metadata_directories(root: Path) -> list[str]:
    # Sorted so that two distributions in one directory that claim the same
    # plugin id resolve the same way on every machine. Plain strings: with a
    # thousand distributions, pathlib's joins cost more than the stat calls.
    base = str(root)
    try:
        with os.scandir(base) as entries:
            names = sorted(entry.name for entry in entries if entry.name.endswith(_METADATA_SUFFIXES))
    except OSError:
        return []
    return [os.path.join(base, name) for name in names]


def _name_and_version(metadata_dir: Path) -> tuple[str, str]:
    # The directory name (`name-version.dist-info`) gives both without parsing
    # METADATA, which matters with a thousand distributions installed; inspect
    # reads the authoritative values for the few that are plugins.
    name, _, version = metadata_dir.stem.partition("-")
    if name and version:
        return name, version.partition("-")[0]
    distribution = importlib.metadata.Distribution.at(metadata_dir)
    return distribution.metadata["Name"] or metadata_dir.stem, distribution.version or "?"


def _plugin_entry_points(metadata_dir: Path) -> list[tuple[str, str]]:
    try:
        with open(os.path.join(metadata_dir, "entry_points.txt"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return []
    # Most distributions have entry points of other groups only: a section of ours must name the
    # group, so a file without the name is not parsed (on a cold start, half of discovery's time).
    if ENTRY_POINT_GROUP not in text:
        return []
    distribution = importlib.metadata.Distribution.at(metadata_dir)
    return [(ep.name, ep.value) for ep in distribution.entry_points if ep.group == ENTRY_POINT_GROUP]


def discover(roots: Sequence[SearchRoot], cache: DiscoveryCache | None = None) -> Discovery:
    """Return every plugin entry point under `roots`, in search-path order.

    A distribution whose entry points cannot be parsed is reported in
    `Discovery.broken` and does not stop the others. With a `cache`, an
    `entry_points.txt` whose stat signature is unchanged is not read again.
    """
    candidates: list[Candidate] = []
    broken: list[BrokenDistribution] = []
    for root in roots:
        for metadata_path in _metadata_directories(root.path):
            key = file_key(os.path.join(metadata_path, "entry_points.txt"))
            if key is None:
                continue  # no entry points at all: nothing to parse
            entry_points = cache.entry_points(metadata_path, key) if cache is not None else None
            metadata_dir = Path(metadata_path)
            if entry_points is None:
                try:
                    entry_points = _plugin_entry_points(metadata_dir)
                except Exception as exc:  # noqa: BLE001 - one unparsable distribution must not stop discovery
                    reason = f"unreadable entry_points.txt: {exc}"
                    broken.append(BrokenDistribution(root.path, metadata_dir.name, reason))
                    continue
                if cache is not None:
                    cache.remember_entry_points(metadata_path, key, entry_points)
            if not entry_points:
                continue
            name, version = _name_and_version(metadata_dir)
            for plugin_id, value in entry_points:
                candidates.append(
                    Candidate(
                        plugin_id=plugin_id,
                        entry_point=value,
                        distribution=name,
                        version=version,
                        root=root.path,
                        metadata_dir=metadata_dir,
                        origin=root.origin,
                        position=len(candidates),
                    )
                )
    return Discovery(tuple(candidates), tuple(broken))


class Survey(msgspec.Struct, frozen=True, dict=True):
    """What one discovery found: the candidates, the directories searched, who owns what in the
    plugins directory (`layout`, read on first use), and the top-level names the host's environment
    provides."""

    discovery: Discovery
    roots: tuple[Path, ...]
    host_modules: HostModules
    plugins_root: Path
    cache: DiscoveryCache | None = None

    @functools.cached_property
    def layout(self) -> PluginsDirLayout:
        """Who owns what in the plugins directory, scanned the first time it is asked for: a start
        whose plugins all wait for their first use (lazy activation) reads no RECORD at all."""
        discovery, plugins_root = self.discovery, self.plugins_root
        plugins = frozenset(
            c.metadata_dir.name for c in discovery.candidates if c.origin is Origin.PLUGINS_DIR
        ) | frozenset(item.name for item in discovery.broken if item.root == plugins_root)
        return scan_plugins_dir(plugins_root, cache=self.cache, plugins=plugins)


def survey(
    environment: Iterable[str | Path],
    plugins_dir: Path,
    plugins_root: Path,
    cache: DiscoveryCache | None = None,
) -> Survey:
    """The discover stage: every candidate on the search path (`environment`, then `plugins_dir`;
    `plugins_root` is its resolved path), and the ownership of every file in the plugins directory
    (`Survey.layout`, scanned when first read).

    Reads metadata only; imports nothing.
    """
    roots = search_roots(environment, plugins_dir)
    discovery = discover(roots, cache)
    # What the host provides may have changed since the last discovery.
    return Survey(discovery, tuple(root.path for root in roots), HostModules(plugins_root), plugins_root, cache)


def resolved_path(path: Path) -> Path:
    """`path` resolved, or as it is when it cannot be (a directory that does not exist yet)."""
    try:
        return path.resolve()
    except OSError:
        return path
