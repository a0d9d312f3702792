"""The signed file list of one plugin, and the one place its files are read: each read checks the sha256."""

from __future__ import annotations

import errno
import hashlib
import hmac
import importlib.machinery
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..errors import TamperedFileError, VerificationError

# FileFinder's order of preference, which an attacker would exploit: an extension
# shadows source, and source shadows a legacy sourceless .pyc.
_SUFFIXES = (
    [(suffix, "extension") for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    + [(suffix, "source") for suffix in importlib.machinery.SOURCE_SUFFIXES]
    + [(suffix, "bytecode") for suffix in importlib.machinery.BYTECODE_SUFFIXES]
)
_HEX = frozenset("0123456789abcdef")


class VerifiedTree(msgspec.Struct, frozen=True):
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
