"""`aperio plugin keygen | sign | verify` and `aperio doctor` as real subprocesses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from plugin_builders import connector_wheel

from aperio_plugins.testing import install_wheels

APERIO = str(Path(sys.executable).with_name("aperio"))


@pytest.fixture
def run(tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "APERIO_PLUGINS_DIR": str(tmp_path / "plugins"),
            "APERIO_STATE_DIR": str(tmp_path / "state"),
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "trusted"),
            "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(tmp_path / "identities.toml"),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
            **env,
        }
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=60, check=False
        )

    return run


@pytest.fixture
def author_key(run, tmp_path):
    result = run("plugin", "keygen", "author", "--out", "keys")
    assert result.returncode == 0, result.stderr
    (tmp_path / "trusted").mkdir(mode=0o700)
    (tmp_path / "trusted" / "author.pub.pem").write_bytes((tmp_path / "keys" / "author.pub.pem").read_bytes())
    return tmp_path / "keys" / "author.pem"


def test_keygen_writes_a_private_key_only_its_owner_can_read(run, tmp_path, author_key):
    assert stat.S_IMODE(author_key.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "author.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run("plugin", "keygen", "author", "--out", "keys")
    assert again.returncode == 1
    assert "already exists; refusing to overwrite a key" in again.stderr


def test_sign_then_verify_a_wheel_and_an_installed_plugin(run, tmp_path, author_key):
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    signed = run("plugin", "sign", str(wheel), "--key", str(author_key))
    assert signed.returncode == 0, signed.stderr
    assert "1 signature(s)" in signed.stdout

    report = run("plugin", "verify", str(wheel), "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    data = json.loads(report.stdout)
    assert data["status"] == "verified"
    assert data["signer"].endswith("(author.pub.pem)")
    assert "acme_cli/__init__.py" in data["files"]["ok"]

    install_wheels([wheel], target=tmp_path / "plugins")
    installed = json.loads(run("plugin", "verify", "acme.cli", "--json").stdout)
    assert installed["status"] == "verified"
    listed = {row["id"]: row for row in json.loads(run("plugin", "list", "--json").stdout)}
    assert listed["acme.cli"]["state"] == "enabled"
    assert listed["acme.cli"]["signature_status"] == "verified"


def test_verify_names_the_modified_file_and_exits_non_zero(run, tmp_path, author_key):
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    run("plugin", "sign", str(wheel), "--key", str(author_key))
    install_wheels([wheel], target=tmp_path / "plugins")
    source = tmp_path / "plugins" / "acme_cli" / "__init__.py"
    source.write_text(source.read_text() + "# tampered\n")
    result = run("plugin", "verify", "acme.cli")
    assert result.returncode == 1
    assert "acme.cli: invalid" in result.stdout
    assert "modified: acme_cli/__init__.py" in result.stdout


def test_sign_to_another_path_leaves_the_original_unsigned(run, tmp_path, author_key):
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    before = wheel.read_bytes()
    out = tmp_path / "signed" / wheel.name
    assert run("plugin", "sign", str(wheel), "--key", str(author_key), "--out", str(out)).returncode == 0
    assert wheel.read_bytes() == before
    assert json.loads(run("plugin", "verify", str(out), "--json").stdout)["status"] == "verified"
    assert json.loads(run("plugin", "verify", str(wheel), "--json").stdout)["status"] == "unsigned"


def test_signing_twice_adds_a_second_signature(run, tmp_path, author_key):
    run("plugin", "keygen", "second", "--out", "keys")
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    run("plugin", "sign", str(wheel), "--key", str(author_key))
    result = run("plugin", "sign", str(wheel), "--key", str(tmp_path / "keys" / "second.pem"))
    assert "2 signature(s)" in result.stdout
    assert json.loads(run("plugin", "verify", str(wheel), "--json").stdout)["status"] == "verified"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip at all", "is not a wheel"),
        (None, "would escape the install directory"),
    ],
    ids=["not_a_zip", "path_traversal"],
)
def test_sign_refuses_a_corrupt_wheel_without_writing_anything(run, tmp_path, author_key, content, message):
    wheel = tmp_path / "bad-1.0-py3-none-any.whl"
    if content is None:
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("bad-1.0.dist-info/METADATA", "Name: bad\nVersion: 1.0\n")
            archive.writestr("bad-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
            archive.writestr("../../etc/evil.py", "x = 1\n")
    else:
        wheel.write_bytes(content)
    before = wheel.read_bytes()
    result = run("plugin", "sign", str(wheel), "--key", str(author_key))
    assert result.returncode == 1
    assert message in result.stderr
    assert wheel.read_bytes() == before
    assert sorted(path.name for path in wheel.parent.iterdir() if path.name.startswith(".")) == []


def test_sign_refuses_a_wheel_whose_files_contradict_its_record(run, tmp_path, author_key):
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    with zipfile.ZipFile(wheel) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["acme_cli/__init__.py"] += b"# changed after build\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    result = run("plugin", "sign", str(wheel), "--key", str(author_key))
    assert result.returncode == 1
    assert "acme_cli/__init__.py does not match the digest in the wheel's RECORD" in result.stderr


def test_verify_of_a_file_that_is_not_a_wheel_says_so(run, tmp_path):
    (tmp_path / "notes.whl").write_text("hello")
    result = run("plugin", "verify", str(tmp_path / "notes.whl"))
    assert result.returncode == 1
    assert "is not a wheel" in result.stderr


def test_sign_needs_exactly_one_backend(run, tmp_path):
    wheel = connector_wheel(tmp_path / "dist", "acme.cli")
    assert "give exactly one of --key PEM or --sigstore" in run("plugin", "sign", str(wheel)).stderr


def test_doctor_reports_trust_problems(run, tmp_path, author_key):
    clean = run("doctor")
    assert clean.returncode == 0, clean.stdout
    assert "trusted keys: 1" in clean.stdout
    (tmp_path / "trusted").chmod(0o777)
    (tmp_path / "trusted" / "junk.pem").write_text("junk")
    (tmp_path / "identities.toml").write_text("[[identity]]\nidentity = 'x'\nissuer = \n")
    report = run("doctor", "--json", APERIO_PLUGIN_TRUST_MODE="disabled")
    assert report.returncode == 1
    problems = {problem["message"] for problem in json.loads(report.stdout)["problems"]}
    text = "\n".join(problems)
    assert "trust is disabled outside a development environment" in text
    assert "lets group or others write" in text
    assert "not a PEM public key" in text
    assert "line 3" in text


def test_doctor_warns_about_an_empty_trust_store_in_strict(run):
    result = run("doctor")
    assert result.returncode == 0
    assert "every plugin will be refused" in result.stdout
