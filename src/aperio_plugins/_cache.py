"""The discovery cache: what discover and inspect learned about each distribution, keyed by
the stat signature of the files they read, so that a warm start reads only what changed.

It lives in the host's state directory as JSON (never pickle or marshal: the file is
data, and a tampered cache can at worst make the host re-read or mis-list metadata,
which verification checks independently). Any unreadable cache is treated as empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._atomic import write_atomically
from ._model import Candidate, Inspected, Isolation, ManifestEntry, PluginKind

CACHE_FILE_NAME = "discovery-cache.json"
_FORMAT = 5  # 3: RECORD paths; 4: the manifest's network permission; 5: its hooks declaration

FileKey = tuple[int, int, int]


def file_key(path: Path | str) -> FileKey | None:
    """Return (mtime_ns, size, inode) of `path`, or None if it is not a readable file."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class DiscoveryCache:
    """Entry points per metadata directory and inspection results per plugin, with their file keys."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entry_points: dict[str, dict[str, Any]] = {}
        self._inspected: dict[str, dict[str, Any]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        self._records_seen: set[str] = set()
        self._dirty = False
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            return
        entry_points, inspected = document.get("entry_points"), document.get("inspected")
        records = document.get("records")
        if isinstance(entry_points, dict) and isinstance(inspected, dict) and isinstance(records, dict):
            self._entry_points, self._inspected, self._records = entry_points, inspected, records

    # -- entry points --------------------------------------------------------

    def entry_points(self, metadata_dir: Path | str, key: FileKey) -> list[tuple[str, str]] | None:
        """Return the cached `aperio.plugins` entry points of `metadata_dir` if its file is unchanged."""
        name = str(metadata_dir)
        self._seen.add(name)
        record = self._entry_points.get(name)
        if record is None or tuple(record.get("key", ())) != key:
            return None
        return [(str(plugin_id), str(value)) for plugin_id, value in record.get("plugins", [])]

    def remember_entry_points(self, metadata_dir: Path | str, key: FileKey, plugins: list[tuple[str, str]]) -> None:
        self._seen.add(str(metadata_dir))
        self._entry_points[str(metadata_dir)] = {"key": list(key), "plugins": [list(item) for item in plugins]}
        self._dirty = True

    # -- RECORD files of the plugins directory ---------------------------------

    def record(self, metadata_dir: Path | str, key: FileKey) -> list[str] | None:
        """Return the cached paths of `metadata_dir`'s RECORD if the file is unchanged."""
        name = str(metadata_dir)
        self._records_seen.add(name)
        record = self._records.get(name)
        if record is None or tuple(record.get("key", ())) != key or not isinstance(record.get("paths"), list):
            return None
        return [str(path) for path in record["paths"]]

    def remember_record(self, metadata_dir: Path | str, key: FileKey, paths: list[str]) -> None:
        self._records_seen.add(str(metadata_dir))
        self._records[str(metadata_dir)] = {"key": list(key), "paths": paths}
        self._dirty = True

    # -- inspection ----------------------------------------------------------

    def inspected(self, candidate: Candidate, keys: list[object]) -> Inspected | None:
        """Return the cached inspection of `candidate` if the files it read are unchanged."""
        record = self._inspected.get(_inspect_name(candidate))
        if record is None or record.get("keys") != _jsonable(keys):
            return None
        try:
            return _inspected_from(candidate, record["data"])
        except (KeyError, TypeError, ValueError):
            return None

    def remember_inspected(self, inspected: Inspected, keys: list[object]) -> None:
        record = {"keys": _jsonable(keys), "data": _inspected_data(inspected)}
        self._inspected[_inspect_name(inspected.candidate)] = record
        self._dirty = True

    # -- persistence ---------------------------------------------------------

    def save(self) -> None:
        """Write the cache atomically, keeping only distributions seen in this discovery. Never raises."""
        if self.path is None:
            return
        stale = set(self._entry_points) - self._seen
        # A start that brought no plugin up (all pending) did not scan RECORD files: keep them.
        stale_records = set(self._records) - self._records_seen if self._records_seen else set()
        if not self._dirty and not stale and not stale_records:
            return
        for name in stale:
            del self._entry_points[name]
        for name in stale_records:
            del self._records[name]
        self._inspected = {key: value for key, value in self._inspected.items() if key.split("::", 1)[0] in self._seen}
        document = {
            "format": _FORMAT,
            "entry_points": self._entry_points,
            "inspected": self._inspected,
            "records": self._records,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(self.path, json.dumps(document, separators=(",", ":")).encode())
        except OSError:
            return  # a cache that cannot be written only costs the next start its speed-up
        self._dirty = False


def _inspect_name(candidate: Candidate) -> str:
    return f"{candidate.metadata_dir}::{candidate.plugin_id}"


def _jsonable(keys: list[object]) -> list[object]:
    return json.loads(json.dumps(keys))  # type: ignore[no-any-return]


def _inspected_data(inspected: Inspected) -> dict[str, Any]:
    manifest = inspected.manifest
    return {
        "distribution": inspected.distribution,
        "version": inspected.version,
        "api_requirement": inspected.api_requirement,
        "summary": manifest.summary,
        "kinds": [kind.value for kind in manifest.kinds],
        "credential_scopes": list(manifest.credential_scopes),
        "isolation": manifest.isolation.value,
        "homepage": manifest.homepage,
        "path": str(manifest.path),
        "manifest_sha256": manifest.sha256,
        "network": manifest.network,
        "hooks": list(manifest.hooks) if manifest.hooks is not None else None,
        "metadata_sha256": inspected.metadata_sha256,
    }


def _inspected_from(candidate: Candidate, data: dict[str, Any]) -> Inspected:
    manifest = ManifestEntry(
        summary=str(data["summary"]),
        kinds=tuple(PluginKind(kind) for kind in data["kinds"]),
        credential_scopes=tuple(str(scope) for scope in data["credential_scopes"]),
        isolation=Isolation(data["isolation"]),
        homepage=data["homepage"],
        path=Path(data["path"]),
        sha256=str(data["manifest_sha256"]),
        network=bool(data["network"]),
        hooks=tuple(str(hook) for hook in data["hooks"]) if data["hooks"] is not None else None,
    )
    return Inspected(
        candidate=candidate,
        manifest=manifest,
        api_requirement=str(data["api_requirement"]),
        distribution=str(data["distribution"]),
        version=str(data["version"]),
        metadata_sha256=str(data["metadata_sha256"]),
    )
