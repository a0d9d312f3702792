"""The one atomic file writer: readers see the old file or the new one, never half, and nothing is left behind."""

from __future__ import annotations

import stat

import pytest

from aperio_plugins._atomic import replaced_atomically, write_atomically


def test_a_new_file_replaces_the_old_whole_and_is_private(tmp_path):
    target = tmp_path / "state" / "cache.json"
    write_atomically(target, b"old")
    with replaced_atomically(target) as stream:
        stream.write(b"new, ")
        assert target.read_bytes() == b"old"  # not yet: the new bytes are in a file beside it
        stream.write(b"complete")
    assert target.read_bytes() == b"new, complete"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["cache.json"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "cache.json"
    write_atomically(target, b"old", durable=True)

    def write_half_then_fail() -> None:
        with replaced_atomically(target) as stream:
            stream.write(b"half")
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full, say"):
        write_half_then_fail()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]
