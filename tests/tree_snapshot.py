"""A directory's files and their digests, to show that an operation changed nothing (or exactly what)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its sha256; the plugins directory's lock file and work folders aside."""
    if not directory.exists():
        return {}
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative != ".aperio/lock" and not relative.startswith(".aperio/work-"):
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files
