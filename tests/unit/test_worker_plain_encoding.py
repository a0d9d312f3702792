"""The worker protocol's unchecked encoder (`pack_plain` with `envelope_ext`) writes the same bytes
as the checking one, and only SDK envelopes are made into extensions by it."""

from __future__ import annotations

import datetime

import pytest
from pydantic import BaseModel

from aperio_hookspecs import Actor, Event, Finding, Resource, SyncRequest, SyncResult
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker._codec import envelope, envelope_ext

WHEN = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
FINDING = Finding(
    id="f-1",
    provider="box",
    title="Public link",
    severity="high",
    resource=Resource(type="file", id="9"),
    detected_at=WHEN,
)
RESULT = SyncResult(
    connector="box",
    events=(
        Event(
            id="e-1",
            provider="box",
            type="file.shared",
            occurred_at=WHEN,
            actor=Actor(id="u-1", name="Ada"),
            resource=Resource(type="file", id="9"),
        ),
    ),
    next_cursor="c+1",
)


@pytest.mark.parametrize(
    "message",
    [
        [protocol.RESULT, 7, RESULT],
        [protocol.RESULT, 2**40, None],
        [protocol.INVOKE, 1, "connector", "box", SyncRequest(connector="box", cursor="é"), 29.5, "inv-1", ["a:read"]],
        [protocol.HOOK, 3, "aperio_finding_raised", {"finding": FINDING}, 30.0],
    ],
)
def test_the_plain_encoder_writes_the_checking_encoders_bytes(message):
    plain = [envelope_ext(item) if isinstance(item, BaseModel) else item for item in message]
    if message[0] == protocol.HOOK:
        plain[3] = {name: envelope_ext(value) for name, value in message[3].items()}
    assert protocol.pack_plain(plain) == protocol.pack(message)
    decoded = protocol.decode_message(protocol.pack_plain(plain))
    sent = message[3].values() if message[0] == protocol.HOOK else message
    received = decoded[3].values() if message[0] == protocol.HOOK else decoded
    models = [envelope(item) for item in received if not isinstance(item, (str, int, float, list, type(None)))]
    assert models == [item for item in sent if isinstance(item, BaseModel)]


class NotAnEnvelope(BaseModel):
    name: str = "x"


class SubclassedFinding(Finding):
    pass


@pytest.mark.parametrize(
    "value",
    [NotAnEnvelope(), SubclassedFinding.model_validate(FINDING.model_dump()), {"x"}, WHEN, "text", None, 3],
)
def test_only_an_exact_sdk_envelope_becomes_an_extension(value):
    # Anything else is left to the checking encoder, which refuses what cannot cross.
    assert envelope_ext(value) is None
