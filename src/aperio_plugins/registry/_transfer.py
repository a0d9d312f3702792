"""What every transfer from a registry runs under, and what it hands back.

Shared by HTTPS/file downloads (`_download`) and OCI pulls (`_oci`), so that
both sources obey the same size and time limits and report progress the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import msgspec
import urllib3

from .._settings import HostSettings

CHUNK_BYTES = 64 * 1024


class TransferLimits(msgspec.Struct, frozen=True):
    """Bounds on one transfer.

    `total_timeout` bounds the whole transfer, so that a server dripping a byte just
    inside `read_timeout` cannot hold an install forever. `ca_bundle` replaces the
    system CAs when set (a private registry's CA). `insecure_hosts` ("host:port")
    may be reached over plain HTTP: the operator's explicit choice, as with
    Docker's insecure registries.
    """

    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    ca_bundle: Path | None = None
    insecure_hosts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: HostSettings) -> TransferLimits:
        return cls(
            max_bytes=settings.registry_max_download_bytes,
            connect_timeout=settings.registry_connect_timeout,
            read_timeout=settings.registry_read_timeout,
            total_timeout=settings.registry_download_timeout,
            ca_bundle=settings.registry_ca_bundle,
            insecure_hosts=settings.registry_insecure_hosts,
        )


class Fetched(msgspec.Struct, frozen=True):
    """A file written by a transfer: where, its sha256 (hex) and size, computed while it streamed."""

    path: Path
    sha256: str
    size: int
    source: str


class Progress(Protocol):
    """Told about a transfer as it happens; `total` is None when the server does not say."""

    def start(self, description: str, total: int | None) -> None: ...
    def advance(self, size: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    """The progress of a transfer nobody watches (not a terminal, or a library caller)."""

    def start(self, description: str, total: int | None) -> None:
        return None

    def advance(self, size: int) -> None:
        return None

    def finish(self) -> None:
        return None


def arriving_chunks(raw: urllib3.HTTPResponse) -> Iterator[bytes]:
    """Yield a response body as it arrives.

    `read1` returns whatever has arrived instead of waiting for a whole chunk, so
    that a caller's deadline is checked each time a dripping server sends anything.
    """
    while chunk := raw.read1(CHUNK_BYTES):
        yield chunk
