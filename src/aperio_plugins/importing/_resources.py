"""`importlib.resources` for a verified plugin: a `Traversable` whose reads check digests (a Path would not)."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Literal, overload

from ._files import _SignedFiles

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable, TraversableResources
else:  # these moved in 3.11; the old names are gone in 3.14
    from importlib.abc import Traversable, TraversableResources

if TYPE_CHECKING:
    from _typeshed import StrPath


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
