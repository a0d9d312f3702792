"""Pushing and pulling plugin wheels through a real OCI registry (docker-registry 2.8) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from msgspec.structs import replace
from oci_registry import OciRegistry, docker_registry_available
from tls_certs import make_server_certificate

from aperio_plugins._statement import SIGNATURE_FILE_NAME
from aperio_plugins.errors import (
    ArtifactRejectedError,
    DownloadError,
    InvalidWheelError,
    RegistryError,
    ResolutionError,
)
from aperio_plugins.registry._oci import (
    ARTIFACT_TYPE,
    SIGNATURE_MEDIA_TYPE,
    WHEEL_MEDIA_TYPE,
    OciReference,
    pull_wheel,
    push_wheel,
)
from aperio_plugins.registry._transfer import TransferLimits
from aperio_plugins.testing import PluginWheel, generate_signing_key, sign_wheel_with_key

pytestmark = pytest.mark.skipif(
    not docker_registry_available(), reason="docker-registry is not installed (apt-get install docker-registry)"
)

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def tls_registry():
    with OciRegistry(tls=True) as registry:
        yield registry


@pytest.fixture(scope="module")
def plain_registry():
    with OciRegistry(tls=False) as registry:
        yield registry


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("wheels")
    build = PluginWheel("acme-box", plugins={"acme.box": "acme_box"}, files={"acme_box/__init__.py": "X = 1\n"})
    unsigned = build.build(directory / "unsigned")
    private_key, _ = generate_signing_key(directory / "keys")
    signed = sign_wheel_with_key(unsigned, private_key, out=directory / "signed" / unsigned.name)
    return {"unsigned": unsigned, "signed": signed}


def fresh_wheel(directory: Path, version: str) -> Path:
    """A wheel no other test pushes: corrupting its blobs in storage spoils no other test."""
    files = {"acme_box/__init__.py": f"X = {version!r}\n"}
    return PluginWheel("acme-box", plugins={"acme.box": "acme_box"}, files=files, version=version).build(directory)


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, description: str, total: int | None) -> None:
        self.events.append(("start", (description, total)))

    def advance(self, size: int) -> None:
        self.events.append(("advance", size))

    def finish(self) -> None:
        self.events.append(("finish", None))


def limits_for(registry: OciRegistry, **changes) -> TransferLimits:
    limits = TransferLimits(
        max_bytes=10 * 1024 * 1024, connect_timeout=2, read_timeout=5, total_timeout=20, ca_bundle=registry.ca_bundle
    )
    if not registry.tls:
        limits = replace(limits, insecure_hosts=(registry.registry,))
    return replace(limits, **changes)


def ref(registry: OciRegistry, rest: str) -> OciReference:
    return OciReference.parse(f"oci://{registry.registry}/{rest}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embedded_signature(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(f"acme_box-1.0.0.dist-info/{SIGNATURE_FILE_NAME}")


# -- references -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci://127.0.0.1:5000/acme/box:1.0", OciReference("127.0.0.1:5000", "acme/box", "1.0", None)),
        ("oci://registry.example.com/acme/box", OciReference("registry.example.com", "acme/box", "latest", None)),
        ("oci://localhost/box", OciReference("localhost", "box", "latest", None)),
        ("oci://reg.io/plugins.v1/a/b__c:v1_2-rc.3", OciReference("reg.io", "plugins.v1/a/b__c", "v1_2-rc.3", None)),
        (f"oci://reg.io/acme/box@{DIGEST}", OciReference("reg.io", "acme/box", None, DIGEST)),
        (f"oci://reg.io/acme/box:1.0@{DIGEST}", OciReference("reg.io", "acme/box", "1.0", DIGEST)),
    ],
)
def test_parse_valid_references(text, expected):
    assert OciReference.parse(text) == expected
    reparsed = OciReference.parse(str(expected))
    assert reparsed == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:5000/acme/box:1.0",  # no scheme
        "https://reg.io/acme/box:1.0",
        "oci://reg.io",  # no repository
        "oci://reg.io/",
        "oci://reg.io/Acme/box",  # repositories are lower case
        "oci://reg.io/acme//box",
        "oci://reg.io/acme/../box",
        "oci://reg.io/acme/box:",
        "oci://reg.io/acme/box:-bad",
        "oci://reg.io:0/acme/box",
        "oci://reg.io:99999/acme/box",
        "oci://reg.io/acme/box@sha256:abc",  # short digest
        "oci://reg.io/acme/box@sha512:" + "ab" * 64,
        "oci://reg.io/acme/box@" + DIGEST.upper(),
        "oci://user@reg.io/acme/box",
        "oci://reg.io/acme/box:1.0 ",
    ],
)
def test_parse_invalid_references(text):
    with pytest.raises(ResolutionError, match="not an OCI reference"):
        OciReference.parse(text)


def test_str_of_a_digest_reference():
    assert str(OciReference("reg.io:443", "a/b", None, DIGEST)) == f"oci://reg.io:443/a/b@{DIGEST}"


# -- round trips ----------------------------------------------------------------


def test_signed_wheel_round_trip_over_tls(tls_registry, wheels, tmp_path):
    reference = ref(tls_registry, "acme/box:1.0.0")
    limits = limits_for(tls_registry)
    digest = push_wheel(wheels["signed"], reference, limits)

    progress = RecordingProgress()
    pulled = pull_wheel(reference, tmp_path / "out", limits, progress=progress)

    size = wheels["signed"].stat().st_size
    assert pulled.manifest_digest == digest
    assert pulled.wheel.path == tmp_path / "out" / wheels["signed"].name
    assert pulled.wheel.sha256 == sha256(pulled.wheel.path) == sha256(wheels["signed"])
    assert pulled.wheel.size == size
    assert pulled.signature == embedded_signature(wheels["signed"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == [wheels["signed"].name]
    assert progress.events[0] == ("start", (wheels["signed"].name, size))
    assert sum(n for kind, n in progress.events if kind == "advance") == size
    assert progress.events[-1] == ("finish", None)


def test_unsigned_wheel_has_no_signature_layer(tls_registry, wheels, tmp_path):
    reference = ref(tls_registry, "acme/box:unsigned")
    limits = limits_for(tls_registry)
    push_wheel(wheels["unsigned"], reference, limits)

    pulled = pull_wheel(reference, tmp_path, limits)

    assert pulled.signature is None
    assert pulled.wheel.sha256 == sha256(wheels["unsigned"])


def test_pull_by_digest(tls_registry, wheels, tmp_path):
    limits = limits_for(tls_registry)
    digest = push_wheel(wheels["signed"], ref(tls_registry, "acme/box:by-digest"), limits)

    pulled = pull_wheel(ref(tls_registry, f"acme/box@{digest}"), tmp_path, limits)

    assert pulled.manifest_digest == digest
    assert pulled.wheel.sha256 == sha256(wheels["signed"])


def test_push_refuses_an_invalid_wheel(tls_registry, tmp_path):
    bogus = tmp_path / "acme_box-1.0.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InvalidWheelError):
        push_wheel(bogus, ref(tls_registry, "acme/bogus:1"), limits_for(tls_registry))
    with pytest.raises(ResolutionError, match="no such tag"):
        pull_wheel(ref(tls_registry, "acme/bogus:1"), tmp_path / "out", limits_for(tls_registry))


def test_push_needs_a_tag(tls_registry, wheels):
    with pytest.raises(RegistryError, match="a push needs a tag, and no digest"):
        push_wheel(wheels["unsigned"], ref(tls_registry, f"acme/box@{DIGEST}"), limits_for(tls_registry))


# -- refusals -------------------------------------------------------------------


def test_missing_tag_is_a_clear_error(tls_registry, wheels, tmp_path):
    limits = limits_for(tls_registry)
    push_wheel(wheels["unsigned"], ref(tls_registry, "acme/box:present"), limits)
    reference = ref(tls_registry, "acme/box:absent")
    with pytest.raises(
        ResolutionError, match=r"acme/box:absent: the registry has no such tag or digest \(MANIFEST_UNKNOWN"
    ):
        pull_wheel(reference, tmp_path, limits)
    assert list(tmp_path.iterdir()) == []


def test_unknown_digest_is_refused(tls_registry, wheels, tmp_path):
    limits = limits_for(tls_registry)
    push_wheel(wheels["unsigned"], ref(tls_registry, "acme/box:1.0.0"), limits)
    with pytest.raises(ResolutionError, match="no such tag or digest"):
        pull_wheel(ref(tls_registry, f"acme/box@{DIGEST}"), tmp_path, limits)


def test_manifest_not_matching_the_digest_reference_is_refused(tls_registry, tmp_path):
    limits = limits_for(tls_registry)
    digest = push_wheel(fresh_wheel(tmp_path / "wheel", "2.0.0"), ref(tls_registry, "tampered/manifest:1"), limits)
    stored = tls_registry.blob_file(digest).read_bytes()
    # Same length, still valid JSON: the registry serves it as the manifest with that digest.
    tls_registry.corrupt_blob(digest, stored.replace(b"acme_box-2.0.0", b"acme_box-2.0.1"))

    out = tmp_path / "out"
    with pytest.raises(
        ArtifactRejectedError,
        match=r"tampered/manifest@sha256:[0-9a-f]{64}: the registry sent a manifest whose digest is sha256:",
    ):
        pull_wheel(ref(tls_registry, f"tampered/manifest@{digest}"), out, limits)
    assert not out.exists()


def test_corrupted_blob_is_refused_and_removed(tls_registry, tmp_path):
    limits = limits_for(tls_registry)
    reference = ref(tls_registry, "corrupt/box:1")
    wheel = fresh_wheel(tmp_path / "wheel", "3.0.0")
    push_wheel(wheel, reference, limits)
    tls_registry.corrupt_blob(f"sha256:{sha256(wheel)}")  # same size, one byte flipped

    out = tmp_path / "out"
    with pytest.raises(
        ArtifactRejectedError,
        match=r"corrupt/box:1: blob sha256:[0-9a-f]{64} does not match its manifest \(received \d+ bytes with digest sha256:",
    ):
        pull_wheel(reference, out, limits)
    assert list(out.iterdir()) == []


def test_layer_over_the_limit_is_refused_before_download(tls_registry, tmp_path):
    limits = limits_for(tls_registry)
    reference = ref(tls_registry, "big/box:1")
    wheel = fresh_wheel(tmp_path / "wheel", "4.0.0")
    push_wheel(wheel, reference, limits)
    # Gone from storage: had the client asked for the blob, it would have met a 404 instead.
    tls_registry.blob_file(f"sha256:{sha256(wheel)}").unlink()

    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"big/box:1: a layer of \d+ bytes is over the 100 byte limit"):
        pull_wheel(reference, out, replace(limits, max_bytes=100))
    assert not out.exists()


@pytest.mark.parametrize(
    "title",
    [
        "../acme_box-1.0.0-py3-none-any.whl",
        "sub/acme_box-1.0.0-py3-none-any.whl",
        "/tmp/acme_box-1.0.0-py3-none-any.whl",
        "..whl",
        ".hidden-1.0-py3-none-any.whl",
        "acme_box-1.0.0-py3-none-any.zip",
        "acme_box.whl",
        "acme_box-1.0.0-py3-none-any.whl\n",
        None,
    ],
)
def test_hostile_wheel_title_is_refused(tls_registry, wheels, tmp_path, title):
    data = wheels["unsigned"].read_bytes()
    layer = {"mediaType": WHEEL_MEDIA_TYPE, "digest": tls_registry.put_blob("hostile/box", data), "size": len(data)}
    if title is not None:
        layer["annotations"] = {"org.opencontainers.image.title": title}
    tls_registry.put_manifest("hostile/box", "1", manifest(tls_registry, "hostile/box", [layer]))

    with pytest.raises(
        ArtifactRejectedError, match=r"hostile/box:1: the wheel layer's title .* is not a wheel file name"
    ):
        pull_wheel(ref(tls_registry, "hostile/box:1"), tmp_path / "out", limits_for(tls_registry))
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def manifest(registry: OciRegistry, repository: str, layers: list[dict[str, object]], **fields) -> dict[str, object]:
    config = {"mediaType": ARTIFACT_TYPE, "digest": registry.put_blob(repository, b"{}"), "size": 2}
    document = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    return {**document, "artifactType": ARTIFACT_TYPE, "config": config, "layers": layers, **fields}


def test_unexpected_layers_are_refused(tls_registry, wheels, tmp_path):
    data = wheels["unsigned"].read_bytes()
    wheel = {
        "mediaType": WHEEL_MEDIA_TYPE,
        "digest": tls_registry.put_blob("odd/box", data),
        "size": len(data),
        "annotations": {"org.opencontainers.image.title": wheels["unsigned"].name},
    }
    signature = {"mediaType": SIGNATURE_MEDIA_TYPE, "digest": tls_registry.put_blob("odd/box", b"{}"), "size": 2}
    other = {**signature, "mediaType": "application/octet-stream"}
    cases = {"two-wheels": [wheel, wheel], "two-signatures": [wheel, signature, signature], "other": [wheel, other]}
    for tag, layers in cases.items():
        tls_registry.put_manifest("odd/box", tag, manifest(tls_registry, "odd/box", layers))
        with pytest.raises(ArtifactRejectedError, match="expected one wheel layer and at most one signature layer"):
            pull_wheel(ref(tls_registry, f"odd/box:{tag}"), tmp_path, limits_for(tls_registry))
    tls_registry.put_manifest(
        "odd/box", "image", manifest(tls_registry, "odd/box", [wheel], artifactType="application/vnd.other")
    )
    with pytest.raises(ArtifactRejectedError, match="is not an aperio plugin artifact"):
        pull_wheel(ref(tls_registry, "odd/box:image"), tmp_path, limits_for(tls_registry))
    assert list(tmp_path.iterdir()) == []


def test_oversized_signature_layer_is_refused_before_download(tls_registry, wheels, tmp_path):
    data = wheels["unsigned"].read_bytes()
    wheel = {
        "mediaType": WHEEL_MEDIA_TYPE,
        "digest": tls_registry.put_blob("sig/box", data),
        "size": len(data),
        "annotations": {"org.opencontainers.image.title": wheels["unsigned"].name},
    }
    # The descriptor lies about the size: the refusal must come from the declaration alone.
    signature = {
        "mediaType": SIGNATURE_MEDIA_TYPE,
        "digest": tls_registry.put_blob("sig/box", b"{}"),
        "size": 2 * 1024 * 1024,
    }
    tls_registry.put_manifest("sig/box", "1", manifest(tls_registry, "sig/box", [wheel, signature]))
    with pytest.raises(DownloadError, match=r"sig/box:1: a layer of 2097152 bytes is over the 1048576 byte limit"):
        pull_wheel(ref(tls_registry, "sig/box:1"), tmp_path, limits_for(tls_registry))


# -- transport ------------------------------------------------------------------


def test_plain_http_registry_needs_the_operators_opt_in(plain_registry, wheels, tmp_path):
    reference = ref(plain_registry, "acme/box:1.0.0")
    allowed = limits_for(plain_registry)
    push_wheel(wheels["signed"], reference, allowed)
    refused = replace(allowed, insecure_hosts=())

    with pytest.raises(
        DownloadError,
        match=r"cannot pull oci://127\.0\.0\.1:\d+/acme/box:1\.0\.0: the TLS handshake failed; a registry that speaks only plain HTTP must be listed in the insecure hosts",
    ):
        pull_wheel(reference, tmp_path, refused)
    pulled = pull_wheel(reference, tmp_path, allowed)
    assert pulled.wheel.sha256 == sha256(wheels["signed"])


def test_untrusted_certificate_is_refused(tls_registry, wheels, tmp_path):
    reference = ref(tls_registry, "acme/box:1.0.0")
    push_wheel(wheels["signed"], reference, limits_for(tls_registry))
    with pytest.raises(DownloadError, match=r"its certificate is not trusted \(.*\); set the registry CA bundle"):
        pull_wheel(reference, tmp_path, limits_for(tls_registry, ca_bundle=None))
    assert list(tmp_path.iterdir()) == []


def test_unreachable_registry_fails_fast(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reference = OciReference.parse(f"oci://127.0.0.1:{port}/acme/box:1")
    limits = TransferLimits(max_bytes=1024, connect_timeout=2, read_timeout=2, total_timeout=60)
    started = time.monotonic()
    with pytest.raises(
        DownloadError,
        match=rf"cannot pull oci://127\.0\.0\.1:{port}/acme/box:1: the connection to 127\.0\.0\.1:{port} failed",
    ):
        pull_wheel(reference, tmp_path, limits)
    assert time.monotonic() - started < 5


def test_silent_registry_times_out(tmp_path):
    # A server that accepts connections and never answers: only a read timeout ends the wait.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        reference = OciReference.parse(f"oci://127.0.0.1:{port}/acme/box:1")
        limits = TransferLimits(max_bytes=1024, connect_timeout=1, read_timeout=0.5, total_timeout=60)
        started = time.monotonic()
        with pytest.raises(DownloadError, match="the registry did not answer in time"):
            pull_wheel(reference, tmp_path, limits)
        assert time.monotonic() - started < 5


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(307)
        self.send_header("Location", f"{self.server.target}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def redirecting_server(target: str, certificates: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 that redirects every GET to `target` + the same path."""
    certificate = make_server_certificate(certificates)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectHandler)
    server.target = target
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.certificate, certificate.private_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", certificate.ca_bundle
    finally:
        server.shutdown()
        server.server_close()


def test_redirect_to_plain_http_is_refused(plain_registry, wheels, tmp_path):
    push_wheel(wheels["signed"], ref(plain_registry, "acme/box:1.0.0"), limits_for(plain_registry))
    with redirecting_server(plain_registry.base_url, tmp_path / "tls") as (host, ca_bundle):
        limits = TransferLimits(
            max_bytes=10**7, connect_timeout=2, read_timeout=5, total_timeout=20, ca_bundle=ca_bundle
        )
        with pytest.raises(
            DownloadError, match=r"/acme/box:1\.0\.0: the registry redirected the manifest to plain HTTP"
        ):
            pull_wheel(OciReference.parse(f"oci://{host}/acme/box:1.0.0"), tmp_path / "out", limits)
    assert not (tmp_path / "out").exists()
