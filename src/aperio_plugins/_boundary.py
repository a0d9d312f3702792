"""The import boundary of the plugins directory, as the host sets it up for one discovery.

The plugins directory is never on `sys.path`. What may be imported from it is served by
finders scoped to one distribution's files each: a `VerifiedImporter` over the signed
statement for a verified plugin, over the RECORD for unsigned code in `warn` or
`disabled` (plugins, and distributions installed beside them that are not plugins).
Anything else there is never found; `Boundary`'s last finder only explains why.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ._model import TrustMode
from ._ownership import HostModules, OwnedDistribution, PluginsDirLayout, collision, module_stem
from .errors import VerificationError

if TYPE_CHECKING:
    from .importing import VerifiedImporter, VerifiedTree


def is_plugin_finder(finder: object) -> bool:
    """True for the finders and loaders that serve plugins-directory files (not the host's environment)."""
    if isinstance(finder, (PluginsDirBoundary, DependencyFinder)):
        return True
    # The verified finders and loaders load with the first import from the plugins directory: until
    # then none of them exists, and the ownership scan that asks (a listing does) must not import them.
    importing = sys.modules.get("aperio_plugins.importing")
    return importing is not None and isinstance(finder, (importing.VerifiedImporter, importing.VerifiedLoader))


def record_tree(distribution: OwnedDistribution, root: Path, label: str) -> VerifiedTree:
    """Return a tree that serves exactly the importable files `distribution`'s RECORD lists, unchecked."""
    from .importing import VerifiedTree

    files = {
        path: ""
        for path in distribution.files
        if not path.partition("/")[0].endswith(".dist-info") and "__pycache__" not in path.split("/")
    }
    return VerifiedTree(label, root, files, distribution.import_names, checked=False)


class PluginsDirBoundary(importlib.abc.MetaPathFinder):
    """Last in `sys.meta_path`: a top-level name that is in the plugins directory but that no
    admitted distribution serves fails with the reason, instead of a bare "No module named"."""

    def __init__(self, layout: PluginsDirLayout, mode: TrustMode) -> None:
        self._layout = layout
        self._mode = mode
        self._reasons: dict[str, str] | None = None  # worked out on the first refusal: it is rare

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if "." in fullname:
            return None
        if self._reasons is None:
            self._reasons = _reasons(self._layout, self._mode)
        reason = self._reasons.get(fullname)
        if reason is None:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r}: {reason}", name=fullname)


def _reasons(layout: PluginsDirLayout, mode: TrustMode) -> dict[str, str]:
    where = f"in the plugins directory {layout.root}"
    reasons: dict[str, str] = {}
    for entry in layout.unowned:
        top = entry.rstrip("/")
        if "/" in top:
            continue
        name = top if entry.endswith("/") else module_stem(top)
        if name is not None:
            reasons[name] = f"{entry} is {where}, but no installed distribution owns it"
    for distribution in layout.distributions:
        if distribution.is_plugin:
            why = f"it belongs to plugin {distribution.describe()} {where}, which is not loaded"
        elif mode is TrustMode.STRICT:
            why = (
                f"it belongs to {distribution.describe()} {where}, which is not a plugin and not signed:"
                " strict trust mode does not import it"
            )
        else:
            why = f"it belongs to {distribution.describe()} {where}, which another distribution also claims"
        for name in distribution.import_names:
            reasons.setdefault(name, why)
    return reasons


Report = Callable[[OwnedDistribution, "str | None"], None]


class DependencyFinder(importlib.abc.MetaPathFinder):
    """Serves the distributions in the plugins directory that are not plugins (warn and disabled only).

    Each is unsigned code served from its RECORD, by an importer made the first time one of its
    names is imported: a thousand installed dependencies cost nothing until one is used. A name
    the host's environment or the standard library provides is left to the host's own finders.
    """

    def __init__(self, root: Path, by_name: Mapping[str, OwnedDistribution], host: HostModules, report: Report) -> None:
        self._root = root
        self._by_name = dict(by_name)
        self._host = host
        self._report = report
        self._importers: dict[str, VerifiedImporter | None] = {}  # by canonical name; None: refused
        self._lock = threading.Lock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        distribution = self._by_name.get(fullname.partition(".")[0])
        if distribution is None:
            return None
        importer = self._importer(distribution)
        return importer.find_spec(fullname, path, target) if importer is not None else None

    def _importer(self, distribution: OwnedDistribution) -> VerifiedImporter | None:
        with self._lock:
            if distribution.canonical_name in self._importers:
                return self._importers[distribution.canonical_name]
            reason = collision(distribution.import_names, distribution.name, host=self._host)
            importer = None
            if reason is None:
                label = f"{distribution.describe()} (not a plugin, unsigned)"
                try:
                    from .importing import VerifiedImporter

                    importer = VerifiedImporter(record_tree(distribution, self._root, label))
                except VerificationError as exc:
                    reason = exc.message
                else:
                    # Not install_importer: this finder stands in the meta path for it. Attached, the
                    # importer also answers for the package directories, so PathFinder finds nothing there.
                    importer._attach()
            self._importers[distribution.canonical_name] = importer
        self._report(distribution, None if reason is None else f"not imported: {reason}")
        return importer

    def close(self) -> None:
        with self._lock:
            for importer in self._importers.values():
                if importer is not None:
                    importer._detach()
            self._importers = {}


class Boundary:
    """The finders one host keeps for the plugins directory between discoveries: a `DependencyFinder`
    (warn and disabled) and the `PluginsDirBoundary` that explains refusals. `close` removes both."""

    def __init__(self, plugins_dir: Path, mode: TrustMode, report: Report) -> None:
        self._plugins_dir = plugins_dir
        self._mode = mode
        self._report = report
        self._dependencies: DependencyFinder | None = None
        self._finder: PluginsDirBoundary | None = None

    def update(self, layout: PluginsDirLayout, host: HostModules) -> None:
        self.close()
        if self._mode is not TrustMode.STRICT:
            by_name = {
                name: owners[0]
                for distribution in layout.distributions
                if not distribution.is_plugin
                for name in distribution.import_names
                if len(owners := layout.owners(name)) == 1  # a name two distributions claim is nobody's
            }
            if by_name:
                self._dependencies = DependencyFinder(self._plugins_dir, by_name, host, self._report)
                sys.meta_path.insert(0, self._dependencies)
        self._finder = PluginsDirBoundary(layout, self._mode)
        sys.meta_path.append(self._finder)

    def close(self) -> None:
        if self._dependencies is not None:
            _remove(self._dependencies)
            self._dependencies.close()
            self._dependencies = None
        if self._finder is not None:
            _remove(self._finder)
            self._finder = None


def _remove(finder: object) -> None:
    while finder in sys.meta_path:
        sys.meta_path.remove(finder)
