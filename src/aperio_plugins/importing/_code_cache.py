"""A cache of compiled code objects keyed by the verified bytes' digest, in a directory only this user can write."""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import stat
import sys
from pathlib import Path
from types import CodeType

from .._atomic import write_atomically
from ._files import ImportStats, _private


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
