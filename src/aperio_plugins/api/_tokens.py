"""Operator API tokens: issued once, stored as a sha256 digest, checked in constant time.

A token is `aperio_` followed by 32 random bytes (`secrets.token_urlsafe`). Only its sha256 reaches
the `TokenStore`: a copy of the state store does not hand out working tokens. Revocation and expiry
are read from the store on every request, so they take effect at once. Imports no web framework.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .._records import TokenRecord, TokenStore
from ..errors import TokenError
from ._principal import Permission, Principal, parse_permission

TOKEN_PREFIX = "aperio_"  # noqa: S105 - a public prefix that makes leaked tokens easy to scan for
# Longer than any token this module makes; a longer header is refused before it is hashed.
_MAX_TOKEN_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def token_digest(token: str) -> str:
    """Return the hex sha256 of `token`, the only form the store keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_duration(text: str) -> timedelta:
    """Return the duration `30d`, `12h`, `90m`, `3600s` or `2w` means; raise `TokenError` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise TokenError(f"expiry {text!r} is not a positive duration such as 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: `token` is the secret, shown once and never stored."""

    record: TokenRecord
    token: str


@dataclass(frozen=True)
class Authentication:
    """The outcome of checking a token: a principal, or why not (and the token's name, when known)."""

    principal: Principal | None
    refusal: str | None = None
    name: str | None = None


class Tokens:
    """Creates, lists, revokes and checks tokens in a `TokenStore`."""

    def __init__(self, store: TokenStore, clock: Callable[[], datetime] = _utc_now) -> None:
        self.store = store
        self.clock = clock

    def create(
        self, name: str, permissions: Iterable[Permission | str], *, expires_in: timedelta | None = None
    ) -> IssuedToken:
        """Issue a token; raise `TokenError` for a bad name, no or unknown permission, or a name in use."""
        if not _NAME.fullmatch(name):
            raise TokenError(f"token name {name!r} must be 1-100 letters, digits, '.', '_', '@' or '-'")
        chosen = sorted({parse_permission(permission) for permission in permissions}, key=lambda p: p.value)
        if not chosen:
            raise TokenError("a token needs at least one --permission (plugins:read, plugins:admin, plugins:execute)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        record = TokenRecord(
            name=name,
            token_sha256=token_digest(token),
            permissions=tuple(permission.value for permission in chosen),
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        if any(existing.name == name and existing.revoked_at is None for existing in self.store.tokens()):
            raise TokenError(f"a token named {name!r} already exists; revoke it first or choose another name")
        self.store.add_token(record)
        return IssuedToken(record, token)

    def list(self) -> list[TokenRecord]:
        return self.store.tokens()

    def has_usable(self) -> bool:
        """Whether any token is neither revoked nor expired (`aperio serve` makes an admin token otherwise)."""
        now = self.clock()
        return any(record.revoked_at is None and not _expired(record, now) for record in self.store.tokens())

    def revoke(self, name: str) -> None:
        """Revoke `name` at once; raise `TokenError` if no unrevoked token has that name."""
        if not self.store.revoke_token(name, self.clock()):
            raise TokenError(f"no active token named {name!r} (see aperio token list)")

    def authenticate(self, token: str) -> Authentication:
        """Return the principal `token` stands for, or the refusal (unknown, revoked, expired)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return Authentication(None, "malformed token")
        digest = token_digest(token)
        record = self.store.token_by_digest(digest)
        # The lookup is by digest, so its timing tells nothing about the secret; the comparison
        # is constant-time all the same, in case a store matches digests loosely.
        if record is None or not hmac.compare_digest(record.token_sha256, digest):
            return Authentication(None, "unknown token")
        if record.revoked_at is not None:
            return Authentication(None, "revoked token", record.name)
        if _expired(record, self.clock()):
            return Authentication(None, "expired token", record.name)
        # A permission this version does not know (written by a newer one) grants nothing here.
        known = frozenset(p for p in Permission if p.value in record.permissions)
        return Authentication(Principal(record.name, known), name=record.name)


def _expired(record: TokenRecord, now: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= now
