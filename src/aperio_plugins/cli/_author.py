"""`aperio plugin init | check | dev`: the plugin author's commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._check import CheckReport, check_path
from .._dev import Watcher, install_development_build
from .._host import PluginHost
from .._model import PluginInfo, TrustMode
from .._scaffold import ScaffoldKind, init_project
from .._settings import HostSettings
from ..errors import AperioError, ConfigurationError, UnknownPluginError
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


def _describe(info: PluginInfo, verb: str) -> str:
    signature = info.signature_status.value if info.signature_status else "not checked"
    dev = ", dev" if info.development_build else ""
    line = f"{info.id}: {verb}, {info.state.value} ({signature}{dev})"
    return line if not info.error else f"{line}: {info.error}"


def _bring_up(host: PluginHost, plugin_ids: tuple[str, ...], verb: str) -> list[PluginInfo]:
    infos = []
    for plugin_id in plugin_ids:
        try:
            info = host.reload(plugin_id) if verb == "reloaded" else host.get(plugin_id)
        except UnknownPluginError:
            host.load()
            info = host.get(plugin_id)
        except AperioError as exc:
            # A reload that fails keeps the version that was loaded running: say so and keep watching.
            click.echo(f"{plugin_id}: reload failed: {exc.message}", err=True)
            continue
        infos.append(info)
        click.echo(_describe(info, verb))
    return infos


@click.command("dev")
@click.argument("project", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."))
@click.option("--once", is_flag=True, help="Build, install and load once, then exit (1 unless it comes up).")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="Seconds between polls."
)
def dev(project: Path, once: bool, interval: float) -> None:
    """Load the plugin project PROJECT into a development host, then rebuild and reload it whenever
    its files change (Ctrl-C to stop).

    Only with APERIO_ENVIRONMENT=development and trust mode warn or disabled: a development build is
    unsigned, listed as `dev`, and refused by any host outside development.
    """
    settings = HostSettings.from_environment()
    if not settings.is_development:
        raise ConfigurationError(
            "aperio plugin dev runs only with APERIO_ENVIRONMENT=development: a development build is unsigned,"
            " and a host outside development refuses it"
        )
    if settings.plugin_trust_mode is TrustMode.STRICT:
        raise ConfigurationError(
            "a development build is unsigned and strict trust mode refuses it:"
            " set APERIO_PLUGIN_TRUST_MODE=warn (or disabled) for development"
        )
    plugin_ids = install_development_build(project, settings.plugins_dir)
    with PluginHost(settings) as host:
        host.load()
        infos = _bring_up(host, plugin_ids, "loaded")
        if once:
            if any(info.state.value != "enabled" for info in infos) or len(infos) != len(plugin_ids):
                sys.exit(1)
            return
        click.echo(f"watching {project} for changes (Ctrl-C to stop)")
        for _ in Watcher(project, interval).changes():
            try:
                plugin_ids = install_development_build(project, settings.plugins_dir)
            except AperioError as exc:
                click.echo(f"build failed, the loaded version keeps running: {exc.message}", err=True)
                continue
            _bring_up(host, plugin_ids, "reloaded")
