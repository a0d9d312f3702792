"""Inspect: a candidate's manifest and plugin API requirement, read from its files; nothing is imported.

The formats are `_manifest.py`'s; this stage applies them to one candidate, through the discovery cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._cache import DiscoveryCache, file_key
from .._ids import plugin_id_problem
from .._manifest import find_manifest, manifest_error, read_api_requirement, read_manifest
from .._model import Candidate, FailureStage, Inspected, Refusal
from ..errors import ManifestError
from .environment import Environment, Refused


def inspect_candidate(
    candidate: Candidate, roots: Sequence[Path] = (), cache: DiscoveryCache | None = None
) -> Inspected:
    """Return the inspected candidate; raise `ManifestError` if its manifest or metadata is unusable.

    With a `cache`, a candidate whose METADATA and manifest are unchanged is not parsed again.
    A plugin id that breaks the id rule (a look-alike of another id, installed with plain pip) is refused here.
    """
    id_problem = plugin_id_problem(candidate.plugin_id)
    if id_problem is not None:
        raise manifest_error(candidate, f"{candidate.metadata_dir}/entry_points.txt: {id_problem}")
    manifest_path = find_manifest(candidate, roots)
    keys: list[object] = [
        file_key(candidate.metadata_dir / "METADATA"),
        str(manifest_path),
        file_key(manifest_path) if manifest_path is not None else None,
    ]
    cacheable = cache is not None and None not in keys
    if cache is not None and cacheable:
        cached = cache.inspected(candidate, keys)
        if cached is not None:
            return cached
    name, version, requirement, metadata_sha256 = read_api_requirement(candidate)
    manifest = read_manifest(candidate, roots)
    inspected = Inspected(
        candidate=candidate,
        manifest=manifest,
        api_requirement=requirement,
        distribution=name,
        version=version,
        metadata_sha256=metadata_sha256,
    )
    if cache is not None and cacheable:
        cache.remember_inspected(inspected, keys)
    return inspected


def inspect(candidate: Candidate, env: Environment) -> Inspected:
    """The inspect stage: return the inspected candidate; raise `Refused` (stage inspect) when it is unusable."""
    try:
        return inspect_candidate(candidate, env.roots, env.cache)
    except ManifestError as exc:
        raise Refused(Refusal(FailureStage.INSPECT, exc.message)) from exc
