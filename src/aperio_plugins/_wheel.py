"""Wheel archives: the one reader of a wheel file, and a writer of a signed copy.

Every wheel the host touches (`aperio plugin sign`, `verify WHEEL`, every
install, `aperio registry add` and `validate --check-downloads`, OCI push) is
untrusted input and is read here, by `read_wheel`. It is refused
(`InvalidWheelError`, one line naming the file and the member or field) when:

- it is not a zip, or has more members or a larger central directory than the limits
  (counted before `zipfile` builds its member list);
- a member name would escape the install directory, appears twice (also when it
  differs only by case), or is a symbolic link, hard link, device, FIFO or socket;
- a member is encrypted or compressed with anything but stored or deflate;
- the members unpack to more than the limit: counted on the bytes as they stream
  out of the decompressor, never on the sizes the archive declares;
- it has no single `.dist-info` with METADATA and WHEEL, has a `.data` directory,
  or holds a file whose bytes contradict its own RECORD;
- its file name, its `.dist-info` directory and its METADATA disagree on the
  distribution's name or version;
- a plugin id in its `aperio.plugins` entry points breaks the id rule.

Members are hashed as they stream. Only metadata (the `.dist-info` files and
the manifests) is kept in memory; any other member is read back on demand and
checked against the digest taken the first time, so the host's memory does not
grow with what a wheel holds.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import copy
import csv
import email
import hashlib
import hmac
import io
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import msgspec
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from aperio_hookspecs import ENTRY_POINT_GROUP

from ._atomic import replaced_atomically
from ._ids import plugin_id_problem
from ._manifest import MANIFEST_NAME
from ._zipscan import check_central_directory
from .errors import InvalidWheelError

_MIB = 1024 * 1024
_CHUNK = _MIB
# What a broken or hostile archive can make `zipfile` raise while it is read:
# corrupt data (BadZipFile, zlib.error, EOFError, struct.error), an encrypted or
# unsupported member (RuntimeError, NotImplementedError), a name that is not UTF-8 (ValueError).
_ARCHIVE_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,
    RuntimeError,
    ValueError,
)
# PKWARE's Unix extra field: its variable part is the target of a hard or symbolic link.
_PKWARE_UNIX_EXTRA = 0x000D
_PKWARE_UNIX_FIXED = 12


class WheelLimits(msgspec.Struct, frozen=True):
    """Bounds on what reading one wheel may cost. A plugin of 2,000 files / 20 MB is large."""

    max_members: int = 20_000
    max_unpacked_bytes: int = 512 * _MIB
    max_metadata_member_bytes: int = 8 * _MIB
    max_central_directory_bytes: int = 32 * _MIB


DEFAULT_LIMITS = WheelLimits()


class WheelMembers(Mapping[str, bytes]):
    """Every file member of a read wheel, by archive path, in archive order.

    Metadata members are held in memory. Reading any other member opens the
    archive again and refuses (`InvalidWheelError`) bytes whose digest differs
    from the one taken when the wheel was read.
    """

    def __init__(self, path: Path, digests: dict[str, str], sizes: dict[str, int], kept: dict[str, bytes]) -> None:
        self._path = path
        self._digests = digests
        self._sizes = sizes
        self._kept = kept

    def __getitem__(self, name: str) -> bytes:
        if name in self._kept:
            return self._kept[name]
        if name not in self._digests:
            raise KeyError(name)
        return _read_back(self._path, name, self._sizes[name], self._digests[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, name: object) -> bool:
        return name in self._digests

    def digest(self, name: str) -> str:
        """Return the sha256 (hex) the member had when the wheel was read."""
        return self._digests[name]

    def size(self, name: str) -> int:
        """Return the member's unpacked size as counted when the wheel was read."""
        return self._sizes[name]


class Wheel(msgspec.Struct, frozen=True):
    """A checked wheel: its members by archive path, and the release it carries."""

    path: Path
    dist_info: str
    distribution: str
    version: str
    members: WheelMembers

    def digests(self) -> dict[str, str]:
        return {name: self.members.digest(name) for name in self.members}


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Return why the member may not be in a wheel, or None."""
    name = info.filename
    parts = name.removesuffix("/").split("/")
    if (
        not name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or any(character in name for character in "\\:\0")
    ):
        return "would escape the install directory"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if stat.S_ISLNK(kind):
        return "is a symbolic link"
    if stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        return "is a device"
    if stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind):
        return "is a named pipe or socket"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "has an unknown file type"
    extra = info.extra
    while len(extra) >= 4:
        header, length = struct.unpack("<2H", extra[:4])
        if header == _PKWARE_UNIX_EXTRA and length > _PKWARE_UNIX_FIXED:
            return "is a hard or symbolic link"
        extra = extra[4 + length :]
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"uses compression method {info.compress_type} (a wheel uses stored or deflate)"
    return None


def _check_members(infos: list[zipfile.ZipInfo], where: str, limits: WheelLimits) -> list[zipfile.ZipInfo]:
    """Return the file members (directories left out); raise `InvalidWheelError` for the first bad one."""
    seen: dict[str, str] = {}
    for info in infos:
        problem = _member_problem(info)
        if problem is not None:
            raise InvalidWheelError(f"{where}: member {info.filename!r} {problem}")
        folded = info.filename.casefold()
        if folded in seen:
            same = seen[folded] == info.filename
            what = "appears twice" if same else f"differs only by case from {seen[folded]!r}"
            raise InvalidWheelError(f"{where}: member {info.filename!r} {what}")
        seen[folded] = info.filename
    files = [info for info in infos if not info.is_dir()]
    # The declared sizes give an early refusal only; the limit that holds is counted while streaming.
    if sum(info.file_size for info in files) > limits.max_unpacked_bytes:
        raise InvalidWheelError(f"{where}: unpacks to more than {limits.max_unpacked_bytes} bytes")
    return files


def _open_archive(stream: BinaryIO, where: str, limits: WheelLimits) -> zipfile.ZipFile:
    # The member count is bounded here, before `zipfile` builds a ZipInfo for every record.
    check_central_directory(
        stream, where, max_members=limits.max_members, max_directory_bytes=limits.max_central_directory_bytes
    )
    stream.seek(0)
    return zipfile.ZipFile(stream)


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, keep: int | None) -> tuple[str, int, bytes]:
    """Return the member's sha256, its size and (when `keep` is its size limit) its bytes.

    Raises `OverflowError("member")` as soon as more than `keep` bytes came out, `OverflowError("wheel")`
    as soon as more than `budget`.
    """
    digest = hashlib.sha256()
    size = 0
    parts: list[bytes] = []
    # zipfile stops inflating at the declared size; declaring more than the budget makes it inflate
    # until the compressed stream really ends, so that what we count is what any extractor would get.
    probe = copy.copy(info)
    # Two chunks past the budget: the read that crosses it returns before zipfile's own end-of-member checks.
    probe.file_size = budget + 2 * _CHUNK + 1
    with archive.open(probe) as member:
        while chunk := member.read(_CHUNK):
            size += len(chunk)
            if keep is not None and size > keep:
                raise OverflowError("member")
            if size > budget:
                raise OverflowError("wheel")
            digest.update(chunk)
            if keep is not None:
                parts.append(chunk)
    return digest.hexdigest(), size, b"".join(parts)


def _is_metadata(name: str) -> bool:
    return name.split("/", 1)[0].endswith(".dist-info") or name.rsplit("/", 1)[-1] == MANIFEST_NAME


def _read_members(
    archive: zipfile.ZipFile, files: list[zipfile.ZipInfo], where: str, limits: WheelLimits
) -> tuple[dict[str, str], dict[str, int], dict[str, bytes]]:
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    kept: dict[str, bytes] = {}
    budget = limits.max_unpacked_bytes
    for info in files:
        keep = limits.max_metadata_member_bytes if _is_metadata(info.filename) else None
        try:
            digest, size, data = _stream(archive, info, budget, keep)
        except OverflowError as exc:
            if exc.args == ("member",):
                raise InvalidWheelError(
                    f"{where}: member {info.filename!r} is larger than {keep} bytes, the limit for wheel metadata"
                ) from None
            raise InvalidWheelError(
                f"{where}: member {info.filename!r} takes the wheel past {limits.max_unpacked_bytes} unpacked bytes,"
                " the limit"
            ) from None
        except _ARCHIVE_ERRORS as exc:
            raise InvalidWheelError(f"{where}: member {info.filename!r} is corrupt: {exc}") from None
        if size != info.file_size:
            raise InvalidWheelError(
                f"{where}: member {info.filename!r} declares {info.file_size} bytes but unpacks to {size}"
            )
        budget -= size
        digests[info.filename], sizes[info.filename] = digest, size
        if keep is not None:
            kept[info.filename] = data
    return digests, sizes, kept


def _read_back(path: Path, name: str, size: int, expected: str) -> bytes:
    """Return member `name` of the wheel at `path`, refusing bytes other than those read the first time."""
    where = str(path)
    try:
        with open(path, "rb") as stream, _open_archive(stream, where, DEFAULT_LIMITS) as archive:
            digest, _, data = _stream(archive, archive.getinfo(name), size, size)
    except (OverflowError, KeyError):
        digest = ""
    except _ARCHIVE_ERRORS as exc:
        raise InvalidWheelError(f"{where}: member {name!r} is corrupt: {exc}") from None
    if not hmac.compare_digest(digest, expected):
        raise InvalidWheelError(f"{where}: member {name!r} changed after the wheel was checked")
    return data


def _record_digests(record: bytes, where: str) -> dict[str, str]:
    digests = {}
    try:
        rows = list(csv.reader(io.StringIO(record.decode("utf-8"))))
        for row in rows:
            if len(row) >= 2 and row[1].startswith("sha256="):
                encoded = row[1].removeprefix("sha256=")
                padded = encoded + "=" * (-len(encoded) % 4)
                digests[row[0]] = base64.urlsafe_b64decode(padded).hex()
    except (UnicodeDecodeError, csv.Error, binascii.Error, ValueError) as exc:
        raise InvalidWheelError(f"{where}: RECORD is unreadable: {exc}") from None
    return digests


def entry_point_sections(data: bytes, where: str) -> configparser.ConfigParser:
    """Return the parsed `entry_points.txt`; raise `InvalidWheelError` naming `where` if it is unreadable."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # entry point names are case-sensitive
    try:
        parser.read_string(data.decode("utf-8"))
    except (UnicodeDecodeError, configparser.Error) as exc:
        raise InvalidWheelError(f"{where} is unreadable: {exc}") from None
    return parser


def _check_release_names(path: Path, where: str, dist_info: str, name: str, version: str) -> None:
    """Refuse a wheel whose file name, `.dist-info` directory and METADATA disagree on name or version."""
    try:
        release = Version(version)
    except InvalidVersion:
        raise InvalidWheelError(f"{where}: METADATA Version {version!r} is not a valid version") from None
    try:
        file_name, file_version, _, _ = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise InvalidWheelError(f"{where}: not a wheel file name (NAME-VERSION-TAGS.whl): {exc}") from None
    if file_name != canonicalize_name(name) or file_version != release:
        raise InvalidWheelError(
            f"{where}: the file name says {file_name} {file_version}, but its METADATA says {name} {version}"
        )
    directory_name, _, directory_version = dist_info.removesuffix(".dist-info").rpartition("-")
    try:
        matches = canonicalize_name(directory_name) == file_name and Version(directory_version) == release
    except InvalidVersion:
        matches = False
    if not matches:
        raise InvalidWheelError(f"{where}: {dist_info} does not name {name} {version}, as its METADATA does")


def _check_plugin_ids(entry_points: bytes | None, where: str) -> None:
    if entry_points is None:
        return
    sections = entry_point_sections(entry_points, where)
    if sections.has_section(ENTRY_POINT_GROUP):
        for plugin_id, _ in sections.items(ENTRY_POINT_GROUP):
            problem = plugin_id_problem(plugin_id)
            if problem is not None:
                raise InvalidWheelError(f"{where}: {problem}")


def _dist_info(names: Mapping[str, object], where: str) -> str:
    dist_infos = {name.split("/", 1)[0] for name in names if name.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise InvalidWheelError(f"{where} is not a wheel: expected one .dist-info directory, found {len(dist_infos)}")
    dist_info = dist_infos.pop()
    for required in ("METADATA", "WHEEL"):
        if f"{dist_info}/{required}" not in names:
            raise InvalidWheelError(f"{where} is not a wheel: {dist_info}/{required} is missing")
    if any(name.split("/", 1)[0].endswith(".data") for name in names):
        raise InvalidWheelError(f"{where}: plugin wheels may not install files outside the package (.data directory)")
    return dist_info


def read_wheel(path: Path, limits: WheelLimits = DEFAULT_LIMITS, *, where: str | None = None) -> Wheel:
    """Return the checked wheel at `path`; raise `InvalidWheelError` naming the file (as `where`, by
    default its path) and what is wrong."""
    where = where or str(path)
    try:
        with open(path, "rb") as stream, _open_archive(stream, where, limits) as archive:
            files = _check_members(archive.infolist(), where, limits)
            digests, sizes, kept = _read_members(archive, files, where, limits)
    except _ARCHIVE_ERRORS as exc:
        raise InvalidWheelError(f"{where} is not a wheel: {exc}") from None
    dist_info = _dist_info(digests, where)
    record = kept.get(f"{dist_info}/RECORD")
    if record is not None:
        for name, expected in _record_digests(record, where).items():
            if name not in digests:
                raise InvalidWheelError(f"{where}: RECORD lists {name}, which the archive does not contain")
            if not hmac.compare_digest(digests[name], expected):
                raise InvalidWheelError(f"{where}: {name} does not match the digest in the wheel's RECORD")
    metadata = email.message_from_string(kept[f"{dist_info}/METADATA"].decode("utf-8", errors="replace"))
    if not metadata["Name"] or not metadata["Version"]:
        raise InvalidWheelError(f"{where}: METADATA has no Name or Version")
    name, version = str(metadata["Name"]).strip(), str(metadata["Version"]).strip()
    _check_release_names(path, where, dist_info, name, version)
    _check_plugin_ids(kept.get(f"{dist_info}/entry_points.txt"), f"{where}: {dist_info}/entry_points.txt")
    return Wheel(path, dist_info, name, version, WheelMembers(path, digests, sizes, kept))


def _record_line(name: str, digest: bytes, size: int) -> str:
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{name},sha256={encoded},{size}"


def _copy_member(source: zipfile.ZipFile, wheel: Wheel, name: str, target: zipfile.ZipFile) -> str:
    """Stream member `name` from `source` into `target`; return its RECORD line.

    Raises `InvalidWheelError` if its bytes are not the ones `read_wheel` hashed.
    """
    digest = hashlib.sha256()
    size = 0
    with source.open(source.getinfo(name)) as stream, target.open(_new_member(name), "w") as copy:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > wheel.members.size(name):
                break
            digest.update(chunk)
            copy.write(chunk)
    if size != wheel.members.size(name) or not hmac.compare_digest(digest.hexdigest(), wheel.members.digest(name)):
        raise InvalidWheelError(f"{wheel.path}: member {name!r} changed after the wheel was checked")
    return _record_line(name, digest.digest(), size)


def _new_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def write_wheel(wheel: Wheel, extra: Mapping[str, bytes], destination: Path) -> None:
    """Write `wheel` plus `extra` members (which replace members of the same name) to `destination`,
    with a RECORD that lists them all.

    Members are streamed from the original file and checked against the digests
    `read_wheel` took. Written to a temporary file in the destination's directory
    and renamed into place, so that `destination` is never a half-written wheel.
    Raises `InvalidWheelError` if the original changed since it was read.
    """
    record_name = f"{wheel.dist_info}/RECORD"
    names = [name for name in wheel.members if name != record_name]
    names += [name for name in extra if name not in wheel.members and name != record_name]
    lines = []
    with (
        replaced_atomically(destination) as stream,
        zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        try:
            with (
                open(wheel.path, "rb") as original,
                _open_archive(original, str(wheel.path), DEFAULT_LIMITS) as source,
            ):
                for name in names:
                    if name in extra:
                        archive.writestr(_new_member(name), extra[name])
                        digest = hashlib.sha256(extra[name]).digest()
                        lines.append(_record_line(name, digest, len(extra[name])))
                    else:
                        lines.append(_copy_member(source, wheel, name, archive))
        except (KeyError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            # The original was replaced by another archive since it was read.
            raise InvalidWheelError(f"{wheel.path}: changed after the wheel was checked ({exc})") from None
        # RECORD goes last, as the wheel spec recommends.
        archive.writestr(_new_member(record_name), "\n".join([*lines, f"{record_name},,"]) + "\n")
