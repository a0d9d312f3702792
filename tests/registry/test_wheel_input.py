"""Wheels are untrusted input wherever one is read: `plugin sign`, `plugin verify WHEEL`,
`plugin install ./file.whl`, `registry add`. Each hostile wheel is refused with one line naming
the file and the member or field at fault, in bounded memory, and nothing on disk changes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import wheel_attacks
from plugin_builders import connector_wheel
from tree_snapshot import snapshot

from aperio_plugins import PluginHost
from aperio_plugins._wheel import WheelLimits, read_wheel, write_wheel
from aperio_plugins.errors import InvalidWheelError

APERIO = str(Path(sys.executable).with_name("aperio"))
PEAK_MEMORY_LIMIT_KB = 256 * 1024

# (attack, what the one-line refusal must say)
REFUSALS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "duplicate_member": (wheel_attacks.duplicate_member, "member 'acme_safe/__init__.py' appears twice"),
    "symlink_member": (lambda d, m: wheel_attacks.symlink_member(d), "member 'acme_safe/passwd.py' is a symbolic link"),
    "hardlink_member": (
        lambda d, m: wheel_attacks.hardlink_member(d),
        "member 'acme_safe/shadow' is a hard or symbolic link",
    ),
    "device_member": (lambda d, m: wheel_attacks.device_member(d), "member 'acme_safe/tty' is a device"),
    "filename_version_mismatch": (
        lambda d, m: wheel_attacks.filename_version_mismatch(d),
        "the file name says acme-safe 2.0.0, but its METADATA says acme-safe 1.0.0",
    ),
    "homoglyph_plugin_id": (
        wheel_attacks.homoglyph_plugin_id,
        r"entry_points.txt: plugin id '\u0430cme.safe' has non-ASCII characters",
    ),
}


@pytest.mark.parametrize("attack", sorted(REFUSALS))
def test_the_wheel_reader_refuses(attack, tmp_path):
    build, message = REFUSALS[attack]
    wheel = build(tmp_path / "dist", tmp_path / "marker")
    with pytest.raises(InvalidWheelError) as refused:
        read_wheel(wheel)
    assert message in refused.value.message
    assert wheel.name in refused.value.message
    assert "\n" not in refused.value.message


def test_the_reader_accepts_a_plain_plugin_wheel_and_hashes_every_member(tmp_path):
    wheel = read_wheel(wheel_attacks.safe_wheel(tmp_path))
    assert (wheel.distribution, wheel.version) == ("acme-safe", "1.0.0")
    assert "acme_safe/__init__.py" in wheel.members
    import hashlib

    assert (
        wheel.digests()["acme_safe/__init__.py"] == hashlib.sha256(wheel.members["acme_safe/__init__.py"]).hexdigest()
    )


def test_a_member_read_back_later_must_still_be_the_one_that_was_hashed(tmp_path):
    path = wheel_attacks.safe_wheel(tmp_path / "a")
    wheel = read_wheel(path)
    other = wheel_attacks.safe_wheel(tmp_path / "b", marker=tmp_path / "marker")
    path.write_bytes(other.read_bytes())
    with pytest.raises(InvalidWheelError, match=r"member 'acme_safe/__init__\.py' changed after the wheel was checked"):
        wheel.members["acme_safe/__init__.py"]
    with pytest.raises(InvalidWheelError, match="changed after the wheel was checked"):
        write_wheel(wheel, {}, tmp_path / "copy" / path.name)
    assert not (tmp_path / "copy" / path.name).exists()


def test_signing_a_wheel_swapped_for_another_archive_writes_nothing(tmp_path):
    path = wheel_attacks.safe_wheel(tmp_path / "a")
    wheel = read_wheel(path)
    with zipfile.ZipFile(path, "w") as other:
        other.writestr("something/else.py", b"")
    with pytest.raises(InvalidWheelError, match="changed after the wheel was checked"):
        write_wheel(wheel, {}, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_members_that_declare_more_than_the_limit_are_refused_before_any_is_inflated(tmp_path):
    bomb = wheel_attacks.zip_bomb_honest_sizes(tmp_path, 4 << 20)
    with pytest.raises(InvalidWheelError, match="unpacks to more than 1048576 bytes"):
        read_wheel(bomb, WheelLimits(max_unpacked_bytes=1 << 20))


def test_a_member_whose_stream_is_longer_than_its_declared_size_is_refused(tmp_path):
    bomb = wheel_attacks.zip_bomb_lying_sizes(tmp_path, 1 << 24)
    with pytest.raises(InvalidWheelError, match=r"member 'acme_bomb/data\.bin' declares 1024 bytes but unpacks to"):
        read_wheel(bomb)


def test_the_member_count_is_limited(tmp_path):
    wheel = wheel_attacks.member_count_bomb(tmp_path, members=50)
    with pytest.raises(InvalidWheelError, match="holds more than 40 members"):
        read_wheel(wheel, WheelLimits(max_members=40))
    assert read_wheel(wheel).distribution == "acme-bomb"


@pytest.fixture
def cli(make_settings, tmp_path):
    settings = make_settings()

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "APERIO_PLUGINS_DIR": str(settings.plugins_dir),
            "APERIO_STATE_DIR": str(settings.state_dir),
            "APERIO_PLUGIN_TRUST_MODE": "warn",
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(settings.plugin_trusted_keys_dir),
            "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(settings.plugin_trusted_identities),
            "APERIO_REGISTRY_INDEX": str(settings.registry_index),
            "APERIO_REGISTRY_CA_BUNDLE": str(settings.registry_ca_bundle),
            **env,
        }
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120, check=False
        )

    return cli


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], wheel: Path, message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # One line says what was refused; the CLI's diagnostics may add the plugin the refusal is about.
    assert [line.split(":")[0] for line in lines[1:]] in ([], ["plugin"]), result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert wheel.name in lines[0]


@pytest.mark.parametrize(
    "attack", ["duplicate_member", "device_member", "filename_version_mismatch", "homoglyph_plugin_id"]
)
def test_install_of_a_hostile_wheel_file_changes_nothing_and_runs_nothing(
    attack, cli, plugins_dir, tmp_path, make_settings
):
    build, message = REFUSALS[attack]
    marker = tmp_path / "marker"
    wheel = build(tmp_path / "dist", marker)
    state = make_settings().state_dir
    assert cli("plugin", "list").returncode == 0  # the state store exists before the attempt
    before = (snapshot(plugins_dir), snapshot(state))
    assert before[1]
    result = cli("plugin", "install", str(wheel))
    assert_one_line_refusal(result, wheel, message)
    assert (snapshot(plugins_dir), snapshot(state)) == before
    with PluginHost(make_settings(trust="warn"), search_path=[]) as host:
        host.load()
        assert host.plugins() == ()
    assert not marker.exists()


def test_install_of_a_plain_wheel_file_still_works(cli, plugins_dir, tmp_path, make_settings):
    marker = tmp_path / "marker"
    wheel = wheel_attacks.safe_wheel(tmp_path / "dist", marker=marker)
    result = cli("plugin", "install", str(wheel))
    assert result.returncode == 0, result.stderr
    with PluginHost(make_settings(trust="warn"), search_path=[]) as host:
        host.load()
        assert [(info.id, info.state.value) for info in host.plugins()] == [("acme.safe", "enabled")]
    assert marker.read_text().split() == ["acme.safe"]


@pytest.mark.parametrize("attack", ["symlink_member", "hardlink_member", "filename_version_mismatch"])
def test_verify_of_a_hostile_wheel_is_one_line(attack, cli, tmp_path):
    build, message = REFUSALS[attack]
    wheel = build(tmp_path / "dist", tmp_path / "marker")
    assert_one_line_refusal(cli("plugin", "verify", str(wheel)), wheel, message)


@pytest.mark.parametrize("attack", ["duplicate_member", "homoglyph_plugin_id"])
def test_sign_refuses_a_hostile_wheel_and_leaves_it_unchanged(attack, cli, tmp_path, author_key):
    build, message = REFUSALS[attack]
    wheel = build(tmp_path / "dist", tmp_path / "marker")
    before = wheel.read_bytes()
    result = cli("plugin", "sign", str(wheel), "--key", str(author_key))
    assert_one_line_refusal(result, wheel, message)
    assert wheel.read_bytes() == before


def test_sign_then_verify_of_a_plain_wheel_still_works(cli, tmp_path, author_key):
    wheel = wheel_attacks.safe_wheel(tmp_path / "dist")
    assert cli("plugin", "sign", str(wheel), "--key", str(author_key)).returncode == 0
    verified = cli("plugin", "verify", str(wheel))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_registry_add_of_a_homoglyph_plugin_is_one_line_and_leaves_the_index(cli, tmp_path, sign):
    index = tmp_path / "registry" / "index.json"
    real = sign(wheel_attacks.safe_wheel(tmp_path / "real"))
    url = f"https://plugins.invalid/{real.name}"
    assert cli("registry", "add", str(index), str(real), "--download-url", url, "--publisher", "Acme").returncode == 0
    before = index.read_bytes()
    # Unsigned: `sign` itself reads the wheel and would refuse it first.
    lookalike = wheel_attacks.homoglyph_plugin_id(tmp_path / "lookalike")
    other_url = f"https://plugins.invalid/{lookalike.name}"
    result = cli("registry", "add", str(index), str(lookalike), "--download-url", other_url, "--publisher", "Evil")
    assert_one_line_refusal(result, lookalike, REFUSALS["homoglyph_plugin_id"][1])
    assert index.read_bytes() == before


def test_registry_add_and_validate_refuse_a_deeply_nested_index(cli, tmp_path, sign):
    index = tmp_path / "registry" / "index.json"
    index.parent.mkdir()
    index.write_bytes(b"[" * 100_000)
    wheel = sign(wheel_attacks.safe_wheel(tmp_path / "dist"))
    url = f"https://plugins.invalid/{wheel.name}"
    for result in (
        cli("registry", "add", str(index), str(wheel), "--download-url", url, "--publisher", "Acme"),
        cli("registry", "validate", str(index)),
    ):
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "nested" in result.stderr, result.stderr
    assert index.read_bytes() == b"[" * 100_000


def _peak_memory_of(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `command` from a small driver process; return its result and its peak RSS in KiB."""
    driver = (
        "import json, resource, subprocess, sys\n"
        "result = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps([result.returncode, result.stdout, result.stderr, peak]))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", driver, *command], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    returncode, stdout, stderr, peak = json.loads(output.stdout)
    return subprocess.CompletedProcess(command, returncode, stdout, stderr), peak


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("member_count_bomb", "holds more than 20000 members, the limit for a wheel"),
        ("zip_bomb_lying_sizes", "member 'acme_bomb/data.bin' takes the wheel past 536870912 unpacked bytes"),
    ],
)
def test_bombs_are_refused_in_bounded_memory(attack, message, tmp_path):
    wheel = getattr(wheel_attacks, attack)(tmp_path)
    env = {**os.environ, "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "keys")}
    result, peak_kb = _peak_memory_of([APERIO, "plugin", "verify", str(wheel)], env)
    assert_one_line_refusal(result, wheel, message)
    assert peak_kb < PEAK_MEMORY_LIMIT_KB, f"peak RSS {peak_kb} KiB"


def test_install_from_an_index_and_validate_with_downloads_refuse_a_hostile_wheel(
    registry, cli, plugins_dir, tmp_path, sign
):
    registry.publish(sign(connector_wheel(tmp_path / "good", "acme.safe", package="acme_safe", version="0.9.0")))
    wheel = wheel_attacks.symlink_member(tmp_path / "dist")
    registry.publish_unchecked(wheel, "acme.safe", "1.0.0")
    before = snapshot(plugins_dir)
    installed = cli("plugin", "install", "acme.safe")
    assert_one_line_refusal(installed, wheel, "member 'acme_safe/passwd.py' is a symbolic link")
    assert snapshot(plugins_dir) == before
    validated = cli("registry", "validate", registry.index_url, "--check-downloads")
    assert validated.returncode == 1, validated.stdout + validated.stderr
    assert "Traceback" not in validated.stderr
    assert "ok   acme.safe 0.9.0" in validated.stdout
    assert any(
        line.startswith("FAIL acme.safe 1.0.0:") and "member 'acme_safe/passwd.py' is a symbolic link" in line
        for line in validated.stdout.splitlines()
    ), validated.stdout


def test_the_member_count_is_read_from_a_zip64_end_record_and_past_prepended_bytes(tmp_path):
    from aperio_plugins._zipscan import check_central_directory

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as writer:  # more than 65,535 members: zipfile writes zip64 end records
        for index in range(66_000):
            writer.writestr(f"acme_bomb/{index}", b"")
    for data in (archive.read_bytes(), b"#!/bin/sh\n" * 10 + archive.read_bytes()):
        stream = io.BytesIO(data)
        assert check_central_directory(stream, "many.zip", max_members=100_000, max_directory_bytes=1 << 30) == 66_000
        with pytest.raises(InvalidWheelError, match=r"many\.zip: holds more than 65000 members"):
            check_central_directory(stream, "many.zip", max_members=65_000, max_directory_bytes=1 << 30)
        with pytest.raises(InvalidWheelError, match=r"central directory is \d+ bytes, more than the limit of 1024"):
            check_central_directory(stream, "many.zip", max_members=100_000, max_directory_bytes=1024)
