"""Replace a file whole: readers see the old contents or the new, never half of either.

The one atomic file writer of the package: the discovery cache, the code cache, signed
wheels, OCI downloads and the plugins directory's journal all write through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replaced_atomically(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary stream to a new file (mode 0600) beside `path`; rename it over `path` when the
    block ends without an exception, delete it when one escapes (and re-raise it).

    With `durable`, the file and its directory are synced first, so that the new
    contents survive a power loss once the block has ended (what a journal needs).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        sync_directory(path.parent)


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to a temporary file beside `path` and rename it into place (see `replaced_atomically`)."""
    with replaced_atomically(path, durable=durable) as stream:
        stream.write(data)


def sync_directory(path: Path) -> None:
    """Make renames into and out of the directory `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
