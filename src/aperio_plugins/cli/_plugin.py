"""`aperio plugin …`: list, info, enable, disable."""

from __future__ import annotations

import click

from .._host import PluginHost
from .._model import Isolation, PluginInfo, PluginKind, PluginState
from ..errors import LifecycleError
from ._complete import complete_plugin_ids
from ._output import print_info, print_json, print_table

_KINDS = [kind.value for kind in PluginKind]


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
@click.option("--kind", type=click.Choice(_KINDS), help="Only plugins that provide this kind.")
def list_plugins(as_json: bool, kind: str | None) -> None:
    """List every installed plugin with its state and signature status."""
    with PluginHost() as host:
        host.load()
        # Plugins activated on first use are verified here without being imported: the listing shows
        # each one's signature status and any refusal, at the cost of hashing, not of importing.
        report = host.verify_pending()
        broken = host.broken_distributions
        layout_problems = host.plugins_dir_problems
    plugins = [info for info in report.plugins if kind is None or PluginKind(kind) in info.kinds]
    if as_json:
        print_json([info.as_dict() for info in plugins])
    else:
        print_table(plugins)
    for problem in broken:
        click.echo(f"warning: unreadable distribution {problem}", err=True)
    for layout_problem in layout_problems:
        click.echo(str(layout_problem), err=True)


@click.command("info")
@click.argument("plugin_id", shell_complete=complete_plugin_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the plugin as one JSON object.")
def plugin_info(plugin_id: str, as_json: bool) -> None:
    """Show everything known about one plugin, including why it failed."""
    with PluginHost() as host:
        host.load()
        info = host.get(plugin_id)
        shadowed = [other for other in host.plugins() if other.id == plugin_id and other is not info]
    if as_json:
        print_json({**info.as_dict(), "shadowed": [other.as_dict() for other in shadowed]})
        return
    print_info(info)
    for other in shadowed:
        click.echo(f"\nshadowed duplicate: {other.error}")


def _require_state(info: PluginInfo, expected: PluginState) -> None:
    if info.state is not expected:
        raise LifecycleError(
            f"plugin {info.id!r} is {info.state.value}: {info.error or 'see aperio plugin info'}",
            plugin_id=info.id,
            distribution=f"{info.distribution} {info.version}" if info.distribution else None,
        )


@click.command("enable")
@click.argument("plugin_id", shell_complete=complete_plugin_ids)
def enable_plugin(plugin_id: str) -> None:
    """Enable a plugin (persisted) and load it to show that it comes up."""
    from ..api._trail import applying_received
    from ._fleet import recording_host  # the trail and the state store's URL: for decisions only

    with recording_host() as host:
        host.persist_enabled(plugin_id, True)
        # Loading to show it comes up is this command's own check, not a decision for the trail.
        with applying_received():
            host.load()
        info = host.get(plugin_id)
    _require_state(info, PluginState.ENABLED)
    click.echo(f"{plugin_id}: enabled")


@click.command("isolate")
@click.argument("plugin_id", shell_complete=complete_plugin_ids)
@click.argument("isolation", type=click.Choice(["process", "inprocess", "default"]))
def isolate_plugin(plugin_id: str, isolation: str) -> None:
    """Run a plugin in a worker process or in the host (persisted; `default` follows
    APERIO_PLUGIN_ISOLATION and the plugin's manifest). Takes effect when it is next loaded."""
    from ._fleet import recording_host  # the trail and the state store's URL: for decisions only

    with recording_host() as host:
        host.persist_isolation(plugin_id, None if isolation == "default" else Isolation(isolation))
    click.echo(f"{plugin_id}: isolation {isolation}")


@click.command("disable")
@click.argument("plugin_id", shell_complete=complete_plugin_ids)
def disable_plugin(plugin_id: str) -> None:
    """Disable a plugin (persisted); it is not imported at the next start. Imports nothing."""
    from ._fleet import recording_host  # the trail and the state store's URL: for decisions only

    with recording_host() as host:
        host.persist_enabled(plugin_id, False)
    click.echo(f"{plugin_id}: disabled")
