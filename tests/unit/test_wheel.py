"""The wheel reader and writer as plain functions (attacks on the reader: tests/registry/test_wheel_input.py)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from aperio_plugins._wheel import read_wheel, write_wheel
from aperio_plugins.errors import InvalidWheelError
from aperio_plugins.testing import PluginWheel


def built(tmp_path, **options):
    return PluginWheel(
        "acme-box", plugins={"acme.box": "acme_box"}, files={"acme_box/__init__.py": "X = 1\n"}, **options
    ).build(tmp_path / "dist")


def test_every_member_is_hashed_and_the_release_named_from_metadata(tmp_path):
    wheel = read_wheel(built(tmp_path, version="2.1.0"))
    assert (wheel.distribution, wheel.version, wheel.dist_info) == ("acme-box", "2.1.0", "acme_box-2.1.0.dist-info")
    with zipfile.ZipFile(wheel.path) as archive:
        expected = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
    assert wheel.digests() == expected


def test_a_member_that_does_not_match_the_wheels_record_is_refused_by_name(tmp_path):
    path = built(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["acme_box/__init__.py"] = b"X = 2  # changed after RECORD was written\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(
        InvalidWheelError, match=r"acme_box/__init__\.py does not match the digest in the wheel's RECORD"
    ):
        read_wheel(path)


def test_write_wheel_adds_a_member_and_records_it_so_the_result_reads_back(tmp_path):
    wheel = read_wheel(built(tmp_path))
    extra = {f"{wheel.dist_info}/aperio-signature.json": b'{"format": 1}'}
    destination = tmp_path / "out" / wheel.path.name

    write_wheel(wheel, extra, destination)

    again = read_wheel(destination)  # its RECORD lists and matches every member, the new one included
    assert set(again.members) == set(wheel.members) | set(extra)
    assert again.members[f"{wheel.dist_info}/aperio-signature.json"] == b'{"format": 1}'
    assert [p.name for p in destination.parent.iterdir()] == [destination.name]  # no temporary file left


def test_write_wheel_refuses_an_original_swapped_since_it_was_read(tmp_path):
    wheel = read_wheel(built(tmp_path))
    other = PluginWheel("acme-box", plugins={"acme.box": "acme_box"}, files={"acme_box/other.py": ""})
    wheel.path.write_bytes(other.build(tmp_path / "other").read_bytes())
    with pytest.raises(InvalidWheelError, match="changed after the wheel was checked"):
        write_wheel(wheel, {}, tmp_path / "out" / wheel.path.name)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
