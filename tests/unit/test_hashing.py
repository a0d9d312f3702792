"""The verify stage's file hashing: parallel for a large plugin, and exactly hashlib's digests."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from aperio_plugins._hashing import PARALLEL_FROM_FILES, file_sha256, hash_files


def _write(root: Path, count: int) -> dict[str, bytes]:
    contents = {f"pkg/f{index:04d}.bin": os.urandom(4096 + index) for index in range(count)}
    for relative, data in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return contents


@pytest.mark.parametrize("count", [1, PARALLEL_FROM_FILES - 1, PARALLEL_FROM_FILES, 500])
def test_digests_are_hashlibs_for_every_file(tmp_path: Path, count: int) -> None:
    contents = _write(tmp_path, count)
    digests = hash_files(str(tmp_path), list(contents))
    assert digests == {path: hashlib.sha256(data).hexdigest() for path, data in contents.items()}


def test_a_large_plugin_is_hashed_by_more_than_one_thread(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: hashing stays in the calling thread")
    contents = _write(tmp_path, 300)
    seen: set[int] = set()
    original = hashlib.sha256

    def counting(*args: object) -> object:
        seen.add(threading.get_ident())
        return original(*args)  # type: ignore[arg-type]

    hashlib.sha256 = counting  # type: ignore[assignment]
    try:
        hash_files(str(tmp_path), list(contents))
    finally:
        hashlib.sha256 = original
    assert len(seen) >= 2


def test_tampered_and_missing_files_in_any_threads_share_are_reported(tmp_path: Path) -> None:
    contents = _write(tmp_path, 400)
    paths = list(contents)
    # The first and last files land in different threads' strided slices.
    (tmp_path / paths[1]).write_bytes(b"tampered")
    (tmp_path / paths[-1]).unlink()
    digests = hash_files(str(tmp_path), paths)
    assert (
        digests[paths[1]] == hashlib.sha256(b"tampered").hexdigest() != hashlib.sha256(contents[paths[1]]).hexdigest()
    )
    assert digests[paths[-1]] is None
    assert digests[paths[0]] == hashlib.sha256(contents[paths[0]]).hexdigest()


def test_the_callers_work_runs_once_while_hashing_and_its_error_is_raised_after(tmp_path: Path) -> None:
    contents = _write(tmp_path, 200)
    calls: list[int] = []
    threads_before = threading.active_count()

    def walk() -> None:
        calls.append(1)
        raise RuntimeError("walk failed")

    with pytest.raises(RuntimeError, match="walk failed"):
        hash_files(str(tmp_path), list(contents), while_hashing=walk)
    assert calls == [1]
    assert threading.active_count() == threads_before  # every hashing thread was joined


def test_an_unreadable_path_has_no_digest(tmp_path: Path) -> None:
    assert file_sha256(str(tmp_path / "absent")) is None
    assert file_sha256(str(tmp_path)) is None  # a directory
