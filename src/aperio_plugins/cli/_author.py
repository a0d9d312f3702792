"""`aperio plugin init | check | dev`: the plugin author's commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._check import CheckReport, check_path
from .._scaffold import ScaffoldKind, init_project
from ._output import print_json


@click.command("init")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice([kind.value for kind in ScaffoldKind]), required=True, help="What the plugin provides."
)
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help="Where to write it (default: ./NAME)."
)
@click.option("--id", "plugin_id", help="The plugin id (default: acme-hello becomes acme.hello).")
def init(name: str, kind: str, directory: Path | None, plugin_id: str | None) -> None:
    """Create a plugin project NAME: package, manifest, hookimpl, tests, README and a release workflow."""
    target = directory if directory is not None else Path(name)
    written = init_project(name, ScaffoldKind(kind), target, plugin_id=plugin_id)
    click.echo(f"created {target} ({len(written)} files) for a {kind} plugin")
    click.echo("next:")
    click.echo(f"  cd {target} && python -m pip install -e '.[test]' && python -m pytest")
    click.echo("  aperio plugin check .")


def _print_report(report: CheckReport) -> None:
    what = f"{report.distribution} {report.version}" if report.distribution else str(report.wheel)
    for plugin_id, value in sorted(report.plugins.items()):
        hooks = ", ".join(report.hooks.get(plugin_id, [])) or "not imported"
        click.echo(f"{plugin_id} = {value}  (hooks: {hooks})")
    for problem in report.problems:
        click.echo(str(problem))
    if report.ok:
        signature = f"; signature: {report.signature}" if report.signature else ""
        click.echo(f"{what}: a strict host would accept it once signed{signature}")
    else:
        click.echo(f"{what}: {len(report.errors())} problem(s) a strict host would refuse")


@click.command("check")
@click.argument("target", type=click.Path(path_type=Path), default=Path("."))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON object (for CI).")
@click.option("--no-import", "no_import", is_flag=True, help="Do not import the plugin to check its hookimpls.")
def check(target: Path, as_json: bool, no_import: bool) -> None:
    """Check a plugin project folder (built with its own backend) or a wheel for everything a strict
    host would refuse: manifest, entry points and ids, hookimpls against the hookspecs, API requirement,
    console scripts, .data, file name against metadata, top-level names.

    Exits 1 if there is any problem.
    """
    report = check_path(target, import_hooks=not no_import)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(1)
