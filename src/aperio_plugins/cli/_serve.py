"""`aperio serve`: the host as a service (uvicorn), with its API token printed once on first start."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import click

from ..errors import ConfigurationError

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command("serve")
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--run-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 300), help="Deadline of a run (s)."
)
def serve(bind: str, port: int, run_timeout: float) -> None:
    """Run the host as a service: the console at /, the operator API under /api/v1, /healthz, /readyz, /metrics.

    Plugins are loaded as `aperio plugin list` loads them; state is the SQLite store in
    APERIO_STATE_DIR, or the PostgreSQL database APERIO_STATE_URL names. With no usable token
    yet, an admin token is created and printed once. Decisions made on other hosts sharing the
    store are applied within seconds, and the plugins directory converges to `aperio fleet pin`.
    Ctrl-C stops it.
    """
    try:
        import uvicorn

        from .._dispatch import Dispatcher, DispatchPolicy
        from .._fleet import FleetAgent
        from .._host import PluginHost
        from .._settings import HostSettings
        from .._state_url import open_state_store
        from ..api import ALL_PERMISSIONS, Tokens, create_app
        from ..api._trail import recording_audit_logger
    except ImportError as exc:
        raise ConfigurationError(
            f"aperio serve needs the server extra ({exc.name} is missing): pip install 'aperio-plugins[server]'"
        ) from None
    settings = HostSettings.from_environment()
    policy = DispatchPolicy.from_environment()
    store = open_state_store(settings)
    host = PluginHost(settings, state_store=store, audit_logger=recording_audit_logger(store))
    try:
        tokens = Tokens(store)
        issued = None
        if not tokens.has_usable():
            taken = {record.name for record in tokens.list() if record.revoked_at is None}
            name = "admin" if "admin" not in taken else f"admin-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"
            issued = tokens.create(name, ALL_PERMISSIONS)
        host.load()
        # The operator's console and API show each plugin's signature status from the start: plugins
        # activated on first use are verified now without being imported (as `aperio plugin list` does).
        report = host.verify_pending()
        fleet = FleetAgent(host, store)
        # The outbox's dispatcher runs beside the API for as long as the app does.
        app = create_app(host, store, run_timeout=run_timeout, fleet=fleet, dispatcher=Dispatcher(host, store, policy))
        url = f"http://{bind if ':' not in bind else f'[{bind}]'}:{port}"
        click.echo(
            f"aperio serve: {len(report.enabled)} plugin(s) enabled, {len(report.failed)} failed; "
            f"console {url}/, API {url}/api/v1/plugins",
            err=True,
        )
        if bind not in _LOOPBACK:
            click.echo("warning: listening beyond loopback without TLS; put a TLS proxy in front of it", err=True)
        if issued is None:
            click.echo("    tokens already exist (aperio token list); aperio token create NAME makes another", err=True)
        else:
            click.echo(
                f"\n    admin token {issued.record.name!r}, shown only now (aperio token create makes others):",
                err=True,
            )
            click.echo(f"    {issued.token}\n", err=True)
            click.echo(f'    curl -H "Authorization: Bearer {issued.token}" {url}/api/v1/plugins\n', err=True)
        # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again: a stop, not a failure.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(uvicorn.Config(app, host=bind, port=port, log_level="info", server_header=False)).run()
        click.echo("aperio serve: stopped", err=True)
    finally:
        host.close()
