"""The wire format shared by host and worker: the handshake line, frames, and message kinds.

docs/worker-protocol.md is the specification; this module is its one implementation,
used by both twins (`_client.py` on the host, `_server.py` in the worker).

A frame is a 4-byte big-endian length followed by that many bytes of msgpack,
which decode to an array whose first item is the message kind.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import msgspec

from ._codec import ext_hook, pack_default

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
"""Versions of the message protocol this code speaks, oldest first."""

HANDSHAKE_MAGIC = "aperio-worker"
HANDSHAKE_FORMAT = 1
MAX_HANDSHAKE_LINE = 1024
TRANSPORT = "stdio"
CODEC = "msgpack"

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

# Message kinds. Host to worker:
HELLO = "hello"  # [hello, version]
HOOK = "hook"  # [hook, id, hook_name, {argument: value}, timeout_s]
INVOKE = "invoke"  # [invoke, id, kind, name, payload, timeout_s, invocation_id, [scope, ...]]
CANCEL = "cancel"  # [cancel, id]
PING = "ping"  # [ping, id]
CTX_OK = "ctx_ok"  # [ctx_ok, request_id, value]
CTX_ERROR = "ctx_error"  # [ctx_error, request_id, type_name, message]
# Worker to host:
READY = "ready"  # [ready, description]
FAILED = "failed"  # [failed, {message, stage}]
RESULT = "result"  # [result, id, value]
ERROR = "error"  # [error, id, {type, message, traceback, boundary}]
CANCELLED = "cancelled"  # [cancelled, id]: cancelled before it started
PONG = "pong"  # [pong, id]
CTX = "ctx"  # [ctx, call_id, request_id, operation, [argument, ...]]
LOG = "log"  # [log, call_id, level, event, {field: value}]

TERMINAL = frozenset((RESULT, ERROR, CANCELLED))
"""Kinds that end a call: exactly one of them answers every HOOK or INVOKE."""


class ProtocolError(Exception):
    """The peer broke the protocol (a malformed handshake line or frame). Internal to the worker package."""


class Handshake(msgspec.Struct, frozen=True):
    """What a worker announced on its first stdout line."""

    protocols: tuple[int, ...]
    transport: str
    codec: str
    pid: int


def handshake_line(protocols: Sequence[int], pid: int) -> bytes:
    """Return the worker's announcement, e.g. `aperio-worker|1|protocols=1|transport=stdio|codec=msgpack|pid=42`."""
    versions = ",".join(str(version) for version in protocols)
    fields = f"protocols={versions}|transport={TRANSPORT}|codec={CODEC}|pid={pid}"
    return f"{HANDSHAKE_MAGIC}|{HANDSHAKE_FORMAT}|{fields}\n".encode("ascii")


def parse_handshake(line: bytes) -> Handshake:
    """Return the parsed handshake line; raise `ProtocolError` saying what is wrong with it."""
    shown = line[:200].decode("ascii", "replace").rstrip("\n")
    text = line.decode("ascii", "replace").strip()
    parts = text.split("|")
    if len(parts) < 2 or parts[0] != HANDSHAKE_MAGIC:
        raise ProtocolError(f"expected a line starting with {HANDSHAKE_MAGIC!r}, got {shown!r}")
    if parts[1] != str(HANDSHAKE_FORMAT):
        raise ProtocolError(f"unknown handshake format {parts[1]!r} (this host reads format {HANDSHAKE_FORMAT})")
    fields: dict[str, str] = {}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ProtocolError(f"malformed handshake field {part!r} in {shown!r}")
        fields[key] = value  # unknown keys are ignored, so that later formats can add some
    missing = [key for key in ("protocols", "transport", "codec", "pid") if key not in fields]
    if missing:
        raise ProtocolError(f"handshake line {shown!r} lacks {', '.join(missing)}")
    try:
        protocols = tuple(int(version) for version in fields["protocols"].split(","))
        pid = int(fields["pid"])
    except ValueError:
        raise ProtocolError(f"handshake line {shown!r} has a non-numeric protocol version or pid") from None
    return Handshake(protocols, fields["transport"], fields["codec"], pid)


def choose_version(ours: Sequence[int], theirs: Sequence[int]) -> int | None:
    """Return the highest version both sides speak, or None."""
    common = set(ours) & set(theirs)
    return max(common) if common else None


_PACKERS = threading.local()


def pack(message: Sequence[Any]) -> bytes:
    """Return `message` as msgpack; raise TypeError, ValueError or OverflowError for a value that cannot cross."""
    # A Packer is not thread-safe, and making one per message costs more than packing a small one.
    try:
        packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(default=pack_default, use_bin_type=True)
    try:
        payload: bytes = packer.pack(message)
    except BaseException:
        packer.reset()  # a failed pack leaves partial output in the packer's buffer
        raise
    return payload


_PLAIN_ENCODER = msgspec.msgpack.Encoder()  # holds no state between calls: safe to share

pack_plain: Callable[[Sequence[Any]], bytes] = _PLAIN_ENCODER.encode
"""Return `message` as msgpack, for a message its caller built only from str, int, float, bool,
None, lists and str-keyed dicts of those, and `envelope_ext` extensions.

No check is made: msgspec would encode sets, datetimes or dataclasses that the protocol refuses, so
anything that comes from a plugin or a caller goes through `pack` instead. (The encoder's own method,
not a function around it: it runs on every call on both sides.)
"""


def frame(payload: bytes) -> bytes:
    """Return `payload` with its length header."""
    return _HEADER.pack(len(payload)) + payload


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame (header and `payload`) to `fd`, in full. Callers serialize writers with a lock."""
    header = _HEADER.pack(len(payload))
    written = os.writev(fd, (header, payload))
    total = HEADER_SIZE + len(payload)
    if written < total:  # a pipe write is partial only when a signal interrupts a large one
        rest = (header + payload)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def decode_message(payload: bytes | memoryview) -> list[Any]:
    """Return the message in one frame's payload (the bytes after the length header).

    Raises `ProtocolError`, and nothing else, for a payload that is not one
    msgpack array starting with its kind: undecodable bytes, trailing bytes, an
    unknown extension type, nesting too deep.
    """
    return _unpack(_DECODER.decode, payload)


_DECODER = msgspec.msgpack.Decoder(ext_hook=ext_hook)  # holds no state between calls: safe to share
_SMALL_FRAME = 2048
"""Frames up to this size are decoded from a copy of their bytes: slicing a few hundred bytes costs
less than making, slicing and releasing a memoryview."""


class FrameDecoder:
    """Turns bytes read from a pipe into messages. Not thread-safe: one reader at a time."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes
        self._decode = _DECODER.decode

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[list[Any]]:
        """Return the complete messages now available; raise `ProtocolError` for a malformed frame."""
        if not self._buffer and len(data) >= HEADER_SIZE:
            # The usual case: nothing pending and `data` is exactly one frame; skip the buffer.
            (size,) = _HEADER.unpack_from(data)
            if 0 < size <= self._max and len(data) == HEADER_SIZE + size:
                if size <= _SMALL_FRAME:
                    return [_unpack(self._decode, data[HEADER_SIZE:])]  # a copy this small beats a view
                with memoryview(data) as view:
                    return [_unpack(self._decode, view[HEADER_SIZE:])]
        buffer = self._buffer
        buffer += data
        messages: list[list[Any]] = []
        position, available = 0, len(buffer)
        with memoryview(buffer) as view:
            while available - position >= HEADER_SIZE:
                (size,) = _HEADER.unpack_from(view, position)
                if size == 0 or size > self._max:
                    raise ProtocolError(f"frame of {size} bytes (the limit is {self._max})")
                end = position + HEADER_SIZE + size
                if end > available:
                    break
                messages.append(_unpack(self._decode, view[position + HEADER_SIZE : end]))
                position = end
        if position:
            del buffer[:position]
        return messages


def _unpack(decode: Callable[[Any], Any], payload: bytes | memoryview) -> list[Any]:
    try:
        message = decode(payload)
    except Exception as exc:  # noqa: BLE001 - the decoder raises several unrelated types for bad input
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ProtocolError(f"a frame must be an array starting with its kind, got {type(message).__name__}")
    return message
