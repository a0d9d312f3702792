"""The signature file's format: what it accepts, what it refuses and with which words, and what signing writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aperio_plugins._signature_file import (
    MAX_SIGNATURE_FILE_BYTES,
    Ed25519Signature,
    SignatureFile,
    SigstoreSignature,
    parse_signature_file,
)
from aperio_plugins._untrusted_json import MAX_JSON_DEPTH
from aperio_plugins.errors import VerificationError

ENVELOPE = {"payload": "e30=", "payloadType": "application/vnd.in-toto+json", "signatures": []}


def document(**changes: object) -> bytes:
    value: dict[str, object] = {"format": 1, "signatures": [{"kind": "ed25519", "envelope": ENVELOPE}]}
    value.update(changes)
    return json.dumps(value).encode()


def test_both_kinds_are_read_by_their_tag():
    parsed = parse_signature_file(
        document(signatures=[{"kind": "ed25519", "envelope": ENVELOPE}, {"kind": "sigstore", "bundle": {"a": 1}}])
    )
    first, second = parsed.signatures
    assert isinstance(first, Ed25519Signature)
    assert (first.kind, first.envelope) == ("ed25519", ENVELOPE)
    assert isinstance(second, SigstoreSignature)
    assert (second.kind, second.bundle) == ("sigstore", {"a": 1})


def test_what_signing_writes_reads_back_the_same():
    written = SignatureFile(format=1, signatures=[Ed25519Signature(ENVELOPE), SigstoreSignature({"b": [1]})])
    data = written.to_json()
    assert data.endswith(b"}\n")
    assert json.loads(data)["signatures"][0] == {"kind": "ed25519", "envelope": ENVELOPE}
    assert parse_signature_file(data) == written


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (document(format=2), "format: Invalid enum value 2"),
        (document(format=True), "format: Expected `int`, got `bool`"),
        (document(extra=1), "(root): Object contains unknown field `extra`"),
        (document(signatures=[{"kind": "ed25519", "envelope": ENVELOPE, "x": 1}]), "signatures.0: Object contains"),
        (document(signatures=[{"kind": "rsa", "envelope": ENVELOPE}]), "signatures.0.kind: Invalid value 'rsa'"),
        (document(signatures=[{"envelope": ENVELOPE}]), "signatures.0: Object missing required field `kind`"),
        (document(signatures=[{"kind": "sigstore", "envelope": ENVELOPE}]), "signatures.0: Object contains unknown"),
        (document(signatures=[{"kind": "ed25519", "envelope": "text"}]), "signatures.0.envelope: Expected `object`"),
        (document(signatures=[]), "it holds no signatures"),
        (b'{"format": 1', "(root): Invalid JSON"),
        (b"\xff\xfe", "(root): Invalid JSON"),
        (b"[]", "(root): Expected `object`, got `array`"),
        (document(signatures=[{"kind": "ed25519", "envelope": {"a": json.loads("[" * 70 + "]" * 70)}}]), "nested"),
        (b" " * (MAX_SIGNATURE_FILE_BYTES + 1), "larger than"),
    ],
)
def test_a_malformed_file_is_refused_saying_where(data, reason):
    with pytest.raises(VerificationError, match=r"^malformed signature file: ") as refused:
        parse_signature_file(data)
    assert reason in refused.value.message


def test_the_depth_bound_is_the_one_every_untrusted_document_has():
    at_bound = {"a": json.loads("[" * (MAX_JSON_DEPTH - 4) + "]" * (MAX_JSON_DEPTH - 4))}
    parse_signature_file(document(signatures=[{"kind": "ed25519", "envelope": at_bound}]))
    too_deep = {"a": json.loads("[" * (MAX_JSON_DEPTH - 3) + "]" * (MAX_JSON_DEPTH - 3))}
    with pytest.raises(VerificationError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        parse_signature_file(document(signatures=[{"kind": "ed25519", "envelope": too_deep}]))


@given(st.binary(max_size=512))
def test_any_bytes_are_parsed_or_refused_never_an_unexpected_error(data):
    outcome: object
    try:
        outcome = parse_signature_file(data)
    except VerificationError as refused:
        outcome = refused.message
    if isinstance(outcome, str):
        assert outcome.startswith("malformed signature file: ")
    else:
        assert isinstance(outcome, SignatureFile)
        assert outcome.signatures
