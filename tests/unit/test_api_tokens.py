"""API tokens against a real SQLite store: issued once, kept as a digest, refused when unknown, revoked,
expired or malformed; durations and permissions parsed with typed errors."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from aperio_plugins._records import TokenRecord
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.api import Permission, Principal, Tokens, parse_duration
from aperio_plugins.errors import TokenError


@pytest.fixture
def store(tmp_path):
    opened = SQLiteStateStore.in_directory(tmp_path)
    yield opened
    opened.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_a_token_authenticates_as_its_name_with_exactly_its_permissions(store):
    tokens = Tokens(store)
    issued = tokens.create("ops", ["plugins:read", Permission.EXECUTE])
    assert issued.record.token_sha256 == hashlib.sha256(issued.token.encode()).hexdigest()
    assert tokens.authenticate(issued.token).principal == Principal(
        "ops", frozenset({Permission.READ, Permission.EXECUTE})
    )
    assert [record.token_sha256 for record in store.tokens()] == [issued.record.token_sha256]


@pytest.mark.parametrize(
    ("presented", "refusal"),
    [
        ("", "malformed token"),
        ("Bearer x", "malformed token"),
        ("aperio_" + "A" * 300, "malformed token"),
        ("aperio_" + "A" * 43, "unknown token"),
    ],
)
def test_what_is_not_a_live_token_is_refused_with_the_reason(store, presented, refusal):
    Tokens(store).create("ops", ["plugins:read"])
    outcome = Tokens(store).authenticate(presented)
    assert (outcome.principal, outcome.refusal, outcome.name) == (None, refusal, None)


def test_expiry_and_revocation_take_effect_at_once(store):
    clock = Clock()
    tokens = Tokens(store, clock=clock)
    expiring = tokens.create("temp", ["plugins:read"], expires_in=parse_duration("12h")).token
    kept = tokens.create("kept", ["plugins:read"]).token
    clock.now += timedelta(hours=11, minutes=59)
    assert tokens.authenticate(expiring).principal is not None
    clock.now += timedelta(minutes=1)
    assert (tokens.authenticate(expiring).refusal, tokens.authenticate(expiring).name) == ("expired token", "temp")
    assert tokens.has_usable()
    tokens.revoke("kept")
    assert (tokens.authenticate(kept).refusal, tokens.authenticate(kept).name) == ("revoked token", "kept")
    assert not tokens.has_usable()
    with pytest.raises(TokenError, match="no active token named 'kept'"):
        tokens.revoke("kept")


def test_a_permission_this_version_does_not_know_grants_nothing(store):
    digest = hashlib.sha256(b"aperio_future").hexdigest()
    store.add_token(TokenRecord("future", digest, ("plugins:read", "plugins:teleport"), datetime.now(timezone.utc)))
    assert Tokens(store).authenticate("aperio_future").principal == Principal("future", frozenset({Permission.READ}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("3600s", timedelta(hours=1)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "30", "d", "-1d", "1y", "1.5h", "9999999d"])
def test_bad_durations_are_a_typed_error(text):
    with pytest.raises(TokenError, match="is not a positive duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("name", "permissions", "message"),
    [
        ("ops", ["plugins:root"], "unknown permission 'plugins:root'"),
        ("ops", [], "needs at least one --permission"),
        ("has space", ["plugins:read"], "token name 'has space' must be"),
        ("../x", ["plugins:read"], "token name '../x' must be"),
    ],
)
def test_bad_token_requests_are_refused_with_nothing_stored(store, name, permissions, message):
    with pytest.raises(TokenError, match=message):
        Tokens(store).create(name, permissions)
    assert store.tokens() == []
