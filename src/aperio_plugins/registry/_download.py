"""Fetching an index or an artifact over HTTPS (or from a local `file:` URL) within `TransferLimits`.

requests speaks HTTP; what it leaves to its caller is done here. Redirects are
followed by hand, so that every hop's scheme is checked: an HTTPS index must not
bounce a client to plain HTTP or to a local file. The body is taken as it arrives
and refused as soon as it passes the size limit or the whole-transfer deadline,
so neither a huge nor a dripping server can hold an install; a body shorter than
announced is an error, not a file. Messages name the URL without its userinfo or
query, either of which may carry a credential (a token, a signed URL).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import msgspec
import requests
import urllib3

from ..errors import DownloadError
from ._transfer import CHUNK_BYTES, Fetched, NoProgress, Progress, TransferLimits, arriving_chunks

_MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Uncompressed, so that Content-Length, the size limit and the digest all count the bytes written.
_HEADERS = {"Accept-Encoding": "identity"}
_LIBRARY_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class _Refused(Exception):
    """Why a transfer stopped, in plain words; `_transfer` adds the URL and raises `DownloadError`."""


@dataclass
class _Job:
    """One transfer: its bounds, and the URL asked for and the one fetched now (they differ after a redirect)."""

    start: str
    current: str
    limits: TransferLimits
    max_bytes: int
    deadline: float

    def where(self) -> str:
        if self.current == self.start:
            return _redact(self.start)
        return f"{_redact(self.start)} (redirected to {_redact(self.current)})"

    def check_time(self) -> None:
        """Return if the deadline has not passed. Raises `_Refused` if it has."""
        if time.monotonic() > self.deadline:
            raise _Refused(f"took longer than {self.limits.total_timeout:g} s (total timeout)")


class _Body(msgspec.Struct, frozen=True):
    total: int | None
    chunks: Iterator[bytes]


def download(
    url: str,
    destination: Path,
    limits: TransferLimits,
    *,
    progress: Progress | None = None,
    description: str | None = None,
) -> Fetched:
    """Stream `url` into `destination`, a file this creates, and return it with its sha256 and size.

    `url` is https, a `file:` URL, or http to one of `limits.insecure_hosts`; so is every
    redirect, but never `file:`. `progress` hears of it under `description` (default: the file's name).
    Raises `DownloadError`, naming the URL and why, for a refused scheme or redirect, an error
    status, a body over `limits.max_bytes` or shorter than announced, a timeout, an untrusted
    certificate, or an existing `destination`. On any failure, an interrupt included, the
    partial file is removed first.
    """
    digest = hashlib.sha256()
    try:
        sink = destination.open("xb")
    except OSError as exc:
        raise DownloadError(f"cannot fetch {_redact(url)}: cannot create {destination}: {_plain(exc)}") from None
    try:
        with sink:

            def write(chunk: bytes) -> None:
                digest.update(chunk)
                sink.write(chunk)

            label = description or destination.name
            size, final_url = _transfer(url, limits, limits.max_bytes, write, progress or NoProgress(), label)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return Fetched(destination, digest.hexdigest(), size, final_url)


def fetch_bytes(url: str, limits: TransferLimits, *, max_bytes: int) -> tuple[bytes, str]:
    """Return the small document at `url` (an index) and the URL it came from after redirects.

    The same rules as `download`, with the size bounded by `min(max_bytes, limits.max_bytes)`.
    Raises `DownloadError` as `download` does.
    """
    received = bytearray()
    _, final_url = _transfer(url, limits, min(max_bytes, limits.max_bytes), received.extend, NoProgress(), url)
    return bytes(received), final_url


def _transfer(
    url: str, limits: TransferLimits, max_bytes: int, write: Callable[[bytes], None], progress: Progress, label: str
) -> tuple[int, str]:
    """Pass the body at `url` to `write`, within the limits; return its size and the final URL.

    Raises `DownloadError` naming the URL (and the redirect target, if any) and the reason.
    """
    job = _Job(url, url, limits, max_bytes, time.monotonic() + limits.total_timeout)
    try:
        with _opened(job) as body:
            progress.start(label, body.total)
            try:
                size = _pump(job, body, write, progress)
            finally:
                progress.finish()
    except _Refused as exc:
        raise DownloadError(f"cannot fetch {job.where()}: {exc}") from None
    except _LIBRARY_ERRORS as exc:
        raise DownloadError(f"cannot fetch {job.where()}: {_reason(exc, limits)}") from exc
    return size, job.current


def _pump(job: _Job, body: _Body, write: Callable[[bytes], None], progress: Progress) -> int:
    """Pass `body`'s chunks to `write` and return how many bytes there were.

    Raises `_Refused` past `job.max_bytes` (before writing the chunk that crosses it),
    past the deadline, or when the body ends (or the connection breaks) short of its length.
    """
    size = 0
    try:
        for chunk in body.chunks:
            size += len(chunk)
            if size > job.max_bytes:
                raise _Refused(f"larger than the limit of {job.max_bytes} bytes")
            job.check_time()
            write(chunk)
            progress.advance(len(chunk))
    except (urllib3.exceptions.ProtocolError, http.client.IncompleteRead):
        # The connection broke off mid-body (reset, or a malformed chunked encoding).
        of = "" if body.total is None else f" of {body.total}"
        raise _Refused(f"truncated: got {size}{of} bytes before the connection broke") from None
    if body.total is not None and size < body.total:
        raise _Refused(f"truncated: got {size} of {body.total} bytes")
    return size


@contextmanager
def _opened(job: _Job) -> Iterator[_Body]:
    """Yield the body at `job.start`, following (and recording in `job`) its redirects.

    Raises `_Refused` for a refused scheme or redirect, an error status, a refused
    Content-Encoding, or a declared length over `job.max_bytes` (before any of the body is read).
    """
    if urlsplit(job.start).scheme.lower() == "file":
        with _opened_file(job.start, job.max_bytes) as body:
            yield body
        return
    with requests.Session() as session, _follow(session, job) as response:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _Refused(f"the server sent the body encoded as {encoding!r}, though asked for it unencoded")
        total = _declared_length(response)
        if total is not None and total > job.max_bytes:
            raise _Refused(f"the server announced {total} bytes, more than the limit of {job.max_bytes} bytes")
        raw: urllib3.HTTPResponse = response.raw
        # `_pump` checks the length itself, so that a short body's message can say how much came.
        raw.enforce_content_length = False
        yield _Body(total, arriving_chunks(raw))


def _follow(session: requests.Session, job: _Job) -> requests.Response:
    """Return the 2xx response at the end of `job.start`'s redirects, checking every hop's scheme.

    Raises `_Refused` for a refused scheme, an error status, more than `_MAX_REDIRECTS`
    redirects, or a redirect past the deadline.
    """
    limits = job.limits
    verify: str | bool = str(limits.ca_bundle) if limits.ca_bundle is not None else True
    for _ in range(_MAX_REDIRECTS + 1):
        _check_scheme(job.current, limits)
        job.check_time()
        response = session.get(
            job.current,
            stream=True,
            allow_redirects=False,
            timeout=(limits.connect_timeout, limits.read_timeout),
            verify=verify,
            headers=_HEADERS,
        )
        if 200 <= response.status_code < 300:
            return response
        response.close()
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECT_STATUSES or not location:
            raise _Refused(f"the server answered HTTP {response.status_code} {response.reason or ''}".rstrip())
        job.current = urljoin(job.current, location)
    raise _Refused(f"more than {_MAX_REDIRECTS} redirects")


@contextmanager
def _opened_file(url: str, max_bytes: int) -> Iterator[_Body]:
    """Yield the body of a local `file:` URL. Raises `_Refused` if it cannot be read or is over `max_bytes`."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _Refused(f"a file: URL on another host ({parts.netloc}) is not supported")
    path = Path(url2pathname(parts.path))
    try:
        source = path.open("rb")
    except OSError as exc:
        raise _Refused(f"cannot read {path}: {_plain(exc)}") from None
    with source:
        status = os.fstat(source.fileno())
        # Only a regular file has a size to trust; a device or a pipe is bounded while read.
        total = status.st_size if stat.S_ISREG(status.st_mode) else None
        if total is not None and total > max_bytes:
            raise _Refused(f"the file has {total} bytes, more than the limit of {max_bytes} bytes")
        yield _Body(total, iter(lambda: source.read(CHUNK_BYTES), b""))


def _check_scheme(url: str, limits: TransferLimits) -> None:
    """Return if `url` may be fetched over the network. Raises `_Refused` otherwise (a `file:` URL included)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "file":
        raise _Refused("a redirect to a local file is refused")
    if scheme != "http":
        raise _Refused(f"the scheme {scheme or '(none)'!r} is not supported: use https, or file: for a local path")
    try:
        port = parts.port or 80
    except ValueError:
        raise _Refused("the URL's port is not a number") from None
    host = parts.hostname or ""
    # As `insecure_hosts` lists them: "host:port", an IPv6 address in brackets.
    host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host_port not in {listed.strip().lower() for listed in limits.insecure_hosts}:
        raise _Refused(f"plain HTTP to {host_port} is refused; list it in APERIO_REGISTRY_INSECURE_HOSTS to allow it")


def _declared_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _reason(exc: BaseException, limits: TransferLimits) -> str:
    """Return what a failure raised by requests, urllib3 or the OS means, in plain words."""
    chain = list(_causes(exc))
    untrusted = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if untrusted is not None:
        return (
            f"the server's certificate was not trusted ({untrusted.verify_message}); for a registry with "
            "a private CA, set APERIO_REGISTRY_CA_BUNDLE to its CA bundle"
        )
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        return f"the TLS handshake failed ({_plain(chain[-1])}); see also APERIO_REGISTRY_CA_BUNDLE"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {limits.connect_timeout:g} s (connect timeout)"
    if any(isinstance(e, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)) for e in chain):
        return f"the server sent nothing for {limits.read_timeout:g} s (read timeout)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot connect: {_plain(chain[-1])}"
    return _plain(chain[-1])


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield `exc` and what caused it, down the nesting requests and urllib3 use (`reason`, args, `__cause__`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nested = (getattr(current, "reason", None), current.__cause__, *current.args, current.__context__)
        current = next((e for e in nested if isinstance(e, BaseException)), None)


def _plain(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _redact(url: str) -> str:
    """Return `url` without its userinfo and query (shown as `?…`), which may carry credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))
