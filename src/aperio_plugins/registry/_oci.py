"""Plugin wheels as OCI artifacts: push one to a registry, pull one back with every check.

An artifact is one OCI image manifest (`application/vnd.oci.image.manifest.v1+json`):

- `artifactType` and the config's media type: `application/vnd.aperio.plugin.v1`
  (the config blob is the empty JSON object `{}`);
- layer 1, the wheel: `application/vnd.aperio.plugin.wheel.v1+zip`, with the
  annotation `org.opencontainers.image.title` = the wheel's file name;
- layer 2, only when the wheel is signed: its `.dist-info/aperio-signature.json`
  bytes, `application/vnd.aperio.plugin.signature.v1+json`, so that a client can
  check the signature material before it unpacks anything. A layer rather than a
  referrer because registries without the OCI 1.1 referrers API must work too.
- further layers, one per signature over the wheel file that sat beside it when it
  was pushed: a Sigstore message-signature bundle (`WHEEL.sigstore.json`,
  `application/vnd.dev.sigstore.bundle.v0.3+json`) or a PEP 740 attestation or
  provenance object (`application/vnd.aperio.plugin.attestation.v1+json`); the
  title annotation is the side file's name.

oras-py speaks the registry protocol (credentials, uploads, requests). What it
lacks is added here: timeouts, no retry loop, bounded reads, and the sha256 of
the manifest and of every blob checked against what was asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import oras.auth  # type: ignore[import-untyped]  # oras-py ships no type information
import oras.container  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .._atomic import replaced_atomically
from .._statement import SIGNATURE_FILE_NAME
from .._wheel import read_wheel
from .._wheel_signatures import WheelSignature, WheelSignatureKind, signatures_beside
from ..errors import ArtifactRejectedError, DownloadError, InvalidWheelError, RegistryError, ResolutionError
from ._transfer import CHUNK_BYTES, Fetched, NoProgress, Progress, TransferLimits, arriving_chunks

ARTIFACT_TYPE = "application/vnd.aperio.plugin.v1"
WHEEL_MEDIA_TYPE = "application/vnd.aperio.plugin.wheel.v1+zip"
SIGNATURE_MEDIA_TYPE = "application/vnd.aperio.plugin.signature.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ATTESTATION_MEDIA_TYPE = "application/vnd.aperio.plugin.attestation.v1+json"
_WHEEL_SIGNATURE_MEDIA_TYPES: dict[str, WheelSignatureKind] = {
    BUNDLE_MEDIA_TYPE: "sigstore-bundle",
    ATTESTATION_MEDIA_TYPE: "pep740",
}
MAX_WHEEL_SIGNATURE_LAYERS = 4
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_SIGNATURE_BYTES = 1024 * 1024
_EMPTY_CONFIG = b"{}"


# The OCI distribution spec's grammar for names, tags and digests; hosts as DNS names or IPv4.
_REFERENCE = re.compile(
    r"""oci://(?P<registry>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::(?P<port>[0-9]{1,5}))?)
    /(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)
    (?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?
    (?:@(?P<digest>sha256:[0-9a-f]{64}))?""",
    re.VERBOSE,
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_WHEEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.!+-]*\.whl")


class OciReference(msgspec.Struct, frozen=True):
    """Where an artifact lives: `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]`."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> OciReference:
        """Return the reference `text` names (tag "latest" when it names neither tag nor digest).

        Raises `ResolutionError` when `text` is not an `oci://` reference.
        """
        match = _REFERENCE.fullmatch(text)
        port = match and match["port"]
        if match is None or (port is not None and not 0 < int(port) < 65536):
            raise ResolutionError(
                f"not an OCI reference: {text!r}; expected oci://HOST[:PORT]/REPOSITORY[:TAG] "
                "or oci://HOST[:PORT]/REPOSITORY@sha256:<64 lowercase hex digits>"
            )
        tag = match["tag"] or (None if match["digest"] else "latest")
        return cls(match["registry"], match["repository"], tag, match["digest"])

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"oci://{self.registry}/{self.repository}{tag}{digest}"


class PulledWheel(msgspec.Struct, frozen=True):
    """A pulled wheel (digest-checked), its signature layer's bytes (None: unsigned), the manifest's digest."""

    wheel: Fetched
    signature: bytes | None
    manifest_digest: str
    wheel_signatures: list[WheelSignature] = msgspec.field(default_factory=list)


class _Layer(msgspec.Struct, frozen=True):
    media_type: str
    digest: str
    size: int
    title: str | None


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Gives every request without one the limits' (connect, read) timeouts: oras-py sets none at all."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, *args, **kwargs)


# oras-py wraps `do_request` in a retry loop that sleeps about 130 s before it reports
# any error, an unreachable registry included; the undecorated function fails at once.
_REQUEST_ONCE = getattr(oras.provider.Registry.do_request, "__wrapped__", oras.provider.Registry.do_request)


class _Registry(oras.provider.Registry):  # type: ignore[misc]  # oras-py is untyped
    def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        return cast(requests.Response, _REQUEST_ONCE(self, *args, **kwargs))


class _Remote(msgspec.Struct, frozen=True):
    """An oras-py client, its container (oras' name for repository and tag or digest), the reference errors name."""

    registry: _Registry
    container: Any
    reference: OciReference


def _connect(reference: OciReference, limits: TransferLimits) -> _Remote:
    """Return an oras-py client for `reference` with the limits' TLS settings and timeouts."""
    insecure = reference.registry in limits.insecure_hosts
    verify: bool | str = str(limits.ca_bundle) if limits.ca_bundle is not None else True
    registry = _Registry(hostname=reference.registry, insecure=insecure, tls_verify=verify)
    adapter = _TimeoutAdapter((limits.connect_timeout, limits.read_timeout))
    registry.session.mount("https://", adapter)
    registry.session.mount("http://", adapter)
    # Set the parts directly: oras' own parser takes "plugins.v1/x" for a registry host.
    container = oras.container.Container("placeholder", registry=reference.registry)
    namespace, _, container.repository = reference.repository.rpartition("/")
    container.namespace = namespace or None
    container.tag = reference.tag or "latest"
    container.digest = reference.digest
    registry.auth.load_configs(container)
    return _Remote(registry, container, reference)


def _tls_problem(exc: BaseException) -> str:
    """Return why a TLS connection failed, looking for the certificate error requests and urllib3 wrap."""
    causes: list[BaseException] = [exc]
    for cause in causes:  # grows as wrapped causes turn up
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its certificate is not trusted ({cause.verify_message}); set the registry CA bundle"
        if len(causes) < 32:  # bounded: exception arguments could refer back to each other
            causes.extend(a for a in (*cause.args, getattr(cause, "reason", None)) if isinstance(a, BaseException))
    return "the TLS handshake failed; a registry that speaks only plain HTTP must be listed in the insecure hosts"


@contextmanager
def _registry_errors(reference: OciReference, action: str, error: type[RegistryError]) -> Iterator[None]:
    """Turn what requests and oras-py raise into `error`, naming the reference and the reason."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise error(f"cannot {action} {reference}: {_tls_problem(exc)}") from None
    except requests.exceptions.Timeout:
        raise error(f"cannot {action} {reference}: the registry did not answer in time") from None
    except requests.exceptions.ConnectionError as exc:
        raise error(f"cannot {action} {reference}: the connection to {reference.registry} failed: {exc}") from None
    except (requests.RequestException, oras.auth.AuthenticationException, ValueError, OSError) as exc:
        raise error(f"cannot {action} {reference}: {exc}") from None


def _refuse_status(response: requests.Response, remote: _Remote, what: str) -> None:
    """Return when the registry answered 200 over the scheme asked for; raise `ResolutionError` for an
    unknown manifest, `DownloadError` otherwise."""
    reference, hops = remote.reference, (*response.history, response)
    # A redirect from HTTPS to plain HTTP would hand the manifest or blob to whoever is on the path.
    if remote.registry.prefix == "https" and any(not hop.url.startswith("https://") for hop in hops):
        raise DownloadError(f"cannot pull {reference}: the registry redirected the {what} to plain HTTP")
    if response.status_code == 200:
        return
    try:  # from the first chunk only: an error is no reason to read a body without bound
        errors = json.loads(next(response.iter_content(CHUNK_BYTES), b""))["errors"]
        reasons = "; ".join(f"{e['code']}: {e['message']}" for e in errors)
    except (ValueError, KeyError, TypeError, RecursionError):
        reasons = response.reason
    if response.status_code == 404 and what == "manifest":
        raise ResolutionError(f"{reference}: the registry has no such tag or digest ({reasons})")
    raise DownloadError(
        f"cannot pull {reference}: the registry answered {response.status_code} for the {what}: {reasons}"
    )


def _chunks(response: requests.Response, limit: int, deadline: float, reference: OciReference) -> Iterator[bytes]:
    """Yield the response body, refusing more than `limit` bytes or a transfer past `deadline`."""
    received = 0
    for chunk in arriving_chunks(response.raw):
        received += len(chunk)
        if received > limit:
            raise ArtifactRejectedError(f"{reference}: the registry sent more than {limit} bytes")
        if time.monotonic() > deadline:
            raise DownloadError(f"cannot pull {reference}: the transfer took longer than allowed")
        yield chunk


def push_wheel(wheel: Path, reference: OciReference, limits: TransferLimits) -> str:
    """Push `wheel` as a plugin artifact (layout in the module docstring) to `reference`'s tag.

    Returns the manifest's digest ("sha256:…"). Raises `InvalidWheelError` for a
    wheel that is not one (checked before anything is sent) and `RegistryError`
    when the registry cannot be reached or refuses the upload.
    """
    if reference.digest is not None or reference.tag is None:
        raise RegistryError(f"cannot push to {reference}: a push needs a tag, and no digest")
    checked = read_wheel(wheel)
    if not _plain_wheel_name(wheel.name):
        raise InvalidWheelError(f"{wheel}: not a wheel file name (NAME-VERSION-PYTHON-ABI-PLATFORM.whl)")
    signature = checked.members.get(f"{checked.dist_info}/{SIGNATURE_FILE_NAME}")
    beside = signatures_beside(wheel)
    with (
        tempfile.TemporaryDirectory(prefix="aperio-oci-") as scratch,
        _registry_errors(reference, "push", RegistryError),
    ):
        remote = _connect(reference, limits)
        files = [(wheel, WHEEL_MEDIA_TYPE, wheel.name)]
        if signature is not None:
            (Path(scratch) / SIGNATURE_FILE_NAME).write_bytes(signature)
            files.append((Path(scratch) / SIGNATURE_FILE_NAME, SIGNATURE_MEDIA_TYPE, SIGNATURE_FILE_NAME))
        media_types = {kind: media_type for media_type, kind in _WHEEL_SIGNATURE_MEDIA_TYPES.items()}
        for side in beside:
            (Path(scratch) / side.origin).write_bytes(side.data)
            files.append((Path(scratch) / side.origin, media_types[side.kind], side.origin))
        (Path(scratch) / "config.json").write_bytes(_EMPTY_CONFIG)
        config = _upload(remote, Path(scratch) / "config.json", ARTIFACT_TYPE, None)
        layers = [_upload(remote, path, media_type, title) for path, media_type, title in files]
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE}
        body = json.dumps({**manifest, "config": config, "layers": layers}, separators=(",", ":")).encode()
        url = f"{remote.registry.prefix}://{remote.container.manifest_url(reference.tag)}"
        response = remote.registry.do_request(url, "PUT", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if response.status_code not in (200, 201):
            raise RegistryError(f"cannot push {reference}: the registry refused the manifest: {response.text[:500]}")
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def _upload(remote: _Remote, path: Path, media_type: str, title: str | None) -> dict[str, Any]:
    """Upload the blob at `path` (unless the registry has it); return its descriptor."""
    data = path.read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
    if title is not None:
        descriptor["annotations"] = {TITLE_ANNOTATION: title}
    response = remote.registry.upload_blob(str(path), remote.container, descriptor)
    if response.status_code not in (200, 201, 202):
        raise RegistryError(
            f"cannot push {remote.reference}: the registry refused blob {digest}: {response.status_code}"
        )
    return descriptor


def pull_wheel(
    reference: OciReference, directory: Path, limits: TransferLimits, *, progress: Progress | None = None
) -> PulledWheel:
    """Pull the plugin artifact at `reference`; write its wheel into `directory` under its own file name.

    Returns the wheel (path, sha256, size), the signature layer's bytes (None when
    the artifact has none) and the manifest's digest. Raises `ResolutionError`
    when the registry has no such tag or digest, `DownloadError` when it cannot
    be reached (TLS, timeouts, size of a transfer) and `ArtifactRejectedError` when
    the manifest or a blob is not what was asked for. Nothing is left in
    `directory` when it raises.
    """
    deadline = time.monotonic() + limits.total_timeout
    with _registry_errors(reference, "pull", DownloadError):
        remote = _connect(reference, limits)
        manifest = _fetch_manifest(remote, deadline)
        digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
        if reference.digest is not None and not hmac.compare_digest(digest, reference.digest):
            raise ArtifactRejectedError(f"{reference}: the registry sent a manifest whose digest is {digest}")
        wheel_layer, filename, signature_layer, wheel_signature_layers = _parse_manifest(manifest, reference, limits)
        signature = None
        if signature_layer is not None:
            signature = _pull_small_blob(remote, signature_layer, deadline)
        wheel_signatures = [
            WheelSignature(
                _WHEEL_SIGNATURE_MEDIA_TYPES[layer.media_type],
                _pull_small_blob(remote, layer, deadline),
                f"the OCI artifact's {layer.title or layer.media_type} layer",
            )
            for layer in wheel_signature_layers
        ]
        fetched = _pull_wheel_file(remote, wheel_layer, directory / filename, deadline, progress or NoProgress())
    return PulledWheel(fetched, signature, digest, wheel_signatures)


def _pull_small_blob(remote: _Remote, layer: _Layer, deadline: float) -> bytes:
    parts: list[bytes] = []
    _pull_blob(remote, layer, deadline, parts.append, NoProgress())
    return b"".join(parts)


def _fetch_manifest(remote: _Remote, deadline: float) -> bytes:
    """Return the manifest's bytes exactly as received (its digest is theirs), at most `MAX_MANIFEST_BYTES`."""
    url = f"{remote.registry.prefix}://{remote.container.manifest_url()}"
    with remote.registry.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True) as response:
        _refuse_status(response, remote, "manifest")
        return b"".join(_chunks(response, MAX_MANIFEST_BYTES, deadline, remote.reference))


def _parse_manifest(
    data: bytes, reference: OciReference, limits: TransferLimits
) -> tuple[_Layer, str, _Layer | None, list[_Layer]]:
    """Return the wheel layer, its file name, the signature layer (if any) and the layers of signatures
    over the wheel file.

    Raises `ArtifactRejectedError` unless the manifest is an aperio plugin artifact
    with one wheel, at most one signature, at most `MAX_WHEEL_SIGNATURE_LAYERS` signatures
    over the wheel and no other layer, and `DownloadError` when a layer declares more bytes
    than the limits allow.
    """
    try:
        manifest = json.loads(data)
        kind = (manifest.get("mediaType"), manifest.get("artifactType", ARTIFACT_TYPE), manifest["config"]["mediaType"])
        layers = [_descriptor(layer) for layer in manifest["layers"]]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ArtifactRejectedError(f"{reference}: the registry sent a malformed OCI manifest") from None
    if kind != (MANIFEST_MEDIA_TYPE, ARTIFACT_TYPE, ARTIFACT_TYPE):
        raise ArtifactRejectedError(f"{reference} is not an aperio plugin artifact (media types {kind})")
    wheels = [layer for layer in layers if layer.media_type == WHEEL_MEDIA_TYPE]
    signatures = [layer for layer in layers if layer.media_type == SIGNATURE_MEDIA_TYPE]
    over_wheel = [layer for layer in layers if layer.media_type in _WHEEL_SIGNATURE_MEDIA_TYPES]
    known = len(wheels) + len(signatures) + len(over_wheel)
    if len(wheels) != 1 or len(signatures) > 1 or len(over_wheel) > MAX_WHEEL_SIGNATURE_LAYERS or known != len(layers):
        raise ArtifactRejectedError(
            f"{reference}: expected one wheel layer and at most one signature layer (and at most"
            f" {MAX_WHEEL_SIGNATURE_LAYERS} signature layers over the wheel file), found media types "
            f"{[layer.media_type for layer in layers]}"
        )
    filename = wheels[0].title
    if filename is None or not _plain_wheel_name(filename):
        raise ArtifactRejectedError(f"{reference}: the wheel layer's title {filename!r} is not a wheel file name")
    small = [*signatures, *over_wheel]
    for layer, limit in ((wheels[0], limits.max_bytes), *((s, MAX_SIGNATURE_BYTES) for s in small)):
        if layer.size > limit:
            raise DownloadError(
                f"cannot pull {reference}: a layer of {layer.size} bytes is over the {limit} byte limit"
            )
    return wheels[0], filename, signatures[0] if signatures else None, over_wheel


def _descriptor(layer: dict[str, Any]) -> _Layer:
    """Return the layer's descriptor; raise `ValueError` when a field is missing or malformed."""
    media_type, digest, size = layer["mediaType"], layer["digest"], layer["size"]
    title = (layer.get("annotations") or {}).get(TITLE_ANNOTATION)
    valid = isinstance(media_type, str) and isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None
    if not valid or type(size) is not int or size < 0 or not isinstance(title, (str, type(None))):
        raise ValueError("malformed layer descriptor")
    return _Layer(media_type, digest, size, title)


def _plain_wheel_name(name: str) -> bool:
    """Whether `name` is a bare wheel file name: nothing that could leave the download directory."""
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        return False
    return _WHEEL_NAME.fullmatch(name) is not None and ".." not in name


def _pull_blob(
    remote: _Remote, layer: _Layer, deadline: float, sink: Callable[[bytes], object], progress: Progress
) -> None:
    """Stream the blob of `layer` into `sink`; raise `ArtifactRejectedError` unless its size and sha256 match."""
    reference, digest, size = remote.reference, hashlib.sha256(), 0
    with remote.registry.get_blob(remote.container, layer.digest, stream=True) as response:
        _refuse_status(response, remote, f"blob {layer.digest}")
        progress.start(layer.title or layer.digest, layer.size)
        try:
            for chunk in _chunks(response, layer.size, deadline, reference):
                digest.update(chunk)
                size += len(chunk)
                sink(chunk)
                progress.advance(len(chunk))
        finally:
            progress.finish()
    actual = f"sha256:{digest.hexdigest()}"
    if size != layer.size or not hmac.compare_digest(actual, layer.digest):
        raise ArtifactRejectedError(
            f"{reference}: blob {layer.digest} does not match its manifest (received {size} bytes with digest {actual})"
        )


def _pull_wheel_file(remote: _Remote, layer: _Layer, target: Path, deadline: float, progress: Progress) -> Fetched:
    """Pull the wheel layer to `target` through a temporary file renamed once checked; return it."""
    with replaced_atomically(target) as stream:
        _pull_blob(remote, layer, deadline, stream.write, progress)
    return Fetched(target, layer.digest.removeprefix("sha256:"), layer.size, str(remote.reference))
