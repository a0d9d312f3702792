"""`aperio registry validate|add|push`: for a registry's maintainers and CI, and for plugin authors."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from .._settings import HostSettings
from .._trust import load_trust_store
from ..registry import Publisher, TransferLimits, add_release
from ._output import print_json

EXIT_INVALID = 1


@click.group("registry")
def registry_group() -> None:
    """Check and maintain a plugin index."""


@registry_group.command("validate")
@click.argument("index", metavar="INDEX.json|URL")
@click.option(
    "--check-downloads",
    is_flag=True,
    help="Download every artifact and check its digest, contents and signatures against the trust configuration.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(index: str, check_downloads: bool, as_json: bool) -> None:
    """Check an index against the published schema (exit 1 on any problem)."""
    from ..registry import terminal_progress, validate_index

    settings = HostSettings.from_environment()
    location = index if "://" in index or index.startswith("file:") else Path(index).resolve().as_uri()
    report = validate_index(
        location,
        limits=TransferLimits.from_settings(settings),
        trust=load_trust_store(settings),
        progress=terminal_progress(),
        check_downloads=check_downloads,
    )
    if as_json:
        print_json(
            {
                "index": report.source,
                "ok": report.ok,
                "releases": [
                    {"id": r.plugin_id, "version": r.version, "ok": r.ok, "problems": list(r.problems)}
                    for r in report.releases
                ],
            }
        )
    else:
        for release in report.releases:
            status = "ok" if release.ok else "FAIL"
            detail = f": {'; '.join(release.problems)}" if release.problems else ""
            click.echo(f"{status:4} {release.plugin_id} {release.version}{detail}")
        checked = "schema and downloads" if check_downloads else "schema"
        failed = sum(not r.ok for r in report.releases)
        click.echo(f"{index}: {len(report.releases)} release(s), {failed} failed ({checked} checked)")
    if not report.ok:
        raise SystemExit(EXIT_INVALID)


@registry_group.command("add")
@click.argument("index", type=click.Path(path_type=Path, dir_okay=False), metavar="INDEX.json")
@click.argument("wheel", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--download-url", required=True, help="Where clients will download this wheel (https://, or relative).")
@click.option("--publisher", required=True, help="Who publishes the release.")
@click.option("--verified", is_flag=True, help="The registry's maintainers checked the publisher's identity.")
def add(index: Path, wheel: Path, download_url: str, publisher: str, verified: bool) -> None:
    """Add WHEEL as a release to INDEX.json (created if missing): digest, signatures, API requirement."""
    added = add_release(
        index, wheel, download_url, Publisher(name=publisher, verified=verified), now=datetime.now(timezone.utc)
    )
    ids = ", ".join(added.plugin_ids)
    if added.unchanged:
        click.echo(f"{ids} {added.version} is already listed with this artifact; {index} unchanged")
    else:
        click.echo(f"added {ids} {added.version} (sha256 {added.sha256}) to {index}")


@registry_group.command("push")
@click.argument("wheel", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("reference", metavar="oci://HOST/REPO:TAG")
def push(wheel: Path, reference: str) -> None:
    """Push WHEEL (and its signature as a second layer) to an OCI registry."""
    from ..registry import OciReference, push_wheel

    settings = HostSettings.from_environment()
    digest = push_wheel(wheel, OciReference.parse(reference), TransferLimits.from_settings(settings))
    click.echo(f"pushed {wheel.name} to {reference} ({digest})")
