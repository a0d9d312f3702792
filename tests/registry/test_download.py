"""The download layer against real servers on 127.0.0.1: what it fetches, and every way it refuses."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
import requests
from https_server import RegistryServer
from rich.console import Console

from aperio_plugins.errors import DownloadError
from aperio_plugins.registry._download import download, fetch_bytes
from aperio_plugins.registry._progress import TerminalProgress, terminal_progress
from aperio_plugins.registry._transfer import NoProgress, TransferLimits

MIB = 1024 * 1024


@pytest.fixture
def registry_server(tmp_path):
    with RegistryServer(tmp_path) as server:
        yield server


@pytest.fixture
def plain_server():
    with RegistryServer(plain_http=True) as server:
        yield server


@pytest.fixture
def downloads(tmp_path):
    """An empty folder for destinations: after a failure it must still be empty."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def limits_for(server: RegistryServer, **overrides) -> TransferLimits:
    values = {
        "max_bytes": MIB,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "total_timeout": 10.0,
        "ca_bundle": server.ca_bundle,
    }
    values.update(overrides)
    return TransferLimits(**values)


def refused(url: str, downloads: Path, limits: TransferLimits, **kwargs) -> str:
    """Download `url`, expecting a `DownloadError`; return its message once sure nothing was left behind."""
    destination = downloads / "artifact.whl"
    with pytest.raises(DownloadError) as caught:
        download(url, destination, limits, **kwargs)
    assert not destination.exists()
    assert list(downloads.iterdir()) == []
    return caught.value.message


class Recording:
    """A `Progress` that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, description: str, total: int | None) -> None:
        self.calls.append(("start", (description, total)))

    def advance(self, size: int) -> None:
        self.calls.append(("advance", size))

    def finish(self) -> None:
        self.calls.append(("finish", None))

    @property
    def advanced(self) -> int:
        return sum(size for name, size in self.calls if name == "advance")  # type: ignore[misc]


def test_download_writes_the_artifact_with_its_digest_and_size(registry_server, downloads):
    data = os.urandom(300_000)
    registry_server.serve("/plugin-1.0-py3-none-any.whl", data)
    url = registry_server.url("/plugin-1.0-py3-none-any.whl")

    fetched = download(url, downloads / "plugin.whl", limits_for(registry_server))

    assert fetched.path == downloads / "plugin.whl"
    assert fetched.path.read_bytes() == data
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.size == len(data)
    assert fetched.source == url


def test_progress_hears_the_total_every_chunk_and_the_end(registry_server, downloads):
    data = os.urandom(200_000)
    registry_server.serve("/a.whl", data)
    progress = Recording()

    download(registry_server.url("/a.whl"), downloads / "a.whl", limits_for(registry_server), progress=progress)

    assert progress.calls[0] == ("start", ("a.whl", len(data)))
    assert progress.calls[-1] == ("finish", None)
    assert progress.advanced == len(data)
    assert {name for name, _ in progress.calls[1:-1]} == {"advance"}


def test_file_url_is_read_locally(registry_server, downloads, tmp_path):
    data = os.urandom(100_000)
    source = tmp_path / "local plugin.whl"
    source.write_bytes(data)

    fetched = download(source.as_uri(), downloads / "local.whl", limits_for(registry_server))

    assert (fetched.sha256, fetched.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert fetch_bytes(source.as_uri(), limits_for(registry_server), max_bytes=MIB) == (data, source.as_uri())
    assert registry_server.requests_log == []


def test_file_url_over_the_limit_or_missing_is_refused(registry_server, downloads, tmp_path):
    source = tmp_path / "big.whl"
    source.write_bytes(bytes(2000))

    message = refused(source.as_uri(), downloads, limits_for(registry_server, max_bytes=1000))
    assert message == f"cannot fetch {source.as_uri()}: the file has 2000 bytes, more than the limit of 1000 bytes"
    message = refused((tmp_path / "missing.whl").as_uri(), downloads, limits_for(registry_server))
    assert "missing.whl" in message
    assert "No such file or directory" in message


def test_fetch_bytes_returns_the_document_and_is_bounded_by_its_own_limit(registry_server):
    registry_server.serve("/index.json", b'{"plugins": []}', "application/json")
    registry_server.serve("/big.json", bytes(2000))
    limits = limits_for(registry_server)

    assert fetch_bytes(registry_server.url("/index.json"), limits, max_bytes=1000) == (
        b'{"plugins": []}',
        registry_server.url("/index.json"),
    )
    with pytest.raises(DownloadError, match="announced 2000 bytes, more than the limit of 1000 bytes"):
        fetch_bytes(registry_server.url("/big.json"), limits, max_bytes=1000)


def test_plain_http_is_refused_without_contacting_the_server(plain_server, downloads):
    plain_server.serve("/a.whl", b"data")

    message = refused(plain_server.url("/a.whl"), downloads, limits_for(plain_server))

    assert message == (
        f"cannot fetch {plain_server.url('/a.whl')}: plain HTTP to {plain_server.host_port} is refused; "
        "list it in APERIO_REGISTRY_INSECURE_HOSTS to allow it"
    )
    assert plain_server.requests_log == []


def test_plain_http_to_an_insecure_host_is_allowed(plain_server, downloads):
    plain_server.serve("/a.whl", b"data")
    limits = limits_for(plain_server, insecure_hosts=(plain_server.host_port,))

    fetched = download(plain_server.url("/a.whl"), downloads / "a.whl", limits)

    assert fetched.path.read_bytes() == b"data"


def test_other_schemes_are_refused(registry_server, downloads):
    message = refused("ftp://127.0.0.1/a.whl", downloads, limits_for(registry_server))
    assert (
        message
        == "cannot fetch ftp://127.0.0.1/a.whl: the scheme 'ftp' is not supported: use https, or file: for a local path"
    )


def test_a_relative_redirect_is_followed(registry_server, downloads):
    registry_server.serve("/files/a.whl", b"moved")
    registry_server.redirect("/old/a.whl", "../files/a.whl", status=301)

    fetched = download(registry_server.url("/old/a.whl"), downloads / "a.whl", limits_for(registry_server))

    assert fetched.path.read_bytes() == b"moved"
    assert fetched.source == registry_server.url("/files/a.whl")
    assert registry_server.requests_log == ["/old/a.whl", "/files/a.whl"]


def test_a_redirect_to_plain_http_is_refused(registry_server, plain_server, downloads):
    plain_server.serve("/a.whl", b"data")
    registry_server.redirect("/a.whl", plain_server.url("/a.whl"))

    message = refused(registry_server.url("/a.whl"), downloads, limits_for(registry_server))

    assert message.startswith(
        f"cannot fetch {registry_server.url('/a.whl')} (redirected to {plain_server.url('/a.whl')}): plain HTTP"
    )
    assert plain_server.requests_log == []


def test_a_redirect_to_plain_http_of_an_insecure_host_is_followed(registry_server, plain_server, downloads):
    plain_server.serve("/a.whl", b"data")
    registry_server.redirect("/a.whl", plain_server.url("/a.whl"), status=307)
    limits = limits_for(registry_server, insecure_hosts=(plain_server.host_port,))

    fetched = download(registry_server.url("/a.whl"), downloads / "a.whl", limits)

    assert (fetched.path.read_bytes(), fetched.source) == (b"data", plain_server.url("/a.whl"))


def test_a_redirect_to_a_local_file_is_refused(registry_server, downloads, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the registry")
    registry_server.redirect("/a.whl", secret.as_uri())

    message = refused(registry_server.url("/a.whl"), downloads, limits_for(registry_server))

    assert message.endswith("): a redirect to a local file is refused")


def test_more_than_five_redirects_are_refused(registry_server, downloads):
    registry_server.redirect("/loop", "/loop")

    message = refused(registry_server.url("/loop"), downloads, limits_for(registry_server))

    assert message == f"cannot fetch {registry_server.url('/loop')}: more than 5 redirects"
    assert registry_server.requests_log == ["/loop"] * 6


def test_an_error_status_is_refused_and_credentials_are_not_shown(registry_server, downloads):
    url = registry_server.url("/missing.whl").replace("https://", "https://user:hunter2@") + "?token=hunter3"

    message = refused(url, downloads, limits_for(registry_server))

    assert message == f"cannot fetch {registry_server.url('/missing.whl')}?…: the server answered HTTP 404 Not Found"
    assert "hunter" not in message


def test_a_declared_length_over_the_limit_is_refused_before_the_body(registry_server, downloads):
    registry_server.endless("/huge.whl", declared_length=10 * MIB)
    progress = Recording()

    message = refused(registry_server.url("/huge.whl"), downloads, limits_for(registry_server), progress=progress)

    assert message.endswith(f": the server announced {10 * MIB} bytes, more than the limit of {MIB} bytes")
    assert registry_server.requests_log == ["/huge.whl"]
    assert progress.calls == []


def test_an_endless_body_is_cut_off_at_the_limit(registry_server, downloads):
    registry_server.endless("/forever.whl")
    progress = Recording()

    message = refused(registry_server.url("/forever.whl"), downloads, limits_for(registry_server), progress=progress)

    assert message == f"cannot fetch {registry_server.url('/forever.whl')}: larger than the limit of {MIB} bytes"
    assert progress.calls[0] == ("start", ("artifact.whl", None))
    assert progress.calls[-1] == ("finish", None)
    assert 0 < progress.advanced <= MIB


def test_a_body_shorter_than_announced_is_refused(registry_server, downloads):
    registry_server.truncated("/short.whl", b"x" * 1000, declared_length=5000)

    message = refused(registry_server.url("/short.whl"), downloads, limits_for(registry_server))

    assert message == f"cannot fetch {registry_server.url('/short.whl')}: truncated: got 1000 of 5000 bytes"


def test_a_stalled_body_hits_the_read_timeout(registry_server, downloads):
    registry_server.stall("/stall.whl", seconds=5)
    began = time.monotonic()

    message = refused(registry_server.url("/stall.whl"), downloads, limits_for(registry_server, read_timeout=0.3))

    assert (
        message == f"cannot fetch {registry_server.url('/stall.whl')}: the server sent nothing for 0.3 s (read timeout)"
    )
    assert time.monotonic() - began < 2


def test_a_dripping_body_hits_the_total_timeout(registry_server, downloads):
    registry_server.slow("/drip.whl", b"x" * 100_000, delay_per_chunk=0.02, chunk=100)
    began = time.monotonic()

    message = refused(registry_server.url("/drip.whl"), downloads, limits_for(registry_server, total_timeout=0.5))

    assert message == f"cannot fetch {registry_server.url('/drip.whl')}: took longer than 0.5 s (total timeout)"
    assert time.monotonic() - began < 2


def test_an_untrusted_certificate_is_refused(registry_server, downloads):
    registry_server.serve("/a.whl", b"data")

    message = refused(registry_server.url("/a.whl"), downloads, limits_for(registry_server, ca_bundle=None))

    assert message.startswith(
        f"cannot fetch {registry_server.url('/a.whl')}: the server's certificate was not trusted ("
    )
    assert "APERIO_REGISTRY_CA_BUNDLE" in message
    assert registry_server.requests_log == []


def test_a_refused_connection_is_reported(registry_server, downloads):
    registry_server.close()

    message = refused(registry_server.url("/a.whl"), downloads, limits_for(registry_server))

    assert message == f"cannot fetch {registry_server.url('/a.whl')}: cannot connect: Connection refused"


def test_an_interrupt_removes_the_partial_file(registry_server, downloads):
    registry_server.serve("/a.whl", os.urandom(500_000))

    class Interrupting(Recording):
        def advance(self, size: int) -> None:
            raise KeyboardInterrupt

    destination = downloads / "a.whl"
    with pytest.raises(KeyboardInterrupt):
        download(registry_server.url("/a.whl"), destination, limits_for(registry_server), progress=Interrupting())
    assert list(downloads.iterdir()) == []


def test_an_existing_destination_is_left_alone(registry_server, downloads):
    registry_server.serve("/a.whl", b"new")
    destination = downloads / "a.whl"
    destination.write_bytes(b"old")

    with pytest.raises(DownloadError, match=r"cannot create .*a\.whl: File exists"):
        download(registry_server.url("/a.whl"), destination, limits_for(registry_server))
    assert destination.read_bytes() == b"old"
    assert registry_server.requests_log == []


def test_terminal_progress_is_silent_off_a_terminal():
    assert isinstance(terminal_progress(io.StringIO()), NoProgress)


def test_terminal_progress_draws_a_bar_on_a_terminal(registry_server, downloads):
    registry_server.serve("/a.whl", os.urandom(300_000))
    screen = io.StringIO()
    progress = TerminalProgress(Console(file=screen, force_terminal=True, width=120))

    download(registry_server.url("/a.whl"), downloads / "a.whl", limits_for(registry_server), progress=progress)

    drawn = screen.getvalue()
    assert "a.whl" in drawn
    assert "300.0/300.0 kB" in drawn


def test_terminal_progress_draws_on_a_terminal():
    main, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        try:
            assert isinstance(terminal_progress(terminal), TerminalProgress)
        finally:
            os.close(main)


def test_the_server_closes_at_once_while_a_handler_streams(tmp_path):
    server = RegistryServer(tmp_path)
    server.endless("/forever")
    server.stall("/stall", seconds=30)
    with (
        requests.get(server.url("/forever"), stream=True, verify=str(server.ca_bundle), timeout=5) as endless,
        requests.get(server.url("/stall"), stream=True, verify=str(server.ca_bundle), timeout=5),
    ):
        endless.raw.read(1000)
        began = time.monotonic()
        server.close()
        assert time.monotonic() - began < 1
