"""Resolve: pick the release of a plugin to install from an index.

Without a pin, the newest release that is not yanked, not a pre-release (unless
asked for) and compatible with the host's plugin API. A pinned version is taken
as it is, but still refused when it is yanked or incompatible: both are reasons
not to run it, whoever asked for it.
"""

from __future__ import annotations

import difflib
from urllib.parse import unquote, urljoin, urlsplit

import msgspec
from packaging.version import InvalidVersion, Version

from .._compat import incompatibility
from ..errors import ResolutionError
from ._index import IndexedPlugin, PluginIndex, Release


class Resolved(msgspec.Struct, frozen=True):
    """The release chosen for `plugin`, with its download URL made absolute."""

    plugin: IndexedPlugin
    release: Release
    url: str

    def describe(self) -> str:
        return f"{self.plugin.id} {self.release.version}"


def parse_requirement(text: str) -> tuple[str, str | None]:
    """Split `ID` or `ID@VERSION` into (id, version or None); raise `ResolutionError` for a bad version."""
    plugin_id, separator, version = text.partition("@")
    if not plugin_id or (separator and not version):
        raise ResolutionError(f"{text!r} is not a plugin requirement: use ID or ID@VERSION")
    if separator:
        try:
            Version(version)
        except InvalidVersion:
            raise ResolutionError(f"{text!r}: {version!r} is not a valid version") from None
    return plugin_id, version or None


def release_problem(release: Release, host_api_version: str) -> str | None:
    """Return why `release` must not be installed on this host (yanked, incompatible), or None."""
    if release.yanked is not None:
        return f"yanked: {release.yanked}"
    return incompatibility(release.api_requirement, host_api_version)


def _find(index: PluginIndex, source: str, plugin_id: str) -> IndexedPlugin:
    plugin = index.plugin(plugin_id)
    if plugin is None:
        close = difflib.get_close_matches(plugin_id, [p.id for p in index.plugins], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ResolutionError(f"no plugin {plugin_id!r} in index {source}{hint}", plugin_id=plugin_id)
    return plugin


def url_file_name(url: str) -> str:
    """Return the last path segment of `url`, decoded: the file name a wheel URL must end in."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def download_url(index_source: str, release_url: str) -> str:
    """Return the release's URL resolved against the index's location.

    Raises `ResolutionError` when a remote index points at a local file: what an
    index served over the network names must come from the network.
    """
    url = urljoin(index_source, release_url)
    if urlsplit(url).scheme == "file" and urlsplit(index_source).scheme != "file":
        raise ResolutionError(f"index {index_source} names a local file ({release_url}); only local indexes may")
    return url


def resolve(
    index: PluginIndex, source: str, plugin_id: str, version: str | None, *, host_api_version: str, pre: bool = False
) -> Resolved:
    """Return the release of `plugin_id` to install (pinned `version`, or the newest suitable one).

    Raises `ResolutionError` naming the plugin, the version and why nothing suitable was found.
    """
    plugin = _find(index, source, plugin_id)
    if version is not None:
        wanted = Version(version)
        release = next((r for r in plugin.versions if r.parsed_version == wanted), None)
        if release is None:
            listed = ", ".join(r.version for r in sorted(plugin.versions, key=lambda r: r.parsed_version)) or "none"
            raise ResolutionError(
                f"{plugin_id} {version} is not in index {source} (versions: {listed})", plugin_id=plugin_id
            )
        problem = release_problem(release, host_api_version)
        if problem is not None:
            raise ResolutionError(f"{plugin_id} {release.version} cannot be installed: {problem}", plugin_id=plugin_id)
        return Resolved(plugin, release, download_url(source, release.url))
    skipped = []
    for release in sorted(plugin.versions, key=lambda r: r.parsed_version, reverse=True):
        if release.parsed_version.is_prerelease and not pre:
            skipped.append(f"{release.version}: pre-release (use --pre)")
            continue
        problem = release_problem(release, host_api_version)
        if problem is not None:
            skipped.append(f"{release.version}: {problem}")
            continue
        return Resolved(plugin, release, download_url(source, release.url))
    reasons = "; ".join(skipped) or "it lists no versions"
    raise ResolutionError(
        f"{plugin_id}: no release in index {source} can be installed on plugin API {host_api_version}: {reasons}",
        plugin_id=plugin_id,
    )
