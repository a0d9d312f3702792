"""A click group whose commands are imported when they are run, not when `aperio` starts.

Every command module imports what it needs (the registry client, the signing and wheel
checks, rich), and importing all of them cost `aperio plugin list` more than the listing
itself. Names and modules are listed here as data; `aperio --help` and shell completion of
command names import nothing, and a command's own `--help` imports only its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click


class LazyGroup(click.Group):
    """A `click.Group` with extra commands given as `{name: "module:attribute"}`, imported on use."""

    def __init__(self, *args: object, lazy_commands: Mapping[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name, __package__), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        self.add_command(command, cmd_name)  # imported once; later lookups find it directly
        del self.lazy_commands[cmd_name]
        return command
