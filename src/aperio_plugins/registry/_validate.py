"""`aperio registry validate`: what a registry's CI runs on every proposed change to its index.

Without downloads: the JSON Schema (through the models the schema is generated
from) and what a schema cannot say: download URLs that clients would refuse or
that name another release's wheel. With `check_downloads`: every artifact is
fetched within the limits, and its digest, contents, API requirement and
signatures (against the validator's trust configuration) are checked as an
install would check them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from .._trust import TrustStore
from ..errors import AperioError, RegistryError
from ._artifact import ExpectedRelease, check_artifact, signature_document, wheel_level_signatures
from ._download import download, fetch_bytes
from ._index import MAX_INDEX_BYTES, IndexedPlugin, PluginIndex, Release, parse_index
from ._publish import check_download_url
from ._resolve import download_url, url_file_name
from ._transfer import Progress, TransferLimits


class ReleaseCheck(msgspec.Struct, frozen=True):
    plugin_id: str
    version: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ValidationReport:
    source: str
    index: PluginIndex
    releases: list[ReleaseCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(release.ok for release in self.releases)


def _static_problems(plugin: IndexedPlugin, release: Release, source: str) -> list[str]:
    problems = []
    try:
        check_download_url(release.url, index_is_local=urlsplit(source).scheme == "file")
        name, version, _, _ = parse_wheel_filename(url_file_name(release.url))
    except RegistryError as exc:
        return [exc.message]
    if name != plugin.canonical_distribution or version != release.parsed_version:
        problems.append(f"url names {name} {version}, not {plugin.distribution} {release.version}")
    return problems


def _download_problems(
    plugin: IndexedPlugin, release: Release, source: str, limits: TransferLimits, trust: TrustStore, progress: Progress
) -> list[str]:
    url = download_url(source, release.url)
    if release.size is not None:
        limits = msgspec.structs.replace(limits, max_bytes=min(limits.max_bytes, release.size))
    expected = ExpectedRelease(plugin.id, plugin.distribution, release.version, release.sha256)
    detached = signature_document(release.signatures)
    over_wheel = wheel_level_signatures(release.signatures, "the index's")
    with tempfile.TemporaryDirectory(prefix="aperio-validate-") as directory:
        try:
            name = url_file_name(url)
            fetched = download(url, Path(directory) / name, limits, progress=progress, description=name)
            checked = check_artifact(
                fetched.path,
                fetched.sha256,
                expected,
                trust=trust,
                host_api_version=None,
                detached_signatures=detached,
                wheel_signatures=over_wheel,
                check_dependencies=False,
            )
        except AperioError as exc:
            return [exc.message]
    problems = [warning for warning in checked.warnings]
    if SpecifierSet(checked.api_requirement) != SpecifierSet(release.api_requirement):
        problems.append(
            f"api_requirement {release.api_requirement!r} differs from the wheel's {checked.api_requirement!r}"
        )
    if canonicalize_name(checked.wheel.distribution) != plugin.canonical_distribution:
        problems.append(f"the wheel is {checked.wheel.distribution}, not {plugin.distribution}")
    return problems


def validate_index(
    location: str,
    *,
    limits: TransferLimits,
    trust: TrustStore,
    progress: Progress,
    check_downloads: bool = False,
) -> ValidationReport:
    """Return a report on every release of the index at `location`.

    Raises `IndexFormatError` when the index itself is malformed (nothing else
    can be checked then) and `DownloadError` when it cannot be fetched.
    """
    content, _ = fetch_bytes(location, limits, max_bytes=MAX_INDEX_BYTES)
    index = parse_index(content, location)
    report = ValidationReport(location, index)
    for plugin in index.plugins:
        for release in plugin.versions:
            problems = _static_problems(plugin, release, location)
            if check_downloads and not problems:
                problems = _download_problems(plugin, release, location, limits, trust, progress)
            report.releases.append(ReleaseCheck(plugin.id, release.version, tuple(problems)))
    return report
