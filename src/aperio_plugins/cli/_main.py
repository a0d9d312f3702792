"""Entry point and error handling for `aperio`: expected failures become one line and exit 1."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from aperio_hookspecs import API_VERSION

from ..errors import AperioError
from ._lazy_group import LazyGroup

EXIT_ERROR = 1


def _configure_logging(verbose: int) -> None:
    # Audit events go to stderr so that stdout stays machine-readable (--json).
    # Refusals already show in the command's own output, so by default only
    # errors (a host with trust disabled, a plugin call that failed) are echoed.
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("aperio.audit", "aperio.plugin"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)


# Commands by name and where they live: each module is imported only when its command runs.
_PLUGIN_COMMANDS = {
    "list": "._plugin:list_plugins",
    "info": "._plugin:plugin_info",
    "enable": "._plugin:enable_plugin",
    "isolate": "._plugin:isolate_plugin",
    "disable": "._plugin:disable_plugin",
    "init": "._author:init",
    "check": "._author:check",
    "dev": "._author:dev",
    "keygen": "._trust:keygen",
    "sign": "._trust:sign",
    "verify": "._trust:verify",
    "install": "._install:install_plugin",
    "remove": "._install:remove_plugin",
    "search": "._install:search_plugins",
    "versions": "._install:plugin_versions",
    "lock": "._install:lock_plugins",
}
_COMMANDS = {
    "registry": "._registry:registry_group",
    "doctor": "._trust:doctor",
    "serve": "._serve:serve",
    "token": "._token:token_group",
    "fleet": "._fleet:fleet_group",
    "outbox": "._outbox:outbox_group",
}


@click.group(cls=LazyGroup, lazy_commands=_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show audit events on stderr as JSON lines (-v: info, -vv: debug).")
@click.version_option(package_name="aperio-plugins", message=f"%(prog)s %(version)s (plugin API {API_VERSION})")
def cli(verbose: int) -> None:
    """Manage the plugins of an aperio host."""
    _configure_logging(verbose)


@cli.group("plugin", cls=LazyGroup, lazy_commands=_PLUGIN_COMMANDS)
def plugin_group() -> None:
    """Inspect and manage installed plugins."""


def _verbosity(args: list[str]) -> int:
    """Return how many `-v` the group's options (before the first command name) carry."""
    count = 0
    for arg in args:
        if not arg.startswith("-"):
            break
        if arg == "--verbose":
            count += 1
        elif arg[1:] and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; an `AperioError` prints `error: ` and its `diagnostics()` on stderr and exits 1.

    The diagnostics name the plugin and the distribution when known; a plugin's traceback from
    inside its worker is shown only with `-v`.
    """
    # pydantic imports every installed distribution's `pydantic` entry points into the process when it
    # builds its first model. The host decides what code runs in it, and the scan of every distribution
    # was a fortieth of what `aperio plugin list` cost. An operator who wants pydantic's plugins sets
    # the variable (to "" for all of them), as pydantic documents.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        return cli.main(args=argv, prog_name="aperio", standalone_mode=False)
    except AperioError as exc:
        verbose = _verbosity(sys.argv[1:] if argv is None else argv) > 0
        click.echo(f"error: {exc.diagnostics(remote_traceback=verbose)}", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
