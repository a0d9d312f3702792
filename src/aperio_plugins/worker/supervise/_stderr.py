"""A worker's stderr, turned into `plugin.worker.stderr` events of the host, within limits.

Every byte is read (a worker blocked on a full pipe would stop serving), but
only a bounded amount becomes events: each line is cut at a length limit and a
token bucket caps bytes per second after a burst. What is dropped is counted
and reported in `plugin.worker.stderr.dropped`, at most once a second. Memory
is bounded by one read chunk plus one line.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

from .._settings import WorkerSettings

_CHUNK = 1 << 16
_REPORT_INTERVAL = 1.0


class StderrPump:
    """Reads one worker's stderr on its own thread until end of file."""

    def __init__(self, fd: int, logger: Any, options: WorkerSettings) -> None:
        self._fd = fd
        self._logger = logger
        self._limit = options.stderr_line_limit
        self._rate = options.stderr_bytes_per_second
        self._burst = options.stderr_burst_bytes
        self._tokens = float(self._burst)
        self._refilled = time.monotonic()
        self._line = bytearray()
        self._cut = 0  # bytes of the current line beyond the limit
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._reported = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="aperio-worker-stderr", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while True:
                # While drops are unreported, wake up to report them even if the worker falls silent.
                if not poller.poll(int(_REPORT_INTERVAL * 1000) if self._dropped_lines else None):
                    self._report()
                    continue
                try:
                    chunk = os.read(self._fd, _CHUNK)
                except OSError:
                    break
                if not chunk:
                    break
                self._feed(chunk)
            if self._line or self._cut:
                self._finish_line()
            self._report(force=True)
        except Exception:  # noqa: BLE001 - a logger failure must not leave the pipe unread
            self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._fd, _CHUNK):
                pass
        except OSError:
            return

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self._burst), self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def _feed(self, chunk: bytes) -> None:
        self._refill()
        if self._tokens <= 0:
            self._drop_chunk(chunk)
        else:
            *complete, rest = chunk.split(b"\n")
            for piece in complete:
                self._append(piece)
                self._finish_line()
            self._append(rest)
        self._report()

    def _drop_chunk(self, chunk: bytes) -> None:
        # The fast path while over the rate: count, do not split. A flood costs one scan per 64 KiB.
        newlines = chunk.count(b"\n")
        if newlines == 0:
            self._append(chunk)
            return
        self._dropped_lines += newlines
        tail = chunk.rsplit(b"\n", 1)[1]
        self._dropped_bytes += len(chunk) - len(tail) + len(self._line) + self._cut
        self._line.clear()
        self._cut = 0
        self._append(tail)

    def _append(self, piece: bytes) -> None:
        room = self._limit - len(self._line)
        if len(piece) <= room:
            self._line += piece
        else:
            self._line += piece[: max(room, 0)]
            self._cut += len(piece) - max(room, 0)

    def _finish_line(self) -> None:
        if self._tokens <= 0:
            self._dropped_lines += 1
            self._dropped_bytes += len(self._line) + self._cut + 1
        else:
            self._tokens -= len(self._line) + 1  # what reaches the log counts, not what was cut
            text = self._line.decode("utf-8", "replace").rstrip("\r")
            if self._cut:
                self._logger.info("plugin.worker.stderr", line=text, truncated_bytes=self._cut)
            else:
                self._logger.info("plugin.worker.stderr", line=text)
        self._line.clear()
        self._cut = 0

    def _report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._dropped_lines and (force or now - self._reported >= _REPORT_INTERVAL):
            self._logger.warning("plugin.worker.stderr.dropped", lines=self._dropped_lines, bytes=self._dropped_bytes)
            self._dropped_lines = self._dropped_bytes = 0
            self._reported = now
