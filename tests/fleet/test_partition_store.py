"""One host's store cut off from a real PostgreSQL by a real TCP proxy (tests/tcp_proxy.py) while
another connects directly: the cut-off store fails fast, tokens it verified keep working from their
last-known records (a revocation seen before is honoured, expiry still counts), audit events are
held and written to the shared trail once when it heals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import count

import pytest
from postgres_server import PostgresServer
from tcp_proxy import TcpProxy

from aperio_plugins._audit_buffer import HeldAudit, HeldEvent
from aperio_plugins._records import TokenRecord
from aperio_plugins._state_postgres import PostgresStateStore
from aperio_plugins.api._tokens import LastKnownTokens, Tokens
from aperio_plugins.errors import StateStoreError

_databases = count(1)


@dataclass
class Partitioned:
    proxy: TcpProxy
    cut_off: PostgresStateStore  # this host's store, through the proxy
    direct: PostgresStateStore  # the rest of the fleet's view of the same database


@pytest.fixture
def partitioned(postgres_server: PostgresServer) -> Iterator[Partitioned]:
    url = postgres_server.create_database(f"partition_store_{next(_databases)}")
    with TcpProxy(postgres_server.port) as proxy:
        proxied = url.replace(f":{postgres_server.port}/", f":{proxy.port}/")
        cut_off = PostgresStateStore(proxied)
        direct = PostgresStateStore(url)
        try:
            yield Partitioned(proxy, cut_off, direct)
        finally:
            proxy.heal()
            cut_off.close()
            direct.close()


def _record(store: PostgresStateStore, event: str, n: int) -> None:
    store.record_event(
        event,
        level="info",
        occurred_at=datetime.now(timezone.utc),
        plugin_id="acme.conn",
        actor="ops",
        fields=f'{{"n": {n}}}',
        host="host-b",
    )


def _trail(store: PostgresStateStore, event: str) -> list[int]:
    return sorted(int(row.fields["n"]) for row in store.audit_events(event=event, limit=500))


def test_a_cut_off_store_fails_fast_and_holds_audit_events_until_it_heals(partitioned: Partitioned) -> None:
    cut_off, direct = partitioned.cut_off, partitioned.direct
    _record(cut_off, "partition.before", 0)
    partitioned.proxy.cut()

    started = time.monotonic()
    with pytest.raises(StateStoreError):
        cut_off.enabled_flags()
    assert cut_off.unavailable is not None
    # Known to be away: later calls raise at once instead of waiting for the pool.
    quick = time.monotonic()
    for _ in range(20):
        with pytest.raises(StateStoreError):
            cut_off.enabled_flags()
    assert time.monotonic() - quick < 1.0
    assert time.monotonic() - started < 4  # the first one learns it in about FIRST_WAIT, not the pool timeout

    for n in range(1, 6):
        _record(cut_off, "partition.during", n)  # no error: held
    assert len(cut_off.held_audit) == 5
    direct.set_enabled("acme.conn", False)  # a decision made elsewhere during the cut
    assert _trail(direct, "partition.during") == []
    with pytest.raises(StateStoreError):
        cut_off.reconnect()

    partitioned.proxy.heal()
    cut_off.reconnect()
    assert cut_off.unavailable is None
    assert cut_off.enabled_flags() == {"acme.conn": False}  # it sees the decision at once
    assert cut_off.flush_held_audit() == 5
    assert cut_off.flush_held_audit() == 0
    assert _trail(direct, "partition.during") == [1, 2, 3, 4, 5]  # each once
    assert _trail(direct, "partition.before") == [0]


def test_events_held_are_written_first_by_the_next_event_after_healing(partitioned: Partitioned) -> None:
    cut_off, direct = partitioned.cut_off, partitioned.direct
    partitioned.proxy.cut()
    with pytest.raises(StateStoreError):
        cut_off.enabled_flags()
    for n in range(3):
        _record(cut_off, "partition.ordered", n)
    partitioned.proxy.heal()
    deadline = time.monotonic() + 10
    while True:  # no explicit reconnect: the store's own probe finds the server back
        try:
            cut_off.enabled_flags()
            break
        except StateStoreError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    _record(cut_off, "partition.ordered", 3)
    rows = direct.audit_events(event="partition.ordered", limit=10)
    assert [int(row.fields["n"]) for row in reversed(rows)] == [0, 1, 2, 3]  # in the order they happened
    assert len(cut_off.held_audit) == 0


def test_tokens_verified_before_the_cut_keep_working_from_their_last_known_records(partitioned: Partitioned) -> None:
    cut_off, direct = partitioned.cut_off, partitioned.direct
    tokens = Tokens(cut_off)
    ops = tokens.create("ops", ["plugins:read"]).token
    gone = tokens.create("gone", ["plugins:admin"]).token
    brief = tokens.create("brief", ["plugins:read"], expires_in=timedelta(seconds=2)).token
    never_seen = tokens.create("never-seen", ["plugins:read"]).token
    late = tokens.create("late", ["plugins:read"]).token
    for token in (ops, gone, brief, late):
        assert tokens.authenticate(token).principal is not None
    Tokens(direct).revoke("gone")
    assert tokens.authenticate(gone).refusal == "revoked token"  # seen before the cut

    partitioned.proxy.cut()
    Tokens(direct).revoke("late")  # revoked elsewhere during the cut: this host cannot know yet
    principal = tokens.authenticate(ops).principal
    assert principal is not None
    assert principal.name == "ops"
    assert [p.value for p in principal.permissions] == ["plugins:read"]
    assert tokens.authenticate(gone).refusal == "revoked token"
    assert tokens.authenticate(late).principal is not None  # the documented trade-off
    with pytest.raises(StateStoreError, match="has not checked this token before"):
        tokens.authenticate(never_seen)
    time.sleep(2.1)
    assert tokens.authenticate(brief).refusal == "expired token"  # the clock still counts

    partitioned.proxy.heal()
    cut_off.reconnect()
    assert tokens.authenticate(late).refusal == "revoked token"  # healed: the revocation reaches it
    assert tokens.authenticate(never_seen).principal is not None


def test_unknown_tokens_are_never_kept_and_the_cache_is_bounded() -> None:
    now = datetime.now(timezone.utc)
    cache = LastKnownTokens(limit=3)
    records = [TokenRecord(f"t{i}", f"{i:064x}", ("plugins:read",), now) for i in range(5)]
    for record in records:
        cache.remember(record)
    assert len(cache) == 3
    assert cache.get(records[0].token_sha256) is None  # the least recently used went first
    assert cache.get(records[4].token_sha256) == records[4]
    revoked = TokenRecord("t4", records[4].token_sha256, ("plugins:read",), now, revoked_at=now)
    cache.refresh([revoked, records[3]])  # t2 is gone from the store: forgotten
    assert cache.get(records[4].token_sha256) == revoked
    assert cache.get(records[2].token_sha256) is None
    assert len(cache) == 2


def _held(n: int) -> HeldEvent:
    return HeldEvent("e", "info", datetime.now(timezone.utc), None, None, f'{{"n": {n}}}', "h")


def test_the_held_events_are_bounded_and_a_loss_is_recorded_not_silent() -> None:
    held = HeldAudit(limit=3)
    for n in range(5):
        held.hold(_held(n))
    assert (len(held), held.dropped) == (3, 2)

    def refuse(batch: object) -> None:
        raise StateStoreError("still away")

    with pytest.raises(StateStoreError):
        held.flush(refuse)
    assert (len(held), held.dropped) == (3, 2)  # nothing lost by a failed flush
    written: list[HeldEvent] = []
    assert held.flush(written.extend) == 4
    assert [event.fields for event in written[:3]] == ['{"n": 2}', '{"n": 3}', '{"n": 4}']
    assert written[3].event == "audit.held.dropped"
    assert '"dropped": 2' in written[3].fields
    assert (len(held), held.dropped) == (0, 0)
    assert held.flush(written.extend) == 0
