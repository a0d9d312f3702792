"""Sign with a private Sigstore instance, verify with the real sigstore Verifier behind our backend."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from sigstore_helpers import (
    GITHUB_ISSUER,
    RELEASE_IDENTITY,
    edit_bundle,
    flip_last_byte,
    forbid_network,
    in_toto_statement,
    preload_sigstore,
)

from aperio_plugins._sigstore import (
    IN_TOTO_PAYLOAD_TYPE,
    SigstoreTrust,
    TrustedIdentity,
    verify_artifact_bundle,
    verify_dsse_bundle,
)
from aperio_plugins._testing_sigstore import PrivateSigstore
from aperio_plugins.errors import VerificationError

WHEEL_FILES = {
    "acme_box/__init__.py": b"VERSION = '1.0.0'\n",
    "acme_box-1.0.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: acme-box\nVersion: 1.0.0\n",
    "acme_box-1.0.0.dist-info/entry_points.txt": b"[aperio.plugins]\nacme.box-connector = acme_box\n",
}
STATEMENT = in_toto_statement(WHEEL_FILES)


@pytest.fixture(scope="module", autouse=True)
def _sigstore_imported() -> None:
    preload_sigstore()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


@pytest.fixture
def instance(tmp_path) -> PrivateSigstore:
    return PrivateSigstore.create(tmp_path / "sigstore")


@pytest.fixture
def trust(instance) -> SigstoreTrust:
    return SigstoreTrust(
        identities=(TrustedIdentity(RELEASE_IDENTITY, GITHUB_ISSUER),), trusted_root=instance.trusted_root_path
    )


@pytest.fixture
def bundle(instance) -> bytes:
    return instance.sign_dsse(STATEMENT, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)


# --- accepted ------------------------------------------------------------------------------


def test_signed_statement_is_accepted_with_its_payload_and_signer(bundle, trust):
    verified = verify_dsse_bundle(bundle, trust)

    assert verified.payload == STATEMENT
    assert verified.payload_type == IN_TOTO_PAYLOAD_TYPE
    assert verified.signer == f"sigstore identity {RELEASE_IDENTITY} (issuer {GITHUB_ISSUER})"


def test_every_bundle_of_a_growing_log_is_accepted(instance, trust):
    bundles = [
        instance.sign_dsse(in_toto_statement({"n": b"%d" % n}), identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
        for n in range(5)
    ]

    tree_sizes = [
        json.loads(b)["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["treeSize"] for b in bundles
    ]

    assert len(set(tree_sizes)) == 5
    assert [verify_dsse_bundle(b, trust).signer for b in bundles] == [verify_dsse_bundle(bundles[0], trust).signer] * 5


def test_email_identity_is_accepted(instance):
    trust = SigstoreTrust(
        identities=(TrustedIdentity("release@acme.example", "https://accounts.google.com"),),
        trusted_root=instance.trusted_root_path,
    )
    bundle = instance.sign_dsse(STATEMENT, identity="release@acme.example", issuer="https://accounts.google.com")

    assert (
        verify_dsse_bundle(bundle, trust).signer
        == "sigstore identity release@acme.example (issuer https://accounts.google.com)"
    )


def test_message_signature_over_an_artifact_is_accepted(instance, trust):
    bundle = instance.sign_artifact(b"wheel bytes", identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    assert RELEASE_IDENTITY in verify_artifact_bundle(bundle, b"wheel bytes", trust)


def test_statement_naming_the_artifact_is_accepted_for_it(bundle, trust):
    assert RELEASE_IDENTITY in verify_artifact_bundle(bundle, WHEEL_FILES["acme_box/__init__.py"], trust)


# --- refused: who signed ---------------------------------------------------------------------


def test_signer_with_an_untrusted_identity_is_refused(instance, trust):
    bundle = instance.sign_dsse(
        STATEMENT,
        identity="https://github.com/mallory/box/.github/workflows/release.yml@refs/tags/v1.0.0",
        issuer=GITHUB_ISSUER,
    )

    with pytest.raises(VerificationError) as refused:
        verify_dsse_bundle(bundle, trust)

    assert refused.value.message == (
        "Sigstore bundle refused: untrusted signer: identity https://github.com/mallory/box/.github/workflows/release.yml@refs/tags/v1.0.0 "
        f"(issuer {GITHUB_ISSUER}) is not a trusted identity"
    )


def test_trusted_identity_from_the_wrong_issuer_is_refused(instance, trust):
    bundle = instance.sign_dsse(STATEMENT, identity=RELEASE_IDENTITY, issuer="https://evil-issuer.example")

    with pytest.raises(VerificationError) as refused:
        verify_dsse_bundle(bundle, trust)

    assert refused.value.message == (
        f"Sigstore bundle refused: wrong OIDC issuer: identity {RELEASE_IDENTITY} was issued by https://evil-issuer.example, "
        f"but it is trusted only with issuer {GITHUB_ISSUER}"
    )


def test_bundle_from_the_wrong_instance_is_refused(tmp_path, trust):
    other = PrivateSigstore.create(tmp_path / "other-sigstore")
    bundle = other.sign_dsse(STATEMENT, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(VerificationError, match="does not chain to a trusted Fulcio CA"):
        verify_dsse_bundle(bundle, trust)


def test_artifact_signed_by_the_wrong_instance_is_refused(tmp_path, trust):
    other = PrivateSigstore.create(tmp_path / "other-sigstore")
    bundle = other.sign_artifact(b"wheel bytes", identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(VerificationError, match="does not chain to a trusted Fulcio CA"):
        verify_artifact_bundle(bundle, b"wheel bytes", trust)


def test_certificate_not_logged_in_the_trusted_ct_log_is_refused(tmp_path, instance, trust):
    rogue_ct = dataclasses.replace(instance, ct_key=PrivateSigstore.create(tmp_path / "rogue").ct_key)
    bundle = rogue_ct.sign_dsse(STATEMENT, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(VerificationError, match="failed to verify SCT on signing certificate"):
        verify_dsse_bundle(bundle, trust)


def test_entry_in_an_untrusted_transparency_log_is_refused(tmp_path, instance, trust):
    rogue_log = dataclasses.replace(instance, log=PrivateSigstore.create(tmp_path / "rogue").log)
    bundle = rogue_log.sign_dsse(STATEMENT, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(VerificationError, match="invalid log entry"):
        verify_dsse_bundle(bundle, trust)


# --- refused: what was signed ----------------------------------------------------------------


def test_payload_modified_after_signing_is_refused(bundle, trust):
    forged = in_toto_statement({**WHEEL_FILES, "acme_box/backdoor.py": b"import os\n"})

    def swap_payload(document):
        document["dsseEnvelope"]["payload"] = base64.b64encode(forged).decode()

    with pytest.raises(VerificationError, match="DSSE: invalid signature"):
        verify_dsse_bundle(edit_bundle(bundle, swap_payload), trust)


def test_flipped_signature_bytes_are_refused(bundle, trust):
    def flip(document):
        signature = document["dsseEnvelope"]["signatures"][0]
        signature["sig"] = flip_last_byte(signature["sig"])

    with pytest.raises(VerificationError, match="DSSE: invalid signature"):
        verify_dsse_bundle(edit_bundle(bundle, flip), trust)


def test_artifact_changed_after_signing_is_refused(instance, trust):
    bundle = instance.sign_artifact(b"wheel bytes", identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(VerificationError, match="message digest mismatch"):
        verify_artifact_bundle(bundle, b"wheel bytez", trust)


def test_statement_about_other_files_is_refused_for_an_artifact(bundle, trust):
    with pytest.raises(VerificationError, match="no statement subject has the artifact's sha256"):
        verify_artifact_bundle(bundle, b"a file the statement does not list", trust)


def test_envelope_that_is_not_in_toto_is_refused(instance, trust):
    bundle = instance.sign_dsse(
        b"#!/bin/sh\n", identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER, payload_type="text/x-shellscript"
    )

    with pytest.raises(VerificationError, match="DSSE payload type 'text/x-shellscript' is not in-toto"):
        verify_dsse_bundle(bundle, trust)


# --- refused: the transparency log -------------------------------------------------------------


def _entry(document):
    return document["verificationMaterial"]["tlogEntries"][0]


def test_entry_missing_from_the_log_is_refused(bundle, trust):
    def corrupt_proof(document):
        proof = _entry(document)["inclusionProof"]
        proof["hashes"][0] = flip_last_byte(proof["hashes"][0])

    with pytest.raises(VerificationError, match="inclusion proof contains invalid root hash"):
        verify_dsse_bundle(edit_bundle(bundle, corrupt_proof), trust)


def test_forged_checkpoint_signature_is_refused(bundle, trust):
    def forge(document):
        checkpoint = _entry(document)["inclusionProof"]["checkpoint"]
        note, signature_line = checkpoint["envelope"].split("\n\n")
        dash, name, signature = signature_line.rstrip("\n").split(" ")
        checkpoint["envelope"] = f"{note}\n\n{dash} {name} {flip_last_byte(signature)}\n"

    with pytest.raises(VerificationError, match="checkpoint: invalid signature"):
        verify_dsse_bundle(edit_bundle(bundle, forge), trust)


def test_forged_signed_entry_timestamp_is_refused(bundle, trust):
    def forge(document):
        promise = _entry(document)["inclusionPromise"]
        promise["signedEntryTimestamp"] = flip_last_byte(promise["signedEntryTimestamp"])

    with pytest.raises(VerificationError, match="SET: invalid inclusion promise"):
        verify_dsse_bundle(edit_bundle(bundle, forge), trust)


# --- refused: malformed bundles ----------------------------------------------------------------


def test_truncated_bundle_is_refused(bundle, trust):
    with pytest.raises(VerificationError, match="malformed bundle JSON"):
        verify_dsse_bundle(bundle[: len(bundle) // 2], trust)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        pytest.param(lambda d: d.pop("verificationMaterial"), "malformed bundle", id="no-verification-material"),
        pytest.param(
            lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=9"),
            "(?s)malformed bundle: .*mediaType",
            id="unknown-media-type",
        ),
        pytest.param(
            lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "bm90IGEgY2VydGlmaWNhdGU="}),
            "malformed bundle",
            id="garbage-certificate",
        ),
        pytest.param(
            lambda d: d["verificationMaterial"].update(tlogEntries=[]), "exactly one log entry", id="no-log-entry"
        ),
        pytest.param(lambda d: d["dsseEnvelope"].update(signatures=[]), "malformed bundle", id="no-signature"),
    ],
)
def test_malformed_bundle_is_refused(bundle, trust, edit, reason):
    with pytest.raises(VerificationError, match=reason):
        verify_dsse_bundle(edit_bundle(bundle, edit), trust)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"\xff\xfe"], ids=["empty", "not-json", "array", "not-utf8"])
def test_bundle_that_is_not_a_json_object_is_refused(trust, raw):
    with pytest.raises(VerificationError, match="malformed bundle JSON"):
        verify_dsse_bundle(raw, trust)
