"""`aperio fleet pin|status`: the fleet's desired plugin set and its live hosts; and the recording
host the CLI's decisions go through, so that the shared trail shows them with actor and host."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import click

from .._host import PluginHost
from .._settings import HostSettings
from .._state_url import open_state_store
from ._output import print_json


def cli_actor() -> str:
    """The actor the trail names for a decision made with the CLI: `cli:` and the login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def recording_host() -> Iterator[PluginHost]:
    """A host whose audit events also go to the state store's trail, acted by the CLI's user."""
    from ..api._trail import acting_as, recording_audit_logger

    settings = HostSettings.from_environment()
    with (
        closing(open_state_store(settings)) as store,
        acting_as(cli_actor()),
        PluginHost(settings, state_store=store, audit_logger=recording_audit_logger(store)) as host,
    ):
        yield host


@click.group("fleet")
def fleet_group() -> None:
    """The fleet of hosts sharing one state store (APERIO_STATE_URL): pinned plugins, live hosts."""


@fleet_group.command("pin")
@click.argument("lock_file", type=click.Path(path_type=Path), default="aperio-plugins.lock", required=False)
def pin(lock_file: Path) -> None:
    """Make LOCK_FILE (made by `aperio plugin lock`) the plugin set every `aperio serve` converges to.

    Each host installs what the lock pins with the checks of `aperio plugin install --locked`, and
    reports what it could not install and why (`aperio fleet status`).
    """
    from .._fleet_name import host_name
    from ..api._trail import record
    from ..registry import read_lock_file

    lock = read_lock_file(lock_file)
    with closing(open_state_store(HostSettings.from_environment())) as store:
        text = json.dumps(lock.model_dump(mode="json"), sort_keys=True)
        revision = store.pin_lock(text, pinned_by=cli_actor(), pinned_on=host_name())
        record(
            store,
            "fleet.lock.pinned",
            actor=cli_actor(),
            fields={"revision": revision, "releases": [f"{r.distribution} {r.version}" for r in lock.plugins]},
        )
    click.echo(f"pinned {len(lock.plugins)} plugin release(s) from {lock_file} as fleet lock revision {revision}")


@fleet_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the lock and the live hosts as one JSON object.")
def status(as_json: bool) -> None:
    """Show the pinned lock and every live host: what it runs, what it could not install and why."""
    from .._fleet import fleet_view

    with closing(open_state_store(HostSettings.from_environment())) as store:
        view = fleet_view(store)
    if as_json:
        print_json(view)
        return
    lock = view["lock"]
    if lock is None:
        click.echo("no fleet lock pinned (aperio fleet pin LOCKFILE)")
    else:
        click.echo(
            f"fleet lock revision {lock['revision']}: {len(lock['plugins'])} release(s),"
            f" pinned {lock['pinned_at']} by {lock['pinned_by']} on {lock['pinned_on']}"
        )
    if not view["hosts"]:
        click.echo("no live hosts (aperio serve beats every few seconds)")
    for host in view["hosts"]:
        running = ", ".join(f"{p['id']} {p['version']} ({p['state']})" for p in host["plugins"]) or "no plugins"
        click.echo(f"{host['host']}  lock revision {host['lock_revision']}  beat {host['heartbeat_at']}: {running}")
        for refusal in host["refusals"]:
            ids = ", ".join(refusal["plugin_ids"])
            click.echo(f"  could not install {ids} {refusal['version']}: {refusal['reason']}")
        retry = host.get("retry")
        if retry:
            click.echo(f"  refused releases retried at {retry['next_attempt_at']} (retries so far: {retry['retries']})")
        for drift in host["drift"]:
            click.echo(f"  drift: {drift}")
