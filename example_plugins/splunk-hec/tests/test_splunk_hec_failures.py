"""The Splunk HEC destination when HEC refuses: tokens, scopes, invalid data, indexes, busy servers, config."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from aperio_splunk_hec import SplunkHec

from aperio_hookspecs import (
    CredentialNotGrantedError,
    DeadlineExceededError,
    DeliveryBatch,
    Event,
    PluginConfigurationError,
    ProviderError,
)
from aperio_hookspecs.testing import make_context

BUSY = {"text": "Server is busy", "code": 9}


def make_event(number: int, *, pad: int = 0) -> Event:
    return Event(
        id=f"evt-{number:04d}",
        provider="box",
        type="UPLOAD",
        occurred_at=datetime(2024, 5, 6, 17, 0, number % 60, tzinfo=timezone.utc),
        raw={"note": "x" * pad},
    )


def batch(hec, envelopes, **config) -> DeliveryBatch:
    return DeliveryBatch(destination="splunk-hec", envelopes=tuple(envelopes), config={"url": hec.url, **config})


def three_chunks(hec, **config) -> DeliveryBatch:
    # Each event is ~1.2 KB encoded; 2.5 KB chunks hold two: [1, 2] [3, 4] [5, 6].
    envelopes = [make_event(number, pad=900) for number in range(1, 7)]
    return batch(hec, envelopes, max_batch_bytes=2560, **config)


def recording_destination() -> tuple[SplunkHec, list[float]]:
    sleeps: list[float] = []
    return SplunkHec(sleep=sleeps.append), sleeps


def test_an_invalid_token_is_a_provider_error(hec_server):
    context = make_context("aperio.splunk-hec", credentials={"splunk:hec": "not-the-token"})

    with pytest.raises(ProviderError) as caught:
        SplunkHec().deliver(context, batch(hec_server, [make_event(1)]))

    assert caught.value.status == 403
    assert caught.value.provider == "splunk"
    assert "Invalid token (HEC code 4, HTTP 403)" in str(caught.value)
    assert "not-the-token" not in str(caught.value)
    assert hec_server.indexed == []


def test_a_disabled_token_is_a_provider_error(hec_server, hec_context):
    hec_server.disabled_tokens.add(hec_server.token)

    with pytest.raises(ProviderError, match=r"Token disabled \(HEC code 1"):
        SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1)]))


def test_without_the_hec_scope_nothing_is_sent(hec_server):
    context = make_context("aperio.splunk-hec", credentials={"box:read": "x"})

    with pytest.raises(CredentialNotGrantedError) as caught:
        SplunkHec().deliver(context, batch(hec_server, [make_event(1)]))

    assert caught.value.scope == "splunk:hec"
    assert hec_server.posts == []


def test_invalid_data_rejects_its_chunk_and_names_the_event(hec_server, hec_context):
    request = three_chunks(hec_server)
    hec_server.answer_request(2, 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 1})

    receipt = SplunkHec().deliver(hec_context, request)

    assert len(hec_server.posts) == 3
    assert receipt.accepted == ("evt-0001", "evt-0002", "evt-0005", "evt-0006")
    assert hec_server.indexed_ids() == ["evt-0001", "evt-0002", "evt-0005", "evt-0006"]
    reasons = {rejected.id: rejected.reason for rejected in receipt.rejected}
    assert reasons == {
        "evt-0004": "HEC refused this event: Invalid data format (HEC code 6, HTTP 400)",
        "evt-0003": "HEC refused the request over event evt-0004: Invalid data format (HEC code 6, HTTP 400)",
    }
    # Refused for what was sent: the culprit, and its chunk-mate HEC may already have indexed.
    assert [rejected.retryable for rejected in receipt.rejected] == [False, False]


def test_an_index_the_token_may_not_write_rejects_everything(hec_server, hec_context):
    receipt = SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1), make_event(2)], index="finance"))

    assert receipt.accepted == ()
    assert [rejected.id for rejected in receipt.rejected] == ["evt-0001", "evt-0002"]
    assert "Incorrect index (HEC code 7, HTTP 400)" in receipt.rejected[1].reason
    assert [rejected.retryable for rejected in receipt.rejected] == [False, False]  # would be refused again
    assert hec_server.indexed == []


def test_a_busy_server_is_retried(hec_server, hec_context):
    hec_server.answer_request(1, 503, BUSY, {"Retry-After": "3"})
    destination, sleeps = recording_destination()

    receipt = destination.deliver(hec_context, batch(hec_server, [make_event(1)]))

    assert receipt.accepted == ("evt-0001",)
    assert sleeps == [3.0]
    assert len(hec_server.posts) == 2


def test_a_server_busy_from_the_start_is_a_provider_error(hec_server, hec_context):
    for number in range(1, 5):
        hec_server.answer_request(number, 503, BUSY)
    destination, sleeps = recording_destination()

    with pytest.raises(ProviderError) as caught:
        destination.deliver(hec_context, batch(hec_server, [make_event(1)], max_retries=3, retry_backoff=0.5))

    assert caught.value.status == 503
    assert "Server is busy (HEC code 9" in str(caught.value)
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_server_failing_mid_batch_reports_what_it_took(hec_server, hec_context):
    request = three_chunks(hec_server, max_retries=1)
    hec_server.answer_request(2, 503, BUSY)
    hec_server.answer_request(3, 503, BUSY)
    destination, _ = recording_destination()

    receipt = destination.deliver(hec_context, request)

    assert receipt.accepted == ("evt-0001", "evt-0002")
    assert [rejected.id for rejected in receipt.rejected] == ["evt-0003", "evt-0004", "evt-0005", "evt-0006"]
    (reason,) = {rejected.reason for rejected in receipt.rejected}
    assert reason.startswith("not delivered: ")
    assert "Server is busy (HEC code 9, HTTP 503)" in reason
    assert [rejected.retryable for rejected in receipt.rejected] == [True, True, True, True]
    assert len(hec_server.posts) == 3


def test_rate_limiting_that_outlasts_the_retries_leaves_the_rest_retryable(hec_server, hec_context):
    request = three_chunks(hec_server, max_retries=2)
    for number in (3, 4, 5):
        hec_server.answer_request(number, 429, {"text": "Too many requests"}, {"Retry-After": "1"})
    destination, sleeps = recording_destination()

    receipt = destination.deliver(hec_context, request)

    assert sleeps == [1.0, 1.0]
    assert receipt.accepted == ("evt-0001", "evt-0002", "evt-0003", "evt-0004")
    assert [(rejected.id, rejected.retryable) for rejected in receipt.rejected] == [
        ("evt-0005", True),
        ("evt-0006", True),
    ]
    assert "Too many requests (HTTP 429)" in receipt.rejected[0].reason


def test_a_collector_gone_mid_batch_leaves_the_rest_retryable(hec_server, hec_context):
    request = three_chunks(hec_server)
    hec_server.drop_request(2)
    destination, sleeps = recording_destination()

    receipt = destination.deliver(hec_context, request)

    assert receipt.accepted == ("evt-0001", "evt-0002")
    assert [(rejected.id, rejected.retryable) for rejected in receipt.rejected] == [
        ("evt-0003", True),
        ("evt-0004", True),
        ("evt-0005", True),
        ("evt-0006", True),
    ]
    assert receipt.rejected[0].reason.startswith("not delivered: splunk: cannot reach ")
    assert sleeps == []  # no answer is not an answer to retry on
    assert len(hec_server.posts) == 2


def test_a_receipt_tells_refused_envelopes_from_undelivered_ones(hec_server, hec_context):
    request = three_chunks(hec_server, max_retries=1)
    hec_server.answer_request(2, 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 0})
    hec_server.answer_request(3, 503, BUSY)
    hec_server.answer_request(4, 503, BUSY)
    destination, _ = recording_destination()

    receipt = destination.deliver(hec_context, request)

    assert receipt.accepted == ("evt-0001", "evt-0002")
    assert [(rejected.id, rejected.retryable) for rejected in receipt.rejected] == [
        ("evt-0003", False),
        ("evt-0004", False),
        ("evt-0005", True),
        ("evt-0006", True),
    ]


def test_a_url_that_is_not_a_collector_is_a_provider_error(hec_server, hec_context):
    request = DeliveryBatch(
        destination="splunk-hec", envelopes=(make_event(1),), config={"url": f"{hec_server.url}/not-hec"}
    )

    with pytest.raises(ProviderError) as caught:
        SplunkHec().deliver(hec_context, request)

    assert caught.value.status == 404


def test_a_slow_collector_runs_into_the_deadline(hec_server):
    hec_server.delay = 3.0
    context = make_context("aperio.splunk-hec", credentials={"splunk:hec": hec_server.token}, timeout=0.4)

    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        SplunkHec().deliver(context, batch(hec_server, [make_event(1)]))

    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": None}, "url: required"),
        ({"url": "http://splunk.example.com:8088"}, "plain http"),
        ({"max_batch_bytes": 0}, "max_batch_bytes"),
        ({"index": 7}, "index"),
        ({"sourcetype": ""}, "sourcetype"),
        ({"channel": "not-a-guid"}, "GUID"),
        ({"max_batch_byte": 1000}, "unknown config key"),
    ],
    ids=["no-url", "cleartext-off-host", "zero-limit", "index-not-text", "blank-sourcetype", "bad-channel", "typo"],
)
def test_bad_config_is_refused_before_sending(hec_server, hec_context, config, message):
    merged = {"url": hec_server.url, **config}
    request = DeliveryBatch(
        destination="splunk-hec", envelopes=(make_event(1),), config={k: v for k, v in merged.items() if v is not None}
    )

    with pytest.raises(PluginConfigurationError, match=message):
        SplunkHec().deliver(hec_context, request)

    assert hec_server.posts == []
