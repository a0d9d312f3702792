"""Hash many installed files at once: the verify stage's file digests, spread over the CPU's cores.

`hashlib` releases the GIL while it hashes a buffer of more than 2 kB, and so do the
`open` and `read` system calls, so threads can hash files in parallel. Whether they
should depends on the file's size: for a small file, the system calls and the hand-over
of the GIL between threads cost more than the hashing, and two threads take longer than
one (measured on two cores: 2,000 files of 10 kB, 28 ms in one thread, 30 ms in two;
1,250 files of 16 kB, 23 ms and 16 ms; 200 of 100 kB, 15 ms and 9 ms). So files that
RECORD says are large are shared out among threads, and the rest are hashed in the
calling thread. RECORD is not trusted for this: a wrong size there changes only which
thread hashes a file, never its digest. No pool outlives a call: there is no module-level
state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence

# From this size (as RECORD states it), a file is worth hashing on another thread.
PARALLEL_FROM_BYTES = 16 * 1024
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _sha256_of(path: str, directory: int | None = None) -> str | None:
    # os.open and os.read: the io stack's objects cost more than hashing a 10 kB file, and every
    # one of them is made holding the GIL. Opening relative to the base directory's descriptor
    # spares the kernel resolving the whole path for each of thousands of files.
    try:
        descriptor = os.open(path, _OPEN_FLAGS, dir_fd=directory)
    except OSError:
        return None
    try:
        digest = hashlib.sha256(os.read(descriptor, _CHUNK))
        while chunk := os.read(descriptor, _CHUNK):
            digest.update(chunk)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return digest.hexdigest()


def file_sha256(path: str) -> str | None:
    """Return the sha256 (hex) of the file at `path`, or None when it cannot be read."""
    return _sha256_of(path)


def _workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def hash_files(
    base: str,
    paths: Sequence[str],
    *,
    size_hints: Mapping[str, int] | None = None,
    while_hashing: Callable[[], None] | None = None,
) -> dict[str, str | None]:
    """Return the sha256 of each of `paths` (relative to `base`); None for a file that cannot be read.

    `size_hints` (path -> bytes, from RECORD) decides which files are worth another
    thread; a file without a hint is hashed in the calling thread. `while_hashing`, if
    given, runs in the calling thread while the other threads hash (the verify stage
    walks the directory for unexpected files then); it runs exactly once, and an
    exception it raises is raised here after the hashing threads have finished.
    """
    directory: int | None = None
    if os.open in os.supports_dir_fd:
        # Without it, every file fails to open by its full path as well, and reads as None.
        with contextlib.suppress(OSError):
            directory = os.open(base, _OPEN_FLAGS | os.O_DIRECTORY)
    try:
        return _hash_under(directory, base, paths, size_hints or {}, while_hashing)
    finally:
        if directory is not None:
            os.close(directory)


def _hash_under(
    directory: int | None,
    base: str,
    paths: Sequence[str],
    size_hints: Mapping[str, int],
    while_hashing: Callable[[], None] | None,
) -> dict[str, str | None]:
    def digest(path: str) -> str | None:
        return _sha256_of(path, directory) if directory is not None else _sha256_of(os.path.join(base, path))

    large = [path for path in paths if size_hints.get(path, 0) >= PARALLEL_FROM_BYTES]
    workers = min(_workers(), len(large))
    if workers < 2:
        if while_hashing is not None:
            while_hashing()
        return {path: digest(path) for path in paths}
    results: dict[str, str | None] = {}
    # Largest first from one shared queue, so that no thread is left with a big file at the end.
    # deque.popleft is atomic, and dict assignment of distinct keys is too: no lock is needed.
    queue = deque(sorted(large, key=lambda path: size_hints[path], reverse=True))
    chosen = set(large)

    def drain() -> None:
        while True:
            try:
                path = queue.popleft()
            except IndexError:
                return
            results[path] = digest(path)

    threads = [threading.Thread(target=drain, daemon=True) for _ in range(workers - 1)]
    for thread in threads:
        thread.start()
    try:
        if while_hashing is not None:
            while_hashing()
        for path in paths:
            if path not in chosen:
                results[path] = digest(path)
        drain()
    finally:
        for thread in threads:
            thread.join()
    return results
