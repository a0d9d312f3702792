"""The plugins directory (`APERIO_PLUGINS_DIR`): what is installed there, and installing or removing one release.

The directory is a flat `pip install --target` tree that is never on the import path:
the host serves each distribution's files by a finder scoped to them. A release is
installed with pip into a staging folder beside it (`--no-deps`: see docs/registry.md
for why), checked there the way the host will check it at load, and then moved into
place in one journaled transaction.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
from packaging.utils import canonicalize_name
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from aperio_hookspecs import ENTRY_POINT_GROUP

from .._ownership import record_paths
from .._preflight import CONTROL_DIR_NAME, control_dir
from ..errors import InstallError
from ._transaction import PluginsDirectoryLock, Transaction

RECORDS_DIR_NAME = "installed"


class InstallRecord(BaseModel):
    """Where an installed release came from: what `aperio plugin lock` pins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    distribution: str
    version: str
    plugin_ids: list[str]
    sha256: str
    source: str
    installed_at: AwareDatetime


class InstalledDistribution(msgspec.Struct, frozen=True):
    """A distribution in the plugins directory and the top-level entries it owns there."""

    name: str
    version: str
    plugin_ids: tuple[str, ...]
    metadata_dir: Path
    entries: frozenset[str]
    record: InstallRecord | None

    @property
    def canonical_name(self) -> str:
        return canonicalize_name(self.name)

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def _record_path(plugins_dir: Path, distribution: str) -> Path:
    return control_dir(plugins_dir) / RECORDS_DIR_NAME / f"{canonicalize_name(distribution)}.json"


def _owned_entries(metadata_dir: Path) -> frozenset[str]:
    entries = {metadata_dir.name}
    for path in record_paths(metadata_dir):
        top = path.split("/", 1)[0]
        if not top.startswith(CONTROL_DIR_NAME):
            entries.add(top)
    return frozenset(entries)


def _read_record(plugins_dir: Path, name: str) -> InstallRecord | None:
    try:
        return InstallRecord.model_validate_json(_record_path(plugins_dir, name).read_bytes())
    except (OSError, ValidationError):
        return None


def installed_distributions(plugins_dir: Path) -> list[InstalledDistribution]:
    """Return every distribution installed in `plugins_dir`, sorted by name."""
    found = []
    for metadata_dir in sorted(plugins_dir.glob("*.dist-info")):
        distribution = importlib.metadata.Distribution.at(metadata_dir)
        name = distribution.metadata["Name"] or metadata_dir.name.partition("-")[0]
        plugin_ids = tuple(ep.name for ep in distribution.entry_points if ep.group == ENTRY_POINT_GROUP)
        found.append(
            InstalledDistribution(
                name=name,
                version=distribution.version or "?",
                plugin_ids=plugin_ids,
                metadata_dir=metadata_dir,
                entries=_owned_entries(metadata_dir),
                record=_read_record(plugins_dir, name),
            )
        )
    return found


def _pip_install_into(staging: Path, wheel: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-index", "--no-compile", "--target", str(staging), str(wheel),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr.strip() or completed.stdout.strip()).splitlines()
        raise InstallError(f"pip could not install {wheel.name}: {' / '.join(output[-3:])}")


def _plan_replacement(
    plugins_dir: Path, new_entries: Sequence[str], distribution: str, installed: Sequence[InstalledDistribution]
) -> InstalledDistribution | None:
    """Return the release of the same distribution that this one replaces; refuse to touch anything else."""
    canonical = canonicalize_name(distribution)
    previous = next((d for d in installed if d.canonical_name == canonical), None)
    for entry in new_entries:
        if entry.startswith(".") or entry == "bin":
            raise InstallError(f"{distribution} would install {entry!r} into the plugins directory")
        owners = [d for d in installed if entry in d.entries and d is not previous]
        if owners:
            raise InstallError(
                f"{distribution} would overwrite {entry}, which belongs to {owners[0].describe()}; nothing was changed"
            )
        if (previous is None or entry not in previous.entries) and os.path.lexists(plugins_dir / entry):
            raise InstallError(
                f"{distribution} would overwrite {plugins_dir / entry}, which no installed plugin owns;"
                " move it away first"
            )
    if previous is not None:
        shared = [e for e in previous.entries for d in installed if d is not previous and e in d.entries]
        if shared:
            raise InstallError(f"{previous.describe()} shares {shared[0]} with another distribution; remove it by hand")
    return previous


def _move_out(transaction: Transaction, plugins_dir: Path, release: InstalledDistribution) -> None:
    trash = transaction.work_dir / "previous"
    # The .dist-info goes first, so that the host's discovery never sees a release without its files.
    for entry in sorted(release.entries, key=lambda e: not e.endswith(".dist-info")):
        if os.path.lexists(plugins_dir / entry):
            transaction.move(plugins_dir / entry, trash / entry)
    record = _record_path(plugins_dir, release.name)
    if record.exists():
        transaction.move(record, trash / "record.json")


class InstallOutcome(msgspec.Struct, frozen=True):
    installed: InstalledDistribution
    replaced: str | None


def stage_and_install(
    lock: PluginsDirectoryLock, wheel: Path, record: InstallRecord, check_staged: Callable[[Path], None]
) -> InstallOutcome:
    """Install `wheel` into the locked plugins directory, replacing an older release of it.

    `check_staged(staging_dir)` sees the release as pip laid it out before it is
    moved into place, and raises to refuse it. Raises `InstallError` when pip fails
    or the release would overwrite another distribution's files; the plugins
    directory is then unchanged.
    """
    plugins_dir = lock.plugins_dir
    with lock.transaction() as transaction:
        staging = transaction.work_dir / "staging"
        _pip_install_into(staging, wheel)
        check_staged(staging)
        new_entries = sorted(os.listdir(staging), key=lambda e: e.endswith(".dist-info"))
        previous = _plan_replacement(
            plugins_dir, new_entries, record.distribution, installed_distributions(plugins_dir)
        )
        if previous is not None:
            _move_out(transaction, plugins_dir, previous)
        record_file = transaction.work_dir / "record.json"
        record_file.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
        transaction.move(record_file, _record_path(plugins_dir, record.distribution))
        for entry in new_entries:  # the .dist-info last: the release becomes visible whole
            transaction.move(staging / entry, plugins_dir / entry)
    installed = next(
        d for d in installed_distributions(plugins_dir) if d.canonical_name == canonicalize_name(record.distribution)
    )
    return InstallOutcome(installed, previous.version if previous is not None else None)


def remove_distribution(lock: PluginsDirectoryLock, release: InstalledDistribution) -> None:
    """Remove `release`'s files and install record from the locked plugins directory, all or nothing."""
    with lock.transaction() as transaction:
        _move_out(transaction, lock.plugins_dir, release)
