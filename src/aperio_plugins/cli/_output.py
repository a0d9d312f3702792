"""Rendering of plugin snapshots: a rich table for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from .._model import PluginInfo, PluginState

if TYPE_CHECKING:
    # rich is imported where a table is printed: `--json` output never needs it (about 80 ms).
    from rich.console import Console
    from rich.table import Table

_STATE_STYLES = {
    PluginState.ENABLED: "green",
    PluginState.DISABLED: "yellow",
    PluginState.FAILED: "bold red",
    PluginState.UNLOADED: "dim",
}


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def plugin_table(plugins: Sequence[PluginInfo]) -> Table:
    """One row per plugin, narrow enough for an 80-column terminal: ids are never split (their column is
    as wide as the longest), and errors are not in the table (see `plugin_errors`)."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=max((len(info.id) for info in plugins), default=2))
    for column in ("VERSION", "KINDS", "STATE", "SIGNATURE", "RUNS"):
        table.add_column(column, overflow="fold")
    for info in plugins:
        style = _STATE_STYLES.get(info.state, "")
        table.add_row(
            info.id,
            info.version or "",
            ",".join(kind.value for kind in info.kinds),
            f"[{style}]{info.state.value}[/]" if style else info.state.value,
            _signature(info),
            _runs(info),
        )
    return table


def plugin_errors(plugins: Sequence[PluginInfo]) -> list[str]:
    """Each failed plugin's error on its own line, below the table, where a long message may wrap."""
    return [f"{info.id}: {info.error}" for info in plugins if info.error]


def _runs(info: PluginInfo) -> str:
    # How it runs, and the breaker only when it is not the ordinary closed.
    where = _isolation(info)
    if info.state is PluginState.ENABLED and info.breaker_state != "closed":
        return f"{where}, breaker {info.breaker_state}" if where else f"breaker {info.breaker_state}"
    return where


def _signature(info: PluginInfo) -> str:
    if info.development_build:
        return f"{info.signature_status.value if info.signature_status else ''} (dev)".strip()
    if info.signature_status is None:
        return ""
    if info.signature_via == "install receipt":
        return f"{info.signature_status.value} (install receipt: {info.signer})"
    return info.signature_status.value


def _isolation(info: PluginInfo) -> str:
    if info.worker_pid is not None or info.worker_state is not None:
        contained = f"{info.worker_containment}, " if info.worker_containment else ""
        return f"process pid {info.worker_pid or '-'} ({contained}{info.worker_restarts} restarts)"
    if info.isolation is None or info.state is not PluginState.ENABLED:
        return ""
    # Lazy activation: admitted, and imported when first used.
    return f"{info.isolation.value}, on first use" if info.activation_pending else info.isolation.value


def _console() -> Console:
    from rich.console import Console

    # Piped output has no terminal width to fit; a wide table stays one row per item for grep.
    return Console() if sys.stdout.isatty() else Console(width=240)


def print_rich_table(table: Table) -> None:
    _console().print(table)


def print_table(plugins: Sequence[PluginInfo]) -> None:
    console = _console()
    if not plugins:
        console.print("no plugins installed")
        return
    console.print(plugin_table(plugins))
    errors = plugin_errors(plugins)
    if errors:
        console.print()
        for line in errors:
            console.print(line, markup=False, highlight=False)


def print_info(info: PluginInfo) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    for key, value in info.as_dict().items():
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value) or "-"
        console.print(f"[bold]{key:>18}[/]  {value if value is not None else '-'}", markup=True)
