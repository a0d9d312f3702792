"""The durable outbox on both backends: a batch is in the store when `deliver` returns; the dispatcher
delivers it through the real Splunk HEC example to a HEC receiver on 127.0.0.1, retries with backoff,
respects the breaker, dead-letters a permanent refusal with the receiver's reason, and hands a dead
host's lease to another."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hec_receiver import TOKEN, HecReceiver, hec_receiver
from live_server import Api

from aperio_hookspecs import Event
from aperio_plugins import PluginHost, PluginState
from aperio_plugins._dispatch import Dispatcher, DispatchPolicy
from aperio_plugins._outbox import BatchState
from aperio_plugins.cli._main import cli
from aperio_plugins.errors import ConfigurationError, DeliveryError

FAST = DispatchPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, lease=30.0, poll_interval=0.05)


def _events(prefix: str, count: int) -> list[Event]:
    when = datetime(2026, 12, 7, tzinfo=timezone.utc)
    return [Event(id=f"{prefix}-{n}", provider="test", type="test.event", occurred_at=when) for n in range(count)]


@pytest.fixture
def receiver() -> Iterator[HecReceiver]:
    with hec_receiver() as running:
        yield running


@pytest.fixture
def host_on(make_host: Callable[..., PluginHost], receiver: HecReceiver) -> Callable[..., PluginHost]:
    """A host on the given store with the Splunk HEC example loaded from the environment."""

    def _host(store: Any, **settings: Any) -> PluginHost:
        host = make_host(
            "disabled",
            environment="development",
            search_path=sys.path,
            state_store=store,
            credential_provider=lambda plugin_id, scope: TOKEN,
            discovery_cache=False,
            settings=settings,
        )
        report = host.load(only=["aperio.splunk-hec"])
        assert [info.state for info in report.plugins] == [PluginState.ENABLED]
        return host

    return _host


def _counts(store: Any) -> dict[str, int]:
    return {count.state.value: count.events for count in store.outbox_counts()}


BACKING_OFF = DispatchPolicy(max_attempts=3, base_delay=0.4, max_delay=0.4)


def _wait_until_due() -> None:
    time.sleep(BACKING_OFF.max_delay + 0.05)


def test_a_batch_is_in_the_store_when_deliver_returns(open_store, host_on, receiver):
    host = host_on(open_store())
    key = host.deliver("splunk-hec", _events("a", 3), {"url": receiver.url})
    other_host_view = open_store()  # another connection, as another host would see it
    assert [(c.destination, c.state, c.batches, c.events) for c in other_host_view.outbox_counts()] == [
        ("splunk-hec", BatchState.QUEUED, 1, 3)
    ]
    assert len(key) == 32
    assert receiver.requests == 0  # queued, not yet delivered


def test_bad_batches_are_refused_and_nothing_is_queued(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store)
    with pytest.raises(DeliveryError, match=r"no destination named .splunk-hek.*known: splunk-hec"):
        host.deliver("splunk-hek", _events("a", 1), {"url": receiver.url})
    with pytest.raises(DeliveryError, match=r"malformed: envelopes\.0"):
        host.deliver("splunk-hec", [{"kind": "event", "id": "x"}])
    with pytest.raises(DeliveryError, match="no envelopes"):
        host.deliver("splunk-hec", [])
    assert store.outbox_counts() == []


def test_the_dispatcher_delivers_every_event_with_its_batch_key(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store)
    keys = [host.deliver("splunk-hec", _events(f"b{n}", 5), {"url": receiver.url}) for n in range(4)]
    dispatcher = Dispatcher(host, store, FAST)
    assert dispatcher.drain() == 4
    assert sorted(receiver.ids()) == sorted(f"b{n}-{i}" for n in range(4) for i in range(5))
    assert _counts(store) == {"delivered": 20}
    assert dispatcher.counters.delivered == 4
    assert dispatcher.run_once() == 0  # nothing is delivered twice
    assert len(receiver.indexed) == 20
    # The venv's example may predate API 1.2; the key test against a fresh build is test_outbox_faults.
    assert set(receiver.header_keys) <= {*keys, None}


def test_a_permanent_refusal_is_dead_lettered_with_the_receivers_reason(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store)
    key = host.deliver("splunk-hec", _events("r", 3), {"url": receiver.url})
    receiver.refuse = "Invalid data format"
    dispatcher = Dispatcher(host, store, FAST)
    dispatcher.drain()
    [dead] = store.outbox_dead()
    assert (dead.id, dead.destination, dead.events) == (key, "splunk-hec", 3)
    assert "Invalid data format" in dead.reason
    assert "HEC code 6" in dead.reason
    assert receiver.ids() == {}
    assert dispatcher.counters.dead_lettered == 1
    assert dispatcher.run_once() == 0  # dead letters are not retried on their own
    # The operator fixes the receiver and retries: kept, never dropped.
    receiver.refuse = None
    assert store.outbox_retry(destination="splunk-hec") == 1
    dispatcher.drain()
    assert sorted(receiver.ids()) == ["r-0", "r-1", "r-2"]
    assert _counts(store) == {"delivered": 3}
    assert store.outbox_purge() == 1
    assert store.outbox_counts() == []


def test_a_failing_receiver_is_retried_with_backoff_then_dead_lettered(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store, plugin_breaker_failures=100)
    host.deliver("splunk-hec", _events("f", 2), {"url": receiver.url, "max_retries": 0})
    receiver.fail_next = 1
    dispatcher = Dispatcher(host, store, BACKING_OFF)
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0  # backing off (at least 0.2 s): not due yet
    _wait_until_due()
    assert dispatcher.run_once() == 1
    assert sorted(receiver.ids()) == ["f-0", "f-1"]
    assert (dispatcher.counters.retried, dispatcher.counters.delivered) == (1, 1)

    host.deliver("splunk-hec", _events("g", 1), {"url": receiver.url, "max_retries": 0})
    receiver.fail_next = 100
    for _ in range(BACKING_OFF.max_attempts):
        dispatcher.run_once()
        _wait_until_due()
    [dead] = store.outbox_dead()
    assert dead.attempts == BACKING_OFF.max_attempts
    assert f"gave up after {BACKING_OFF.max_attempts} attempts" in dead.reason
    assert "Server is busy" in dead.reason


def test_an_open_breaker_puts_batches_back_without_spending_attempts(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store, plugin_breaker_failures=1, plugin_breaker_reset=30.0)
    for name in ("x", "y"):
        host.deliver("splunk-hec", _events(name, 1), {"url": receiver.url, "max_retries": 0})
    receiver.fail_next = 100
    dispatcher = Dispatcher(host, store, DispatchPolicy(max_attempts=1, base_delay=0.01, max_delay=0.05))
    dispatcher.run_once()
    # The first batch's failure opened the breaker: the second was not sent, and keeps its attempt.
    assert receiver.requests == 1
    assert host.get("aperio.splunk-hec").breaker_state == "open"
    assert len(store.outbox_dead()) == 1
    assert _counts(store)["queued"] == 1


def test_a_lease_keeps_other_hosts_off_until_it_expires(open_store, backend, host_on, receiver):
    first, second = open_store(), open_store()
    host = host_on(second)
    key = host.deliver("splunk-hec", _events("l", 2), {"url": receiver.url})
    [claimed] = first.outbox_claim("host-a", 0.5, 10)  # host-a claims, then dies without a word
    assert claimed.id == key
    dispatcher = Dispatcher(host, second, FAST, owner="host-b")
    assert dispatcher.run_once() == 0
    time.sleep(0.6)
    assert dispatcher.run_once() == 1
    assert sorted(receiver.ids()) == ["l-0", "l-1"]
    assert first.outbox_complete(key, "host-a") is False  # the dead host's late word changes nothing
    assert _counts(first) == {"delivered": 2}


def test_hosts_claiming_at_once_take_different_batches(open_store, backend, host_on, receiver):
    stores = [open_store() for _ in range(4)]
    host = host_on(stores[0])
    for n in range(40):
        host.deliver("splunk-hec", _events(f"c{n}", 1), {"url": receiver.url})
    taken: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        start.wait()
        while batches := stores[index].outbox_claim(f"host-{index}", 30.0, 3):
            taken[index].extend(batch.id for batch in batches)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [batch_id for ids in taken for batch_id in ids]
    assert len(everything) == len(set(everything)) == 40


def test_backoff_doubles_within_jittered_bounds_and_is_capped():
    policy = DispatchPolicy(base_delay=1.0, max_delay=20.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 20.0), (60, 20.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays)
        assert max(delays) <= ceiling
        assert len(set(delays)) > 100  # jittered, not one value


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"APERIO_OUTBOX_MAX_ATTEMPTS": "many"}, "APERIO_OUTBOX_MAX_ATTEMPTS must be a number"),
        ({"APERIO_OUTBOX_MAX_ATTEMPTS": "0"}, "at least 1"),
        ({"APERIO_OUTBOX_BASE_DELAY": "10", "APERIO_OUTBOX_MAX_DELAY": "1"}, "base_delay <= max_delay"),
    ],
)
def test_bad_outbox_settings_are_one_clear_error(environ, message):
    with pytest.raises(ConfigurationError, match=message):
        DispatchPolicy.from_environment(environ)
    assert DispatchPolicy.from_environment({"APERIO_OUTBOX_MAX_ATTEMPTS": "4"}).max_attempts == 4


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_api_queues_a_batch_that_the_served_dispatcher_delivers(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store)
    dispatcher = Dispatcher(host, store, FAST)
    envelopes = [event.model_dump(mode="json") for event in _events("api", 3)]
    with Api(host, store, dispatcher=dispatcher) as api:
        body = {"envelopes": envelopes, "config": {"url": receiver.url}}
        refused = api.client("reader").post("/api/v1/destinations/splunk-hec/deliver", json=body)
        assert refused.status_code == 403
        unknown = api.client("runner").post("/api/v1/destinations/splunk-hek/deliver", json=body)
        assert unknown.status_code == 404
        assert "no destination named 'splunk-hek'" in unknown.json()["detail"]
        malformed = api.client("runner").post(
            "/api/v1/destinations/splunk-hec/deliver", json={"envelopes": [{"kind": "event"}]}
        )
        assert malformed.status_code == 422
        assert "malformed" in malformed.json()["detail"]
        assert store.outbox_counts() == []  # refused: nothing queued

        answer = api.client("runner").post("/api/v1/destinations/splunk-hec/deliver", json=body)
        assert answer.status_code == 202
        assert answer.json()["envelopes"] == 3
        _wait_for(lambda: len(receiver.indexed) == 3)
        _wait_for(lambda: _counts(store) == {"delivered": 3})
        status = api.client("reader").get("/api/v1/outbox").json()
        assert status["counts"] == [{"destination": "splunk-hec", "state": "delivered", "batches": 1, "events": 3}]
        metrics = api.client("reader").get("/metrics").text
        assert 'aperio_outbox_events{destination="splunk-hec",state="delivered"} 3.0' in metrics
        assert "aperio_outbox_delivered_total 1.0" in metrics
    assert sorted(receiver.ids()) == ["api-0", "api-1", "api-2"]
    assert not any(thread.name == "aperio-outbox" for thread in threading.enumerate())  # stopped with the app


def test_the_cli_shows_retries_and_purges_the_outbox(backend, open_store, host_on, receiver, tmp_path):
    store = open_store()
    host = host_on(store)
    key = host.deliver("splunk-hec", _events("cli", 2), {"url": receiver.url})
    receiver.refuse = "Incorrect index"
    Dispatcher(host, store, FAST).drain()
    environment = {"APERIO_STATE_DIR": str(Path(backend.location).parent if backend.name == "sqlite" else tmp_path)}
    if backend.name == "postgres":
        environment["APERIO_STATE_URL"] = backend.location
    runner = CliRunner()

    shown = runner.invoke(cli, ["outbox", "status"], env=environment)
    assert shown.exit_code == 0, shown.output
    assert "splunk-hec  dead  1 batch(es), 2 event(s)" in shown.output
    assert f"dead {key}" in shown.output
    assert "Incorrect index" in shown.output
    as_json = json.loads(runner.invoke(cli, ["outbox", "status", "--json"], env=environment).output)
    assert as_json["dead"][0]["id"] == key

    retried = runner.invoke(cli, ["outbox", "retry", "--destination", "splunk-hec"], env=environment)
    assert "1 dead-lettered batch(es) queued again" in retried.output
    receiver.refuse = None
    Dispatcher(host, store, FAST).drain()
    assert sorted(receiver.ids()) == ["cli-0", "cli-1"]
    purged = runner.invoke(cli, ["outbox", "purge"], env=environment)
    assert "1 batch(es) purged" in purged.output
    assert "the outbox is empty" in runner.invoke(cli, ["outbox", "status"], env=environment).output


def test_a_receipt_mixing_accepted_refused_and_busy_splits_the_batch(open_store, host_on, receiver):
    store = open_store()
    host = host_on(store, plugin_breaker_failures=100)
    events = _events("m", 6)
    oversized = events[2].model_copy(update={"raw": {"blob": "x" * 2000}})
    events[2] = oversized
    config = {"url": receiver.url, "max_batch_bytes": 600, "max_retries": 0}
    key = host.deliver("splunk-hec", events, config)
    receiver.fail_requests = {2}  # the first chunk is indexed, the second finds HEC busy
    dispatcher = Dispatcher(host, store, BACKING_OFF)
    dispatcher.run_once()
    [dead] = store.outbox_dead()
    assert dead.id != key  # the refused envelope is a dead letter of its own
    assert dead.events == 1
    assert "over max_batch_bytes" in dead.reason
    assert _counts(store)["queued"] < 5  # the rest waits for its retry, without what HEC took
    _wait_until_due()
    dispatcher.run_once()
    assert sorted(receiver.ids()) == ["m-0", "m-1", "m-3", "m-4", "m-5"]
    assert set(receiver.ids().values()) == {1}  # the retry sent only what was not taken
    assert set(_counts(store)) == {"dead", "delivered"}  # nothing left queued, nothing dropped
