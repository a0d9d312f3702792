"""The wire format and the host's checks on what a worker sends, without a process."""

from __future__ import annotations

import datetime
import random
import re
import struct

import msgpack
import pytest
from pydantic import BaseModel

from aperio_hookspecs import ActionDefinition, Finding, Resource, SyncResult
from aperio_plugins import ConfigurationError, HostSettings, TrustMode
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker._codec import EnvelopeData, EnvelopeError, envelope, find_unpackable, materialize
from aperio_plugins.worker._settings import WorkerSettings
from aperio_plugins.worker.supervise._description import DescriptionError, parse_description
from aperio_plugins.worker.supervise._spawn import import_path, worker_environment

NOW = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
FINDING = Finding(
    id="f-1",
    provider="test",
    title="open link",
    severity="high",
    resource=Resource(type="file", id="9"),
    detected_at=NOW,
)


def frame(message: list) -> bytes:
    payload = protocol.pack(message)
    return struct.pack(">I", len(payload)) + payload


# -- handshake ---------------------------------------------------------------------


def test_the_handshake_line_is_one_documented_line():
    assert (
        protocol.handshake_line((1, 2), 4242)
        == b"aperio-worker|1|protocols=1,2|transport=stdio|codec=msgpack|pid=4242\n"
    )


def test_a_handshake_line_parses_and_unknown_fields_are_ignored():
    line = b"aperio-worker|1|protocols=1,3|transport=stdio|codec=msgpack|pid=7|socket=none\n"

    parsed = protocol.parse_handshake(line)

    assert (parsed.protocols, parsed.transport, parsed.codec, parsed.pid) == ((1, 3), "stdio", "msgpack", 7)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"hello world\n", "expected a line starting with 'aperio-worker', got 'hello world'"),
        (b"aperio-worker|2|protocols=1\n", "unknown handshake format '2' (this host reads format 1)"),
        (b"aperio-worker|1|protocols=1|pid=3\n", "lacks transport, codec"),
        (b"aperio-worker|1|protocols=x|transport=stdio|codec=msgpack|pid=3\n", "non-numeric protocol version or pid"),
        (b"aperio-worker|1|protocols\n", "malformed handshake field 'protocols'"),
    ],
)
def test_a_malformed_handshake_line_is_refused_saying_what_is_wrong(line, message):
    with pytest.raises(protocol.ProtocolError, match=re.escape(message)):
        protocol.parse_handshake(line)


@pytest.mark.parametrize(
    ("ours", "theirs", "chosen"),
    [((1,), (1,), 1), ((1, 2), (1, 2, 3), 2), ((1, 2), (2,), 2), ((1,), (99,), None), ((1,), (), None)],
)
def test_the_highest_common_version_is_chosen(ours, theirs, chosen):
    assert protocol.choose_version(ours, theirs) == chosen


# -- frames --------------------------------------------------------------------------


def test_frames_decode_whole_split_byte_by_byte_and_several_at_once():
    data = frame(["result", 1, "a"]) + frame(["pong", 2]) + frame(["result", 3, {"k": [1, 2]}])
    expected = [["result", 1, "a"], ["pong", 2], ["result", 3, {"k": [1, 2]}]]

    whole = protocol.FrameDecoder(1024).feed(data)
    decoder = protocol.FrameDecoder(1024)
    split = [message for byte in range(len(data)) for message in decoder.feed(data[byte : byte + 1])]

    assert whole == expected
    assert split == expected
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">I", 2048) + b"x" * 10, "frame of 2048 bytes \\(the limit is 1024\\)"),
        (struct.pack(">I", 0), "frame of 0 bytes"),
        (b"\xde\xad\xbe\xef garbage", "frame of 3735928559 bytes"),
        (struct.pack(">I", 1) + b"\xc1", "undecodable frame"),
        (struct.pack(">I", 1) + b"\x05", "a frame must be an array starting with its kind, got int"),
        (frame([1, 2]), "a frame must be an array starting with its kind"),
        (struct.pack(">I", 4) + msgpack.packb([msgpack.ExtType(9, b"x")])[:4], "undecodable frame"),
    ],
)
def test_a_malformed_frame_is_a_protocol_error(data, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.FrameDecoder(1024).feed(data)


def test_an_unknown_extension_type_is_a_protocol_error():
    payload = msgpack.packb(["result", 1, msgpack.ExtType(9, b"x\ny")])

    with pytest.raises(protocol.ProtocolError, match="unknown msgpack extension type 9"):
        protocol.FrameDecoder(1024).feed(struct.pack(">I", len(payload)) + payload)


# -- values --------------------------------------------------------------------------


def test_envelopes_cross_as_tagged_json_and_are_validated_back_into_models():
    (message,) = protocol.FrameDecoder(1 << 20).feed(frame(["result", 1, {"items": [FINDING], "n": 2}]))

    raw = message[2]["items"][0]
    value = materialize(message[2])

    assert isinstance(raw, EnvelopeData)
    assert raw.tag == "finding"
    assert value == {"items": [FINDING], "n": 2}


def test_an_action_definition_crosses_under_a_tag_derived_from_its_class():
    action = ActionDefinition(name="a.b", provider="p", title="T")

    (message,) = protocol.FrameDecoder(1 << 20).feed(frame(["ready", action]))

    assert message[1].tag == "action_definition"
    assert envelope(message[1]) == action


def test_a_malformed_or_unknown_envelope_is_refused_naming_the_field():
    bad = SyncResult.model_construct(connector="", events=())
    (message,) = protocol.FrameDecoder(1 << 20).feed(frame(["result", 1, bad]))

    with pytest.raises(EnvelopeError, match="malformed SyncResult: connector: String should have at least 1 character"):
        materialize(message[2])
    with pytest.raises(EnvelopeError, match="unknown envelope kind 'credential'"):
        envelope(EnvelopeData("credential", b"{}"))


class Custom(BaseModel):
    x: int = 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (object(), "object is neither JSON-able nor an SDK envelope"),
        ({1, 2}, "set is neither JSON-able nor an SDK envelope"),
        (Custom(), "Custom is a pydantic model but not an SDK envelope"),
        (NOW, "datetime is neither JSON-able nor an SDK envelope"),
    ],
)
def test_a_value_that_cannot_cross_is_named_with_its_type(value, reason):
    assert find_unpackable({"fine": [1, "two", None], "culprit": value}) == ("culprit", reason)


def test_a_failed_pack_leaves_nothing_behind_for_the_next_message():
    with pytest.raises(TypeError):
        protocol.pack(["result", 1, ["partial", object()]])

    assert msgpack.unpackb(protocol.pack(["pong", 5])) == ["pong", 5]


# -- what a worker describes -----------------------------------------------------------


def description(**overrides) -> dict:
    base = {
        "plugin_id": "acme.probe",
        "pid": 10,
        "hooks": [{"hook": "aperio_finding_raised", "params": ["finding"], "options": {"tryfirst": True}}],
        "registrations": [{"kind": "connector", "name": "probe", "description": "", "provider": "t"}],
    }
    return {**base, **overrides}


def test_a_description_is_parsed_with_every_option_normalized():
    parsed = parse_description(description(), "acme.probe")

    (hook,) = parsed.hooks
    assert hook.options == {
        "wrapper": False,
        "hookwrapper": False,
        "optionalhook": False,
        "tryfirst": True,
        "trylast": False,
        "specname": None,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"plugin_id": "acme.other"}, "describes plugin 'acme.other', not 'acme.probe'"),
        ({"hooks": [{"hook": "x():\n import os #", "params": [], "options": {}}]}, "is not a plain identifier"),
        (
            {"hooks": [{"hook": "aperio_x", "params": ["a=__import__('os')"], "options": {}}]},
            "are not plain identifiers",
        ),
        ({"hooks": [{"hook": "aperio_x", "params": ["_aperio_send"], "options": {}}]}, "are not plain identifiers"),
        ({"hooks": [{"hook": "aperio_x", "params": ["a", "a"], "options": {}}]}, "repeated parameter names"),
        ({"hooks": [{"hook": "aperio_x", "params": ["lambda"], "options": {}}]}, "are not plain identifiers"),
        ({"registrations": [{"kind": "plugin", "name": "x"}]}, "unknown registration kind 'plugin'"),
        ({"registrations": [{"kind": "remediation", "name": "x", "description": ""}]}, "carries no action definition"),
        ({"pid": "10"}, "pid an integer"),
    ],
)
def test_a_hostile_or_malformed_description_is_refused(overrides, message):
    with pytest.raises(DescriptionError, match=message):
        parse_description(description(**overrides), "acme.probe")


# -- settings and environment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("call_timeout", 0), ("grace_period", -1.0), ("restart_max_attempts", float("inf")), ("memory_limit", "1G")],
)
def test_out_of_range_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigurationError, match=f"WorkerSettings.{field}="):
        WorkerSettings(**{field: value})


def test_backoff_caps_grow_by_the_multiplier_up_to_the_maximum_and_delays_have_full_jitter():
    options = WorkerSettings(restart_initial_delay=0.5, restart_multiplier=3.0, restart_max_delay=10.0)
    rng = random.Random(4)

    caps = [options.backoff_cap(attempt) for attempt in range(1, 7)]
    delays = [options.backoff_delay(5, rng) for _ in range(200)]

    assert caps == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    assert options.backoff_cap(10_000) == 10.0
    assert all(0 <= delay <= 10.0 for delay in delays)
    assert min(delays) < 2.0 < 8.0 < max(delays)  # spread over the whole range, not bunched at the cap


def test_the_worker_environment_has_the_settings_and_nothing_the_operator_did_not_allow(tmp_path):
    settings = HostSettings(
        plugins_dir=tmp_path / "plugins", state_dir=tmp_path / "state", plugin_trust_mode=TrustMode.WARN
    )
    host_environment = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "APERIO_PLUGIN_TRUST_MODE": "disabled",  # the settings object wins over the host's environment
        "APERIO_DATABASE_PASSWORD": "secret",
        "HTTPS_PROXY": "http://proxy:3128",
    }

    env = worker_environment(settings, WorkerSettings(env_allowlist=("HTTPS_PROXY",)), host_environment)

    assert env["APERIO_PLUGIN_TRUST_MODE"] == "warn"
    assert env["APERIO_PLUGINS_DIR"] == str(tmp_path / "plugins")
    assert "APERIO_STATE_DIR" not in env
    assert {"PATH", "LANG", "LC_TIME", "HTTPS_PROXY"} <= set(env)
    assert not {"HOME", "AWS_SECRET_ACCESS_KEY", "APERIO_DATABASE_PASSWORD"} & set(env)


def test_the_plugins_directory_never_reaches_the_workers_import_path(tmp_path):
    plugins = tmp_path / "plugins"
    library = tmp_path / "lib"
    (plugins / "nested").mkdir(parents=True)
    library.mkdir()

    kept = import_path(plugins, [str(plugins), str(plugins / "nested"), "", "relative", str(library), str(library)])

    assert kept == [str(library)]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "undecodable frame"),
        (b"\xc1", "undecodable frame"),
        (msgpack.packb(["result", 1]) + b"\x00", "undecodable frame"),  # trailing bytes
        (b"\x91" * 100_000 + b"\xc0", "undecodable frame"),  # nesting too deep
        (msgpack.packb(["result", 1, msgpack.ExtType(9, b"x\ny")]), "unknown msgpack extension type 9"),
        (msgpack.packb({"kind": "result"}), "a frame must be an array starting with its kind, got dict"),
        (msgpack.packb([]), "a frame must be an array starting with its kind, got list"),
    ],
)
def test_decode_message_refuses_a_bad_payload_with_a_protocol_error_only(payload, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_message(payload)


def test_decode_message_returns_the_message_with_its_envelopes_kept_for_validation():
    message = protocol.decode_message(protocol.pack(["result", 7, {1: [FINDING], b"raw": b"\x00"}]))

    assert message[:2] == ["result", 7]
    assert materialize(message[2]) == {1: [FINDING], b"raw": b"\x00"}
