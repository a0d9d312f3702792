"""Count a zip archive's members from its central directory before `zipfile` parses it.

`zipfile.ZipFile` builds one `ZipInfo` per central-directory record as soon as it
opens an archive: half a million empty members cost seconds and hundreds of
megabytes before any check of ours could run. This scan finds the central
directory the way `zipfile` does (the same end record, the same zip64 locator,
the same offset arithmetic) and walks its records with fixed-size reads, so an
archive with too many members, or a central directory too large to read, is
refused in constant memory.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .errors import InvalidWheelError

_END = b"PK\x05\x06"
_END64 = b"PK\x06\x06"
_END64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_END_SIZE = 22
_END64_SIZE = 56
_END64_LOCATOR_SIZE = 20
_CENTRAL_SIZE = 46
_MAX_COMMENT = 65535


def _end_record(stream: BinaryIO, size: int, where: str) -> tuple[int, int, int, bool]:
    """Return (central directory size, its offset, the end record's position, zip64) as `zipfile` reads them."""
    if size < _END_SIZE:
        raise InvalidWheelError(f"{where} is not a wheel: too short to be a zip archive")
    stream.seek(size - _END_SIZE)
    record = stream.read(_END_SIZE)
    location = size - _END_SIZE
    if not (record[:4] == _END and record[-2:] == b"\0\0"):
        start = max(size - _MAX_COMMENT - _END_SIZE, 0)
        stream.seek(start)
        tail = stream.read()
        found = tail.rfind(_END)
        record = tail[found : found + _END_SIZE]
        if found < 0 or len(record) != _END_SIZE:
            raise InvalidWheelError(f"{where} is not a wheel: no zip end-of-central-directory record")
        location = start + found
    central_size, central_offset = struct.unpack("<2L", record[12:20])
    if location >= _END64_LOCATOR_SIZE:
        stream.seek(location - _END64_LOCATOR_SIZE)
        locator = stream.read(_END64_LOCATOR_SIZE)
        if locator[:4] == _END64_LOCATOR and location >= _END64_LOCATOR_SIZE + _END64_SIZE:
            stream.seek(location - _END64_LOCATOR_SIZE - _END64_SIZE)
            record64 = stream.read(_END64_SIZE)
            if record64[:4] == _END64:
                central_size, central_offset = struct.unpack("<2Q", record64[40:56])
                return central_size, central_offset, location, True
    return central_size, central_offset, location, False


def check_central_directory(stream: BinaryIO, where: str, *, max_members: int, max_directory_bytes: int) -> int:
    """Return the number of central-directory records in the zip archive open in `stream`.

    Raises `InvalidWheelError` when the archive has more than `max_members`
    records or a central directory larger than `max_directory_bytes`; a malformed
    directory is left for `zipfile` to report.
    """
    stream.seek(0, 2)
    size = stream.tell()
    central_size, central_offset, location, zip64 = _end_record(stream, size, where)
    if central_size > max_directory_bytes:
        raise InvalidWheelError(
            f"{where}: its zip central directory is {central_size} bytes, more than the limit of {max_directory_bytes}"
        )
    # The same arithmetic as zipfile: data prepended to the archive shifts every offset.
    start = location - central_size - central_offset
    if zip64:
        start -= _END64_SIZE + _END64_LOCATOR_SIZE
    start += central_offset
    if start < 0:
        return 0
    stream.seek(start)
    count = 0
    consumed = 0
    while consumed < central_size:
        header = stream.read(_CENTRAL_SIZE)
        if len(header) != _CENTRAL_SIZE or header[:4] != _CENTRAL:
            return count
        count += 1
        if count > max_members:
            raise InvalidWheelError(f"{where}: holds more than {max_members} members, the limit for a wheel")
        name_length, extra_length, comment_length = struct.unpack("<3H", header[28:34])
        skip = name_length + extra_length + comment_length
        stream.seek(skip, 1)
        consumed += _CENTRAL_SIZE + skip
    return count
