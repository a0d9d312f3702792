"""Load: execute exactly the bytes that verification hashed.

`VerifiedImporter` sits first in `sys.meta_path`. For the import names a plugin
owns it answers from the signed file list alone: it never reads `__pycache__`,
never lets a name fall through to `PathFinder` (which would find files added
after signing), reads each file once, checks its sha256 and compiles those same
bytes. Resources, `get_data`, tracebacks and C extensions go through the same
check (`_files`, `_loaders`, `_resources`, `_code_cache`, `_extensions`).
FACTS.md, "Importing only verified bytes", records why each piece exists.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import posixpath
import sys
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType

from ..errors import TamperedFileError, VerificationError
from ._code_cache import _CodeCache
from ._extensions import ExtensionCopies
from ._files import _SUFFIXES, ImportStats, VerifiedTree, _SignedFiles
from ._loaders import _ExtensionLoader, _LoaderBase, _NamespaceLoader, _PackageDirFinder, _SourceLoader, _VerifiedSpec


class VerifiedImporter(importlib.abc.MetaPathFinder):
    """Import a plugin's modules from its verified files only.

    Raises `VerificationError` if `tree` lists malformed paths or digests. Imports raise
    `TamperedFileError` for a file that changed, vanished or is not signed; every such
    refusal is also kept in `refusals`, since plugin code may catch ImportError.
    """

    def __init__(self, tree: VerifiedTree, *, code_cache: Path | None = None) -> None:
        self.tree = tree
        self.stats = ImportStats()
        self._files = _SignedFiles(tree)
        self._owned = tuple(tree.packages)
        # Every import in the process asks every installed importer; most names are rejected on
        # their first component alone.
        self._owned_tops = frozenset(name.partition(".")[0] for name in self._owned)
        self._cache = _CodeCache(code_cache, self.stats) if code_cache is not None else None
        self._extensions = ExtensionCopies(self._files)
        self._entries: dict[str, object] = {}  # path_importer_cache entries we replaced

    @property
    def refusals(self) -> list[TamperedFileError]:
        return list(self._files.refusals)

    def owns(self, fullname: str) -> bool:
        if fullname.partition(".")[0] not in self._owned_tops:
            return False
        return any(fullname == name or fullname.startswith(name + ".") for name in self._owned)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Return the spec of a signed module, None for names the plugin does not own.

        Raises instead of returning None for an owned name: None would let PathFinder
        search the package's `__path__` and import an unsigned file.
        """
        if not self.owns(fullname):
            return None
        if not all(part.isidentifier() for part in fullname.split(".")):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        files = self._files
        rel = fullname.replace(".", "/")
        for stem, is_package in ((rel + "/__init__", True), (rel, False)):
            for suffix, kind in _SUFFIXES:
                candidate = stem + suffix
                if candidate in files.tree.digests:
                    return self._spec(fullname, candidate, kind, is_package)
                if os.path.lexists(files.abspath(candidate)):
                    raise files.refuse(
                        f"{candidate} is not in {files.tree.listing}; not importing {fullname}", candidate, fullname
                    )
        if rel in files.children:
            return self._namespace_spec(fullname, rel)
        if os.path.isdir(files.abspath(rel)) and posixpath.basename(rel) != "__pycache__":
            raise files.refuse(
                f"{rel}/ holds no file of {files.tree.listing}; not importing {fullname} as a namespace package",
                rel,
                fullname,
            )
        raise ModuleNotFoundError(f"No module named {fullname!r} in plugin {self.tree.plugin_id}", name=fullname)

    def _spec(self, fullname: str, rel: str, kind: str, is_package: bool) -> importlib.machinery.ModuleSpec:
        if kind == "bytecode":
            raise ImportError(f"{rel}: sourceless modules are not supported", name=fullname)
        loader_type = _ExtensionLoader if kind == "extension" else _SourceLoader
        directory = posixpath.dirname(rel)
        spec = _VerifiedSpec(
            fullname,
            loader_type(self, rel, directory, is_package),
            origin=self._files.abspath(rel),
            is_package=is_package,
        )
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [self._files.abspath(directory)]
        return spec

    def _namespace_spec(self, fullname: str, rel: str) -> importlib.machinery.ModuleSpec:
        spec = _VerifiedSpec(fullname, _NamespaceLoader(self, rel, rel, True), is_package=True)
        spec.submodule_search_locations = [self._files.abspath(rel)]
        return spec

    def _compile(self, data: bytes, digest: str, filename: str) -> CodeType:
        if self._cache is not None:
            code = self._cache.load(digest, filename)
            if code is not None:
                self.stats.cache_hits += 1
                return code
        code = compile(data, filename, "exec", dont_inherit=True)
        self.stats.compiled += 1
        if self._cache is not None:
            self._cache.store(digest, filename, code)
        return code

    def _private_copy(self, rel: str, module: str) -> str:
        return self._extensions.private_copy(rel, module)

    def _plugin_directories(self) -> list[str]:
        return [rel for rel in self._files.children if rel and self.owns(rel.replace("/", "."))]

    def _attach(self) -> None:
        for rel in self._plugin_directories():
            key = self._files.abspath(rel)
            self._entries[key] = sys.path_importer_cache.get(key, self._entries)
            sys.path_importer_cache[key] = _PackageDirFinder(self, rel)

    def _detach(self) -> None:
        for key, previous in self._entries.items():
            current = sys.path_importer_cache.get(key)
            if isinstance(current, _PackageDirFinder) and current._importer is self:
                if previous is self._entries:
                    del sys.path_importer_cache[key]
                else:
                    sys.path_importer_cache[key] = previous  # type: ignore[assignment]
        self._entries = {}
        self._extensions.remove()


def install_importer(tree: VerifiedTree, *, code_cache: Path | None = None) -> VerifiedImporter:
    """Put a `VerifiedImporter` for `tree` first in `sys.meta_path` and return it.

    Raises `VerificationError` if `tree` is malformed, or if one of its modules is already in
    `sys.modules` from another loader: `import` would hand back that unverified module.
    """
    importer = VerifiedImporter(tree, code_cache=code_cache)
    stale: list[str] = []
    # A submodule is never imported without its top-level package: without one, skip the scan.
    if any(top in sys.modules for top in importer._owned_tops):
        stale = sorted(
            name
            for name, module in list(sys.modules.items())
            if module is not None
            and importer.owns(name)
            and not isinstance(getattr(getattr(module, "__spec__", None), "loader", None), _LoaderBase)
        )
    if stale:
        raise VerificationError(
            f"already imported without verification: {', '.join(stale)}; remove them from sys.modules first",
            plugin_id=tree.plugin_id,
        )
    sys.meta_path.insert(0, importer)
    importer._attach()
    return importer


def remove_importer(importer: VerifiedImporter) -> None:
    """Take `importer` out of `sys.meta_path` and undo its other changes; safe to call twice.

    Modules already imported keep working; the host should drop them from `sys.modules`,
    because a submodule imported lazily afterwards would be found by PathFinder, unverified.
    """
    while importer in sys.meta_path:
        sys.meta_path.remove(importer)
    importer._detach()
