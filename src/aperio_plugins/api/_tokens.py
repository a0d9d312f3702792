"""Operator API tokens: issued once, stored as a sha256 digest, checked in constant time.

A token is `aperio_` followed by 32 random bytes (`secrets.token_urlsafe`). Only its sha256 reaches
the `TokenStore`: a copy of the state store does not hand out working tokens. Revocation and expiry
are read from the store on every request, so they take effect at once. Imports no web framework.

While the store is out of reach (a host cut off from the fleet's PostgreSQL), a token this host
verified before is still accepted from its last-known record (`LastKnownTokens`: digests and
records only, never a token): a revocation it saw is honoured, expiry is checked by the clock, an
unknown digest is refused with `StateStoreError` (503). The trade-off, documented in
docs/fleet.md: a revocation made on another host during the cut reaches this one when it heals.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

import msgspec

from .._records import TokenRecord, TokenStore
from ..errors import StateStoreError, TokenError
from ._principal import Permission, Principal, parse_permission

TOKEN_PREFIX = "aperio_"  # noqa: S105 - a public prefix that makes leaked tokens easy to scan for
# Longer than any token this module makes; a longer header is refused before it is hashed.
_MAX_TOKEN_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
LAST_KNOWN_LIMIT = 1024  # tokens; the least recently used is forgotten first


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


class IssuedToken(msgspec.Struct, frozen=True):
    """A token just created: `token` is the secret, shown once and never stored."""

    record: TokenRecord
    token: str


class Authentication(msgspec.Struct, frozen=True):
    """The outcome of checking a token: a principal, or why not (and the token's name, when known)."""

    principal: Principal | None
    refusal: str | None = None
    name: str | None = None


class LastKnownTokens:
    """The last record the store gave for each token digest this host checked (bounded, thread-safe).

    Only digests found in the store are kept, revoked ones included (so that a revocation seen
    before a cut is honoured during it); a digest the store did not know is never kept, so unknown
    tokens cannot fill it.
    """

    def __init__(self, limit: int = LAST_KNOWN_LIMIT) -> None:
        self.limit = limit
        self._records: OrderedDict[str, TokenRecord] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def remember(self, record: TokenRecord) -> None:
        with self._lock:
            self._records[record.token_sha256] = record
            self._records.move_to_end(record.token_sha256)
            while len(self._records) > self.limit:
                self._records.popitem(last=False)

    def get(self, digest: str) -> TokenRecord | None:
        with self._lock:
            record = self._records.get(digest)
            if record is not None:
                self._records.move_to_end(digest)
            return record

    def refresh(self, current: Iterable[TokenRecord]) -> None:
        """Bring every kept record up to date with the store's `current` tokens (revocations, expiry);
        a kept digest the store no longer has is forgotten (its token was replaced)."""
        by_digest = {record.token_sha256: record for record in current}
        with self._lock:
            for digest in list(self._records):
                fresh = by_digest.get(digest)
                if fresh is None:
                    del self._records[digest]
                else:
                    self._records[digest] = fresh


class Tokens:
    """Creates, lists, revokes and checks tokens in a `TokenStore`, with a last-known cache for
    checking them while the store is out of reach."""

    def __init__(
        self,
        store: TokenStore,
        clock: Callable[[], datetime] = _utc_now,
        *,
        last_known: LastKnownTokens | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.last_known = last_known if last_known is not None else LastKnownTokens()

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
        """Return the principal `token` stands for, or the refusal (unknown, revoked, expired).

        With the store out of reach the token's last-known record decides; raises `StateStoreError`
        for a token this host has not checked before (nothing to decide with).
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return Authentication(None, "malformed token")
        digest = token_digest(token)
        try:
            record = self.store.token_by_digest(digest)
        except StateStoreError as exc:
            record = self.last_known.get(digest)
            if record is None:
                raise StateStoreError(
                    "the state store is out of reach and this host has not checked this token before;"
                    f" try again when it is back ({exc.message.splitlines()[0]})"
                ) from None
        else:
            if record is not None:
                self.last_known.remember(record)
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
