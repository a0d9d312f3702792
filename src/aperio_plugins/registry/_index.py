"""The plugin index: a static JSON document listing plugins, their releases and where to get them.

    {"format_version": 1, "updated_at": "2026-11-22T10:00:00Z",
     "plugins": [{"id": "acme.box-connector", "distribution": "acme-box-connector",
                  "kinds": ["connector"], "description": "Box users and events",
                  "versions": [{"version": "1.2.0", "api_requirement": ">=1.0,<2",
                                "url": "https://…/acme_box_connector-1.2.0-py3-none-any.whl",
                                "sha256": "…", "size": 12345,
                                "signatures": [{"kind": "ed25519", "key_id": "…", "envelope": {…}},
                                               {"kind": "sigstore-bundle", "bundle": {…}}],
                                "publisher": {"name": "Acme", "verified": true},
                                "yanked": null}]}]}

`url` may be relative to the index's own location. A signature is one of: `ed25519` and `sigstore`
(a DSSE envelope over the release's signed statement), `sigstore-bundle` (a Sigstore message-signature
bundle over the wheel file) and `pep740` (a PEP 740 attestation, or PyPI provenance object, over it).
The exported JSON Schema is `docs/schemas/registry/registry-index.schema.json`
(`python -m aperio_plugins.registry.schema DIR`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._ids import PLUGIN_ID_MAX_LENGTH, PLUGIN_ID_PATTERN
from .._model import PluginKind
from .._untrusted_json import UntrustedJsonError, loads_bounded
from ..errors import IndexFormatError

INDEX_FORMAT_VERSION = 1
MAX_INDEX_BYTES = 32 * 1024 * 1024

PluginId = Annotated[str, Field(pattern=PLUGIN_ID_PATTERN, max_length=PLUGIN_ID_MAX_LENGTH)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Publisher(_Frozen):
    """Who published a release; `verified` is the registry maintainers' word that they checked who it is."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    verified: bool = False


class Ed25519ReleaseSignature(_Frozen):
    """A DSSE envelope over the release's signed statement, made with the Ed25519 key `key_id`."""

    kind: Literal["ed25519"]
    key_id: Sha256Hex
    envelope: dict[str, Any]

    @model_validator(mode="after")
    def _key_id_matches_envelope(self) -> Ed25519ReleaseSignature:
        signatures = self.envelope.get("signatures")
        key_ids = [s.get("keyid") for s in signatures if isinstance(s, dict)] if isinstance(signatures, list) else []
        if self.key_id not in key_ids:
            raise ValueError(f"key_id {self.key_id} is not the key id of the envelope's signature")
        return self


class SigstoreReleaseSignature(_Frozen):
    """A Sigstore bundle (DSSE) over the release's signed statement."""

    kind: Literal["sigstore"]
    bundle: dict[str, Any]


class SigstoreBundleReleaseSignature(_Frozen):
    """A Sigstore bundle over the wheel file itself: a message signature, as `sigstore sign` writes it."""

    kind: Literal["sigstore-bundle"]
    bundle: dict[str, Any]


class AttestationReleaseSignature(_Frozen):
    """A PEP 740 attestation over the wheel file (or a provenance object as PyPI serves it), checked
    against the Trusted Publishers the operator pinned, never the publisher it names."""

    kind: Literal["pep740"]
    attestation: dict[str, Any]


ReleaseSignature = Annotated[
    Ed25519ReleaseSignature | SigstoreReleaseSignature | SigstoreBundleReleaseSignature | AttestationReleaseSignature,
    Field(discriminator="kind"),
]


class Release(_Frozen):
    """One version of a plugin: where its wheel is, its digest, and who signed and published it."""

    version: Annotated[str, Field(min_length=1, max_length=64)]
    api_requirement: Annotated[str, Field(min_length=1, max_length=200)]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: Sha256Hex
    size: Annotated[int, Field(gt=0)] | None = None
    signatures: list[ReleaseSignature] = []
    publisher: Publisher
    published_at: AwareDatetime | None = None
    yanked: Annotated[str, Field(min_length=1, max_length=500)] | None = None

    @field_validator("version")
    @classmethod
    def _valid_version(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(f"{value!r} is not a valid version (PEP 440)") from None
        return value

    @field_validator("api_requirement")
    @classmethod
    def _valid_requirement(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"{value!r} is not a version specifier such as '>=1.0,<2'") from None
        return value

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


class IndexedPlugin(_Frozen):
    """A plugin id with its releases."""

    id: PluginId
    distribution: Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", max_length=200)]
    kinds: Annotated[list[PluginKind], Field(min_length=1)]
    description: Annotated[str, Field(min_length=1, max_length=1000)]
    versions: list[Release]

    @field_validator("versions")
    @classmethod
    def _unique_versions(cls, value: list[Release]) -> list[Release]:
        seen: dict[Version, str] = {}
        for release in value:
            first = seen.get(release.parsed_version)
            if first is not None:
                same = "" if first == release.version else f" (as {first} and {release.version})"
                raise ValueError(f"version {first} is listed twice{same}")
            seen[release.parsed_version] = release.version
        return value

    @property
    def canonical_distribution(self) -> str:
        return canonicalize_name(self.distribution)


class PluginIndex(_Frozen):
    """A whole index. `updated_at` must move forward with every change (clients refuse rollbacks)."""

    format_version: Literal[1]
    updated_at: AwareDatetime
    plugins: list[IndexedPlugin]

    @field_validator("plugins")
    @classmethod
    def _unique_ids(cls, value: list[IndexedPlugin]) -> list[IndexedPlugin]:
        seen: set[str] = set()
        for plugin in value:
            if plugin.id in seen:
                raise ValueError(f"plugin id {plugin.id!r} is listed twice")
            seen.add(plugin.id)
        return value

    def plugin(self, plugin_id: str) -> IndexedPlugin | None:
        return next((plugin for plugin in self.plugins if plugin.id == plugin_id), None)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def _location(loc: tuple[int | str, ...], document: Any) -> str:
    # Name plugins and versions by id and version rather than by list position: that is what a maintainer greps for.
    parts: list[str] = []
    node = document
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and 0 <= item < len(node):
            node = node[item]
            label = node.get("id") or node.get("version") if isinstance(node, dict) else None
            parts.append(f"[{label!r}]" if isinstance(label, str) else f"[{item}]")
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(document)"


def versioned_document(data: bytes, what: str, supported: int, max_bytes: int) -> dict[str, Any]:
    """Return the JSON object in `data` (`what` names it in errors) before its schema is checked.

    Raises `IndexFormatError` when it is too large, not a JSON object, or has a
    `format_version` newer than `supported`, which the schema would only call invalid.
    """
    if len(data) > max_bytes:
        raise IndexFormatError(f"{what} is larger than {max_bytes} bytes")
    try:
        document = loads_bounded(data)
    except UntrustedJsonError as exc:
        raise IndexFormatError(f"{what} is {exc}") from None
    except ValueError as exc:
        raise IndexFormatError(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise IndexFormatError(f"{what} is not a JSON object")
    version = document.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > supported:
        raise IndexFormatError(
            f"{what} uses format version {version}, newer than this client reads ({supported}): upgrade aperio-plugins"
        )
    return document


def parse_index(data: bytes, source: str) -> PluginIndex:
    """Return the index in `data` (read from `source`, named in errors).

    Raises `IndexFormatError` for a document that is not JSON, uses a newer format
    version than this client reads, or does not match the schema (every problem
    listed with its place, up to ten).
    """
    document = versioned_document(data, f"index {source}", INDEX_FORMAT_VERSION, MAX_INDEX_BYTES)
    try:
        return PluginIndex.model_validate(document)
    except ValidationError as exc:
        problems = [f"{_location(tuple(e['loc']), document)}: {e['msg']}" for e in exc.errors()[:10]]
        more = f" (and {exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
        raise IndexFormatError(f"index {source} is invalid: " + "; ".join(problems) + more) from None


def empty_index(now: datetime) -> PluginIndex:
    return PluginIndex(format_version=INDEX_FORMAT_VERSION, updated_at=now, plugins=[])


def index_schema() -> dict[str, Any]:
    """Return the index's JSON Schema (draft 2020-12), as published in docs/schemas."""
    schema = PluginIndex.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aperio plugin index"
    return schema
