"""PEP 740 attestations as PyPI serves them, verified offline against Trusted Publishers the operator pinned."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sigstore_helpers import forbid_network, preload_sigstore
from testdata import ATTESTATIONS, PRODUCTION_ROOT

from aperio_plugins._attestations import verify_attestation_data
from aperio_plugins._sigstore import SigstoreTrust, TrustedPublisher, load_trusted_identities
from aperio_plugins._wheel_signatures import WheelSignature, verify_wheel_signature
from aperio_plugins.errors import ConfigurationError, VerificationError

SDIST = ATTESTATIONS / "pypi_attestations-0.0.19.tar.gz"
GITLAB_SDIST = ATTESTATIONS / "gitlab_oidc_project-0.0.3.tar.gz"
GITHUB = TrustedPublisher("github", "trailofbits/pypi-attestations", "release.yml")
GITLAB = TrustedPublisher("gitlab", "facutuesca/gitlab-oidc-project", ".gitlab-ci.yml")


@pytest.fixture(scope="module", autouse=True)
def _sigstore_imported() -> None:
    preload_sigstore()
    import pypi_attestations  # noqa: F401 - imported once per module, like sigstore (see tests/conftest.py)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


def _verify(attestation: str, dist: Path, *publishers: TrustedPublisher) -> str:
    trust = SigstoreTrust(identities=(), trusted_root=PRODUCTION_ROOT, publishers=publishers)
    data = (ATTESTATIONS / attestation).read_bytes()
    return verify_attestation_data(data, dist.name, hashlib.sha256(dist.read_bytes()).hexdigest(), trust)


@pytest.mark.parametrize(
    ("attestation", "dist", "publisher", "kind"),
    [
        pytest.param("pypi_attestations-0.0.19.tar.gz.publish.attestation", SDIST, GITHUB, "publish", id="publish"),
        pytest.param(
            "pypi_attestations-0.0.19.tar.gz.slsa.attestation", SDIST, GITHUB, "SLSA provenance", id="slsa-provenance"
        ),
        pytest.param("pypi_attestations-0.0.19.tar.gz.provenance", SDIST, GITHUB, "publish", id="pypi-provenance"),
        pytest.param(
            "gitlab_oidc_project-0.0.3.tar.gz.publish.attestation", GITLAB_SDIST, GITLAB, "publish", id="gitlab"
        ),
    ],
)
def test_the_pinned_publisher_is_accepted(attestation, dist, publisher, kind):
    assert _verify(attestation, dist, publisher) == f"PEP 740 {kind} attestation by {publisher.describe()}"


def test_any_one_pinned_publisher_is_enough():
    signer = _verify("pypi_attestations-0.0.19.tar.gz.publish.attestation", SDIST, GITLAB, GITHUB)

    assert GITHUB.describe() in signer


@pytest.mark.parametrize(
    ("publisher", "reason"),
    [
        pytest.param(
            TrustedPublisher("github", "trailofbits/pypi-attestation-models", "release.yml"),
            "OIDCSourceRepositoryURI does not match",
            id="wrong_repository",
        ),
        pytest.param(
            TrustedPublisher("github", "trailofbits/pypi-attestations", "ci.yml"),
            "Build Config URI",
            id="wrong_workflow",
        ),
        pytest.param(
            TrustedPublisher("gitlab", "trailofbits/pypi-attestations", "release.yml"),
            "OIDCIssuerV2",
            id="wrong_ci",
        ),
    ],
)
def test_another_publisher_is_refused(publisher, reason):
    with pytest.raises(VerificationError) as refused:
        _verify("pypi_attestations-0.0.19.tar.gz.publish.attestation", SDIST, publisher)

    assert refused.value.message.startswith("PEP 740 attestation refused: no pinned trusted publisher signed it:")
    assert reason in refused.value.message


def test_the_publisher_a_provenance_names_is_never_trusted_by_itself():
    with pytest.raises(VerificationError, match="no trusted publishers configured"):
        _verify("pypi_attestations-0.0.19.tar.gz.provenance", SDIST)


def test_a_pinned_environment_the_provenance_does_not_name_is_refused():
    pinned = TrustedPublisher("github", "trailofbits/pypi-attestations", "release.yml", environment="pypi")

    with pytest.raises(VerificationError, match="the attestation names no environment 'pypi'"):
        _verify("pypi_attestations-0.0.19.tar.gz.provenance", SDIST, pinned)


def test_an_attestation_about_another_distribution_is_refused():
    other = ATTESTATIONS / "pypi_attestation_models-0.0.4a2.tar.gz"

    with pytest.raises(VerificationError, match=r"the statement is about 'pypi_attestations-0\.0\.19\.tar\.gz'"):
        _verify("pypi_attestations-0.0.19.tar.gz.publish.attestation", other, GITHUB)


def test_an_attestation_over_other_bytes_under_the_same_name_is_refused():
    trust = SigstoreTrust(identities=(), trusted_root=PRODUCTION_ROOT, publishers=(GITHUB,))
    data = (ATTESTATIONS / "pypi_attestations-0.0.19.tar.gz.publish.attestation").read_bytes()

    with pytest.raises(VerificationError, match="subject digest is not the sha256"):
        verify_attestation_data(data, SDIST.name, "0" * 64, trust)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\xff\xfe", "not JSON", id="not-json"),
        pytest.param(b"[]", "malformed attestation", id="not-an-object"),
        pytest.param(b'{"version": 1, "envelope": {}}', "malformed attestation", id="missing-fields"),
        pytest.param(b'{"version": 2, "attestation_bundles": []}', "malformed provenance", id="bad-provenance"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not JSON", id="deeply-nested"),
    ],
)
def test_malformed_attestations_are_typed_refusals(data, reason):
    trust = SigstoreTrust(identities=(), trusted_root=PRODUCTION_ROOT, publishers=(GITHUB,))

    with pytest.raises(VerificationError, match=reason):
        verify_attestation_data(data, SDIST.name, "0" * 64, trust)


def test_a_wheel_signature_names_where_it_came_from():
    signature = WheelSignature("pep740", b"{}", "x.whl.publish.attestation")
    trust = SigstoreTrust(identities=(), trusted_root=PRODUCTION_ROOT, publishers=(GITHUB,))

    with pytest.raises(VerificationError, match=r"^x\.whl\.publish\.attestation: PEP 740 attestation refused"):
        verify_wheel_signature(signature, "x-1.0-py3-none-any.whl", "0" * 64, trust)


# --- the [[trusted_publisher]] tables of the identities file --------------------------------------------


def test_trusted_publishers_are_read(tmp_path):
    path = tmp_path / "trusted-identities.toml"
    path.write_text(
        '[[trusted_publisher]]\nkind = "github"\nrepository = "acme/box"\nworkflow = "release.yml"\n'
        'environment = "pypi"\n\n'
        '[[trusted_publisher]]\nkind = "gitlab"\nrepository = "acme/box"\nworkflow_filepath = ".gitlab-ci.yml"\n'
    )

    trust = load_trusted_identities(path)

    assert trust.publishers == (
        TrustedPublisher("github", "acme/box", "release.yml", "pypi"),
        TrustedPublisher("gitlab", "acme/box", ".gitlab-ci.yml"),
    )
    assert trust.identities == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('[[trusted_publisher]]\nkind = "google"\n', "kind must be one of github, gitlab", id="kind"),
        pytest.param(
            '[[trusted_publisher]]\nkind = "github"\nrepository = "a/b"\n',
            "#1 (line 1): missing workflow",
            id="missing",
        ),
        pytest.param(
            '[[trusted_publisher]]\nkind = "github"\nrepository = "a/b"\nworkflow = "r.yml"\nref = "main"\n',
            "unknown key(s) ref",
            id="unknown-key",
        ),
        pytest.param(
            '[[trusted_publisher]]\nkind = "gitlab"\nrepository = "a/b"\nworkflow = "r.yml"\n',
            "unknown key(s) workflow",
            id="gitlab-names-its-ci-file",
        ),
        pytest.param(
            '[[trusted_publisher]]\nkind = "github"\nrepository = "a/b"\nworkflow = ""\n',
            "workflow must be a non-empty string",
            id="empty",
        ),
        pytest.param('trusted_publisher = "acme"\n', "must be an array of tables", id="not-a-table"),
    ],
)
def test_malformed_trusted_publishers_are_refused(tmp_path, text, reason):
    path = tmp_path / "trusted-identities.toml"
    path.write_text(text)

    with pytest.raises(ConfigurationError, match=re.escape(reason)) as error:
        load_trusted_identities(path)

    assert str(path) in error.value.message


def test_importing_the_host_does_not_import_pypi_attestations():
    code = "import sys, aperio_plugins, aperio_plugins.registry._client; print('pypi_attestations' in sys.modules)"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert json.loads(result.stdout.strip().lower()) is False
