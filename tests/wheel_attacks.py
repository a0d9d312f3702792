"""Hostile wheels, named after the attack: built from a real plugin wheel, or written byte by byte
where `zipfile` will not write the lie (sizes that do not add up, half a million members)."""

from __future__ import annotations

import shutil
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from plugin_builders import connector_wheel

SAFE_ID = "acme.safe"
SAFE_PACKAGE = "acme_safe"
BOMB_NAME = "acme_bomb-1.0.0-py3-none-any.whl"


def safe_wheel(directory: Path, marker: Path | None = None) -> Path:
    """A working, unsigned connector plugin `acme.safe` (distribution acme-safe 1.0.0)."""
    return connector_wheel(directory, SAFE_ID, package=SAFE_PACKAGE, marker=marker)


def _member(name: str, mode: int, extra: bytes = b"") -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix, so that unzip and friends honour the mode
    info.external_attr = mode << 16
    info.extra = extra
    return info


def rebuilt(
    source: Path,
    target: Path,
    *,
    before: Sequence[tuple[zipfile.ZipInfo, bytes]] = (),
    after: Sequence[tuple[zipfile.ZipInfo, bytes]] = (),
) -> Path:
    """Copy the wheel at `source` to `target`, with members added before and after its own."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we are writing on purpose
        for info, data in before:
            copy.writestr(info, data)
        for info in original.infolist():
            copy.writestr(info, original.read(info))
        for info, data in after:
            copy.writestr(info, data)
    return target


def duplicate_member(directory: Path, marker: Path) -> Path:
    """A second `acme_safe/__init__.py` ahead of the real one: an extractor that keeps the first copy
    runs code that RECORD (checked against the last copy) never saw."""
    payload = f"open({str(marker)!r}, 'a').write('duplicate ran\\n')\n".encode()
    source = safe_wheel(directory / "src")
    return rebuilt(
        source, directory / source.name, before=[(_member(f"{SAFE_PACKAGE}/__init__.py", 0o100644), payload)]
    )


def symlink_member(directory: Path) -> Path:
    source = safe_wheel(directory / "src")
    link = _member(f"{SAFE_PACKAGE}/passwd.py", stat.S_IFLNK | 0o777)
    return rebuilt(source, directory / source.name, after=[(link, b"/etc/passwd")])


def hardlink_member(directory: Path) -> Path:
    """A member carrying PKWARE's Unix extra field with a link target: a hard link to a host file."""
    target = b"/etc/shadow"
    fixed = struct.pack("<2L2H", 0, 0, 0, 0)
    extra = struct.pack("<2H", 0x000D, len(fixed) + len(target)) + fixed + target
    source = safe_wheel(directory / "src")
    return rebuilt(source, directory / source.name, after=[(_member(f"{SAFE_PACKAGE}/shadow", 0o100644, extra), b"")])


def device_member(directory: Path) -> Path:
    source = safe_wheel(directory / "src")
    device = _member(f"{SAFE_PACKAGE}/tty", stat.S_IFCHR | 0o666)
    return rebuilt(source, directory / source.name, after=[(device, b"")])


def filename_version_mismatch(directory: Path) -> Path:
    """acme-safe 1.0.0, under a file name that says 2.0.0."""
    source = safe_wheel(directory / "src")
    target = directory / f"{SAFE_PACKAGE}-2.0.0-py3-none-any.whl"
    shutil.copyfile(source, target)
    return target


def homoglyph_plugin_id(directory: Path, marker: Path | None = None) -> Path:
    """A plugin whose id is `acme.safe` with a Cyrillic `\\u0430` in place of the Latin `a`."""
    return connector_wheel(directory, "\u0430cme.safe", package="acme_lookalike", marker=marker)


# Raw zip records: what `zipfile` would write, except that the sizes are whatever we say.
def _local(name: bytes, method: int, crc: int, compressed: int, size: int) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, compressed, size, len(name), 0) + name


def _central(name: bytes, method: int, crc: int, compressed: int, size: int, offset: int) -> bytes:
    return (
        struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            0x031E,
            20,
            0,
            method,
            0,
            0x21,
            crc,
            compressed,
            size,
            len(name),
            0,
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        + name
    )


def raw_zip(target: Path, members: Iterable[tuple[str, int, bytes, int, int]]) -> Path:
    """Write a zip of (name, method, stored bytes, crc, declared size) members; the compressed size is
    the stored bytes' length, everything else is as declared."""
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    count = 0
    for name, method, data, crc, size in members:
        encoded = name.encode()
        header = _local(encoded, method, crc, len(data), size)
        local += [header, data]
        central.append(_central(encoded, method, crc, len(data), size, offset))
        offset += len(header) + len(data)
        count += 1
    directory = b"".join(central)
    entries = min(count, 0xFFFF)  # zipfile walks the directory by its size, not by this count
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, len(directory), offset, 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as stream:
        stream.writelines(local)
        stream.write(directory)
        stream.write(end)
    return target


def _stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)


def _metadata_members(distribution: str) -> list[tuple[str, int, bytes, int, int]]:
    dist_info = f"{distribution.replace('-', '_')}-1.0.0.dist-info"
    return [
        _stored(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0.0\n".encode()),
        _stored(f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]


def member_count_bomb(directory: Path, members: int = 500_000) -> Path:
    """Half a million empty members: cheap to ship, costly to list."""
    empty = ("", zipfile.ZIP_STORED, b"", 0, 0)
    many = ((f"acme_bomb/{index}.py", *empty[1:]) for index in range(members))
    return raw_zip(directory / BOMB_NAME, [*_metadata_members("acme-bomb"), *many])  # type: ignore[list-item]


def zip_bomb_lying_sizes(directory: Path, unpacked: int = 1 << 30) -> Path:
    """One member that inflates to `unpacked` bytes of zeros (its CRC is theirs, so that any
    extractor that believes the stream gets them all) while the archive declares 1 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(min(unpacked, 1 << 24))
    parts, crc = [], 0
    for _ in range(unpacked // len(block)):
        parts.append(compressor.compress(block))
        crc = zlib.crc32(block, crc)
    parts.append(compressor.flush())
    data = b"".join(parts)
    bomb = ("acme_bomb/data.bin", zipfile.ZIP_DEFLATED, data, crc, 1024)
    return raw_zip(directory / BOMB_NAME, [*_metadata_members("acme-bomb"), bomb])


def zip_bomb_honest_sizes(directory: Path, unpacked: int) -> Path:
    """Members that really inflate to `unpacked` bytes of zeros, declared as such."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(unpacked)
    data = compressor.compress(zeros) + compressor.flush()
    bomb = ("acme_bomb/data.bin", zipfile.ZIP_DEFLATED, data, zlib.crc32(zeros), unpacked)
    return raw_zip(directory / BOMB_NAME, [*_metadata_members("acme-bomb"), bomb])
