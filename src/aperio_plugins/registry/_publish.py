"""`aperio registry add`: append a release of a signed wheel to an index, as its authors and maintainers do.

Releases are immutable: adding a version that is already listed with other
contents is refused (listing the very same artifact again changes nothing), and
`updated_at` always moves forward so that clients accept the new index.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .._atomic import write_atomically
from .._manifest import MANIFEST_NAME, PluginSection, api_requirement, manifest_sections
from .._signature_file import Ed25519Signature, parse_signature_file
from .._statement import SIGNATURE_FILE_NAME
from .._wheel import Wheel, read_wheel
from .._wheel_signatures import as_json_object, signatures_beside
from ..errors import ArtifactRejectedError, InvalidWheelError, ManifestError, RegistryError, VerificationError
from ._artifact import requires_dist, wheel_plugins
from ._index import (
    AttestationReleaseSignature,
    Ed25519ReleaseSignature,
    IndexedPlugin,
    PluginIndex,
    Publisher,
    Release,
    ReleaseSignature,
    SigstoreBundleReleaseSignature,
    SigstoreReleaseSignature,
    empty_index,
    parse_index,
)
from ._resolve import url_file_name


class AddedRelease(msgspec.Struct, frozen=True):
    plugin_ids: tuple[str, ...]
    version: str
    sha256: str
    unchanged: bool


def _file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def release_signatures(wheel: Wheel) -> list[ReleaseSignature]:
    """Return the wheel's embedded signatures in the index's form (empty for an unsigned wheel)."""
    data = wheel.members.get(f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}")
    if data is None:
        return []
    signatures: list[ReleaseSignature] = []
    for signature in parse_signature_file(data).signatures:
        if isinstance(signature, Ed25519Signature):
            key_id = str(signature.envelope["signatures"][0]["keyid"])
            signatures.append(Ed25519ReleaseSignature(kind="ed25519", key_id=key_id, envelope=signature.envelope))
        else:
            signatures.append(SigstoreReleaseSignature(kind="sigstore", bundle=signature.bundle))
    return signatures


def _signatures_beside(wheel_path: Path) -> list[ReleaseSignature]:
    """Return the signatures over the wheel file that sit beside it (`WHEEL.sigstore.json`, …) in the
    index's form, so that `registry add` publishes what `sigstore sign` or PyPI produced."""
    signatures: list[ReleaseSignature] = []
    for side in signatures_beside(wheel_path):
        document = as_json_object(side)
        if not isinstance(document, dict):
            raise VerificationError(f"{side.origin}: not a JSON object")
        if side.kind == "sigstore-bundle":
            signatures.append(SigstoreBundleReleaseSignature(kind="sigstore-bundle", bundle=document))
        else:
            signatures.append(AttestationReleaseSignature(kind="pep740", attestation=document))
    return signatures


def check_download_url(url: str, index_is_local: bool) -> None:
    """Refuse a download URL clients would refuse: not HTTPS (or a relative or local path for a local
    index), or not naming a wheel file."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "") and not (parts.scheme == "file" and index_is_local):
        raise RegistryError(f"download URL {url} must be https:// (or relative to the index)")
    name = url_file_name(url)
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        raise RegistryError(f"download URL {url} does not end in a wheel file name") from None


def _sections(wheel: Wheel, plugins: dict[str, str]) -> dict[str, PluginSection]:
    """Return the manifest sections of the wheel's plugins, read from each entry point's top-level package."""
    packages = {value.split(":")[0].strip().split(".")[0] for value in plugins.values()}
    sections: dict[str, PluginSection] = {}
    for package in sorted(packages):
        data = wheel.members.get(f"{package}/{MANIFEST_NAME}")
        if data is not None:
            sections.update(manifest_sections(data, f"{package}/{MANIFEST_NAME}"))
    missing = [plugin_id for plugin_id in plugins if plugin_id not in sections]
    if missing:
        raise ManifestError(f"no manifest section for {', '.join(missing)} in the wheel")
    return {plugin_id: sections[plugin_id] for plugin_id in plugins}


def build_release(
    wheel_path: Path, download_url: str, publisher: Publisher
) -> tuple[Wheel, dict[str, PluginSection], Release]:
    """Return the checked wheel, the manifest sections of its plugins and the release entry describing it.

    Raises `ArtifactRejectedError` for a wheel that is not a usable plugin.
    """
    try:
        wheel = read_wheel(wheel_path, where=wheel_path.name)
        sections = _sections(wheel, wheel_plugins(wheel))
        requirement = api_requirement(requires_dist(wheel))
        signatures = release_signatures(wheel) + _signatures_beside(wheel_path)
    except (InvalidWheelError, ManifestError, ArtifactRejectedError, VerificationError) as exc:
        raise ArtifactRejectedError(f"{wheel_path.name}: {exc.message.removeprefix(wheel_path.name + ': ')}") from None
    sha256, size = _file_sha256(wheel_path)
    name = parse_wheel_filename(url_file_name(download_url))
    if name[0] != canonicalize_name(wheel.distribution) or name[1] != Version(wheel.version):
        raise RegistryError(
            f"download URL {download_url} names {name[0]} {name[1]}, but the wheel is {wheel.distribution}"
            f" {wheel.version}"
        )
    release = Release(
        version=wheel.version,
        api_requirement=requirement,
        url=download_url,
        sha256=sha256,
        size=size,
        signatures=signatures,
        publisher=publisher,
    )
    return wheel, sections, release


def add_release(
    index_path: Path, wheel_path: Path, download_url: str, publisher: Publisher, *, now: datetime
) -> AddedRelease:
    """Add the wheel at `wheel_path` as a release of each plugin id it provides to the index at
    `index_path` (created when missing) and write the index back atomically.

    Raises `RegistryError` (or a subclass) naming the plugin, the version and the reason; the index
    file is then unchanged.
    """
    existed = index_path.exists()
    index = parse_index(index_path.read_bytes(), str(index_path)) if existed else empty_index(now)
    check_download_url(download_url, index_is_local=True)
    wheel, sections, release = build_release(wheel_path, download_url, publisher)
    plugins = {plugin.id: plugin for plugin in index.plugins}
    unchanged = True
    for plugin_id, section in sorted(sections.items()):
        listed = plugins.get(plugin_id)
        if listed is None:
            plugins[plugin_id] = IndexedPlugin(
                id=plugin_id,
                distribution=wheel.distribution,
                kinds=list(section.kinds),
                description=section.summary,
                versions=[release],
            )
            unchanged = False
            continue
        if listed.canonical_distribution != canonicalize_name(wheel.distribution):
            raise RegistryError(
                f"{plugin_id} is published by {listed.distribution} in this index, not {wheel.distribution}"
            )
        same = next((r for r in listed.versions if r.parsed_version == release.parsed_version), None)
        if same is not None:
            if same.sha256 != release.sha256:
                raise RegistryError(
                    f"{plugin_id} {release.version} is already listed with sha256 {same.sha256}: published releases"
                    " never change; release a new version"
                )
            continue
        plugins[plugin_id] = listed.model_copy(
            update={
                "versions": [*listed.versions, release],
                "kinds": list(section.kinds),
                "description": section.summary,
            }
        )
        unchanged = False
    if not unchanged:
        # Clients refuse an index whose updated_at does not move forward, even when the clock went back.
        updated = max(now, index.updated_at + timedelta(seconds=1)) if existed else now
        index = PluginIndex(format_version=index.format_version, updated_at=updated, plugins=list(plugins.values()))
        _publish(index_path, index)
    return AddedRelease(tuple(sorted(sections)), release.version, release.sha256, unchanged)


def _publish(path: Path, index: PluginIndex) -> None:
    text = index.to_json()
    # Re-validate what is about to be published: a bug here must not ship an index clients refuse.
    parse_index(text.encode(), str(path))
    write_atomically(path, text.encode())
