"""Shell completion of plugin ids (click's completion: see docs/operators.md#shell-completion)."""

from __future__ import annotations

import sys

import click
from click.shell_completion import CompletionItem

from ..errors import AperioError


def complete_plugin_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Return the installed plugin ids that start with `incomplete`. Reads metadata only, imports no
    plugin, and completes nothing rather than fail when the configuration is unusable."""
    # Imported here: every `aperio plugin` command module imports this one, most never complete.
    from .._settings import HostSettings
    from ..pipeline.discover import discover, search_roots

    try:
        settings = HostSettings.from_environment()
    except AperioError:
        return []
    found = discover(search_roots(sys.path, settings.plugins_dir)).candidates
    ids = sorted({candidate.plugin_id for candidate in found})
    return [CompletionItem(plugin_id) for plugin_id in ids if plugin_id.startswith(incomplete)]
