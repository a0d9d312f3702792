"""Private copies of a plugin's C extensions: dlopen re-opens the path it is given, so the bytes that
were checked are copied into a 0700 directory of ours and loaded from there."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable

from ._files import _SignedFiles


class ExtensionCopies:
    """Checked copies of one plugin's extensions and vendored libraries, removed by `remove()` or at exit."""

    def __init__(self, files: _SignedFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._copies: str | None = None
        self._cleanup: Callable[[], object] | None = None

    def private_copy(self, rel: str, module: str) -> str:
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

    def remove(self) -> None:
        """Delete the copies (mapped libraries stay loaded; only the private files go)."""
        if self._cleanup is not None:
            self._cleanup()
