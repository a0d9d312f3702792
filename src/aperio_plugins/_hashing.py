"""Hash many installed files at once: the verify stage's file digests, spread over the CPU's cores.

`hashlib` releases the GIL while it hashes a buffer of more than 2 kB, and so do the
`open` and `read` system calls, so threads hash files in parallel. A thread pool is
worth its start-up (about 0.1 ms) only for a large plugin; a small one is hashed in
the calling thread. No pool outlives a call: there is no module-level state.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence

# Below this many files, a plugin is hashed in the calling thread (measured: 20 files
# of 10 kB take about 0.3 ms, as long as starting the threads).
PARALLEL_FROM_FILES = 64
_CHUNK = 1 << 20


def file_sha256(path: str) -> str | None:
    """Return the sha256 (hex) of the file at `path`, or None when it cannot be read."""
    # os.open and os.read: the io stack's objects cost more than hashing a 10 kB file, and every
    # one of them is made holding the GIL that the other hashing threads wait for.
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    digest = hashlib.sha256()
    try:
        while chunk := os.read(descriptor, _CHUNK):
            digest.update(chunk)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return digest.hexdigest()


def _workers() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def hash_files(
    base: str, paths: Sequence[str], *, while_hashing: Callable[[], None] | None = None
) -> dict[str, str | None]:
    """Return the sha256 of each of `paths` (relative to `base`); None for a file that cannot be read.

    `while_hashing`, if given, runs in the calling thread while the other threads hash
    (the verify stage walks the directory for unexpected files then); it runs exactly once,
    and an exception it raises is raised here after the hashing threads have finished.
    """
    workers = _workers()
    if len(paths) < PARALLEL_FROM_FILES or workers == 1:
        if while_hashing is not None:
            while_hashing()
        return {path: file_sha256(os.path.join(base, path)) for path in paths}
    results: dict[str, str | None] = {}
    # Strided slices: neighbouring files are often of similar size, so each thread gets a fair share.
    slices = [paths[index::workers] for index in range(workers)]

    def run(part: Sequence[str]) -> None:
        # dict assignment of distinct keys is atomic under the GIL; no lock is needed.
        for path in part:
            results[path] = file_sha256(os.path.join(base, path))

    threads = [threading.Thread(target=run, args=(part,), daemon=True) for part in slices[1:]]
    for thread in threads:
        thread.start()
    try:
        if while_hashing is not None:
            while_hashing()
        run(slices[0])
    finally:
        for thread in threads:
            thread.join()
    return results
