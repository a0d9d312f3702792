"""`aperio token create|list|revoke`: the operator API's tokens (stored hashed in the state store)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING

import click

from ..api import Permission, Tokens, parse_duration
from ._output import print_json

if TYPE_CHECKING:
    from .._state_url import HostStateStore

_PERMISSIONS = [permission.value for permission in Permission]


@contextmanager
def _tokens() -> Iterator[tuple[HostStateStore, Tokens]]:
    """The state store and its tokens, the store closed when the command is done with it."""
    # Imported here: the settings and the store load only for the commands that use them.
    from .._settings import HostSettings
    from .._state_url import open_state_store

    with closing(open_state_store(HostSettings.from_environment())) as store:
        yield store, Tokens(store)


@click.group("token")
def token_group() -> None:
    """Create, list and revoke tokens for the operator API (`aperio serve`)."""


@token_group.command("create")
@click.argument("name")
@click.option(
    "--permission", "permissions", multiple=True, required=True, type=click.Choice(_PERMISSIONS), help="Repeatable."
)
@click.option("--expires", metavar="DURATION", help="Lifetime such as 30d, 12h or 2w (default: until revoked).")
def create_token(name: str, permissions: tuple[str, ...], expires: str | None) -> None:
    """Create a token NAME and print it once: only its sha256 is stored."""
    expires_in = parse_duration(expires) if expires else None
    with _tokens() as (_, tokens):
        issued = tokens.create(name, permissions, expires_in=expires_in)
    until = f", expires {issued.record.expires_at:%Y-%m-%d %H:%M} UTC" if issued.record.expires_at else ""
    click.echo(f"token {name!r} ({' '.join(issued.record.permissions)}{until}); shown only now:", err=True)
    click.echo(issued.token)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token.")
def list_tokens(as_json: bool) -> None:
    """List tokens: name, permissions, created, expires, revoked (never the tokens themselves)."""
    with _tokens() as (_, tokens):
        records = tokens.list()
    rows: list[dict[str, object]] = [
        {
            "name": record.name,
            "permissions": list(record.permissions),
            "created_at": record.created_at.isoformat(),
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        }
        for record in records
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no tokens (aperio token create NAME --permission plugins:read)")
    for record in records:
        status = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
        if record.revoked_at is None and record.expires_at is not None:
            status = f"expires {record.expires_at:%Y-%m-%d %H:%M}"
        click.echo(
            f"{record.name}  {' '.join(record.permissions)}  created {record.created_at:%Y-%m-%d %H:%M}  {status}"
        )


@token_group.command("revoke")
@click.argument("name")
def revoke_token(name: str) -> None:
    """Revoke the token NAME; the API refuses it from the next request on."""
    from ..api._trail import record
    from ._fleet import cli_actor

    with _tokens() as (store, tokens):
        tokens.revoke(name)
        # Every host reads tokens from the shared store per request, so the revocation is in force
        # on all of them at once; the trail records where it was made.
        record(store, "token.revoked", actor=cli_actor(), fields={"name": name})
    click.echo(f"revoked {name}")
