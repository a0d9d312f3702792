"""The tamper suite: each case is an attack on a signed plugin, named after it. Each asserts the
signature status and that none of the plugin's code ran."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from plugin_builders import CONNECTOR_SOURCE, MARKER_PREFIX, connector_wheel, imported_ids

from aperio_plugins import FailureStage, PluginState, SignatureStatus
from aperio_plugins._keys import load_private_key, sign_envelope
from aperio_plugins._signature_file import SIGNATURE_FORMAT
from aperio_plugins._statement import PAYLOAD_TYPE, SIGNATURE_FILE_NAME, build_statement
from aperio_plugins.testing import generate_signing_key, sign_wheel_with_key

PLUGIN = "acme.signed"
DIST_INFO = "acme_signed-1.0.0.dist-info"


@pytest.fixture
def keys(tmp_path):
    private, public = generate_signing_key(tmp_path / "author")
    trusted = tmp_path / "keys"
    trusted.mkdir(mode=0o700)
    shutil.copy(public, trusted / public.name)
    return private


@pytest.fixture
def signed_wheel(wheel_dir, keys, marker):
    return sign_wheel_with_key(
        connector_wheel(wheel_dir / "signed", PLUGIN, package="acme_signed", marker=marker), keys
    )


@pytest.fixture
def installed(signed_wheel, install, plugins_dir):
    install(signed_wheel)
    return plugins_dir


def load(make_host, trust="strict"):
    host = make_host(trust)
    infos = {info.id: info for info in host.load().plugins}
    return host, infos[PLUGIN]


def assert_refused(info, marker, *fragments):
    assert info.signature_status is SignatureStatus.INVALID
    assert info.state is PluginState.FAILED
    assert info.failure_stage is FailureStage.VERIFY
    for fragment in fragments:
        assert fragment in info.error
    assert PLUGIN not in imported_ids(marker)


def test_a_signed_plugin_from_a_trusted_key_is_verified_and_enabled(installed, make_host, marker, audit):
    _, info = load(make_host)
    assert info.signature_status is SignatureStatus.VERIFIED
    assert info.state is PluginState.ENABLED
    assert info.signature_detail.startswith("signed by ed25519 key ")
    assert imported_ids(marker) == [PLUGIN]
    assert audit.fields_of("plugin.signature.verified")[0]["signer"].endswith("(test-signer.pub.pem)")


def test_modified_source_file(installed, make_host, marker):
    source = installed / "acme_signed" / "__init__.py"
    source.write_text(source.read_text() + "\nimport os  # a backdoor would go here\n")
    _, info = load(make_host)
    assert_refused(info, marker, "acme_signed/__init__.py modified")


def test_added_module(installed, make_host, marker):
    (installed / "acme_signed" / "extra.py").write_text("print('not signed')\n")
    _, info = load(make_host)
    assert_refused(info, marker, "acme_signed/extra.py unexpected")


def test_modified_entry_points_file(installed, make_host, marker):
    path = installed / DIST_INFO / "entry_points.txt"
    path.write_text(path.read_text().replace("= acme_signed", "= acme_signed.evil"))
    _, info = load(make_host)
    assert_refused(info, marker, f"{DIST_INFO}/entry_points.txt modified", "entry_points.txt is not the signed one")


def test_modified_metadata_widens_the_api_requirement(installed, make_host, marker):
    path = installed / DIST_INFO / "METADATA"
    path.write_text(path.read_text().replace("aperio-hookspecs>=1.0,<2", "aperio-hookspecs>=0"))
    _, info = load(make_host)
    assert_refused(info, marker, f"{DIST_INFO}/METADATA modified", "METADATA that was inspected is not the signed one")


def test_signature_copied_from_another_plugin(installed, make_host, marker, wheel_dir, keys, install, plugins_dir):
    other = sign_wheel_with_key(connector_wheel(wheel_dir / "other", "acme.other", package="acme_other"), keys)
    install(other)
    shutil.copy(
        plugins_dir / "acme_other-1.0.0.dist-info" / SIGNATURE_FILE_NAME, installed / DIST_INFO / SIGNATURE_FILE_NAME
    )
    _, info = load(make_host)
    assert_refused(
        info, marker, "the signature is for acme-other 1.0.0, but the installed release is acme-signed 1.0.0"
    )


def test_signature_by_an_untrusted_key(wheel_dir, tmp_path, install, make_host, marker, keys):
    stranger, _ = generate_signing_key(tmp_path / "stranger", "stranger")
    install(sign_wheel_with_key(connector_wheel(wheel_dir, PLUGIN, package="acme_signed", marker=marker), stranger))
    _, info = load(make_host)
    assert_refused(info, marker, "no trusted key verifies the signature")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format": 1, "signatures": [{"kind": "ed25519", "envel', "malformed signature file: (root): Invalid JSON"),
        (b"", "malformed signature file"),
        (b'{"format": 1, "signatures": []}', "holds no signatures"),
        (b'{"format": 7, "signatures": []}', "malformed signature file: format"),
        (
            b'{"format": 1, "signatures": [{"kind": "ed25519", "envelope": {"payload": "!!"}}]}',
            "malformed DSSE envelope",
        ),
    ],
    ids=["truncated", "empty", "no_signatures", "unknown_format", "garbage_envelope"],
)
def test_truncated_or_malformed_signature_file(installed, make_host, marker, content, message):
    (installed / DIST_INFO / SIGNATURE_FILE_NAME).write_bytes(content)
    _, info = load(make_host)
    assert_refused(info, marker, message)


def test_statement_that_omits_a_file(wheel_dir, keys, install, plugins_dir, make_host, marker):
    from aperio_plugins._wheel import read_wheel, write_wheel

    wheel = read_wheel(connector_wheel(wheel_dir, PLUGIN, package="acme_signed", marker=marker))
    digests = {name: digest for name, digest in wheel.digests().items() if not name.endswith(("RECORD", "__init__.py"))}
    envelope = sign_envelope(
        build_statement(wheel.distribution, wheel.version, digests), PAYLOAD_TYPE, load_private_key(keys)
    )
    document = json.dumps({"format": SIGNATURE_FORMAT, "signatures": [{"kind": "ed25519", "envelope": envelope}]})
    write_wheel(wheel, {f"{DIST_INFO}/{SIGNATURE_FILE_NAME}": document.encode()}, wheel.path)
    install(wheel.path)
    _, info = load(make_host)
    assert_refused(info, marker, "acme_signed/__init__.py unexpected")


def test_signature_of_an_older_release_next_to_the_newer_files(
    wheel_dir, keys, install, plugins_dir, make_host, marker
):
    old = sign_wheel_with_key(connector_wheel(wheel_dir / "old", PLUGIN, package="acme_signed", marker=marker), keys)
    install(old)
    old_signature = (plugins_dir / DIST_INFO / SIGNATURE_FILE_NAME).read_bytes()
    new = connector_wheel(wheel_dir / "new", PLUGIN, package="acme_signed", version="1.1.0", marker=marker)
    install(sign_wheel_with_key(new, keys))
    (plugins_dir / "acme_signed-1.1.0.dist-info" / SIGNATURE_FILE_NAME).write_bytes(old_signature)
    _, info = load(make_host)
    assert_refused(
        info, marker, "the signature is for acme-signed 1.0.0, but the installed release is acme-signed 1.1.0"
    )


def test_key_directory_writable_by_others_is_not_trusted_in_strict(installed, make_host, marker, tmp_path, audit):
    (tmp_path / "keys").chmod(0o777)
    _, info = load(make_host)
    assert_refused(info, marker, "no trusted Ed25519 keys are configured")
    problems = audit.fields_of("host.trust.problem")
    assert any("lets group or others write" in problem["reason"] for problem in problems)


def test_key_directory_writable_by_others_is_used_with_a_warning_in_warn(installed, make_host, marker, tmp_path, audit):
    (tmp_path / "keys").chmod(0o777)
    _, info = load(make_host, "warn")
    assert info.signature_status is SignatureStatus.VERIFIED
    assert any("keys are used because of warn" in p["reason"] for p in audit.fields_of("host.trust.problem"))


def test_plugins_directory_writable_by_others_is_refused_in_strict(installed, make_host, marker):
    installed.chmod(0o777)
    _, info = load(make_host)
    assert_refused(info, marker, "lets group or others write")


def test_a_malformed_key_is_reported_and_skipped(installed, make_host, tmp_path, audit):
    (tmp_path / "keys" / "broken.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    _, info = load(make_host)
    assert info.signature_status is SignatureStatus.VERIFIED
    assert any(p["subject"].endswith("broken.pem") for p in audit.fields_of("host.trust.problem"))


def test_warn_mode_loads_an_invalid_plugin_and_says_so(installed, make_host, marker, audit):
    source = installed / "acme_signed" / "__init__.py"
    source.write_text(source.read_text() + "\n")
    _, info = load(make_host, "warn")
    assert info.signature_status is SignatureStatus.INVALID
    assert info.state is PluginState.ENABLED
    assert "plugin.signature.invalid" in audit.names(PLUGIN)
    assert "plugin.trust.warning" in audit.names(PLUGIN)


IDENTITY = "https://github.com/acme/signed/.github/workflows/release.yml@refs/tags/v1.0.0"
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def sigstore_instances(tmp_path_factory):
    from aperio_plugins.testing import PrivateSigstore

    return PrivateSigstore.create(tmp_path_factory.mktemp("sigstore")), PrivateSigstore.create(
        tmp_path_factory.mktemp("rogue")
    )


@pytest.fixture
def trusted_identity(tmp_path, sigstore_instances):
    trusted, _ = sigstore_instances
    (tmp_path / "trusted-identities.toml").write_text(
        f'trusted_root = "{trusted.trusted_root_path}"\n\n[[identity]]\nidentity = "{IDENTITY}"\nissuer = "{ISSUER}"\n'
    )


def _sigstore_signed(wheel_dir, marker, instance, identity=IDENTITY, issuer=ISSUER):
    from aperio_plugins.testing import sign_wheel_with_sigstore

    wheel = connector_wheel(wheel_dir, PLUGIN, package="acme_signed", marker=marker)
    return sign_wheel_with_sigstore(wheel, instance, identity=identity, issuer=issuer)


def test_a_sigstore_signature_from_a_trusted_identity_is_verified(
    trusted_identity, sigstore_instances, wheel_dir, marker, install, make_host
):
    install(_sigstore_signed(wheel_dir, marker, sigstore_instances[0]))
    _, info = load(make_host)
    assert info.signature_status is SignatureStatus.VERIFIED
    assert IDENTITY in info.signature_detail
    assert imported_ids(marker) == [PLUGIN]


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("wrong_identity", "is not a trusted identity"),
        ("wrong_issuer", "wrong OIDC issuer"),
        ("wrong_instance", "signature 1 (sigstore)"),
    ],
)
def test_sigstore_bundle_from_an_untrusted_signer(
    attack, message, trusted_identity, sigstore_instances, wheel_dir, marker, install, make_host
):
    trusted, rogue = sigstore_instances
    instance, identity, issuer = {
        "wrong_identity": (
            trusted,
            "https://github.com/mallory/fork/.github/workflows/release.yml@refs/heads/main",
            ISSUER,
        ),
        "wrong_issuer": (trusted, IDENTITY, "https://accounts.example.com"),
        "wrong_instance": (rogue, IDENTITY, ISSUER),
    }[attack]
    install(_sigstore_signed(wheel_dir, marker, instance, identity, issuer))
    _, info = load(make_host)
    assert_refused(info, marker, message)


def test_planted_pyc_with_a_matching_header_never_runs(installed, make_host, marker, tmp_path):
    import importlib.util
    import py_compile
    import struct

    source = installed / "acme_signed" / "__init__.py"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'a').write('evil\\n')\n")
    pyc = installed / "acme_signed" / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    pyc.parent.mkdir(exist_ok=True)
    py_compile.compile(str(evil), cfile=str(pyc))
    # Forge the header so that the normal import system would take the pyc for the real source.
    data = bytearray(pyc.read_bytes())
    status = source.stat()
    data[8:16] = struct.pack("<II", int(status.st_mtime) & 0xFFFFFFFF, status.st_size & 0xFFFFFFFF)
    pyc.write_bytes(bytes(data))
    assert bytes(data[:4]) == importlib.util.MAGIC_NUMBER

    _, info = load(make_host)

    assert info.signature_status is SignatureStatus.VERIFIED
    assert info.state is PluginState.ENABLED
    assert imported_ids(marker) == [PLUGIN]  # the signed source ran, the planted bytecode did not


def test_file_swapped_between_verification_and_import_is_caught(installed, make_host, marker, monkeypatch):
    from aperio_plugins.pipeline import walk

    real_activate = walk.activate

    def swap_then_activate(*args):
        source = installed / "acme_signed" / "__init__.py"
        source.write_text(source.read_text() + "\nopen('/dev/null', 'w')  # swapped in after verification\n")
        return real_activate(*args)

    monkeypatch.setattr(walk, "activate", swap_then_activate)
    _, info = load(make_host)
    assert_refused(info, marker, "acme_signed/__init__.py")


SWALLOWING_INIT = """
import pathlib as _pathlib
# Verified code rewrites a sibling after verification (as an attacker racing the import would), then
# hides the refusal behind the fallback many libraries keep for optional accelerators.
_pathlib.Path(__file__).with_name("fast.py").write_text({swapped!r})
try:
    from . import fast
except ImportError:
    fast = None
"""


def test_tamper_refusal_swallowed_by_the_plugin_still_fails_it(wheel_dir, keys, marker, install, make_host, tmp_path):
    from aperio_plugins.testing import PluginWheel

    swapped_ran = tmp_path / "swapped-ran.txt"
    wheel = PluginWheel(
        "acme-signed",
        plugins={PLUGIN: "acme_signed"},
        files={
            "acme_signed/__init__.py": MARKER_PREFIX.format(marker=str(marker), plugin_id=PLUGIN)
            + SWALLOWING_INIT.format(swapped=f"import pathlib\npathlib.Path({str(swapped_ran)!r}).write_text('ran')\n")
            + CONNECTOR_SOURCE.format(cls="Swallower", name="swallower", version="1.0.0", plugin_id=PLUGIN),
            "acme_signed/fast.py": "SPEED = 'signed'\n",
        },
    ).build(wheel_dir / "swallow")
    install(sign_wheel_with_key(wheel, keys))

    host, info = load(make_host)

    assert imported_ids(marker) == [PLUGIN]  # the verified __init__ ran and caught the ImportError...
    assert not swapped_ran.exists()  # ...the swapped module never ran...
    assert info.state is PluginState.FAILED  # ...and the host refused the plugin all the same
    assert info.failure_stage is FailureStage.VERIFY
    assert "acme_signed/fast.py changed after verification" in info.error
    assert list(host.connectors) == []


def test_record_that_is_not_utf8(installed, make_host, marker):
    # RECORD is not signed (pip rewrites it), so an attacker may write anything into it: it must make the
    # plugin fail verification like any other tampering, never raise out of the verifier.
    record = installed / DIST_INFO / "RECORD"
    record.write_bytes(record.read_bytes() + b"acme_signed/\xff\xfe.py,,\n")
    (installed / "acme_signed" / "planted.py").write_text("print('not signed')\n")
    _, info = load(make_host)
    assert_refused(info, marker, "acme_signed/planted.py unexpected")
