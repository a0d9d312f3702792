"""Load: execute exactly the bytes that verification hashed.

`VerifiedImporter` sits first in `sys.meta_path`. For the import names a plugin
owns it answers from the signed file list alone: it never reads `__pycache__`,
never lets a name fall through to `PathFinder` (which would find files added
after signing), reads each file once, checks its sha256 and compiles those same
bytes. Resources, `get_data`, tracebacks and C extensions go through the same
check. FACTS.md, "Importing only verified bytes", records why each piece exists.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import importlib.abc
import importlib.machinery
import importlib.util
import io
import linecache
import marshal
import os
import posixpath
import shutil
import stat
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import IO, TYPE_CHECKING, Literal, overload

from .._atomic import write_atomically
from ..errors import TamperedFileError, VerificationError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable, TraversableResources
else:  # these moved in 3.11; the old names are gone in 3.14
    from importlib.abc import Traversable, TraversableResources

if TYPE_CHECKING:
    from _typeshed import StrPath

__all__ = [
    "VerifiedTree",
    "VerifiedImporter",
    "ImportStats",
    "TamperedFileError",
    "install_importer",
    "remove_importer",
]

# FileFinder's order of preference, which an attacker would exploit: an extension
# shadows source, and source shadows a legacy sourceless .pyc.
_SUFFIXES = (
    [(suffix, "extension") for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    + [(suffix, "source") for suffix in importlib.machinery.SOURCE_SUFFIXES]
    + [(suffix, "bytecode") for suffix in importlib.machinery.BYTECODE_SUFFIXES]
)
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class VerifiedTree:
    """The verify stage's result that the load stage consumes."""

    plugin_id: str
    root: Path  # the search-path directory the distribution is installed in
    digests: Mapping[str, str]  # POSIX path relative to root -> lowercase sha256 hex
    packages: frozenset[str]  # import names the plugin owns, usually top-level ("acme_box")
    # False for unsigned code (warn or disabled trust mode): the files are the distribution's
    # RECORD, which scopes what is importable, and the digests are empty and not checked.
    checked: bool = True

    @property
    def listing(self) -> str:
        return "the signed file list" if self.checked else "its RECORD"


@dataclass
class ImportStats:
    """Counters of what an importer did, for tests and diagnostics."""

    compiled: int = 0  # source files compiled; a warm code cache keeps this at 0
    cache_hits: int = 0
    cache_rejected: int = 0  # cache files ignored: not ours, writable by others, or unreadable


def _read_regular_file(path: str) -> bytes:
    # O_NONBLOCK: a FIFO swapped in for a listed file must fail here, not hang the host in open().
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return handle.read()


def _private(st: os.stat_result) -> bool:
    """Return True if only the current user can have written the file or directory `st` describes."""
    return hasattr(os, "getuid") and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class _SignedFiles:
    """The verified view of one plugin's files, by POSIX path relative to the root."""

    def __init__(self, tree: VerifiedTree) -> None:
        self.tree = tree
        self.root = os.path.abspath(tree.root)
        self.children: dict[str, set[str]] = {}  # directory ("" is the root) -> names listed in it
        self.refusals: list[TamperedFileError] = []
        for rel, digest in tree.digests.items():
            parts = rel.split("/")
            if "\\" in rel or any(part in ("", ".", "..") for part in parts):
                raise VerificationError(
                    f"signed path {rel!r} is not a normalized relative POSIX path", plugin_id=tree.plugin_id
                )
            if tree.checked and (len(digest) != 64 or not set(digest) <= _HEX):
                raise VerificationError(f"digest of {rel} is not a lowercase sha256 hex", plugin_id=tree.plugin_id)
            for depth, part in enumerate(parts):
                self.children.setdefault("/".join(parts[:depth]), set()).add(part)
        for name in tree.packages:
            if not name or not all(part.isidentifier() for part in name.split(".")):
                raise VerificationError(f"package name {name!r} is not an import name", plugin_id=tree.plugin_id)
        # auditwheel vendors shared libraries into `<pkg>.libs/`; an extension finds them via $ORIGIN.
        self.vendored = sorted(rel for rel in tree.digests if any(p.endswith(".libs") for p in rel.split("/")[:-1]))

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def relative(self, path: str) -> str:
        # A path outside the root comes back with "..", which no signed path contains.
        return os.path.relpath(os.path.abspath(path), self.root).replace(os.sep, "/")

    def refuse(self, message: str, rel: str, module: str | None) -> TamperedFileError:
        """Record and return the error; recorded because plugin code may swallow an ImportError."""
        error = TamperedFileError(
            f"plugin {self.tree.plugin_id}: {message}",
            plugin_id=self.tree.plugin_id,
            path=self.abspath(rel),
            name=module,
        )
        self.refusals.append(error)
        return error

    def read(self, rel: str, module: str | None = None) -> bytes:
        """Return the bytes of signed file `rel`, read once and checked against its digest.

        Raises FileNotFoundError if `rel` is not signed, TamperedFileError if it changed or vanished.
        """
        expected = self.tree.digests.get(rel)
        if expected is None:
            raise FileNotFoundError(errno.ENOENT, f"not in {self.tree.listing} of {self.tree.plugin_id}", rel)
        try:
            data = _read_regular_file(self.abspath(rel))
        except OSError as exc:
            raise self.refuse(f"{rel} cannot be read since verification: {exc.strerror or exc}", rel, module) from exc
        if self.tree.checked and not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected):
            raise self.refuse(
                f"{rel} changed after verification: its sha256 does not match the signed list", rel, module
            )
        return data


class _VerifiedTraversable(Traversable):
    """A file or directory of the signed list; reading checks the digest (a pathlib.Path would not)."""

    def __init__(self, files: _SignedFiles, rel: str) -> None:
        self._files = files
        self._rel = rel

    def __repr__(self) -> str:
        return f"<signed file {self._rel or '.'} of plugin {self._files.tree.plugin_id}>"

    @property
    def name(self) -> str:
        return posixpath.basename(self._rel)

    def is_file(self) -> bool:
        return self._rel in self._files.tree.digests

    def is_dir(self) -> bool:
        return self._rel in self._files.children

    def iterdir(self) -> Iterator[Traversable]:
        names = self._files.children.get(self._rel)
        if names is None:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory of signed files", self._rel)
        return iter([self.joinpath(name) for name in sorted(names)])

    def joinpath(self, *descendants: StrPath) -> Traversable:
        parts = [self._rel] if self._rel else []
        for descendant in descendants:
            parts.extend(part for part in os.fspath(descendant).split("/") if part not in ("", "."))
        return _VerifiedTraversable(self._files, "/".join(parts))

    def __truediv__(self, child: StrPath) -> Traversable:
        return self.joinpath(child)

    def read_bytes(self) -> bytes:
        return self._files.read(self._rel)

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        with self.open("r", encoding=encoding, errors=errors) as handle:
            return handle.read()

    @overload
    def open(self, mode: Literal["r"] = "r", *, encoding: str | None = None, errors: str | None = None) -> IO[str]: ...
    @overload
    def open(self, mode: Literal["rb"]) -> IO[bytes]: ...
    def open(self, mode: str = "r", *, encoding: str | None = None, errors: str | None = None) -> IO[str] | IO[bytes]:
        if mode == "rb":
            return io.BytesIO(self.read_bytes())
        if mode == "r":
            return io.TextIOWrapper(io.BytesIO(self.read_bytes()), encoding=encoding, errors=errors)
        raise ValueError(f"signed files open read-only ('r' or 'rb'), not {mode!r}")


class _Resources(TraversableResources):
    def __init__(self, root: Traversable) -> None:
        self._root = root

    def files(self) -> Traversable:
        return self._root


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


class _CodeCache:
    """Marshalled code objects in a directory only the current user can write.

    `marshal.loads` of planted data runs the planter's code, so a directory or file that
    another user owns or can write is ignored (and never chmod-ed into shape).
    """

    def __init__(self, directory: Path, stats: ImportStats) -> None:
        self._dir = directory
        self._stats = stats

    def _usable(self) -> bool:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(self._dir)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and _private(st)

    def _file(self, digest: str, filename: str) -> Path:
        # The path is in the key because it is compiled into co_filename; -O changes the code too.
        key = f"{digest}\0{filename}\0{importlib.util.MAGIC_NUMBER.hex()}\0{sys.flags.optimize}"
        return self._dir / (hashlib.sha256(key.encode()).hexdigest() + ".code")

    def load(self, digest: str, filename: str) -> CodeType | None:
        if not self._usable():
            return None
        try:
            fd = os.open(self._file(digest, filename), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with open(fd, "rb") as handle:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) and _private(st)):
                self._stats.cache_rejected += 1
                return None
            data = handle.read()
        try:
            code = marshal.loads(data)  # noqa: S302 - written by this user into a directory only it can write
        except (EOFError, ValueError, TypeError):
            self._stats.cache_rejected += 1
            return None
        if not (isinstance(code, CodeType) and code.co_filename == filename):
            self._stats.cache_rejected += 1
            return None
        return code

    def store(self, digest: str, filename: str, code: CodeType) -> None:
        if not self._usable():
            return
        try:
            write_atomically(self._file(digest, filename), marshal.dumps(code))  # 0600, like every cache file
        except OSError:
            return  # a cache that cannot be written only costs the next import its speed-up


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
        self._lock = threading.Lock()
        self._copies: str | None = None  # private directory of checked extension copies
        self._cleanup: Callable[[], object] | None = None
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
        """Check `rel` and its vendored libraries; return the path of a private copy for dlopen.

        dlopen re-opens whatever path it is given, so a check of the original is a race;
        the copy lives in a 0700 directory of ours, holding the bytes that were hashed.
        """
        data = self._files.read(rel, module)  # re-checked on every load, so reload re-checks
        with self._lock:
            if self._copies is None:
                self._copies = tempfile.mkdtemp(prefix="aperio-ext-")
                self._cleanup = weakref.finalize(self, shutil.rmtree, self._copies, True)
            # Vendored libraries are found through $ORIGIN, relative to the copy; copy them alongside.
            for name in [rel, *self._files.vendored]:
                self._write_copy(self._copies, name, data if name == rel else None, module)
            return os.path.join(self._copies, *rel.split("/"))

    def _write_copy(self, copies: str, rel: str, data: bytes | None, module: str) -> None:
        target = os.path.join(copies, *rel.split("/"))
        if os.path.lexists(target):
            return  # written by us from checked bytes, and the digests never change
        if data is None:
            data = self._files.read(rel, module)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o500)
        try:
            with open(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            os.unlink(target)  # a partial copy would otherwise be taken as complete next time
            raise

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
        if self._cleanup is not None:
            self._cleanup()  # mapped libraries stay loaded; only the private files go


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
