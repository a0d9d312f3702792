"""The verify stage's file hashing: large files on several threads, small ones in the caller, hashlib's digests."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from aperio_plugins._hashing import PARALLEL_FROM_BYTES, file_sha256, hash_files


def _write(root: Path, count: int, size: int = 4096) -> dict[str, bytes]:
    contents = {f"pkg/f{index:04d}.bin": os.urandom(size + index) for index in range(count)}
    for relative, data in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return contents


def _sizes(contents: dict[str, bytes]) -> dict[str, int]:
    return {path: len(data) for path, data in contents.items()}


@pytest.mark.parametrize(
    ("count", "size"), [(1, 10), (1, 2 * PARALLEL_FROM_BYTES), (2, PARALLEL_FROM_BYTES), (500, 4096)]
)
def test_digests_are_hashlibs_for_every_file(tmp_path: Path, count: int, size: int) -> None:
    contents = _write(tmp_path, count, size)
    assert hash_files(str(tmp_path), list(contents), size_hints=_sizes(contents)) == {
        path: hashlib.sha256(data).hexdigest() for path, data in contents.items()
    }


def _hashing_threads(tmp_path: Path, contents: dict[str, bytes], sizes: dict[str, int]) -> set[int]:
    seen: set[int] = set()
    original = hashlib.sha256

    def counting(*args: object) -> object:
        seen.add(threading.get_ident())
        return original(*args)  # type: ignore[arg-type]

    hashlib.sha256 = counting  # type: ignore[assignment]
    try:
        digests = hash_files(str(tmp_path), list(contents), size_hints=sizes)
    finally:
        hashlib.sha256 = original
    assert digests == {path: hashlib.sha256(data).hexdigest() for path, data in contents.items()}
    return seen


def test_large_files_are_hashed_by_more_than_one_thread(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: hashing stays in the calling thread")
    contents = _write(tmp_path, 60, PARALLEL_FROM_BYTES)
    assert len(_hashing_threads(tmp_path, contents, _sizes(contents))) >= 2


def test_small_files_and_files_without_a_size_stay_in_the_calling_thread(tmp_path: Path) -> None:
    small = _write(tmp_path, 300, 1024)
    assert _hashing_threads(tmp_path, small, _sizes(small)) == {threading.get_ident()}
    # A large file whose RECORD row gives no size is not known to be large.
    large = _write(tmp_path / "large", 10, 4 * PARALLEL_FROM_BYTES)
    assert _hashing_threads(tmp_path / "large", large, {}) == {threading.get_ident()}


def test_a_wrong_size_in_record_changes_the_thread_never_the_digest(tmp_path: Path) -> None:
    contents = _write(tmp_path, 40, 1024)
    lying = {path: 10**9 for path in contents}  # RECORD is unsigned: it may say anything
    _hashing_threads(tmp_path, contents, lying)  # asserts hashlib's digests inside


def test_tampered_and_missing_files_in_any_threads_share_are_reported(tmp_path: Path) -> None:
    contents = _write(tmp_path, 400, 1024)
    paths = list(contents)
    # Half the files are large by RECORD's word (shared out among threads), half are hashed by the caller.
    sizes = {path: PARALLEL_FROM_BYTES if index % 2 else 1024 for index, path in enumerate(paths)}
    (tmp_path / paths[1]).write_bytes(b"tampered")
    (tmp_path / paths[-1]).unlink()
    (tmp_path / paths[2]).write_bytes(b"tampered too")
    digests = hash_files(str(tmp_path), paths, size_hints=sizes)
    assert digests[paths[2]] == hashlib.sha256(b"tampered too").hexdigest()
    assert (
        digests[paths[1]] == hashlib.sha256(b"tampered").hexdigest() != hashlib.sha256(contents[paths[1]]).hexdigest()
    )
    assert digests[paths[-1]] is None
    assert digests[paths[0]] == hashlib.sha256(contents[paths[0]]).hexdigest()


def test_the_callers_work_runs_once_while_hashing_and_its_error_is_raised_after(tmp_path: Path) -> None:
    contents = _write(tmp_path, 200, PARALLEL_FROM_BYTES)
    calls: list[int] = []
    threads_before = threading.active_count()

    def walk() -> None:
        calls.append(1)
        raise RuntimeError("walk failed")

    with pytest.raises(RuntimeError, match="walk failed"):
        hash_files(str(tmp_path), list(contents), size_hints=_sizes(contents), while_hashing=walk)
    assert calls == [1]
    assert threading.active_count() == threads_before  # every hashing thread was joined


def test_an_unreadable_path_has_no_digest(tmp_path: Path) -> None:
    assert file_sha256(str(tmp_path / "absent")) is None
    assert file_sha256(str(tmp_path)) is None  # a directory
    (tmp_path / "sub").mkdir()
    assert hash_files(str(tmp_path), ["absent", "sub"]) == {"absent": None, "sub": None}
    assert hash_files(str(tmp_path / "no such directory"), ["a"]) == {"a": None}


def test_a_symbolic_link_is_hashed_as_the_file_it_names_as_before(tmp_path: Path) -> None:
    # Opening relative to the base directory resolves a path as joining it to the base did.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "target.bin").write_bytes(b"data")
    (tmp_path / "pkg" / "link.bin").symlink_to(tmp_path / "target.bin")
    assert hash_files(str(tmp_path), ["pkg/link.bin"]) == {"pkg/link.bin": hashlib.sha256(b"data").hexdigest()}
