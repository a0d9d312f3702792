"""Checks on the plugins and keys directories that loading and installing both make before they trust them.

Both the host (at each discovery) and the registry client (before an install)
import this module; neither imports the other for it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# The plugins directory's own control folder: the lock and the journal of a change in progress.
CONTROL_DIR_NAME = ".aperio"
JOURNAL_NAME = "journal.json"


def control_dir(plugins_dir: Path) -> Path:
    return plugins_dir / CONTROL_DIR_NAME


def interrupted_change(plugins_dir: Path) -> Path | None:
    """Return the journal of a change to `plugins_dir` that was interrupted and not yet rolled back."""
    journal = control_dir(plugins_dir) / JOURNAL_NAME
    return journal if journal.exists() else None


def writable_by_others(path: Path) -> str | None:
    """Return why users other than the owner could change `path`'s contents, or None."""
    try:
        status = path.stat()
    except OSError:
        return None
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"mode {stat.filemode(status.st_mode)} lets group or others write"
    if status.st_uid not in (os.geteuid(), 0):
        return f"owned by uid {status.st_uid}, not by this user ({os.geteuid()}) or root"
    return None
