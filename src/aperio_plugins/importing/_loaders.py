"""The loaders of verified modules (source, C extension, namespace) and the path-entry finder pkgutil sees."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import posixpath
import sys
from collections.abc import Iterator
from types import CodeType, ModuleType
from typing import TYPE_CHECKING

from ._files import _SUFFIXES
from ._resources import _Resources, _VerifiedTraversable

if sys.version_info >= (3, 11):
    from importlib.resources.abc import TraversableResources
else:  # these moved in 3.11; the old names are gone in 3.14
    from importlib.abc import TraversableResources

if TYPE_CHECKING:
    from ._finder import VerifiedImporter


class _VerifiedSpec(importlib.machinery.ModuleSpec):
    # ModuleSpec derives `cached` from `origin` whenever it is None, so `spec.cached = None`
    # alone would still advertise a __pycache__ file this loader never reads.
    @property
    def cached(self) -> str | None:
        return None

    @cached.setter
    def cached(self, value: str | None) -> None:
        pass


class _LoaderBase(importlib.abc.Loader):
    """What every verified loader offers: data and resources from the signed list only."""

    def __init__(self, importer: VerifiedImporter, rel: str, directory: str, is_package: bool) -> None:
        self._importer = importer
        self._files = importer._files
        self._rel = rel
        self._directory = directory  # where the module's resources live, relative to the root
        self._is_package = is_package
        self.path = self._files.abspath(rel)

    def is_package(self, fullname: str) -> bool:
        return self._is_package

    def get_data(self, path: str) -> bytes:
        return self._files.read(self._files.relative(path))

    def get_resource_reader(self, fullname: str) -> TraversableResources:
        return _Resources(_VerifiedTraversable(self._files, self._directory))


class _NamespaceLoader(_LoaderBase):
    """A directory of signed files with no `__init__`: a namespace package that runs no code."""

    def exec_module(self, module: ModuleType) -> None:
        pass


class _SourceLoader(_LoaderBase, importlib.abc.ExecutionLoader):
    def __init__(self, importer: VerifiedImporter, rel: str, directory: str, is_package: bool) -> None:
        super().__init__(importer, rel, directory, is_package)
        self._text: str | None = None  # the verified source, kept for tracebacks and inspect

    def get_filename(self, fullname: str) -> str:
        return self.path

    def get_code(self, fullname: str) -> CodeType:
        data = self._files.read(self._rel, fullname)
        self._text = importlib.util.decode_source(data)
        lines = self._text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        # mtime None: linecache.checkcache keeps the entry, so rewriting the file cannot change tracebacks.
        linecache.cache[self.path] = (len(data), None, lines, self.path)
        # An unchecked tree has no digest to key the code cache by: key it by the bytes read.
        digest = self._files.tree.digests[self._rel] if self._files.tree.checked else hashlib.sha256(data).hexdigest()
        return self._importer._compile(data, digest, self.path)

    def get_source(self, fullname: str) -> str:
        # Serve the text that ran, not the file as it is now: linecache asks us once the file
        # is gone, and an ImportError here would send it to whatever is on disk.
        if self._text is None:
            self._text = importlib.util.decode_source(self._files.read(self._rel, fullname))
        return self._text

    def exec_module(self, module: ModuleType) -> None:
        code = self.get_code(module.__name__)
        exec(code, module.__dict__)  # noqa: S102 - these are the verified bytes; running them is the point


class _ExtensionLoader(_LoaderBase):
    """Check a C extension, then load it from a private copy so the check and dlopen see the same bytes."""

    _inner: importlib.machinery.ExtensionFileLoader | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        copy = self._importer._private_copy(self._rel, spec.name)
        self._inner = importlib.machinery.ExtensionFileLoader(spec.name, copy)
        return self._inner.create_module(importlib.machinery.ModuleSpec(spec.name, self._inner, origin=copy))

    def exec_module(self, module: ModuleType) -> None:
        if self._inner is None:
            raise ImportError(f"extension {self._rel} was not created by this loader", name=module.__name__)
        self._inner.exec_module(module)
        module.__file__ = self.path  # single-phase init sets the copy's path; report the real one


class _PackageDirFinder(importlib.abc.PathEntryFinder):
    """Stands in `sys.path_importer_cache` for a plugin directory, so pkgutil lists only signed modules."""

    def __init__(self, importer: VerifiedImporter, directory: str) -> None:
        self._importer = importer
        self._directory = directory

    def find_spec(self, fullname: str, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        return self._importer.find_spec(fullname, None, target)

    def invalidate_caches(self) -> None:
        pass

    def iter_modules(self, prefix: str = "") -> Iterator[tuple[str, bool]]:
        files = self._importer._files
        seen: set[str] = set()
        for name in sorted(files.children.get(self._directory, ())):
            rel = posixpath.join(self._directory, name)
            if rel in files.children:
                is_pkg = any(
                    f"{rel}/__init__{suffix}" in files.tree.digests for suffix, kind in _SUFFIXES if kind != "bytecode"
                )
                stem = name if is_pkg else ""
            else:
                is_pkg = False
                stem = next((name[: -len(s)] for s, kind in _SUFFIXES if kind != "bytecode" and name.endswith(s)), "")
            if stem.isidentifier() and stem != "__init__" and stem not in seen:
                seen.add(stem)
                yield prefix + stem, is_pkg
