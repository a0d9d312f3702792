"""The parsers of signed inputs that arrive beside a wheel or inside an installed plugin (install
receipts, PEP 740 attestations and provenance objects) and the worker's message decoder turn any
input into their own typed error, never a traceback. Seeds are real documents, so the mutations
reach the checks past the JSON layer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzzing import DEEP, FUZZ, MSGPACK_VALUES, hostile, only
from hypothesis import example, given
from hypothesis import strategies as st
from testdata import TESTDATA

from aperio_plugins._attestations import verify_attestation_data
from aperio_plugins._keys import sign_envelope
from aperio_plugins._receipt import RECEIPT_FORMAT, RECEIPT_PREDICATE_TYPE, verify_receipt
from aperio_plugins._sigstore import SigstoreTrust, TrustedPublisher
from aperio_plugins._statement import PAYLOAD_TYPE, build_statement
from aperio_plugins.errors import VerificationError
from aperio_plugins.worker._protocol import ProtocolError, decode_message

HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
RECEIPT = json.dumps(
    {
        "format": RECEIPT_FORMAT,
        "envelope": sign_envelope(
            build_statement(
                "acme-box",
                "1.0.0",
                {"acme_box/__init__.py": "a" * 64},
                predicate_type=RECEIPT_PREDICATE_TYPE,
                extra={"publisher": "sigstore identity someone@example.invalid", "wheel_sha256": "b" * 64},
            ),
            PAYLOAD_TYPE,
            HOST_KEY,
        ),
    }
).encode()

ATTESTATIONS = TESTDATA / "pypi-attestations"
SDIST = "pypi_attestations-0.0.19.tar.gz"
ATTESTATION = (ATTESTATIONS / f"{SDIST}.publish.attestation").read_bytes()
PROVENANCE = (ATTESTATIONS / f"{SDIST}.provenance").read_bytes()
SDIST_SHA256 = hashlib.sha256((ATTESTATIONS / SDIST).read_bytes()).hexdigest()
PUBLISHERS = SigstoreTrust(
    (),
    TESTDATA / "sigstore-trust-root" / "production-trusted_root.json",
    (TrustedPublisher("github", "trailofbits/pypi-attestations", "release.yml"),),
)


@pytest.fixture(scope="module")
def host_public_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("host-key") / "host-key.pub.pem"
    path.write_bytes(
        HOST_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def test_the_seed_receipt_verifies(host_public_key):
    # The fuzzed seed must be a valid receipt, or the mutations below never reach past its envelope.
    assert verify_receipt(RECEIPT, host_public_key).publisher == "sigstore identity someone@example.invalid"


@FUZZ
@given(data=hostile(RECEIPT))
@example(data=RECEIPT)
def test_install_receipt(host_public_key, data):
    only(VerificationError, lambda d: verify_receipt(d, host_public_key), data)


def test_the_seed_attestations_verify():
    assert "trailofbits/pypi-attestations" in verify_attestation_data(ATTESTATION, SDIST, SDIST_SHA256, PUBLISHERS)
    assert "trailofbits/pypi-attestations" in verify_attestation_data(PROVENANCE, SDIST, SDIST_SHA256, PUBLISHERS)


@FUZZ
@given(st.one_of(hostile(ATTESTATION), hostile(PROVENANCE)))
def test_pep740_attestation_and_provenance(data):
    only(VerificationError, lambda d: verify_attestation_data(d, SDIST, SDIST_SHA256, PUBLISHERS), data)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(MSGPACK_VALUES, max_size=4).map(msgpack.packb),
        MSGPACK_VALUES.map(msgpack.packb),
        st.sampled_from([b"\x91" * 100_000, b"\xdd\xff\xff\xff\xff", b"\xc1", *DEEP]),
    )
)
def test_worker_message(data):
    only(ProtocolError, decode_message, data)
