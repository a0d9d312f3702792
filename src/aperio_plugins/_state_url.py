"""Which state store the host opens: the embedded SQLite file, or the PostgreSQL database that
`APERIO_STATE_URL` names (a fleet's shared state).

This module imports no database driver: psycopg comes with the `postgres` extra and is imported
only when a URL asks for it. Every message that shows the URL shows it redacted: the password
(in the URL's user part or as a `password=` parameter) never reaches a log line or a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import unquote, urlsplit

from ._fleet_records import FleetRecords
from ._outbox import Outbox
from ._records import AuditTrail, TokenStore
from ._settings import HostSettings
from ._state import SQLiteStateStore, StateStore
from .errors import StateStoreError

POSTGRES_SCHEMES = ("postgresql", "postgres")
_MASK = "***"
_PASSWORD_PARAMETER = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)


class HostStateStore(StateStore, TokenStore, AuditTrail, FleetRecords, Outbox, Protocol):
    """Every interface a backend implements: what the host, the CLI and `aperio serve` open."""


def redact_url(url: str) -> str:
    """Return `url` with its password replaced by `***` (in the user part and in any `password=`)."""
    redacted = _PASSWORD_PARAMETER.sub(rf"\g<1>{_MASK}", url)
    scheme, separator, rest = redacted.partition("://")
    if not separator:
        return redacted
    # The user part ends at the last '@' before the path: a password may itself contain '@' or '/'.
    authority_end = len(rest)
    for delimiter in "/?#":
        position = rest.find(delimiter, rest.rfind("@") + 1)
        if position != -1:
            authority_end = min(authority_end, position)
    authority = rest[:authority_end]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:{_MASK}@{hosts}"
    return f"{scheme}://{authority}{rest[authority_end:]}"


def url_secrets(url: str, extra: Iterable[str] = ()) -> list[str]:
    """Return the password spellings in `url` (raw and percent-decoded) that a message must not show."""
    found = [match.group(2).strip("'") for match in _PASSWORD_PARAMETER.finditer(url)]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    # An unparsable URL: take what sits between the user's ':' and the last '@' of the authority.
    _, separator, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if separator else ""
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += list(extra)
    # Longest first, so that a secret containing another is replaced whole.
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(message: str, url: str, secrets: Iterable[str]) -> str:
    """Return `message` on one line, with `url` shown redacted and every secret masked."""
    text = message.replace(url, redact_url(url))
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return " ".join(text.split())


def open_state_store(settings: HostSettings) -> HostStateStore:
    """Open the store the settings name: PostgreSQL for `APERIO_STATE_URL`, else SQLite in the state dir.

    Raises `StateStoreError` in one line (the URL redacted) when the store cannot be opened.
    """
    if settings.state_url is None:
        return SQLiteStateStore.in_directory(settings.state_dir)
    return open_state_url(settings.state_url.get_secret_value())


def open_state_url(url: str) -> HostStateStore:
    """Open the PostgreSQL store at `url`, applying pending migrations.

    Raises `StateStoreError` for another scheme, a missing `postgres` extra, an unreachable or
    refusing server, a failed migration, or a schema newer than this host's.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        raise StateStoreError(
            f"APERIO_STATE_URL must be a postgresql://user@host/database URL, not {redact_url(url)!r};"
            " unset it to use the embedded SQLite store"
        )
    try:
        from ._state_postgres import PostgresStateStore
    except ImportError as exc:
        raise StateStoreError(
            f"APERIO_STATE_URL names PostgreSQL, which needs the postgres extra ({exc.name} is missing):"
            " pip install 'aperio-plugins[postgres]'"
        ) from None
    return PostgresStateStore(url)
