"""The Splunk HEC destination against a collector on 127.0.0.1: format, chunking, receipts."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from aperio_splunk_hec import SplunkHec

from aperio_hookspecs import DeliveryBatch, Event, Finding, Resource, Severity


def make_event(number: int, *, pad: int = 0, occurred_at: datetime | None = None) -> Event:
    return Event(
        id=f"evt-{number:04d}",
        provider="box",
        type="LOGIN",
        occurred_at=occurred_at or datetime(2024, 5, 6, 17, 0, number % 60, 250_000, tzinfo=timezone.utc),
        raw={"note": "x" * pad},
    )


def make_finding(number: int) -> Finding:
    return Finding(
        id=f"fnd-{number:04d}",
        provider="box",
        title="Box file shared with an open (public) link",
        severity=Severity.HIGH,
        resource=Resource(type="file", id=str(5000948880 + number)),
        detected_at=datetime(2024, 5, 7, 8, 30, tzinfo=timezone.utc),
        remediation_action="box.remove-shared-link",
    )


def batch(hec, envelopes, **config) -> DeliveryBatch:
    return DeliveryBatch(destination="splunk-hec", envelopes=tuple(envelopes), config={"url": hec.url, **config})


def test_events_and_findings_are_indexed_and_accepted(hec_server, hec_context):
    envelopes = [make_event(1), make_finding(1), make_event(2)]

    receipt = SplunkHec().deliver(hec_context, batch(hec_server, envelopes, host="aperio-01"))

    assert receipt.destination == "splunk-hec"
    assert receipt.accepted == ("evt-0001", "fnd-0001", "evt-0002")
    assert receipt.rejected == ()
    (post,) = hec_server.posts
    assert post.authorization == f"Splunk {hec_server.token}"
    assert post.content_type == "application/json"
    event, finding, _ = hec_server.indexed
    assert event["time"] == 1715014801.25
    assert (event["host"], event["source"], event["sourcetype"]) == ("aperio-01", "aperio", "aperio:event")
    assert "index" not in event
    assert Event.model_validate(event["event"]) == envelopes[0]
    assert finding["sourcetype"] == "aperio:finding"
    assert finding["time"] == datetime(2024, 5, 7, 8, 30, tzinfo=timezone.utc).timestamp()
    assert Finding.model_validate(finding["event"]) == envelopes[1]


def test_the_body_is_concatenated_objects_not_an_array(hec_server, hec_context, hec_parse):
    SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1), make_event(2)]))

    body = hec_server.posts[0].body
    assert body.startswith(b"{")
    assert [value["event"]["id"] for value in hec_parse(body)] == ["evt-0001", "evt-0002"]


def test_sourcetype_index_and_source_come_from_the_config(hec_server, hec_context):
    hec_server.allowed_indexes.add("security")

    receipt = SplunkHec().deliver(
        hec_context,
        batch(hec_server, [make_event(1), make_finding(1)], sourcetype="aperio:json", index="security", source="eu-1"),
    )

    assert len(receipt.accepted) == 2
    assert {(event["sourcetype"], event["index"], event["source"]) for event in hec_server.indexed} == {
        ("aperio:json", "security", "eu-1")
    }


def test_a_time_with_an_offset_is_sent_as_the_same_instant(hec_server, hec_context):
    # 10:00:01.25 at UTC-7 is 17:00:01.25 UTC, the instant of make_event(1)'s default time.
    pacific = timezone(timedelta(hours=-7))
    when = datetime(2024, 5, 6, 10, 0, 1, 250_000, tzinfo=pacific)

    SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1, occurred_at=when)]))

    assert hec_server.indexed[0]["time"] == 1715014801.25
    assert hec_server.indexed[0]["event"]["occurred_at"] == "2024-05-06T10:00:01.250000-07:00"


def test_batches_are_split_under_max_batch_bytes_and_packed_greedily(hec_server, hec_context, hec_parse):
    envelopes = [make_event(number, pad=300 + 40 * number) for number in range(12)]
    limit = 2048

    receipt = SplunkHec().deliver(hec_context, batch(hec_server, envelopes, max_batch_bytes=limit))

    assert receipt.accepted == tuple(envelope.id for envelope in envelopes)
    assert hec_server.indexed_ids() == [envelope.id for envelope in envelopes]
    bodies = [post.body for post in hec_server.posts]
    assert len(bodies) > 2
    assert all(len(body) <= limit for body in bodies)
    for body, following in itertools.pairwise(bodies):
        first_of_next = following.split(b"\n", 1)[0] + b"\n"
        assert len(body) + len(first_of_next) > limit  # it could not have joined the chunk before
    assert sum(len(hec_parse(body)) for body in bodies) == len(envelopes)


def test_the_default_limit_sends_a_normal_batch_in_one_request(hec_server, hec_context):
    envelopes = [make_event(number) for number in range(300)]

    receipt = SplunkHec().deliver(hec_context, batch(hec_server, envelopes))

    assert len(receipt.accepted) == 300
    (post,) = hec_server.posts
    assert len(post.body) <= 1024 * 1024


def test_an_envelope_over_the_limit_is_rejected_and_never_sent(hec_server, hec_context):
    envelopes = [make_event(1), make_event(2, pad=5000), make_event(3)]

    receipt = SplunkHec().deliver(hec_context, batch(hec_server, envelopes, max_batch_bytes=4096))

    assert receipt.accepted == ("evt-0001", "evt-0003")
    (rejected,) = receipt.rejected
    assert rejected.id == "evt-0002"
    assert "over max_batch_bytes" in rejected.reason
    assert rejected.retryable is False  # as big on every redelivery
    assert hec_server.indexed_ids() == ["evt-0001", "evt-0003"]


def test_an_empty_batch_sends_nothing(hec_server, hec_context):
    receipt = SplunkHec().deliver(hec_context, batch(hec_server, []))

    assert (receipt.accepted, receipt.rejected) == ((), ())
    assert hec_server.posts == []


def test_a_channel_is_sent_when_configured(hec_server, hec_context):
    hec_server.require_channel = True
    channel = "0b6d8a3e-53f1-4c26-9f3b-2d1e4c5a6f70"

    without = SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1)]))
    with_channel = SplunkHec().deliver(hec_context, batch(hec_server, [make_event(2)], channel=channel))

    assert without.accepted == ()
    assert "Data channel is missing (HEC code 10, HTTP 400)" in without.rejected[0].reason
    assert without.rejected[0].retryable is False  # refused again until the config names a channel
    assert with_channel.accepted == ("evt-0002",)
    assert hec_server.posts[-1].channel == channel


def test_delivery_is_logged_without_the_token(hec_server, hec_context):
    SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1)]))

    records = hec_context.logger.records
    assert [record.event for record in records] == ["splunk.delivery.started", "splunk.delivery.finished"]
    assert records[-1].fields["accepted"] == 1
    assert hec_server.token not in repr(records)


def test_the_batch_idempotency_key_travels_with_every_request_and_event(hec_server, hec_context):
    envelopes = [make_event(n, pad=400) for n in range(6)]
    keyed = batch(hec_server, envelopes, max_batch_bytes=1500).model_copy(update={"idempotency_key": "k-0001"})

    receipt = SplunkHec().deliver(hec_context, keyed)

    assert len(receipt.accepted) == 6
    assert len(hec_server.posts) > 1  # chunked: each chunk carries the key
    assert {post.idempotency_key for post in hec_server.posts} == {"k-0001"}
    assert [event["fields"] for event in hec_server.indexed] == [{"aperio_idempotency_key": "k-0001"}] * 6


def test_a_batch_without_a_key_sends_none(hec_server, hec_context):
    SplunkHec().deliver(hec_context, batch(hec_server, [make_event(1)]))

    assert hec_server.posts[0].idempotency_key is None
    assert "fields" not in hec_server.indexed[0]
