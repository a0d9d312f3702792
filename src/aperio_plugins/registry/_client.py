"""The registry client: read an index, then install, remove and lock plugins in the plugins directory.

Each operation validates everything it can before it changes anything: the index
(schema, then freshness), the resolution, the download (limits), the artifact
(digest, contents, API, dependencies, signatures), the release as pip laid it out
in staging (the host's own inspect and verify). Only then does one journaled
transaction change the plugins directory.
"""

from __future__ import annotations

import functools
import importlib.metadata
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from aperio_hookspecs import API_VERSION, ENTRY_POINT_GROUP

from .._audit import default_audit_logger
from .._model import TrustMode
from .._receipt import write_receipt
from .._settings import HostSettings
from .._state import StateStore
from .._state_url import open_state_store
from .._trust import TrustStore, load_trust_store
from .._wheel_signatures import WheelSignature, signatures_beside
from ..errors import AperioError, ArtifactRejectedError, InstallError, ResolutionError
from ._artifact import (
    CheckedArtifact,
    ExpectedRelease,
    check_artifact,
    check_staged_release,
    refuse_collisions,
    refuse_shadowed_ids,
    signature_document,
    wheel_level_signatures,
)
from ._download import download, fetch_bytes
from ._freshness import accept_fresh_index
from ._index import MAX_INDEX_BYTES, IndexedPlugin, PluginIndex, parse_index
from ._lockfile import LockedRelease, LockFile
from ._plugins_dir import (
    InstalledDistribution,
    InstallOutcome,
    InstallRecord,
    installed_distributions,
    remove_distribution,
    stage_and_install,
)
from ._resolve import Resolved, parse_requirement, resolve, url_file_name
from ._transaction import PluginsDirectoryLock
from ._transfer import NoProgress, Progress, TransferLimits


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def index_source(location: str) -> str:
    """Return an index location as a URL: paths become `file:` URLs, URLs stay as they are."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).expanduser().resolve().as_uri()


class LoadedIndex(msgspec.Struct, frozen=True):
    index: PluginIndex
    source: str


class InstallResult(msgspec.Struct, frozen=True):
    """What an install did: the release, where it came from, what it replaced, and any trust warnings."""

    plugin_ids: tuple[str, ...]
    distribution: str
    version: str
    source: str
    sha256: str
    verification_detail: str
    replaced: str | None
    warnings: tuple[str, ...]
    unchanged: bool = False
    signature_status: str | None = None
    receipt: bool = False

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (what `aperio plugin install --json` prints)."""
        return {
            "plugin_ids": list(self.plugin_ids),
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
            "sha256": self.sha256,
            "signature": {"status": self.signature_status, "detail": self.verification_detail},
            "install_receipt": self.receipt,
            "replaced": self.replaced,
            "warnings": list(self.warnings),
            "unchanged": self.unchanged,
        }


@dataclass
class _Attempt:
    """The plugin (or the spec naming it) and version an install is about, as far as known yet."""

    plugin_id: str
    version: str | None


@dataclass
class RegistryClient:
    """Reads indexes and changes one plugins directory. Cheap to create; holds no open resources
    except the state store, closed by `close()` (or use it as a context manager)."""

    settings: HostSettings
    store: StateStore
    trust: TrustStore
    progress: Progress = field(default_factory=NoProgress)
    host_api_version: str = API_VERSION
    clock: Callable[[], datetime] = _utc_now
    audit: Any = field(default_factory=default_audit_logger)

    @classmethod
    def from_settings(cls, settings: HostSettings | None = None, **options: Any) -> RegistryClient:
        settings = settings or HostSettings.from_environment()
        store = open_state_store(settings)
        return cls(settings, store, load_trust_store(settings), **options)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def limits(self) -> TransferLimits:
        return TransferLimits.from_settings(self.settings)

    @property
    def plugins_dir(self) -> Path:
        return self.settings.plugins_dir

    # -- indexes -----------------------------------------------------------------------------------------------

    def load_index(self, location: str | None = None) -> LoadedIndex:
        """Return the index at `location` (default: APERIO_REGISTRY_INDEX), checked for format and freshness.

        Raises `ResolutionError` when no index is configured, `DownloadError`,
        `IndexFormatError` or `StaleIndexError` when it cannot be used.
        """
        location = location or self.settings.registry_index
        if not location:
            raise ResolutionError("no plugin index configured: set APERIO_REGISTRY_INDEX or pass --index")
        source = index_source(location)
        content, _ = fetch_bytes(source, self.limits, max_bytes=MAX_INDEX_BYTES)
        index = parse_index(content, source)
        accept_fresh_index(index, content, source, self.store, now=self.clock(), max_age=self.settings.registry_max_age)
        return LoadedIndex(index, source)

    def search(self, text: str, location: str | None = None) -> list[IndexedPlugin]:
        """Return the index's plugins whose id, distribution, kinds or description contain `text`."""
        needle = text.casefold()
        loaded = self.load_index(location)
        return [
            plugin
            for plugin in loaded.index.plugins
            if needle in " ".join([plugin.id, plugin.distribution, plugin.description, *plugin.kinds]).casefold()
        ]

    # -- install -----------------------------------------------------------------------------------------------

    def install(self, spec: str, *, index: str | None = None, pre: bool = False) -> InstallResult:
        """Install `spec`: `ID`, `ID@VERSION` (from the index), a wheel path or `file:` URL, or `oci://…`.

        Raises a `RegistryError` naming the plugin, the version and the reason; the
        plugins directory and the enable flags are then unchanged.
        """
        with self._refusals_audited(spec) as attempt:
            if spec.startswith("oci://"):
                return self._install_oci(spec, expected_sha256=None)
            if spec.endswith(".whl") or spec.startswith("file:"):
                return self._install_file(spec, expected_sha256=None)
            attempt.plugin_id, attempt.version = parse_requirement(spec)
            loaded = self.load_index(index)
            resolved = resolve(
                loaded.index,
                loaded.source,
                attempt.plugin_id,
                attempt.version,
                host_api_version=self.host_api_version,
                pre=pre,
            )
            attempt.version = resolved.release.version
            return self._install_resolved(resolved, loaded.source, expected_sha256=None)

    def install_locked(self, lock: LockFile, *, only: frozenset[str] = frozenset()) -> list[InstallResult]:
        """Install every release of `lock` (or those providing a plugin id in `only`) with its pinned digest."""
        wanted = [entry for entry in lock.plugins if not only or only & set(entry.plugin_ids)]
        missing = only - {plugin_id for entry in wanted for plugin_id in entry.plugin_ids}
        if missing:
            raise ResolutionError(f"not in the lock file: {', '.join(sorted(missing))}")
        results = []
        for entry in wanted:
            with self._refusals_audited(entry.plugin_ids[0], entry.version):
                results.append(self._install_locked(entry))
        return results

    def _install_locked(self, entry: LockedRelease) -> InstallResult:
        current = self._installed(entry.distribution)
        if current is not None and current.record is not None and current.record.sha256 == entry.sha256:
            return self._result(current.record, "already installed as locked", None, (), unchanged=True)
        if entry.source.startswith("oci://"):
            return self._install_oci(entry.source, expected_sha256=entry.sha256)
        if entry.source.startswith("file:"):
            return self._install_file(entry.source, expected_sha256=entry.sha256)
        loaded = self.load_index(entry.source)
        resolved = resolve(
            loaded.index,
            loaded.source,
            entry.plugin_ids[0],
            entry.version,
            host_api_version=self.host_api_version,
            pre=True,
        )
        if resolved.release.sha256 != entry.sha256:
            raise ArtifactRejectedError(
                f"{resolved.describe()}: the index now lists sha256 {resolved.release.sha256}, but the lock file"
                f" pins {entry.sha256}; a published release must never change",
                plugin_id=resolved.plugin.id,
            )
        return self._install_resolved(resolved, loaded.source, expected_sha256=entry.sha256)

    def _install_resolved(self, resolved: Resolved, source: str, *, expected_sha256: str | None) -> InstallResult:
        release = resolved.release
        filename = _wheel_filename(resolved.url, resolved.describe())
        limits = self.limits
        if release.size is not None:
            # A server sending more than the index declared is cut off at the declared size.
            limits = msgspec.structs.replace(limits, max_bytes=min(limits.max_bytes, release.size))
        expected = ExpectedRelease(
            resolved.plugin.id, resolved.plugin.distribution, release.version, expected_sha256 or release.sha256
        )
        detached = signature_document(release.signatures)
        over_wheel = wheel_level_signatures(release.signatures, "the index's")
        with _download_dir() as directory:
            fetched = download(resolved.url, directory / filename, limits, progress=self.progress, description=filename)
            checked = self._check(fetched.path, fetched.sha256, expected, detached, over_wheel)
            return self._place(checked, fetched.path, fetched.sha256, source)

    def _install_oci(self, location: str, *, expected_sha256: str | None) -> InstallResult:
        from ._oci import OciReference, pull_wheel  # oras loads only when an OCI source is used

        reference = OciReference.parse(location)
        with _download_dir() as directory:
            pulled = pull_wheel(reference, directory, self.limits, progress=self.progress)
            expected = ExpectedRelease(sha256=expected_sha256)
            checked = self._check(
                pulled.wheel.path, pulled.wheel.sha256, expected, pulled.signature, pulled.wheel_signatures
            )
            pinned = msgspec.structs.replace(reference, tag=None, digest=pulled.manifest_digest)
            return self._place(checked, pulled.wheel.path, pulled.wheel.sha256, str(pinned))

    def _install_file(self, location: str, *, expected_sha256: str | None) -> InstallResult:
        path = Path(unquote(urlsplit(location).path)) if location.startswith("file:") else Path(location)
        path = path.expanduser().resolve()
        filename = _wheel_filename(path.as_uri(), path.name)
        beside = signatures_beside(path)
        with _download_dir() as directory:
            fetched = download(path.as_uri(), directory / filename, self.limits, progress=self.progress)
            expected = ExpectedRelease(sha256=expected_sha256)
            checked = self._check(fetched.path, fetched.sha256, expected, None, beside)
            return self._place(checked, fetched.path, fetched.sha256, path.as_uri())

    def _check(
        self,
        path: Path,
        sha256: str,
        expected: ExpectedRelease,
        detached: bytes | None,
        wheel_signatures: list[WheelSignature] | None = None,
    ) -> CheckedArtifact:
        return check_artifact(
            path,
            sha256,
            expected,
            trust=self.trust,
            host_api_version=self.host_api_version,
            detached_signatures=detached,
            wheel_signatures=wheel_signatures or (),
        )

    def _check_staged(self, staging: Path, checked: CheckedArtifact) -> None:
        """Write the install receipt (when a signature over the wheel file carried the trust), then check
        the release as pip laid it out exactly as a load will, the receipt included."""
        if checked.wheel_signer is not None:
            metadata_dir = staging / checked.wheel.dist_info
            write_receipt(
                staging,
                metadata_dir,
                distribution=checked.wheel.distribution,
                version=checked.wheel.version,
                publisher=checked.wheel_signer,
                wheel_sha256=checked.sha256,
                state_dir=self.settings.state_dir,
            )
        check_staged_release(staging, checked=checked, trust=self.trust)

    def _place(self, checked: CheckedArtifact, wheel: Path, sha256: str, source: str) -> InstallResult:
        wheel_label = checked.describe()
        if self.trust.untrusted_plugins_dir is not None and self.trust.mode is TrustMode.STRICT:
            raise InstallError(f"{wheel_label}: not installed: {self.trust.untrusted_plugins_dir}")
        record = InstallRecord(
            distribution=checked.wheel.distribution,
            version=checked.wheel.version,
            plugin_ids=list(checked.plugin_ids),
            sha256=sha256,
            source=source,
            installed_at=self.clock(),
        )
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        with PluginsDirectoryLock(self.plugins_dir) as lock:
            refuse_shadowed_ids(self.plugins_dir, checked)
            refuse_collisions(self.plugins_dir, checked)
            outcome = stage_and_install(lock, wheel, record, functools.partial(self._check_staged, checked=checked))
        result = self._result(record, checked.verification.detail, outcome, checked.warnings)
        result = msgspec.structs.replace(
            result, signature_status=checked.verification.status.value, receipt=checked.wheel_signer is not None
        )
        self.audit.info(
            "plugin.installed",
            plugin_ids=list(result.plugin_ids),
            distribution=result.distribution,
            version=result.version,
            source=source,
            sha256=sha256,
            signature_status=checked.verification.status.value,
            signer=checked.verification.signer,
            install_receipt=result.receipt,
            replaced=result.replaced,
        )
        for warning in checked.warnings:
            self.audit.warning("plugin.trust.warning", distribution=result.distribution, detail=warning)
        return result

    def _result(
        self,
        record: InstallRecord,
        detail: str,
        outcome: InstallOutcome | None,
        warnings: tuple[str, ...],
        *,
        unchanged: bool = False,
    ) -> InstallResult:
        return InstallResult(
            plugin_ids=tuple(record.plugin_ids),
            distribution=record.distribution,
            version=record.version,
            source=record.source,
            sha256=record.sha256,
            verification_detail=detail,
            replaced=outcome.replaced if outcome is not None else None,
            warnings=warnings,
            unchanged=unchanged,
        )

    @contextmanager
    def _refusals_audited(self, plugin_id: str, version: str | None = None) -> Iterator[_Attempt]:
        """Yield what is known of the release being installed; a refusal becomes `plugin.install.refused`."""
        attempt = _Attempt(plugin_id, version)
        try:
            yield attempt
        except AperioError as exc:
            signature = exc.signature if isinstance(exc, ArtifactRejectedError) else None
            self.audit.warning(
                "plugin.install.refused",
                plugin_id=exc.plugin_id or attempt.plugin_id,
                version=attempt.version,
                reason=exc.message,
                signature_status=signature["status"] if signature else None,
                signature=signature["verdict"] if signature else None,
            )
            raise

    def _installed(self, distribution: str) -> InstalledDistribution | None:
        canonical = canonicalize_name(distribution)
        return next((d for d in installed_distributions(self.plugins_dir) if d.canonical_name == canonical), None)

    # -- remove and lock ---------------------------------------------------------------------------------------

    def remove(self, plugin_id: str, *, purge_data: bool = False) -> InstalledDistribution:
        """Remove the distribution that provides `plugin_id` from the plugins directory, and forget the
        operator's enable flag and isolation choice for each of its plugin ids (and their stored data
        with `purge_data`). Raises `InstallError` when the id is not installed there."""
        if not self.plugins_dir.is_dir():
            raise InstallError(f"{plugin_id} is not installed in {self.plugins_dir}", plugin_id=plugin_id)
        with PluginsDirectoryLock(self.plugins_dir) as lock:
            release = self._release_providing(plugin_id)
            remove_distribution(lock, release)
        for removed_id in release.plugin_ids:
            self.store.forget_plugin(removed_id, purge_data=purge_data)
        self.audit.info(
            "plugin.removed",
            plugin_ids=list(release.plugin_ids),
            distribution=release.name,
            version=release.version,
            purged_data=purge_data,
        )
        return release

    def _release_providing(self, plugin_id: str) -> InstalledDistribution:
        release = next((d for d in installed_distributions(self.plugins_dir) if plugin_id in d.plugin_ids), None)
        if release is not None:
            return release
        elsewhere = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == plugin_id]
        if elsewhere and elsewhere[0].dist is not None:
            raise InstallError(
                f"{plugin_id} is installed in the host's Python environment ({elsewhere[0].dist.name}"
                f" {elsewhere[0].dist.version}), not in {self.plugins_dir}; uninstall it with pip",
                plugin_id=plugin_id,
            )
        raise InstallError(f"{plugin_id} is not installed in {self.plugins_dir}", plugin_id=plugin_id)

    def lock(self) -> LockFile:
        """Return a lock file pinning every release in the plugins directory.

        Raises `InstallError` naming the releases that were not installed by
        `aperio plugin install` (their artifact and digest are unknown).
        """
        if not self.plugins_dir.is_dir():
            return LockFile(format_version=1, plugins=[])
        with PluginsDirectoryLock(self.plugins_dir):  # a crashed change is undone before it is pinned
            releases = installed_distributions(self.plugins_dir)
        unknown = [d.describe() for d in releases if d.record is None or d.record.version != d.version]
        if unknown:
            raise InstallError(
                f"cannot lock {', '.join(unknown)}: not installed with aperio plugin install, so the artifact's"
                " source and digest are unknown; reinstall with aperio plugin install"
            )
        return LockFile(
            format_version=1,
            plugins=[
                LockedRelease(
                    plugin_ids=list(d.plugin_ids),
                    distribution=d.name,
                    version=d.version,
                    sha256=d.record.sha256,
                    source=d.record.source,
                )
                for d in releases
                if d.record is not None
            ],
        )


def _wheel_filename(url: str, label: str) -> str:
    name = url_file_name(url)
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        raise ResolutionError(f"{label}: {url} does not name a wheel file (name-version-tags.whl)") from None
    return name


@contextmanager
def _download_dir() -> Iterator[Path]:
    # Downloads land outside the plugins directory: a refused artifact never touches it.
    with tempfile.TemporaryDirectory(prefix="aperio-download-") as directory:
        yield Path(directory)
