"""Freshness: rollback, freeze and future-dated indexes are refused, with messages that say which."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from index_builders import index_document

from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.errors import StaleIndexError
from aperio_plugins.registry._freshness import accept_fresh_index
from aperio_plugins.registry._index import parse_index

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
SOURCE = "https://registry.invalid/index.json"
MAX_AGE = timedelta(days=30)


def stamped(when: datetime, description: str = "Box users and events") -> bytes:
    document = index_document(updated_at=when.isoformat())
    document["plugins"][0]["description"] = description
    return json.dumps(document).encode()


@pytest.fixture
def store(tmp_path):
    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def accept(store, content: bytes, now: datetime = NOW) -> None:
    accept_fresh_index(parse_index(content, SOURCE), content, SOURCE, store, now=now, max_age=MAX_AGE)


def test_a_newer_index_is_accepted_and_remembered(store):
    accept(store, stamped(NOW - timedelta(days=2)))
    accept(store, stamped(NOW - timedelta(days=1)))
    seen = store.seen_index(SOURCE)
    assert seen is not None
    assert seen.updated_at == NOW - timedelta(days=1)


def test_the_same_index_again_is_accepted(store):
    content = stamped(NOW - timedelta(days=1))
    accept(store, content)
    first = store.seen_index(SOURCE)
    accept(store, content)  # raises StaleIndexError if the same bytes were taken for a change or a rollback
    seen = store.seen_index(SOURCE)
    assert first is not None
    assert seen == first
    assert seen.updated_at == NOW - timedelta(days=1)


def test_an_index_rolled_back_is_refused_and_the_mark_stays(store):
    accept(store, stamped(NOW - timedelta(days=1)))
    with pytest.raises(StaleIndexError, match=r"was rolled back: updated_at .* is older than .* already saw"):
        accept(store, stamped(NOW - timedelta(days=3)))
    assert store.seen_index(SOURCE).updated_at == NOW - timedelta(days=1)


def test_an_index_changed_without_a_new_timestamp_is_refused(store):
    accept(store, stamped(NOW - timedelta(days=1)))
    with pytest.raises(StaleIndexError, match="changed without a new updated_at"):
        accept(store, stamped(NOW - timedelta(days=1), description="something else"))


def test_a_frozen_index_is_refused_naming_its_age_and_the_setting(store):
    with pytest.raises(
        StaleIndexError,
        match=r"is frozen: last updated .*, 45 days ago, longer than the allowed 30 days \(APERIO_REGISTRY_MAX_AGE\)",
    ):
        accept(store, stamped(NOW - timedelta(days=45)))
    assert store.seen_index(SOURCE) is None


def test_a_future_dated_index_is_refused_so_it_cannot_raise_the_mark(store):
    with pytest.raises(StaleIndexError, match="dated in the future"):
        accept(store, stamped(NOW + timedelta(days=1)))
    assert store.seen_index(SOURCE) is None
    accept(store, stamped(NOW + timedelta(minutes=2)))  # within clock skew


def test_marks_are_kept_per_index_source(store):
    accept(store, stamped(NOW - timedelta(days=1)))
    other = "https://mirror.invalid/index.json"
    content = stamped(NOW - timedelta(days=5))
    accept_fresh_index(parse_index(content, other), content, other, store, now=NOW, max_age=MAX_AGE)
    assert store.seen_index(other).updated_at == NOW - timedelta(days=5)
