"""Who owns what in the plugins directory, and which top-level names a plugin may take.

The plugins directory is never on the import path: each distribution's modules are served
by a finder scoped to the files its RECORD (or signed statement) lists. This module reads
that ownership from RECORD files without importing anything, reports what no distribution
owns, and decides whether a plugin's top-level names collide with the standard library,
the host's environment or another distribution in the directory.
"""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.metadata
import io
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from aperio_hookspecs import ENTRY_POINT_GROUP

from ._cache import DiscoveryCache, file_key
from ._names import canonicalize_name
from ._preflight import CONTROL_DIR_NAME

_MODULE_SUFFIXES = tuple(
    sorted(
        {
            *importlib.machinery.EXTENSION_SUFFIXES,
            *importlib.machinery.SOURCE_SUFFIXES,
            *importlib.machinery.BYTECODE_SUFFIXES,
        },
        key=len,
        reverse=True,  # ".cpython-311-x86_64-linux-gnu.so" before ".so"
    )
)
STANDARD_LIBRARY = "the standard library"


def _read_text(path: str) -> str | None:
    # Plain strings and open(): with a thousand distributions, pathlib costs more than the reads.
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _record_entries(text: str) -> Iterable[tuple[str, str]]:
    """Yield (path, size as written) for each row of a RECORD file."""
    for line in text.splitlines():
        if line.startswith('"'):  # a quoted path (it holds a comma or a quote): the csv module reads it
            try:
                row = next(csv.reader(io.StringIO(line)), [""])
            except csv.Error:
                continue
            yield row[0], row[2] if len(row) > 2 else ""
        elif line.count(",") >= 2:
            # path,hash,size: the hash and size never hold a comma, so the path is what is left.
            path, _, size = line.rsplit(",", 2)
            yield path, size
        else:
            yield line.partition(",")[0], ""


def record_rows(metadata_dir: Path | str) -> list[str]:
    """Return the paths a distribution's RECORD lists, as written; [] without a readable UTF-8 RECORD.

    RECORD is unsigned and rewritten by installers: whatever it holds, this never raises.
    """
    text = _read_text(os.path.join(metadata_dir, "RECORD"))
    return [] if text is None else [path for path, _ in _record_entries(text)]


def record_sizes(metadata_dir: Path | str) -> dict[str, int | None]:
    """Return each path RECORD lists with the size it states (None where it states none or no number).

    Like `record_rows`, this never raises; the sizes are RECORD's word, good for planning, not for trust.
    """
    text = _read_text(os.path.join(metadata_dir, "RECORD"))
    if text is None:
        return {}
    return {path: _size(size) for path, size in _record_entries(text)}


def _size(written: str) -> int | None:
    # isdigit alone admits "²" and a 5,000-digit number, which int() refuses: RECORD is anyone's text.
    return int(written) if written.isascii() and written.isdigit() and len(written) <= 18 else None


def record_paths(metadata_dir: Path | str) -> list[str]:
    """Return the normalized relative paths a distribution's RECORD lists; [] without a readable RECORD.

    Paths that leave the install root (`../../bin/x`, absolute paths) are left out: they
    are not in the directory the finder serves.
    """
    paths = []
    for row in record_rows(metadata_dir):
        path = row.replace("\\", "/").removeprefix("./")
        if path and not path.startswith("/") and not any(part in ("", ".", "..") for part in path.split("/")):
            paths.append(path)
    return paths


def module_stem(file_name: str) -> str | None:
    """Return the module name a top-level file would import as (`a.py` -> `a`), or None."""
    for suffix in _MODULE_SUFFIXES:
        if file_name.endswith(suffix):
            stem = file_name[: -len(suffix)]
            return stem if stem.isidentifier() else None
    return None


def import_names(paths: Iterable[str]) -> frozenset[str]:
    """Return the top-level import names a list of installed paths provides (packages and modules)."""
    names = set()
    for path in paths:
        top, separator, _ = path.partition("/")
        if top.endswith((".dist-info", ".data")) or top == "__pycache__":
            continue
        name = top if separator else module_stem(top)
        if name is not None and name.isidentifier():
            names.add(name)
    return frozenset(names)


def _has_plugin_entry_points(metadata_dir: str) -> bool:
    text = _read_text(os.path.join(metadata_dir, "entry_points.txt"))
    if text is None or ENTRY_POINT_GROUP not in text:
        return False
    return any(line.strip() == f"[{ENTRY_POINT_GROUP}]" for line in text.splitlines())


class OwnedDistribution(msgspec.Struct, frozen=True):
    """A distribution in the plugins directory and exactly the files its RECORD gives it."""

    name: str
    version: str
    metadata_dir: Path
    files: frozenset[str]
    import_names: frozenset[str]
    entries: frozenset[str]  # top-level entries of the directory it owns, its .dist-info included
    is_plugin: bool

    @property
    def canonical_name(self) -> str:
        return canonicalize_name(self.name)

    def describe(self) -> str:
        return f"{self.name} {self.version}"


class LayoutProblem(msgspec.Struct, frozen=True):
    """Something in the plugins directory that no admitted code path accounts for."""

    error: bool
    subject: str
    message: str


class PluginsDirLayout(msgspec.Struct, frozen=True):
    """What the plugins directory holds: its distributions, and what none of them owns."""

    root: Path
    distributions: tuple[OwnedDistribution, ...] = ()
    unowned: tuple[str, ...] = ()  # relative POSIX paths; a directory ends with "/"
    duplicates: tuple[tuple[str, ...], ...] = ()  # .dist-info names of one distribution, when more than one
    _by_name: Mapping[str, tuple[OwnedDistribution, ...]] = msgspec.field(default_factory=dict)
    _by_metadata_dir: Mapping[str, OwnedDistribution] = msgspec.field(default_factory=dict)

    def owners(self, name: str) -> tuple[OwnedDistribution, ...]:
        """Return the distributions whose files provide top-level import name `name`."""
        return self._by_name.get(name, ())

    def distribution_at(self, metadata_dir: Path) -> OwnedDistribution | None:
        """Return the distribution whose `.dist-info` is `metadata_dir`, if it is in this directory."""
        if os.path.abspath(metadata_dir.parent) != os.path.abspath(self.root):
            return None
        return self._by_metadata_dir.get(metadata_dir.name)

    def problems(self) -> list[LayoutProblem]:
        """Return unowned files and second `.dist-info` directories as errors."""
        problems = []
        if self.unowned:
            more = len(self.unowned) - 10
            shown = ", ".join(self.unowned[:10]) + (f" and {more} more" if more > 0 else "")
            problems.append(
                LayoutProblem(
                    True,
                    str(self.root),
                    f"files that no installed distribution owns (never importable; remove them): {shown}",
                )
            )
        for names in self.duplicates:
            problems.append(
                LayoutProblem(
                    True,
                    str(self.root),
                    f"one distribution has {len(names)} .dist-info directories ({', '.join(names)}); remove the"
                    " stale one so that its RECORD says which files are whose",
                )
            )
        return problems


def _distribution(
    root: Path, dist_info: str, cache: DiscoveryCache | None, plugins: frozenset[str] | None
) -> OwnedDistribution:
    # The directory name gives name and version without parsing METADATA, as discovery does.
    name, _, version = dist_info.removesuffix(".dist-info").partition("-")
    metadata_dir = os.path.join(root, dist_info)
    key = file_key(os.path.join(metadata_dir, "RECORD")) if cache is not None else None
    paths = cache.record(metadata_dir, key) if cache is not None and key is not None else None
    if paths is None:
        paths = record_paths(metadata_dir)
        if cache is not None and key is not None:
            cache.remember_record(metadata_dir, key, paths)
    files = frozenset(paths)
    entries = {path.partition("/")[0] for path in files} | {dist_info}
    return OwnedDistribution(
        name=name,
        version=version or "?",
        metadata_dir=root / dist_info,
        files=files,
        import_names=import_names(files),
        entries=frozenset(entry for entry in entries if entry != CONTROL_DIR_NAME),
        is_plugin=dist_info in plugins if plugins is not None else _has_plugin_entry_points(metadata_dir),
    )


def _unowned_below(root: str, top: str, owned: frozenset[str]) -> list[str]:
    found: list[str] = []
    for directory, subdirectories, names in os.walk(os.path.join(root, top)):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        subdirectories.sort()
        found.extend(f"{relative}/{name}" for name in sorted(names) if f"{relative}/{name}" not in owned)
    return found


def scan_plugins_dir(
    plugins_dir: Path,
    *,
    deep: bool = False,
    cache: DiscoveryCache | None = None,
    plugins: frozenset[str] | None = None,
) -> PluginsDirLayout:
    """Return the ownership of every entry of `plugins_dir` from the RECORD files in it. Never raises.

    Unowned files are looked for among the top-level entries; with `deep`, also inside the
    directories a distribution owns (a walk of every installed file: `aperio doctor` does it).
    A `cache` keeps each RECORD's paths by its stat signature; `plugins` (the `.dist-info`
    names discovery found plugin entry points in) saves reading each `entry_points.txt`.
    """
    root = str(plugins_dir)
    try:
        with os.scandir(root) as scanned:
            entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in scanned)
    except OSError:
        return PluginsDirLayout(plugins_dir)
    distributions = tuple(
        _distribution(plugins_dir, name, cache, plugins)
        for name, is_dir in entries
        if is_dir and name.endswith(".dist-info")
    )
    owned_entries = {entry for distribution in distributions for entry in distribution.entries}
    owned_files = frozenset(path for d in distributions for path in d.files) if deep else frozenset()
    unowned: list[str] = []
    for name, is_dir in entries:
        if name == CONTROL_DIR_NAME or name.endswith(".dist-info"):
            continue
        if name not in owned_entries:
            unowned.append(f"{name}/" if is_dir else name)
        elif is_dir and deep:
            # An owned package may still hold a file its RECORD does not list: a planted module.
            unowned.extend(_unowned_below(root, name, owned_files))
    by_canonical: dict[str, list[str]] = {}
    by_name: dict[str, list[OwnedDistribution]] = {}
    for distribution in distributions:
        by_canonical.setdefault(distribution.canonical_name, []).append(distribution.metadata_dir.name)
        for import_name in distribution.import_names:
            by_name.setdefault(import_name, []).append(distribution)
    duplicates = tuple(tuple(names) for names in by_canonical.values() if len(names) > 1)
    return PluginsDirLayout(
        plugins_dir,
        distributions,
        tuple(unowned),
        duplicates,
        {name: tuple(owners) for name, owners in by_name.items()},
        {distribution.metadata_dir.name: distribution for distribution in distributions},
    )


class HostModules:
    """Answers "who provides top-level module NAME to the host?", outside the plugins directory.

    Looks the name up with the host's own finders (never plugin finders, never the plugins
    directory) and imports nothing. Which distribution owns a name is only worked out for a
    name that is found, since that reads every installed distribution's file list.
    """

    def __init__(self, plugins_dir: Path | None) -> None:
        self._plugins_dir = os.path.abspath(plugins_dir) if plugins_dir is not None else None
        self._owners: Mapping[str, list[str]] | None = None
        self._path: tuple[list[str], list[str]] = ([], [])  # (sys.path, its entries outside the plugins dir)

    def _outside_plugins_dir(self, entry: str) -> bool:
        if self._plugins_dir is None:
            return True
        try:
            return os.path.commonpath([os.path.abspath(entry or "."), self._plugins_dir]) != self._plugins_dir
        except ValueError:
            return True

    def _host_path(self) -> list[str]:
        seen, outside = self._path
        if seen != sys.path:  # filtered again only when the import path changed
            outside = [entry for entry in sys.path if self._outside_plugins_dir(entry)]
            self._path = (list(sys.path), outside)
        return outside

    def _find(self, name: str) -> str | None:
        """Return where the host's environment would import `name` from, or None."""
        from ._boundary import is_plugin_finder  # imported here: _boundary imports this module

        module = sys.modules.get(name)
        if module is not None:
            spec = getattr(module, "__spec__", None)
            if not is_plugin_finder(getattr(spec, "loader", None)):
                return getattr(spec, "origin", None) or "a module the host has already imported"
        for finder in list(sys.meta_path):
            if is_plugin_finder(finder):
                continue
            try:
                if finder is importlib.machinery.PathFinder:
                    spec = importlib.machinery.PathFinder.find_spec(name, self._host_path())
                else:
                    spec = finder.find_spec(name, None)
            except Exception:  # noqa: BLE001, S112 - a third-party finder's failure is not an answer
                continue
            if spec is not None:
                locations = list(spec.submodule_search_locations or ())
                return spec.origin if spec.origin not in (None, "namespace") else (locations[0] if locations else name)
        return None

    def distributions_of(self, name: str) -> list[str]:
        if self._owners is None:
            self._owners = importlib.metadata.packages_distributions()
        return list(self._owners.get(name, ()))

    def provider(self, name: str, distribution: str) -> str | None:
        """Return who provides `name` to the host (None if nobody, or only another copy of the
        plugin distribution `distribution` itself, installed in the environment as a plugin)."""
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            return STANDARD_LIBRARY
        where = self._find(name)
        if where is None:
            return None
        owners = self.distributions_of(name)
        if owners and all(_same_plugin(owner, distribution) for owner in owners):
            # The same plugin installed in the environment too: the duplicate-id rule decides which copy loads.
            return None
        if owners:
            return f"distribution {owners[0]} in the host's environment"
        return f"the host's environment ({where})"


def _same_plugin(owner: str, distribution: str) -> bool:
    if canonicalize_name(owner) != canonicalize_name(distribution):
        return False
    try:
        entry_points = importlib.metadata.distribution(owner).entry_points
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(entry_point.group == ENTRY_POINT_GROUP for entry_point in entry_points)


def collision(
    names: Iterable[str],
    distribution: str,
    *,
    host: HostModules | None = None,
    layout: PluginsDirLayout | None = None,
) -> str | None:
    """Return why `distribution`'s top-level import `names` may not be used, or None.

    A name is refused when the standard library has it, when the host's environment
    provides it (checked only with `host`), or when another distribution in the plugins
    directory owns it (checked only with `layout`). The message names module and owner.
    """
    canonical = canonicalize_name(distribution)
    for name in sorted(names):
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            return f"its top-level module {name!r} collides with {name!r} of {STANDARD_LIBRARY}"
        provider = host.provider(name, distribution) if host is not None else None
        if provider is not None:
            return f"its top-level module {name!r} collides with {name!r} of {provider}"
        if layout is not None:
            others = [d for d in layout.owners(name) if d.canonical_name != canonical]
            if others:
                kind = "plugin" if others[0].is_plugin else "distribution"
                return (
                    f"its top-level module {name!r} collides with {name!r} of {kind} {others[0].describe()}"
                    " in the plugins directory"
                )
    return None


def wheel_layout_problem(members: Iterable[str], entry_points: Mapping[str, str]) -> str | None:
    """Return why a wheel would put something in the plugins directory besides its own packages, or None.

    Its own: its `.dist-info` (and `.data`, refused elsewhere); the top-level packages or
    modules its plugin entry points live in; other top-level packages (directories), whose
    names the collision checks then cover. Anything else at the top (a `.pth` file, a module
    no entry point names, a data file) is refused: nothing imports it as part of the plugin.
    """
    declared = {value.partition(":")[0].strip().split(".")[0] for value in entry_points.values()}
    directories = set()
    for member in sorted(members):
        top, separator, _ = member.partition("/")
        if separator:
            directories.add(top)
            continue
        if top.endswith(".pth"):
            return f"{top} is a .pth file: it would run code from the plugins directory"
        stem = module_stem(top)
        if stem is None or stem not in declared or stem == "__init__":
            return f"{top} is not part of a package its entry points name ({', '.join(sorted(declared))})"
    for top in sorted(directories):
        if top.endswith((".dist-info", ".data")):
            continue
        own_libs = top.endswith(".libs") and top.removesuffix(".libs") in directories  # auditwheel's vendored libs
        if own_libs:
            continue
        if not top.isidentifier() or top == "__pycache__":
            return f"{top}/ is not a package it can import"
    return None
