"""A directory's files and their digests, to show that an operation changed nothing (or exactly what)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
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


def run_killed_after_renames(count: int, body: str) -> subprocess.CompletedProcess[str]:
    """Run the Python `body` in a child process that SIGKILLs itself right after its `count`-th
    `os.rename`: a crash in the middle of changing a directory, at a chosen point."""
    prologue = textwrap.dedent(
        f"""
        import os, signal
        _real_rename, _renames = os.rename, []
        def _rename_then_maybe_die(source, destination):
            _real_rename(source, destination)
            _renames.append(source)
            if len(_renames) == {count}:
                os.kill(os.getpid(), signal.SIGKILL)
        os.rename = _rename_then_maybe_die
        """
    )
    script = prologue + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
