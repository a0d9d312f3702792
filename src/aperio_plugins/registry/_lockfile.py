"""The plugin lock file: ids, versions, sources and digests of what is installed, to reinstall exactly that.

A plugin release is one artifact (a wheel) listed once in an index, so its digest
is the same on every platform: a lock made on one host installs byte-identical
plugins on any other.

    {"format_version": 1, "plugins": [{"plugin_ids": ["acme.box-connector"],
      "distribution": "acme-box-connector", "version": "1.2.0",
      "sha256": "…", "source": "https://registry.example/index.json"}]}

`source` is the index the release was resolved from, an `oci://` reference pinned
by manifest digest, or a `file:` URL for a wheel installed from disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._atomic import write_atomically
from .._validation import first_problem
from ..errors import IndexFormatError
from ._index import versioned_document

LOCK_FORMAT_VERSION = 1
DEFAULT_LOCK_FILE = "aperio-plugins.lock"
_MAX_LOCK_BYTES = 4 * 1024 * 1024


class LockedRelease(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    plugin_ids: Annotated[list[str], Field(min_length=1)]
    distribution: str
    version: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    source: Annotated[str, Field(min_length=1)]


class LockFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1]
    plugins: list[LockedRelease]


def read_lock_file(path: Path) -> LockFile:
    """Return the lock file at `path`; raise `IndexFormatError` naming the file and the problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFormatError(f"cannot read lock file {path}: {exc.strerror or exc}") from None
    document = versioned_document(data, f"lock file {path}", LOCK_FORMAT_VERSION, _MAX_LOCK_BYTES)
    try:
        return LockFile.model_validate(document)
    except ValidationError as exc:
        raise IndexFormatError(f"lock file {path} is invalid: {first_problem(exc)}") from None


def write_lock_file(path: Path, lock: LockFile) -> None:
    """Write `lock` to `path` atomically."""
    write_atomically(path, (json.dumps(lock.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode())
