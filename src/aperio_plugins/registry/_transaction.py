"""All-or-nothing changes to the plugins directory: a journal of renames, undone on failure or after a crash.

Installing or removing a plugin moves a few top-level entries (package folders,
the `.dist-info`) in or out of the plugins directory. Each rename is atomic; the
journal, written and synced before the first one, lists them all. Deleting the
journal commits the change. If the process fails, is interrupted, or is killed
before that, the renames that happened are undone in reverse order, at once or by
`recover()` at the start of the next operation, so the directory is as it was.
A rename happened exactly when its destination exists and its source does not:
every destination is free before its move.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .._atomic import sync_directory, write_atomically
from .._preflight import JOURNAL_NAME, control_dir
from .._untrusted_json import loads_bounded
from ..errors import InstallError

LOCK_NAME = "lock"


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _undo(plugins_dir: Path, moves: list[tuple[str, str]]) -> None:
    for source, destination in reversed(moves):
        source_path, destination_path = plugins_dir / source, plugins_dir / destination
        if os.path.lexists(destination_path) and not os.path.lexists(source_path):
            source_path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(destination_path, source_path)


class Transaction:
    """One journaled change of a locked plugins directory. Use `PluginsDirectoryLock.transaction()`."""

    def __init__(self, plugins_dir: Path, work_dir: Path) -> None:
        self.plugins_dir = plugins_dir
        self.work_dir = work_dir
        self._moves: list[tuple[str, str]] = []

    def move(self, source: Path, destination: Path) -> None:
        """Plan a rename; both paths must lie inside the plugins directory."""
        self._moves.append(
            (source.relative_to(self.plugins_dir).as_posix(), destination.relative_to(self.plugins_dir).as_posix())
        )

    def apply(self) -> None:
        journal = control_dir(self.plugins_dir) / JOURNAL_NAME
        document = {"work_dir": self.work_dir.relative_to(self.plugins_dir).as_posix(), "moves": self._moves}
        write_atomically(journal, json.dumps(document).encode(), durable=True)
        done: list[tuple[str, str]] = []
        try:
            for source, destination in self._moves:
                destination_path = self.plugins_dir / destination
                if os.path.lexists(destination_path):
                    raise InstallError(f"{destination_path} appeared during the operation; nothing was changed")
                destination_path.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self.plugins_dir / source, destination_path)
                done.append((source, destination))
            sync_directory(self.plugins_dir)
        except BaseException:
            _undo(self.plugins_dir, done)
            journal.unlink(missing_ok=True)
            raise
        journal.unlink()  # the commit
        sync_directory(journal.parent)


class PluginsDirectoryLock:
    """An exclusive lock on a plugins directory, held while it is changed; recovers a crashed change first."""

    def __init__(self, plugins_dir: Path) -> None:
        self.plugins_dir = plugins_dir
        self._descriptor: int | None = None

    def __enter__(self) -> PluginsDirectoryLock:
        control = control_dir(self.plugins_dir)
        try:
            control.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._descriptor = os.open(control / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InstallError(f"cannot use plugins directory {self.plugins_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._descriptor)
            self._descriptor = None
            raise InstallError(
                f"plugins directory {self.plugins_dir} is being changed by another aperio process; try again"
            ) from None
        try:
            self.recover()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def recover(self) -> bool:
        """Undo a change that was interrupted before it committed, and drop leftover work folders.

        Returns whether there was a change to undo.
        """
        control = control_dir(self.plugins_dir)
        journal = control / JOURNAL_NAME
        recovered = False
        if journal.exists():
            try:
                document = loads_bounded(journal.read_bytes())
                moves = [(str(source), str(destination)) for source, destination in document["moves"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise InstallError(
                    f"{journal} is unreadable ({exc}); the plugins directory may hold a half-made change:"
                    " check it by hand, then delete the journal"
                ) from None
            _undo(self.plugins_dir, moves)
            journal.unlink()
            recovered = True
        for leftover in control.glob("work-*"):
            _remove_tree(leftover)
        return recovered

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Yield a transaction with its own work folder; the planned moves run when the block ends
        without an error. The work folder (staging area and what was moved out) is deleted afterwards."""
        if self._descriptor is None:
            raise InstallError("the plugins directory lock is not held")
        work_dir = control_dir(self.plugins_dir) / f"work-{uuid.uuid4().hex}"
        work_dir.mkdir(mode=0o700)
        try:
            transaction = Transaction(self.plugins_dir, work_dir)
            yield transaction
            transaction.apply()
        finally:
            _remove_tree(work_dir)
