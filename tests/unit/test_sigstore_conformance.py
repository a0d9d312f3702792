"""The Sigstore backend against real production bundles, offline, and its configuration file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY, forbid_network, in_toto_statement, preload_sigstore
from testdata import PRODUCTION_ROOT, RFC8785_BUNDLE, RFC8785_IDENTITY, RFC8785_WHEEL, TESTDATA

from aperio_plugins._sigstore import (
    IN_TOTO_PAYLOAD_TYPE,
    SigstoreTrust,
    TrustedIdentity,
    load_trusted_identities,
    sign_dsse_bundle,
    verify_artifact_bundle,
    verify_dsse_bundle,
)
from aperio_plugins.errors import ConfigurationError, SigningError, VerificationError

CONFORMANCE = TESTDATA / "sigstore-conformance"


# Why each conformance "fail" case must be refused: a refusal for another reason
# (say, an identity mismatch) would hide a verifier that skips the real check.
REFUSAL_REASONS = {
    "signature-mismatch_fail": "Signature is invalid for input",
    "wrong-material_fail": "message digest mismatch",
    "message-digest-mismatch_fail": "message digest mismatch",
    "bundle-from-wrong-instance_fail": "does not chain to a trusted Fulcio CA",
    "set-invalid-signature_fail": "SET: invalid inclusion promise",
    "invalid-checkpoint-signature_fail": "checkpoint: invalid signature",
    "inclusion-proof-corrupted-hash_fail": "inclusion proof contains invalid root hash",
    "wrong-hashedrekord-entry_fail": "transparency log entry is inconsistent",
    "dsse-invalid-sig_fail": "DSSE: invalid signature",
}


def _conformance_cases(expect: str) -> list[object]:
    document = json.loads((CONFORMANCE / "cases.json").read_text())
    cases = [case for case in document["cases"] if case["expect"] == expect]
    for case in cases:
        case["identity"] = document["beacon_identity"] if case["identity"] == "BEACON" else case["identity"]
    return [pytest.param(case, id=case["bundle"].split("/")[0]) for case in cases]


@pytest.fixture(scope="module", autouse=True)
def _sigstore_imported() -> None:
    preload_sigstore()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


@pytest.fixture
def testdata() -> Path:
    return TESTDATA


def _pinned(identity: str, issuer: str = GITHUB_ISSUER) -> SigstoreTrust:
    return SigstoreTrust(identities=(TrustedIdentity(identity, issuer),), trusted_root=PRODUCTION_ROOT)


def _verify_case(case: dict[str, str], trust: SigstoreTrust) -> str:
    bundle = (CONFORMANCE / case["bundle"]).read_bytes()
    if case["artifact"] is None:
        verified = verify_dsse_bundle(bundle, trust)
        assert verified.payload_type == IN_TOTO_PAYLOAD_TYPE
        return verified.signer
    return verify_artifact_bundle(bundle, (CONFORMANCE / case["artifact"]).read_bytes(), trust)


# --- production bundles -----------------------------------------------------------------


@pytest.mark.parametrize("case", _conformance_cases("ok"))
def test_production_bundle_is_accepted(testdata, case):
    signer = _verify_case(case, _pinned(case["identity"], case["issuer"]))

    assert signer == f"sigstore identity {case['identity']} (issuer {case['issuer']})"


@pytest.mark.parametrize("case", _conformance_cases("fail"))
def test_conformance_attack_is_refused(testdata, case):
    attack = case["bundle"].split("/")[0]

    with pytest.raises(VerificationError, match=REFUSAL_REASONS[attack]):
        _verify_case(case, _pinned(case["identity"], case["issuer"]))


def test_embedded_production_root_is_used_offline_without_the_tuf_cache(testdata, tmp_path, monkeypatch):
    cache, data = tmp_path / "cache", tmp_path / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    trust = SigstoreTrust(identities=_pinned(RFC8785_IDENTITY).identities, trusted_root=None)

    signer = verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), trust)

    assert RFC8785_IDENTITY in signer
    assert not cache.exists()
    assert not data.exists()


def test_published_wheel_is_accepted(testdata):
    signer = verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), _pinned(RFC8785_IDENTITY))

    assert signer == f"sigstore identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER})"


def test_any_one_trusted_identity_is_enough(testdata):
    trust = SigstoreTrust(
        identities=(TrustedIdentity(RELEASE_IDENTITY, GITHUB_ISSUER), TrustedIdentity(RFC8785_IDENTITY, GITHUB_ISSUER)),
        trusted_root=PRODUCTION_ROOT,
    )

    signer = verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), trust)

    assert RFC8785_IDENTITY in signer


def test_wheel_signed_by_an_untrusted_identity_is_refused(testdata):
    with pytest.raises(VerificationError) as refused:
        verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), _pinned(RELEASE_IDENTITY))

    assert f"untrusted signer: identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER})" in refused.value.message


def test_trusted_identity_from_the_wrong_issuer_is_refused(testdata):
    trust = _pinned(RFC8785_IDENTITY, issuer="https://gitlab.com")

    with pytest.raises(VerificationError) as refused:
        verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), trust)

    assert f"wrong OIDC issuer: identity {RFC8785_IDENTITY} was issued by {GITHUB_ISSUER}" in refused.value.message


def test_tampered_wheel_is_refused(testdata):
    wheel = bytearray(RFC8785_WHEEL.read_bytes())
    wheel[len(wheel) // 2] ^= 0x01

    with pytest.raises(VerificationError, match="message digest mismatch"):
        verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), bytes(wheel), _pinned(RFC8785_IDENTITY))


def test_pep740_statement_whose_subject_is_the_sdist_is_accepted(testdata):
    folder = testdata / "pypi-attestations"
    identity = "https://github.com/trailofbits/pypi-attestation-models/.github/workflows/release.yml@refs/tags/v0.0.4a2"
    bundle = (folder / "pypi_attestation_models-0.0.4a2.tar.gz.sigstore.json").read_bytes()

    signer = verify_artifact_bundle(
        bundle, (folder / "pypi_attestation_models-0.0.4a2.tar.gz").read_bytes(), _pinned(identity)
    )

    assert identity in signer


def test_statement_about_another_artifact_is_refused(testdata):
    folder = testdata / "pypi-attestations"
    identity = "https://github.com/trailofbits/pypi-attestation-models/.github/workflows/release.yml@refs/tags/v0.0.4a2"
    bundle = (folder / "pypi_attestation_models-0.0.4a2.tar.gz.sigstore.json").read_bytes()

    with pytest.raises(VerificationError, match="no statement subject has the artifact's sha256"):
        verify_artifact_bundle(bundle, (folder / "pypi_attestations-0.0.19.tar.gz").read_bytes(), _pinned(identity))


def test_message_signature_bundle_is_refused_where_dsse_is_required(testdata):
    with pytest.raises(VerificationError, match="carries no DSSE envelope"):
        verify_dsse_bundle(RFC8785_BUNDLE.read_bytes(), _pinned(RFC8785_IDENTITY))


def test_no_trusted_identities_refuses_everything(testdata):
    trust = SigstoreTrust(identities=(), trusted_root=PRODUCTION_ROOT)

    with pytest.raises(VerificationError, match="no trusted Sigstore identities configured"):
        verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), trust)


def test_unusable_trusted_root_is_a_configuration_error(testdata, tmp_path):
    broken = tmp_path / "trusted_root.json"
    broken.write_text('{"mediaType": "something/else"}')
    trust = SigstoreTrust(identities=_pinned(RFC8785_IDENTITY).identities, trusted_root=broken)

    with pytest.raises(ConfigurationError, match="not a usable Sigstore trusted root"):
        verify_artifact_bundle(RFC8785_BUNDLE.read_bytes(), RFC8785_WHEEL.read_bytes(), trust)


# --- the trusted identities file ----------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trusted-identities.toml"
    path.write_text(text)
    return path


def test_trusted_identities_file_is_read(tmp_path):
    (tmp_path / "private-trusted_root.json").write_text("{}")
    path = _write(
        tmp_path,
        f"""# the operator's signers
trusted_root = "private-trusted_root.json"

[[identity]]
identity = "{RELEASE_IDENTITY}"
issuer = "{GITHUB_ISSUER}"

[[identity]]
identity = "release@acme.example"
issuer = "https://accounts.google.com"
""",
    )

    trust = load_trusted_identities(path)

    assert trust == SigstoreTrust(
        identities=(
            TrustedIdentity(RELEASE_IDENTITY, GITHUB_ISSUER),
            TrustedIdentity("release@acme.example", "https://accounts.google.com"),
        ),
        trusted_root=tmp_path / "private-trusted_root.json",
    )


def test_missing_trusted_identities_file_trusts_nobody(tmp_path):
    assert load_trusted_identities(tmp_path / "absent.toml") == SigstoreTrust(identities=(), trusted_root=None)


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, f'[[identity]]\nidentity = "{RELEASE_IDENTITY}"\nissuer = https://unquoted\n')

    with pytest.raises(ConfigurationError) as error:
        load_trusted_identities(path)

    assert str(path) in error.value.message
    assert "line 3" in error.value.message


def test_identity_without_issuer_is_refused_with_its_table_and_line(tmp_path):
    path = _write(
        tmp_path,
        f'[[identity]]\nidentity = "a@example.com"\nissuer = "{GITHUB_ISSUER}"\n\n[[identity]]\nidentity = "{RELEASE_IDENTITY}"\n',
    )

    with pytest.raises(ConfigurationError) as error:
        load_trusted_identities(path)

    assert error.value.message == f"{path}: [[identity]] #2 (line 5): missing issuer"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(
            '[[identity]]\nidentity = "a@example.com"\nissuer = "x"\nsubject = "y"\n',
            "unknown key(s) subject",
            id="unknown-identity-key",
        ),
        pytest.param('trusted_keys = "keys"\n', "unknown key(s) trusted_keys", id="unknown-top-level-key"),
        pytest.param(
            '[[identity]]\nidentity = "a@example.com"\nissuer = 1\n',
            "issuer must be a non-empty string",
            id="non-string-issuer",
        ),
        pytest.param(
            '[[identity]]\nidentity = ""\nissuer = "x"\n', "identity must be a non-empty string", id="empty-identity"
        ),
        pytest.param('identity = "a@example.com"\n', "identity must be an array of tables", id="identity-not-a-table"),
        pytest.param('trusted_root = "nowhere.json"\n', "does not exist", id="missing-trusted-root"),
    ],
)
def test_malformed_trusted_identities_file_is_refused(tmp_path, text, reason):
    path = _write(tmp_path, text)

    with pytest.raises(ConfigurationError, match=re.escape(reason)) as error:
        load_trusted_identities(path)

    assert str(path) in error.value.message


def test_trusted_identity_with_an_empty_issuer_cannot_exist():
    # sigstore's Identity policy would skip the issuer check for an empty issuer.
    with pytest.raises(ConfigurationError):
        TrustedIdentity(RELEASE_IDENTITY, "")


# --- signing (its success needs Fulcio and Rekor: only the offline refusals are tested) --------


def test_signing_without_an_ambient_credential_is_refused(monkeypatch):
    import sigstore.oidc

    monkeypatch.setattr(sigstore.oidc, "detect_credential", lambda: None)

    with pytest.raises(SigningError, match="no ambient OIDC credential found"):
        sign_dsse_bundle(in_toto_statement({"a": b"a"}))


def test_signing_with_a_malformed_identity_token_is_refused_before_any_network_use():
    with pytest.raises(SigningError, match="Identity token is malformed"):
        sign_dsse_bundle(in_toto_statement({"a": b"a"}), identity_token="not-a-jwt")


def test_signing_a_statement_that_is_not_in_toto_is_refused():
    with pytest.raises(SigningError, match="malformed in-toto statement"):
        sign_dsse_bundle(b'{"hello": "world"}', identity_token=_unsigned_jwt())


def _unsigned_jwt() -> str:
    """A structurally valid, unsigned OIDC token for the "sigstore" audience (never sent anywhere)."""
    import base64
    import time

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": "https://issuer.example",
        "sub": "ci",
        "aud": "sigstore",
        "iat": now,
        "exp": now + 300,
        "email": "ci@example.com",
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# --- import cost -----------------------------------------------------------------------------


def test_importing_the_backend_does_not_import_sigstore():
    code = (
        "import sys, aperio_plugins._sigstore; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sigstore'))"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_verifying_without_the_sigstore_package_is_a_configuration_error(tmp_path):
    code = (
        "import sys; sys.modules['sigstore'] = None\n"
        "from pathlib import Path\n"
        "from aperio_plugins._sigstore import SigstoreTrust, TrustedIdentity, verify_dsse_bundle\n"
        "from aperio_plugins.errors import ConfigurationError\n"
        "try:\n"
        "    verify_dsse_bundle(b'{\"dsseEnvelope\": {}}', SigstoreTrust((TrustedIdentity('a@b.example', 'https://i'),), None))\n"
        "except ConfigurationError as exc:\n"
        "    print(exc.message)\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.startswith("Sigstore signatures need the `sigstore` package")
