"""`aperio outbox status|retry|purge|run`: the durable delivery outbox in the state store."""

from __future__ import annotations

from contextlib import closing

import click

from .._outbox import status_document
from .._settings import HostSettings
from .._state_url import HostStateStore, open_state_store
from ._output import print_json


def _store() -> HostStateStore:
    return open_state_store(HostSettings.from_environment())


@click.group("outbox")
def outbox_group() -> None:
    """Batches queued for destinations: what waits, what was dead-lettered and why."""


@outbox_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Counts and dead letters as one JSON object.")
def outbox_status(as_json: bool) -> None:
    """Batches and events per destination and state, and each dead letter with the receiver's reason."""
    with closing(_store()) as store:
        document = status_document(store)
    if as_json:
        print_json(document)
        return
    counts, dead = document["counts"], document["dead"]
    if not counts:
        click.echo("the outbox is empty")
    for c in counts:
        click.echo(f"{c['destination']}  {c['state']}  {c['batches']} batch(es), {c['events']} event(s)")
    for d in dead:
        click.echo(f"dead {d['id']} ({d['destination']}, {d['events']} events, {d['attempts']} attempts)")
        click.echo(f"    {d['reason']}")


@outbox_group.command("retry")
@click.option("--destination", help="Only this destination's dead letters.")
@click.option("--batch", "batch_id", help="Only this batch (its id, the idempotency key).")
def outbox_retry(destination: str | None, batch_id: str | None) -> None:
    """Queue dead-lettered batches again, their attempts counted from zero."""
    with closing(_store()) as store:
        count = store.outbox_retry(destination=destination, batch_id=batch_id)
    click.echo(f"{count} dead-lettered batch(es) queued again")


@outbox_group.command("purge")
@click.option("--dead", is_flag=True, help="Delete dead-lettered batches too (their events are gone for good).")
@click.option("--destination", help="Only this destination's batches.")
def outbox_purge(dead: bool, destination: str | None) -> None:
    """Delete delivered batches (queued ones are never purged)."""
    with closing(_store()) as store:
        count = store.outbox_purge(dead=dead, destination=destination)
    click.echo(f"{count} batch(es) purged")


@outbox_group.command("run")
def outbox_run() -> None:
    """Load the plugins and deliver every due batch once, as `aperio serve` does in the background."""
    from .._dispatch import Dispatcher, DispatchPolicy
    from .._host import PluginHost

    policy = DispatchPolicy.from_environment()
    settings = HostSettings.from_environment()
    with closing(open_state_store(settings)) as store, PluginHost(settings, state_store=store) as host:
        host.load()
        dispatcher = Dispatcher(host, store, policy)
        claimed = dispatcher.drain()
    c = dispatcher.counters
    click.echo(f"{claimed} claim(s): {c.delivered} delivered, {c.retried} to retry, {c.dead_lettered} dead-lettered")
