"""Wheel archives: read and check one, and write a signed copy atomically.

A wheel is refused (`InvalidWheelError`) when it is not a zip, has no single
`.dist-info` with METADATA and WHEEL, names a member that would escape the
install directory, or holds a file whose bytes contradict its own RECORD.
"""

from __future__ import annotations

import base64
import csv
import email
import hashlib
import hmac
import io
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import InvalidWheelError

# A plugin of 2,000 files / 20 MB is large; this bounds what a hostile archive can make us inflate.
MAX_WHEEL_UNPACKED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Wheel:
    """A checked wheel held in memory: its members by archive path, and the release it carries."""

    path: Path
    dist_info: str
    distribution: str
    version: str
    members: Mapping[str, bytes]

    def digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.members.items()}


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name and ":" not in name


def _record_digests(record: bytes) -> dict[str, str]:
    digests = {}
    for row in csv.reader(io.StringIO(record.decode("utf-8"))):
        if len(row) >= 2 and row[1].startswith("sha256="):
            encoded = row[1].removeprefix("sha256=")
            padded = encoded + "=" * (-len(encoded) % 4)
            digests[row[0]] = base64.urlsafe_b64decode(padded).hex()
    return digests


def read_wheel(path: Path) -> Wheel:
    """Return the checked contents of the wheel at `path`; raise `InvalidWheelError` otherwise."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidWheelError(f"{path} is not a wheel: {exc}") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        unsafe = [info.filename for info in infos if not _safe_member(info.filename)]
        if unsafe:
            raise InvalidWheelError(f"{path}: member {unsafe[0]!r} would escape the install directory")
        if sum(info.file_size for info in infos) > MAX_WHEEL_UNPACKED_BYTES:
            raise InvalidWheelError(f"{path}: unpacks to more than {MAX_WHEEL_UNPACKED_BYTES} bytes")
        try:
            members = {info.filename: archive.read(info) for info in infos}
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InvalidWheelError(f"{path}: corrupt archive: {exc}") from None
    dist_infos = {name.split("/", 1)[0] for name in members if name.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise InvalidWheelError(f"{path} is not a wheel: expected one .dist-info directory, found {len(dist_infos)}")
    dist_info = dist_infos.pop()
    for required in ("METADATA", "WHEEL"):
        if f"{dist_info}/{required}" not in members:
            raise InvalidWheelError(f"{path} is not a wheel: {dist_info}/{required} is missing")
    if any(name.split("/", 1)[0].endswith(".data") for name in members):
        raise InvalidWheelError(f"{path}: plugin wheels may not install files outside the package (.data directory)")
    record = members.get(f"{dist_info}/RECORD")
    if record is not None:
        for name, expected in _record_digests(record).items():
            data = members.get(name)
            if data is None:
                raise InvalidWheelError(f"{path}: RECORD lists {name}, which the archive does not contain")
            if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected):
                raise InvalidWheelError(f"{path}: {name} does not match the digest in the wheel's RECORD")
    metadata = email.message_from_string(members[f"{dist_info}/METADATA"].decode("utf-8", errors="replace"))
    if not metadata["Name"] or not metadata["Version"]:
        raise InvalidWheelError(f"{path}: METADATA has no Name or Version")
    return Wheel(path, dist_info, str(metadata["Name"]), str(metadata["Version"]), members)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(wheel: Wheel, extra: Mapping[str, bytes], destination: Path) -> None:
    """Write `wheel` plus `extra` members to `destination`, with a RECORD that lists them all.

    Written to a temporary file in the destination's directory and renamed into
    place, so that `destination` is never a half-written wheel.
    """
    members = {name: data for name, data in wheel.members.items() if name != f"{wheel.dist_info}/RECORD"}
    members.update(extra)
    record_name = f"{wheel.dist_info}/RECORD"
    record = "\n".join([*(_record_line(name, data) for name, data in members.items()), f"{record_name},,"]) + "\n"
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
            # RECORD goes last, as the wheel spec recommends.
            for name, data in members.items():
                archive.writestr(name, data)
            archive.writestr(record_name, record)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
