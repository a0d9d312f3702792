"""Workers' private directories: one per worker process, under one directory per host process.

    $TMPDIR/aperio-workers-<uid>/host-<pid>-<start time>/aperio-worker-<plugin>-XXXX/

A worker's directory is removed when its process has exited, whatever ended
it. A host that was SIGKILLed cannot remove anything; the next host of the same
user that starts a worker removes every host directory whose owner (pid and
start time, so that a reused pid does not count) is no longer running. Without
a sandbox a host also records there each worker's process group, and that next
host kills what is left in the groups of a dead host's workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

_ROOT_PREFIX = "aperio-workers-"
_HOST_PREFIX = "host-"


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def runtime_root() -> Path:
    """Return this user's directory of host directories, created 0700.

    Raises `PermissionError` when it exists but is not a private directory of
    this user: in a shared temporary directory another user could have planted it.
    """
    root = Path(tempfile.gettempdir()) / f"{_ROOT_PREFIX}{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{root} is not a directory that only this user (uid {os.getuid()}) can use"
            f" (owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); remove it"
        )
    return root


def _host_directory_name() -> str:
    return f"{_HOST_PREFIX}{os.getpid()}-{_start_time(os.getpid()) or 0}"


def sweep(root: Path) -> list[Path]:
    """Remove the host directories in `root` whose host is no longer running; return them."""
    removed: list[Path] = []
    for entry in root.iterdir():
        name = entry.name
        if not name.startswith(_HOST_PREFIX):
            continue
        pid, _, started = name[len(_HOST_PREFIX) :].partition("-")
        if pid.isdigit() and _start_time(int(pid)) == started:
            continue  # its host is running (possibly this one)
        for record in entry.glob("*.group"):
            _kill_left_group(record)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def private_directory(plugin_id: str) -> Path:
    """Create a worker's private directory (0700), after removing what dead hosts left behind."""
    safe = "".join(char if char.isalnum() or char in "._-" else "_" for char in plugin_id)[:60]
    root = runtime_root()
    sweep(root)
    host = root / _host_directory_name()
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            host.mkdir(mode=0o700)
        try:
            return Path(tempfile.mkdtemp(prefix=f"aperio-worker-{safe}-", dir=host))
        except FileNotFoundError:
            continue  # another worker's removal took the (empty) host directory away just now
    raise FileNotFoundError(f"could not create a private directory for a worker under {host}")


def record_group(path: Path, pid: int) -> None:
    """Note that the worker whose directory is `path` leads process group `pid` (subreaper containment)."""
    _group_record(path).write_text(f"{pid} {_start_time(pid) or 0}\n")


def _group_record(path: Path) -> Path:
    # Beside the worker's directory, not in it: under bubblewrap that is all a worker may write.
    return path.with_name(path.name + ".group")


def _kill_left_group(record: Path) -> None:
    try:
        pid_text, started = record.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    if pid <= 1:
        return
    if _start_time(pid) not in (None, started):
        return  # the pid names another process now: the group, if it is left, is not ours to tell
    # The worker is gone (or still there after its host's death): a pid still naming a group cannot
    # be given to a new process, so this reaches only what the worker left in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def remove_private_directory(path: Path) -> None:
    """Remove a worker's directory, and its host directory once that is empty."""
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        _group_record(path).unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # fails while another worker of this host has its directory there


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A private directory for a moment (the sandbox probe binds one, as a worker's will be)."""
    path = private_directory("probe")
    try:
        yield path
    finally:
        remove_private_directory(path)
