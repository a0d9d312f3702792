"""Installing from a registry over HTTPS on 127.0.0.1: what works, and every attack refused with nothing installed."""

from __future__ import annotations

import hashlib
import json
import signal
from datetime import datetime, timedelta

import pytest
from plugin_builders import connector_wheel
from tree_snapshot import run_killed_after_renames, snapshot

from aperio_plugins import PluginHost, PluginState, SignatureStatus
from aperio_plugins.errors import (
    ArtifactRejectedError,
    DownloadError,
    InstallError,
    ResolutionError,
    StaleIndexError,
)
from aperio_plugins.testing import PluginWheel


@pytest.fixture
def published(registry, sign, wheel_dir):
    """acme.alpha 1.0.0 and 1.1.0, signed by the trusted author, in the registry."""
    for version in ("1.0.0", "1.1.0"):
        registry.publish(sign(connector_wheel(wheel_dir, "acme.alpha", distribution="acme-alpha", version=version)))
    return registry


def host_for(settings, **kwargs):
    return PluginHost(settings, search_path=[], **kwargs)


def test_install_latest_then_the_host_loads_it_verified(published, make_client, audit):
    client = make_client()
    result = client.install("acme.alpha")
    assert (result.distribution, result.version, result.plugin_ids) == ("acme-alpha", "1.1.0", ("acme.alpha",))
    assert result.source == published.index_url
    assert "signed by ed25519 key" in result.verification_detail
    with host_for(client.settings) as host:
        info = host.load().plugins[0]
    assert (info.id, info.version, info.state, info.signature_status) == (
        "acme.alpha",
        "1.1.0",
        PluginState.ENABLED,
        SignatureStatus.VERIFIED,
    )
    installed = audit.fields_of("plugin.installed")
    assert installed[0]["version"] == "1.1.0"
    assert installed[0]["signature_status"] == "verified"


def test_a_pinned_version_replaces_the_installed_release_whole(published, make_client, plugins_dir):
    client = make_client()
    client.install("acme.alpha")
    result = client.install("acme.alpha@1.0.0")
    assert (result.version, result.replaced) == ("1.0.0", "1.1.0")
    assert sorted(p.name for p in plugins_dir.glob("*.dist-info")) == ["acme_alpha-1.0.0.dist-info"]
    with host_for(client.settings) as host:
        assert host.load().plugins[0].version == "1.0.0"


def test_remove_deletes_files_and_flags_and_leaves_other_plugins_untouched(
    published, make_client, sign, wheel_dir, plugins_dir
):
    published.publish(sign(connector_wheel(wheel_dir, "acme.beta", distribution="acme-beta")))
    client = make_client()
    client.install("acme.alpha")
    client.install("acme.beta")
    beta_files = {k: v for k, v in snapshot(plugins_dir).items() if "beta" in k}
    client.store.set_enabled("acme.alpha", False)
    client.store.set_enabled("acme.beta", False)
    client.store.kv_set("acme.alpha", "cursor", "42")
    removed = client.remove("acme.alpha")
    assert (removed.name, removed.version) == ("acme-alpha", "1.1.0")
    assert {k: v for k, v in snapshot(plugins_dir).items() if "alpha" in k} == {}
    assert {k: v for k, v in snapshot(plugins_dir).items() if "beta" in k} == beta_files
    assert client.store.enabled_flags() == {"acme.beta": False}
    assert client.store.kv_get("acme.alpha", "cursor") == "42"  # data stays unless purged
    client.install("acme.alpha")
    client.remove("acme.alpha", purge_data=True)
    assert client.store.kv_get("acme.alpha", "cursor") is None


def test_removing_a_plugin_that_is_not_installed_says_so(make_client):
    with pytest.raises(InstallError, match=r"acme\.ghost is not installed in"):
        make_client().remove("acme.ghost")


def _set(plugin, version, **fields):
    def change(document):
        for release in next(p for p in document["plugins"] if p["id"] == plugin)["versions"]:
            if release["version"] == version:
                release.update(fields)

    return change


def _wheel_route(registry, version="1.1.0"):
    return f"/wheels/acme_alpha-{version}-py3-none-any.whl"


def _wheel_bytes(registry, version="1.1.0"):
    return next(w for w in registry.published if w.name.endswith(f"-{version}-py3-none-any.whl")).read_bytes()


def attack_wrong_digest(registry, **_):
    registry.edit(_set("acme.alpha", "1.1.0", sha256="0" * 64))
    return ArtifactRejectedError, r"acme.alpha 1.1.0: sha256 [0-9a-f]{64} does not match the expected 0{64}"


def attack_truncated_download(registry, **_):
    data = _wheel_bytes(registry)
    registry.server.truncated(_wheel_route(registry), data[: len(data) // 2], declared_length=len(data))
    return DownloadError, r"truncated"


def attack_endless_download(registry, **_):
    registry.edit(_set("acme.alpha", "1.1.0", size=None))
    registry.server.endless(_wheel_route(registry))
    return DownloadError, r"larger than|exceeds|limit"


def attack_slow_server(registry, **_):
    registry.server.stall(_wheel_route(registry), seconds=8)
    return DownloadError, r"(?i)timed out|timeout"


def attack_redirect_to_plain_http(registry, plain_http_server, **_):
    plain_http_server.serve(_wheel_route(registry), _wheel_bytes(registry))
    registry.server.redirect(_wheel_route(registry), plain_http_server.url(_wheel_route(registry)))
    # The scheme check's own words: every download error names a URL, so "http" alone would match any.
    return DownloadError, r"plain HTTP to 127\.0\.0\.1:\d+ is refused; list it in APERIO_REGISTRY_INSECURE_HOSTS"


def attack_index_rolled_back(registry, client, **_):
    old = registry.index_path.read_bytes()
    client.load_index()  # the client has seen the current index
    registry.edit(lambda document: None)
    client.load_index()
    registry.server.serve("/index.json", old)
    return StaleIndexError, r"was rolled back"


def attack_stale_index(registry, client, **_):
    """The registry stopped publishing: ninety days later its index is refused as frozen."""
    updated_at = datetime.fromisoformat(registry.document()["updated_at"].replace("Z", "+00:00"))
    client.clock = lambda: updated_at + timedelta(days=90)
    return StaleIndexError, r"is frozen: last updated .*, 90 days ago, longer than the allowed 30 days"


def attack_yanked_version(registry, **_):
    registry.edit(_set("acme.alpha", "1.1.0", yanked="leaks credentials"))
    registry.edit(_set("acme.alpha", "1.0.0", yanked="leaks credentials"))
    return ResolutionError, r"1.1.0: yanked: leaks credentials"


def attack_path_traversal_wheel(registry, wheel_dir, **_):
    evil = PluginWheel(
        "acme-alpha",
        plugins={"acme.alpha": "acme_alpha"},
        files={"acme_alpha/__init__.py": "", "../../escaped.py": "print('escaped')\n"},
        version="1.2.0",
    ).build(wheel_dir / "evil")
    registry.publish_unchecked(evil, "acme.alpha", "1.2.0")
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.2.0: signature not checked \(the wheel cannot be read.*\) — refused: .*member '../../escaped.py'"
        r" would escape the install directory",
    )


def attack_untrusted_key(registry, wheel_dir, tmp_path, **_):
    from aperio_plugins.testing import generate_signing_key, sign_wheel_with_key

    stranger, _ = generate_signing_key(tmp_path / "stranger", "stranger")
    registry.publish(
        sign_wheel_with_key(
            connector_wheel(wheel_dir / "s", "acme.alpha", distribution="acme-alpha", version="1.2.0"), stranger
        )
    )
    return ArtifactRejectedError, r"acme.alpha 1.2.0: .*no trusted key"


def attack_unsigned_in_strict(registry, wheel_dir, **_):
    registry.publish(connector_wheel(wheel_dir / "u", "acme.alpha", distribution="acme-alpha", version="1.2.0"))
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.2.0: unsigned plugin refused in strict trust mode \(.* is not signed\); set APERIO_PLUGIN_TRUST_MODE=warn",
    )


def attack_newer_api_major(registry, wheel_dir, sign, **_):
    registry.publish(
        sign(
            connector_wheel(
                wheel_dir / "m",
                "acme.alpha",
                distribution="acme-alpha",
                version="2.0.0",
                requires=["aperio-hookspecs>=2.0,<3"],
            )
        )
    )
    registry.edit(_set("acme.alpha", "1.1.0", yanked="superseded"))
    registry.edit(_set("acme.alpha", "1.0.0", yanked="superseded"))
    return ResolutionError, r"2.0.0: built for plugin API 2.x .* major versions differ"


def attack_index_hides_newer_api_major(registry, wheel_dir, sign, **_):
    """The index claims 1.x compatibility for a wheel that requires plugin API 2: the wheel's own metadata wins."""
    registry.publish(
        sign(
            connector_wheel(
                wheel_dir / "m",
                "acme.alpha",
                distribution="acme-alpha",
                version="1.2.0",
                requires=["aperio-hookspecs>=2.0,<3"],
            )
        )
    )
    registry.edit(_set("acme.alpha", "1.2.0", api_requirement=">=1.0,<2"))
    return ArtifactRejectedError, r"acme.alpha 1.2.0: signature verified \(.*\) — refused: built for plugin API 2.x"


def attack_tampered_after_signing(registry, wheel_dir, **_):
    """Whoever serves the registry swaps a module and fixes up RECORD and the index digest: the signature catches it."""
    from aperio_plugins._wheel import read_wheel, write_wheel

    signed = next(w for w in registry.published if w.name == "acme_alpha-1.1.0-py3-none-any.whl")
    wheel = read_wheel(signed)
    tampered = wheel_dir / "t" / signed.name
    write_wheel(wheel, {"acme_alpha/__init__.py": b"import os\nos.system('id')\n"}, tampered)
    registry.server.serve(_wheel_route(registry), tampered.read_bytes())
    import hashlib

    registry.edit(
        _set(
            "acme.alpha",
            "1.1.0",
            sha256=hashlib.sha256(tampered.read_bytes()).hexdigest(),
            size=tampered.stat().st_size,
        )
    )
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.1.0: .*files do not match the signed statement: acme_alpha/__init__.py modified",
    )


def attack_conflicting_dependency(registry, wheel_dir, sign, **_):
    registry.publish(
        sign(
            connector_wheel(
                wheel_dir / "d",
                "acme.alpha",
                distribution="acme-alpha",
                version="1.2.0",
                requires=["aperio-hookspecs>=1.0,<2", "packaging<1", "no-such-distribution-xyz>=1"],
            )
        )
    )
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.2.0: signature verified \(signed by ed25519 key .*\) — refused: requires packaging<1, but the host has"
        r" packaging .*; requires no-such-distribution-xyz>=1, which the host does not have",
    )


def attack_console_script(registry, wheel_dir, sign, **_):
    wheel = PluginWheel(
        "acme-alpha",
        plugins={"acme.alpha": "acme_alpha"},
        files={"acme_alpha/__init__.py": ""},
        version="1.2.0",
        entry_points_text="[aperio.plugins]\nacme.alpha = acme_alpha\n[console_scripts]\nls = acme_alpha:main\n",
    ).build(wheel_dir / "c")
    registry.publish_unchecked(sign(wheel), "acme.alpha", "1.2.0")
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.2.0: signature verified \(signed by ed25519 key .*\) — refused: declares console_scripts",
    )


def attack_index_signature_over_other_contents(registry, wheel_dir, sign, **_):
    """The index carries a valid signature by the trusted author over another build of the same
    release; the wheel it serves (digest listed to match) is a different, unsigned build."""
    registry.publish(sign(connector_wheel(wheel_dir / "x", "acme.alpha", distribution="acme-alpha", version="1.2.0")))
    other = connector_wheel(
        wheel_dir / "y", "acme.alpha", distribution="acme-alpha", version="1.2.0", extra_source="BACKDOOR = 1\n"
    )
    data = other.read_bytes()
    registry.server.serve(f"/wheels/{other.name}", data)
    registry.edit(_set("acme.alpha", "1.2.0", sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    return (
        ArtifactRejectedError,
        r"acme.alpha 1.2.0: invalid signature: .*the published signature does not verify: it signs other file"
        r" contents than this wheel's",
    )


ATTACKS = {name.removeprefix("attack_"): function for name, function in globals().items() if name.startswith("attack_")}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_are_refused_and_nothing_is_installed(
    attack, published, make_client, plugins_dir, wheel_dir, sign, tmp_path, plain_http_server, audit
):
    # A plugin already installed, with an operator's flag: a refusal must leave both exactly as they were.
    published.publish(sign(connector_wheel(wheel_dir / "b", "acme.beta", distribution="acme-beta")))
    client = make_client(registry_max_download_bytes=256 * 1024)
    client.install("acme.beta")
    client.store.set_enabled("acme.beta", False)
    before, flags = snapshot(plugins_dir), client.store.enabled_flags()

    error, message = ATTACKS[attack](
        registry=published,
        wheel_dir=wheel_dir,
        sign=sign,
        tmp_path=tmp_path,
        client=client,
        plain_http_server=plain_http_server,
    )
    with pytest.raises(error, match=message):
        client.install("acme.alpha")

    assert snapshot(plugins_dir) == before
    assert client.store.enabled_flags() == flags
    assert not list((plugins_dir / ".aperio").glob("work-*"))


def test_a_refusal_is_an_audit_event_naming_plugin_version_and_reason(published, make_client, audit):
    published.edit(_set("acme.alpha", "1.1.0", sha256="0" * 64))
    with pytest.raises(ArtifactRejectedError):
        make_client().install("acme.alpha")
    refused = audit.fields_of("plugin.install.refused")
    assert refused[0]["plugin_id"] == "acme.alpha"
    assert refused[0]["version"] == "1.1.0"
    assert "does not match the expected" in refused[0]["reason"]


def test_warn_mode_installs_an_unsigned_plugin_with_a_warning(registry, make_client, wheel_dir):
    registry.publish(connector_wheel(wheel_dir, "acme.alpha", distribution="acme-alpha"))
    result = make_client("warn").install("acme.alpha")
    assert result.version == "1.0.0"
    assert any("trust mode is warn" in warning and "not signed" in warning for warning in result.warnings)


def test_a_plugin_id_provided_by_another_distribution_is_refused(published, make_client, wheel_dir, sign, plugins_dir):
    client = make_client()
    client.install("acme.alpha")
    before = snapshot(plugins_dir)
    impostor = sign(
        connector_wheel(wheel_dir / "i", "acme.alpha", distribution="acme-impostor", package="acme_impostor")
    )
    with pytest.raises(
        InstallError, match=r"plugin id acme.alpha is already provided by acme-alpha 1.1.0; remove it first"
    ):
        client.install(str(impostor))
    assert snapshot(plugins_dir) == before


def test_a_local_wheel_installs_after_the_same_checks(make_client, wheel_dir, sign, plugins_dir):
    wheel = sign(connector_wheel(wheel_dir, "acme.local", distribution="acme-local"))
    result = make_client().install(str(wheel))
    assert result.source == wheel.resolve().as_uri()
    assert (plugins_dir / "acme_local-1.0.0.dist-info").is_dir()
    unsigned = connector_wheel(wheel_dir / "u", "acme.other", distribution="acme-other")
    with pytest.raises(ArtifactRejectedError, match="unsigned"):
        make_client().install(str(unsigned))


def test_lock_then_install_locked_reproduces_versions_and_digests(published, make_client, sign, wheel_dir, plugins_dir):
    published.publish(sign(connector_wheel(wheel_dir / "b", "acme.beta", distribution="acme-beta")))
    client = make_client()
    client.install("acme.alpha@1.0.0")
    client.install("acme.beta")
    lock = client.lock()
    assert [(p.distribution, p.version) for p in lock.plugins] == [("acme-alpha", "1.0.0"), ("acme-beta", "1.0.0")]
    installed = snapshot(plugins_dir)
    client.remove("acme.alpha")
    client.remove("acme.beta")
    results = client.install_locked(lock)
    assert [(r.distribution, r.version, r.unchanged) for r in results] == [
        ("acme-alpha", "1.0.0", False),
        ("acme-beta", "1.0.0", False),
    ]
    after = snapshot(plugins_dir)
    # Install times, and pip's note of the temporary file it installed from, differ between installs.
    varying = (".aperio/installed/", "/RECORD", "/direct_url.json")
    strip = lambda files: {k: v for k, v in files.items() if not any(part in k for part in varying)}  # noqa: E731
    assert strip(after) == strip(installed)
    again = client.install_locked(lock)
    assert all(result.unchanged for result in again)


def test_install_locked_refuses_an_index_that_changed_a_pinned_release(published, make_client, plugins_dir):
    client = make_client()
    client.install("acme.alpha@1.0.0")
    lock = client.lock()
    client.remove("acme.alpha")
    published.edit(_set("acme.alpha", "1.0.0", sha256="f" * 64))
    with pytest.raises(ArtifactRejectedError, match=r"the index now lists sha256 f{64}, but the lock file pins"):
        client.install_locked(lock)
    assert not list(plugins_dir.glob("*.dist-info"))


def test_lock_refuses_plugins_it_cannot_pin(make_client, wheel_dir, plugins_dir, install):
    install(connector_wheel(wheel_dir, "acme.manual", distribution="acme-manual"))
    with pytest.raises(InstallError, match=r"cannot lock acme-manual 1.0.0: not installed with aperio plugin install"):
        make_client().lock()


@pytest.mark.parametrize("killed_at_rename", [2, 5])
def test_an_install_killed_midway_leaves_the_directory_as_it_was_after_recovery(
    published, make_client, plugins_dir, killed_at_rename
):
    """SIGKILL while 1.1.0 replaces 1.0.0; the next operation on the directory rolls the half-made change back."""
    client = make_client()
    client.install("acme.alpha@1.0.0")
    before = snapshot(plugins_dir)
    settings = client.settings.model_dump(mode="json")
    completed = run_killed_after_renames(
        killed_at_rename,
        f"""
        import json
        from aperio_plugins import HostSettings
        from aperio_plugins.registry._client import RegistryClient
        settings = HostSettings(**json.loads({json.dumps(json.dumps(settings))}))
        RegistryClient.from_settings(settings).install("acme.alpha@1.1.0")
        """,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert snapshot(plugins_dir) != before
    with pytest.raises(InstallError, match=r"acme\.ghost is not installed"):
        client.remove("acme.ghost")  # any operation on the directory recovers it first
    assert snapshot(plugins_dir) == before
    assert not (plugins_dir / ".aperio" / "journal.json").exists()
    assert not list((plugins_dir / ".aperio").glob("work-*"))


def test_a_refusal_at_resolution_is_audited_too(published, make_client, audit):
    published.edit(_set("acme.alpha", "1.0.0", yanked="leaks credentials"))
    with pytest.raises(ResolutionError):
        make_client().install("acme.alpha@1.0.0")
    refused = audit.fields_of("plugin.install.refused")
    assert [(r["plugin_id"], r["version"]) for r in refused] == [("acme.alpha", "1.0.0")]
    assert "yanked: leaks credentials" in refused[0]["reason"]


def test_strict_refuses_to_install_into_a_plugins_directory_others_can_write(published, make_client, plugins_dir):
    plugins_dir.chmod(0o777)
    client = make_client()  # the trust store reads the directory's mode when it is loaded
    with pytest.raises(
        InstallError, match=r"^acme-alpha 1\.1\.0: not installed: plugins directory .* lets group or others write$"
    ):
        client.install("acme.alpha")
    assert snapshot(plugins_dir) == {}
