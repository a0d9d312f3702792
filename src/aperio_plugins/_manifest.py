"""The manifest format: a plugin's data-only manifest and its plugin API requirement, read without importing it.

The manifest is `aperio-plugin.toml` in the top-level package that the entry
point names. One file serves every plugin id of a distribution:

    manifest_version = 1

    [plugins."acme.box-connector"]
    summary = "Box events and users"
    kinds = ["connector"]
    credential_scopes = ["box:read"]
    isolation = "any"
    network = true      # optional; connectors and destinations keep the network unless false
    hooks = ["aperio_register_connectors"]  # optional; lets the host import the plugin on first use
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aperio_hookspecs import DISTRIBUTION_NAME

from ._model import Candidate, Isolation, ManifestEntry, PluginKind
from ._names import canonicalize_name
from .errors import ManifestError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

MANIFEST_NAME = "aperio-plugin.toml"
MANIFEST_VERSION = 1
_MAX_MANIFEST_BYTES = 64 * 1024

_HookName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=100)]
_Scope = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*(:[a-z0-9._*-]+)*$", max_length=128)]


class PluginSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: Annotated[str, Field(min_length=1, max_length=200)]
    kinds: Annotated[list[PluginKind], Field(min_length=1)]
    credential_scopes: list[_Scope] = []
    isolation: Isolation = Isolation.ANY
    homepage: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    network: bool | None = None
    hooks: list[_HookName] | None = None


def needs_network(kinds: Sequence[PluginKind], declared: bool | None) -> bool:
    """Whether a plugin's worker keeps the host's network: what the manifest says, else yes for
    connectors and destinations (they talk to providers) and no for everything else."""
    if declared is not None:
        return declared
    return PluginKind.CONNECTOR in kinds or PluginKind.DESTINATION in kinds


class _ManifestFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest_version: Literal[1]
    plugins: dict[str, PluginSection]


def _location(loc: Sequence[int | str]) -> str:
    # Plugin ids contain dots, so a dotted path would be ambiguous: quote keys
    # the way TOML would.
    parts: list[str] = []
    for index, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif index > 0 and loc[index - 1] == "plugins":
            parts.append(f'."{item}"')
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


def find_manifest(candidate: Candidate, roots: Sequence[Path]) -> Path | None:
    relative = Path(candidate.top_level_package) / MANIFEST_NAME
    primary = candidate.root / relative
    if primary.is_file():
        return primary
    # An editable install keeps the package outside the metadata's directory,
    # in a source folder that is on the search path.
    for root in roots:
        path = root / relative
        if path.is_file():
            return path
    return None


def manifest_error(candidate: Candidate, message: str) -> ManifestError:
    return ManifestError(message, plugin_id=candidate.plugin_id, distribution=candidate.describe())


def manifest_sections(data: bytes, where: str) -> dict[str, PluginSection]:
    """Return the manifest's sections by plugin id; `where` names the file in errors.

    Raises `ManifestError` naming the file and the offending field.
    """
    if len(data) > _MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: manifest is larger than {_MAX_MANIFEST_BYTES} bytes")
    # The TOML parser loads with the first manifest read: a warm start finds every manifest in its cache.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the 3.10 nox session
        import tomli as tomllib

    try:
        document: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ManifestError(f"{where}: not valid TOML: nested too deeply") from None
    version = document.get("manifest_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise ManifestError(
            f"{where}: manifest_version {version} is newer than this host understands ({MANIFEST_VERSION});"
            " upgrade aperio-plugins"
        )
    try:
        return dict(_ManifestFile.model_validate(document).plugins)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ManifestError(f"{where}: {_location(first['loc'])}: {first['msg']}{more}") from None


def read_manifest(candidate: Candidate, roots: Sequence[Path] = ()) -> ManifestEntry:
    """Return the manifest entry for `candidate`'s plugin id.

    Raises `ManifestError` naming the file and the offending field.
    """
    path = find_manifest(candidate, roots)
    if path is None:
        raise manifest_error(
            candidate, f"no manifest: expected {candidate.top_level_package}/{MANIFEST_NAME} in the distribution"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise manifest_error(candidate, f"{path}: cannot read manifest: {exc.strerror}") from None
    if len(data) > _MAX_MANIFEST_BYTES:
        raise manifest_error(candidate, f"{path}: manifest is larger than {_MAX_MANIFEST_BYTES} bytes")
    try:
        sections = manifest_sections(data, str(path))
    except ManifestError as exc:
        raise manifest_error(candidate, exc.message) from None
    section = sections.get(candidate.plugin_id)
    if section is None:
        declared = ", ".join(sorted(sections)) or "none"
        raise manifest_error(candidate, f'{path}: no [plugins."{candidate.plugin_id}"] table (declared: {declared})')
    return ManifestEntry(
        summary=section.summary,
        kinds=tuple(dict.fromkeys(section.kinds)),
        credential_scopes=tuple(dict.fromkeys(section.credential_scopes)),
        isolation=section.isolation,
        homepage=section.homepage,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        network=needs_network(section.kinds, section.network),
        hooks=tuple(sorted(set(section.hooks))) if section.hooks is not None else None,
    )


_WANTED_HEADERS = {"name": 0, "version": 1, "requires-dist": 2}


def _plain_headers(data: bytes) -> tuple[str | None, str | None, list[str]] | None:
    """Return (Name, Version, [Requires-Dist]) from METADATA's header block when every header line is
    a plain `Key: value` in UTF-8; None otherwise, and `packaging`'s email parser reads it instead.

    Most METADATA files are exactly that, and `email.parser` costs about 0.3 ms a file in a fresh
    process, a sixth of a cold start with 50 plugins. Anything unusual (a folded line, a line without
    a colon, bytes that are not UTF-8, a repeated Name) goes to the full parser, unchanged.
    """
    try:
        block = data.split(b"\n\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    block = block.replace("\r\n", "\n").removesuffix("\n")
    if "\r" in block:
        return None
    found: list[list[str]] = [[], [], []]
    for line in block.split("\n"):
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip() or line[:1].isspace():
            return None
        index = _WANTED_HEADERS.get(key.lower())
        if index is not None:
            found[index].append(value.lstrip(" \t"))  # as the email parser does: leading only
    if len(found[0]) > 1 or len(found[1]) > 1:
        return None
    return (found[0][0] if found[0] else None), (found[1][0] if found[1] else None), found[2]


def read_api_requirement(candidate: Candidate) -> tuple[str, str, str, str]:
    """Return (project name, version, requirement on the plugin API, METADATA's sha256) from METADATA.

    Raises `ManifestError` when the metadata is unreadable or declares no
    requirement on aperio-hookspecs.
    """
    path = candidate.metadata_dir / "METADATA"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise manifest_error(candidate, f"{path}: cannot read: {exc.strerror}") from None
    # Only the headers matter here; the body is the long description, often most of the file.
    # `parse_email` is lenient: what it cannot parse lands in its second result, which the
    # checks below do not need (a missing name, version or requirement is refused by name).
    headers = _plain_headers(data)
    if headers is None:
        import packaging.metadata  # the email parser and more: only for headers the plain reader declines

        raw, _ = packaging.metadata.parse_email(data.split(b"\n\n", 1)[0])
        headers = (raw.get("name"), raw.get("version"), list(raw.get("requires_dist") or []))
    name, version, requires_dist = headers
    if not name or not version:
        raise manifest_error(candidate, f"{candidate.metadata_dir}/METADATA: missing Name or Version")
    try:
        Version(version)
    except InvalidVersion:
        raise manifest_error(
            candidate, f"{candidate.metadata_dir}/METADATA: Version {version!r} is not a valid version"
        ) from None
    try:
        requirement = api_requirement(requires_dist)
    except ManifestError as exc:
        raise manifest_error(candidate, f"{candidate.metadata_dir}/METADATA: {exc.message}") from None
    return name, version, requirement, hashlib.sha256(data).hexdigest()


def runtime_requirements(requires_dist: Sequence[str]) -> list[Requirement]:
    """Return the `Requires-Dist` entries needed to run (not behind an extra, markers true here).

    Raises `ManifestError` naming an entry that is not a valid requirement.
    """
    # Markers and the requirement grammar load on a cold inspection, not with every start.
    from packaging.requirements import InvalidRequirement, Requirement

    requirements = []
    for line in requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise ManifestError(f"invalid Requires-Dist {line!r}: {exc}") from None
        # A requirement behind an extra ("aperio-hookspecs; extra == 'x'") is
        # not what the plugin needs to run.
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirements.append(requirement)
    return requirements


def api_requirement(requires_dist: Sequence[str]) -> str:
    """Return the plugin API requirement (the specifier on aperio-hookspecs) among `requires_dist`.

    Raises `ManifestError` when there is none or an entry is malformed.
    """
    specifiers = [
        str(requirement.specifier)
        for requirement in runtime_requirements(requires_dist)
        if canonicalize_name(requirement.name) == DISTRIBUTION_NAME
    ]
    if not specifiers:
        raise ManifestError(
            f"declares no requirement on {DISTRIBUTION_NAME}:"
            f" add e.g. '{DISTRIBUTION_NAME}>=1.0,<2' to its dependencies"
        )
    return ",".join(spec for spec in specifiers if spec)
