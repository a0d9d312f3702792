"""Download progress on a terminal: a rich bar per transfer, or nothing when nobody watches."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from ._transfer import NoProgress, Progress


class TerminalProgress:
    """A `Progress` drawn by rich on `console`: name, bar, bytes so far of the total, speed, time left.

    One bar per transfer, left on screen when it finishes; a new rich display is
    made for each transfer, so that one finished bar is not redrawn under the next.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._display: RichProgress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self.finish()
        self._display = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._display.start()
        self._task = self._display.add_task(description, total=total)

    def advance(self, size: int) -> None:
        if self._display is not None and self._task is not None:
            self._display.advance(self._task, size)

    def finish(self) -> None:
        if self._display is not None:
            self._display.stop()
        self._display = None
        self._task = None


def terminal_progress(stream: TextIO | None = None) -> Progress:
    """Return a `TerminalProgress` on `stream` (default: standard error) if it is a terminal, else `NoProgress`."""
    stream = sys.stderr if stream is None else stream
    try:
        interactive = stream.isatty()
    except ValueError:  # a closed stream watches nothing
        interactive = False
    if not interactive:
        return NoProgress()
    return TerminalProgress(Console(file=stream))
