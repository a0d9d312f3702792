"""The worker rebuilds the host's envelopes without validating them again, into exactly the models
validation would give; whatever its plan does not cover is validated as before."""

from __future__ import annotations

import datetime

import pytest
from pydantic import BaseModel

from aperio_hookspecs import (
    ActionDefinition,
    Actor,
    DeliveryBatch,
    DeliveryReceipt,
    Event,
    Finding,
    RejectedEnvelope,
    RemediationRequest,
    RemediationResult,
    Resource,
    SyncRequest,
    SyncResult,
)
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker._codec import EnvelopeData, EnvelopeError, envelope
from aperio_plugins.worker.serve._rebuild import rebuild

NOW = datetime.datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)
RESOURCE = Resource(type="file", id="9", name="q3.xlsx", attributes={"size": 3, "tags": ["a", {"b": None}]})
EVENT = Event(id="e", provider="box", type="file.shared", occurred_at=NOW, actor=Actor(id="u"), resource=RESOURCE)
FINDING = Finding(id="f", provider="box", title="open", severity="high", resource=RESOURCE, detected_at=NOW)
SAMPLES: list[BaseModel] = [
    SyncRequest(connector="box", cursor="c", config={"page_size": 100, "ratio": 0.5, "on": True}, max_items=5),
    SyncRequest(connector="box"),
    SyncResult(connector="box", events=(EVENT,), findings=(FINDING,), next_cursor=None, has_more=True),
    EVENT,
    Event(id="e", provider="box", type="t", occurred_at=NOW.astimezone(datetime.timezone(datetime.timedelta(hours=2)))),
    FINDING,
    RemediationRequest(id="r", action="probe.quarantine", resource=RESOURCE, parameters={"x": [1, 2]}, dry_run=True),
    RemediationResult(request_id="r", action="a", status="dry_run", changes={"moved": True}),
    DeliveryBatch(destination="d", envelopes=(EVENT, FINDING), config={"url": "https://x.example"}),
    DeliveryReceipt(destination="d", accepted=("a",), rejected=(RejectedEnvelope(id="b", reason="no"),)),
    ActionDefinition(name="a.b", provider="p", title="T", resource_types=("file", "folder")),
    Actor(id="u", login="ada"),
    RESOURCE,
]


def _sent(model: BaseModel) -> EnvelopeData:
    """The envelope as the worker receives it from the host."""
    (message,) = protocol.FrameDecoder(1 << 20).feed(protocol.frame(protocol.pack(["hook", 1, "h", {"a": model}, 1.0])))
    return message[3]["a"]


def _shape(value: object) -> object:
    """The value with the type of everything in it, tzinfo aside (pydantic's parser makes its own UTC)."""
    if isinstance(value, BaseModel):
        fields = {name: _shape(item) for name, item in value.__dict__.items()}
        return (type(value), fields, value.model_fields_set)
    if isinstance(value, tuple | list):
        return (type(value), [_shape(item) for item in value])
    if isinstance(value, dict):
        return (dict, {key: _shape(item) for key, item in value.items()})
    if isinstance(value, datetime.datetime):
        return (datetime.datetime, value.isoformat())
    return (type(value), value)


@pytest.mark.parametrize("model", SAMPLES, ids=lambda model: type(model).__name__)
def test_a_rebuilt_envelope_is_the_model_that_validation_gives_type_for_type(model):
    sent = _sent(model)

    rebuilt = rebuild(sent)
    validated = envelope(sent)

    assert rebuilt == validated == model
    assert _shape(rebuilt) == _shape(validated)
    assert _hash(rebuilt) == _hash(validated)  # hashable, or not (a dict field), alike


def _hash(model: BaseModel) -> int | str:
    try:
        return hash(model)
    except TypeError as exc:
        return str(exc)


def test_a_payload_the_plan_does_not_cover_is_validated_and_bad_data_is_refused_as_before():
    extra_key = EnvelopeData("sync_request", b'{"connector": "box", "unknown": 1}')
    wrong_type = EnvelopeData("finding", FINDING.model_dump_json().replace('"high"', '"dire"').encode())
    not_json = EnvelopeData("sync_request", b"{")

    with pytest.raises(EnvelopeError, match="malformed SyncRequest: unknown: Extra inputs are not permitted"):
        rebuild(extra_key)
    with pytest.raises(EnvelopeError, match="malformed Finding: severity"):
        rebuild(wrong_type)
    with pytest.raises(EnvelopeError, match="malformed SyncRequest"):
        rebuild(not_json)
    with pytest.raises(EnvelopeError, match="unknown envelope kind 'credential'"):
        rebuild(EnvelopeData("credential", b"{}"))


def test_every_sdk_envelope_has_a_plan_and_the_host_s_word_is_not_checked_again():
    from aperio_plugins.worker.serve._rebuild import _PLANS

    unchecked = SyncRequest.model_construct(connector="")  # a host bug validation would catch

    assert all(entry is not None for entry in _PLANS.values())
    assert rebuild(_sent(unchecked)).connector == ""
