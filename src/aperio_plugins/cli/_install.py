"""`aperio plugin install|remove|search|versions|lock`: getting plugins onto a host from a registry."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from ..errors import ArtifactRejectedError, InstallError, RegistryError, ResolutionError
from ..registry import (
    DEFAULT_LOCK_FILE,
    InstallResult,
    RegistryClient,
    read_lock_file,
    release_problem,
    terminal_progress,
    write_lock_file,
)
from ._output import print_json, print_rich_table

_INDEX_OPTION = click.option(
    "--index", "index", metavar="URL|PATH", help="Plugin index to use instead of APERIO_REGISTRY_INDEX."
)


def _client() -> RegistryClient:
    # requests and oras load only for the commands that use them, not for every `aperio` call.
    from ..registry import RegistryClient

    return RegistryClient.from_settings(progress=terminal_progress())


def _report(result: InstallResult) -> None:
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    ids = ", ".join(result.plugin_ids)
    if result.unchanged:
        click.echo(f"{ids}: {result.distribution} {result.version} already installed as locked")
        return
    replaced = f" (replaced {result.replaced})" if result.replaced and result.replaced != result.version else ""
    click.echo(f"installed {ids}: {result.distribution} {result.version}{replaced} from {result.source}")
    receipt = "; install receipt written" if result.receipt else ""
    click.echo(f"  sha256 {result.sha256}; {result.verification_detail}{receipt}")


@click.command("install")
@click.argument("specs", nargs=-1, metavar="ID[@VERSION] | WHEEL | oci://HOST/REPO:TAG ...")
@_INDEX_OPTION
@click.option("--pre", is_flag=True, help="Consider pre-releases when no version is pinned.")
@click.option("--locked", is_flag=True, help="Install what the lock file pins (only the given ids, if any).")
@click.option("--lock-file", type=click.Path(path_type=Path), default=DEFAULT_LOCK_FILE, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was installed, or why not, as JSON.")
def install_plugin(
    specs: tuple[str, ...], index: str | None, pre: bool, locked: bool, lock_file: Path, as_json: bool
) -> None:
    """Download, check and install plugins into APERIO_PLUGINS_DIR.

    The digest, the signature (under APERIO_PLUGIN_TRUST_MODE) and the plugin API
    are checked before anything is written; a refused plugin leaves the plugins
    directory and the enable flags as they were. The host picks new plugins up at
    its next discovery. A wheel given as a file may have its publisher's signature
    beside it: WHEEL.sigstore.json (or .sigstore), WHEEL.publish.attestation,
    WHEEL.slsa.attestation or WHEEL.provenance.
    """
    if not specs and not locked:
        raise click.UsageError("name a plugin to install, or use --locked")
    for spec in specs:
        _refuse_local_non_wheel(spec)
    results: list[InstallResult] = []
    try:
        with _client() as client:
            if locked:
                results.extend(client.install_locked(read_lock_file(lock_file), only=frozenset(specs)))
            else:
                for spec in specs:
                    result = client.install(spec, index=index, pre=pre)
                    results.append(result)
                    if not as_json:
                        _report(result)
    except RegistryError as exc:
        if not as_json:
            raise
        signature = exc.signature if isinstance(exc, ArtifactRejectedError) else None
        print_json({"installed": [r.as_dict() for r in results], "error": exc.message, "signature": signature})
        sys.exit(1)
    if as_json:
        print_json({"installed": [r.as_dict() for r in results], "error": None, "signature": None})
    elif locked:
        for result in results:
            _report(result)


def _refuse_local_non_wheel(spec: str) -> None:
    """A path that exists but is no wheel is a mistake to name, not an id to look up in an index."""
    path = Path(spec)
    if spec.endswith(".whl") or spec.startswith(("file:", "oci://")) or not path.exists():
        return
    if path.is_dir():
        hint = " (a plugin project? build it first: python -m pip wheel --no-deps -w dist PATH)"
        raise InstallError(f"{spec} is a folder, not a wheel{hint}")
    raise InstallError(f"{spec} is a file but not a wheel: install a .whl file, a plugin id from an index, or oci://…")


@click.command("remove")
@click.argument("plugin_id")
@click.option("--purge-data", is_flag=True, help="Also delete the data the plugin stored (its KV entries).")
def remove_plugin(plugin_id: str, purge_data: bool) -> None:
    """Remove the distribution providing PLUGIN_ID from APERIO_PLUGINS_DIR, with its enable flag."""
    with _client() as client:
        release = client.remove(plugin_id, purge_data=purge_data)
    others = [other for other in release.plugin_ids if other != plugin_id]
    also = f" (also provided {', '.join(others)})" if others else ""
    click.echo(f"removed {plugin_id}: {release.name} {release.version}{also}")


@click.command("search")
@click.argument("text")
@_INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
def search_plugins(text: str, index: str | None, as_json: bool) -> None:
    """Find plugins in the index by id, distribution, kind or description."""
    with _client() as client:
        plugins = client.search(text, index)
        api = client.host_api_version
    rows = []
    for plugin in plugins:
        suitable = [
            r for r in plugin.versions if release_problem(r, api) is None and not r.parsed_version.is_prerelease
        ]
        latest = max(suitable, key=lambda r: r.parsed_version) if suitable else None
        rows.append((plugin, latest))
    if as_json:
        print_json(
            [
                {
                    "id": plugin.id,
                    "distribution": plugin.distribution,
                    "kinds": [kind.value for kind in plugin.kinds],
                    "description": plugin.description,
                    "latest_installable": latest.version if latest else None,
                }
                for plugin, latest in rows
            ]
        )
        return
    if not rows:
        click.echo(f"no plugin matches {text!r}")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("ID", "LATEST", "KINDS", "PUBLISHER", "DESCRIPTION"):
        table.add_column(column, overflow="fold")
    for plugin, latest in rows:
        publisher = ""
        if latest is not None:
            publisher = latest.publisher.name + (" (verified)" if latest.publisher.verified else "")
        table.add_row(
            plugin.id,
            latest.version if latest else "-",
            ",".join(k.value for k in plugin.kinds),
            publisher,
            plugin.description,
        )
    print_rich_table(table)


@click.command("versions")
@click.argument("plugin_id")
@_INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
def plugin_versions(plugin_id: str, index: str | None, as_json: bool) -> None:
    """List a plugin's releases in the index, newest first, and whether each can be installed here."""
    with _client() as client:
        loaded = client.load_index(index)
        api = client.host_api_version
    plugin = loaded.index.plugin(plugin_id)
    if plugin is None:
        raise ResolutionError(f"no plugin {plugin_id!r} in index {loaded.source}", plugin_id=plugin_id)
    releases = sorted(plugin.versions, key=lambda r: r.parsed_version, reverse=True)
    if as_json:
        print_json(
            [
                {
                    "version": r.version,
                    "api_requirement": r.api_requirement,
                    "installable": release_problem(r, api) is None,
                    "problem": release_problem(r, api),
                    "yanked": r.yanked,
                    "sha256": r.sha256,
                    "publisher": r.publisher.model_dump(),
                    "signed": bool(r.signatures),
                }
                for r in releases
            ]
        )
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("VERSION", "API", "INSTALLABLE", "SIGNED", "PUBLISHER"):
        table.add_column(column, overflow="fold")
    for r in releases:
        problem = release_problem(r, api)
        table.add_row(
            r.version,
            r.api_requirement,
            "yes" if problem is None else f"no: {problem}",
            ", ".join(s.kind for s in r.signatures) or "no",
            r.publisher.name + (" (verified)" if r.publisher.verified else ""),
        )
    print_rich_table(table)


@click.command("lock")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=DEFAULT_LOCK_FILE, show_default=True)
def lock_plugins(output: Path) -> None:
    """Write a lock file pinning the id, version, source and digest of every installed plugin."""
    with _client() as client:
        lock = client.lock()
    write_lock_file(output, lock)
    click.echo(f"locked {len(lock.plugins)} plugin release(s) in {output}")
