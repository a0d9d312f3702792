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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from ._model import TrustMode
from ._ownership import HostModules, OwnedDistribution, PluginsDirLayout, collision, module_stem
from ._verified_import import VerifiedImporter, VerifiedTree, _LoaderBase, install_importer, remove_importer
from .errors import VerificationError


def is_plugin_finder(finder: object) -> bool:
    """True for the finders and loaders that serve plugins-directory files (not the host's environment)."""
    return isinstance(finder, (VerifiedImporter, _LoaderBase, PluginsDirBoundary))


def record_tree(distribution: OwnedDistribution, root: Path, label: str) -> VerifiedTree:
    """Return a tree that serves exactly the importable files `distribution`'s RECORD lists, unchecked."""
    files = {
        path: ""
        for path in distribution.files
        if not path.partition("/")[0].endswith(".dist-info") and "__pycache__" not in path.split("/")
    }
    return VerifiedTree(label, root, files, distribution.import_names, checked=False)


class PluginsDirBoundary(importlib.abc.MetaPathFinder):
    """Last in `sys.meta_path`: a top-level name that is in the plugins directory but that no
    admitted distribution serves fails with the reason, instead of a bare "No module named"."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self._reasons = dict(reasons)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        reason = self._reasons.get(fullname)
        if reason is None:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r}: {reason}", name=fullname)


def _reasons(layout: PluginsDirLayout, mode: TrustMode, refused: Mapping[str, str]) -> dict[str, str]:
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
        elif distribution.canonical_name in refused:
            why = f"it belongs to {distribution.describe()} {where}: {refused[distribution.canonical_name]}"
        elif mode is TrustMode.STRICT:
            why = (
                f"it belongs to {distribution.describe()} {where}, which is not a plugin and not signed:"
                " strict trust mode does not import it"
            )
        else:
            continue
        for name in distribution.import_names:
            reasons.setdefault(name, why)
    return reasons


class Boundary:
    """The finders one host keeps for the plugins directory between discoveries.

    `update` installs a RECORD-scoped importer for each distribution that is not a plugin
    (warn and disabled only) and the explaining finder; `close` takes them all out.
    """

    def __init__(
        self, plugins_dir: Path, mode: TrustMode, report: Callable[[OwnedDistribution, str | None], None]
    ) -> None:
        self._plugins_dir = plugins_dir
        self._mode = mode
        self._report = report
        self._dependencies: dict[tuple[Path, frozenset[str]], VerifiedImporter] = {}
        self._finder: PluginsDirBoundary | None = None

    def update(self, layout: PluginsDirLayout, host: HostModules) -> None:
        refused: dict[str, str] = {}
        wanted: dict[tuple[Path, frozenset[str]], OwnedDistribution] = {}
        if self._mode is not TrustMode.STRICT:
            for distribution in layout.distributions:
                if distribution.is_plugin:
                    continue
                reason = collision(distribution.import_names, distribution.name, host=host, layout=layout)
                if reason is not None:
                    refused[distribution.canonical_name] = f"not imported: {reason}"
                else:
                    wanted[(distribution.metadata_dir, distribution.files)] = distribution
        for key in [key for key in self._dependencies if key not in wanted]:
            remove_importer(self._dependencies.pop(key))
        for key, distribution in wanted.items():
            if key in self._dependencies:
                continue
            label = f"{distribution.describe()} (not a plugin, unsigned)"
            try:
                tree = record_tree(distribution, self._plugins_dir, label)
                self._dependencies[key] = install_importer(tree)
            except VerificationError as exc:
                refused[distribution.canonical_name] = f"not imported: {exc.message}"
                continue
            self._report(distribution, None)
        for distribution in layout.distributions:
            if not distribution.is_plugin and (
                self._mode is TrustMode.STRICT or distribution.canonical_name in refused
            ):
                self._report(distribution, refused.get(distribution.canonical_name, "strict trust mode"))
        if self._finder is not None:
            _remove(self._finder)
        self._finder = PluginsDirBoundary(_reasons(layout, self._mode, refused))
        sys.meta_path.append(self._finder)

    def close(self) -> None:
        for importer in self._dependencies.values():
            remove_importer(importer)
        self._dependencies = {}
        if self._finder is not None:
            _remove(self._finder)
            self._finder = None


def _remove(finder: object) -> None:
    while finder in sys.meta_path:
        sys.meta_path.remove(finder)
