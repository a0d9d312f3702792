"""What a plugin wheel may put into the plugins directory: its own packages and its `.dist-info`, under
top-level names nobody else has. Each attack is refused from the registry and from a local wheel file,
with the plugins directory, install records and state store left byte for byte as they were."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from plugin_builders import MARKER_PREFIX, connector_wheel, imported_ids
from tree_snapshot import snapshot

from aperio_plugins import PluginHost, PluginState, SignatureStatus
from aperio_plugins.errors import ArtifactRejectedError, InstallError
from aperio_plugins.testing import PluginWheel

PLUGIN = "acme.alpha"
VERSION = "1.1.0"
HOOKIMPL = "from aperio_hookspecs import hookimpl\n"


def marked(marker, name):
    return MARKER_PREFIX.format(marker=str(marker), plugin_id=name)


def stdlib_shadowing_plugin(wheel_dir, marker, **_):
    wheel = connector_wheel(
        wheel_dir, PLUGIN, package="shlex", distribution="acme-alpha", marker=marker, version=VERSION
    )
    return wheel, ArtifactRejectedError, r"top-level module 'shlex' collides with 'shlex' of the standard library"


def host_dependency_shadowing_plugin(wheel_dir, marker, **_):
    wheel = connector_wheel(
        wheel_dir, PLUGIN, package="structlog", distribution="acme-alpha", marker=marker, version=VERSION
    )
    return (
        wheel,
        InstallError,
        r"top-level module 'structlog' collides with 'structlog' of distribution structlog in the host's"
        r" environment; nothing was changed",
    )


def plugin_vs_plugin_collision(wheel_dir, marker, **_):
    # acme.beta, installed first, owns the package acme_beta.
    wheel = PluginWheel(
        "acme-alpha",
        plugins={PLUGIN: "acme_alpha"},
        files={"acme_alpha/__init__.py": HOOKIMPL, "acme_beta/__init__.py": marked(marker, "acme_beta")},
        version=VERSION,
    ).build(wheel_dir)
    return (
        wheel,
        InstallError,
        r"top-level module 'acme_beta' collides with 'acme_beta' of plugin acme_beta 1.0.0 in the plugins directory",
    )


def pth_file_in_wheel(wheel_dir, marker, **_):
    wheel = PluginWheel(
        "acme-alpha",
        plugins={PLUGIN: "acme_alpha"},
        files={
            "acme_alpha/__init__.py": HOOKIMPL,
            "acme-alpha.pth": f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pth')\n",
        },
        version=VERSION,
    ).build(wheel_dir)
    return wheel, ArtifactRejectedError, r"acme-alpha.pth is a .pth file: it would run code from the plugins directory"


def stray_top_level_module(wheel_dir, marker, **_):
    wheel = PluginWheel(
        "acme-alpha",
        plugins={PLUGIN: "acme_alpha"},
        files={"acme_alpha/__init__.py": HOOKIMPL, "helpers.py": marked(marker, "helpers")},
        version=VERSION,
    ).build(wheel_dir)
    return wheel, ArtifactRejectedError, r"helpers.py is not part of a package its entry points name \(acme_alpha\)"


SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def state_snapshot(state_dir: Path) -> dict[str, str]:
    """The state directory's files with their digests, each SQLite database by its content.

    SQLite's own -wal, -shm and -journal files are left out: they are the database's working files,
    not install layout, and they change when nothing does (a reader in WAL mode writes its read
    mark to -shm; closing the last connection folds -wal into the database and deletes both). A
    database is compared by its dump, read through a read-only connection, so that a write still
    sitting in -wal is seen as one.
    """
    files = {}
    for relative, digest in snapshot(state_dir).items():
        path = state_dir / relative
        if relative.endswith(SQLITE_COMPANIONS):
            continue
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
        if header == SQLITE_HEADER:
            connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                dump = "\n".join(connection.iterdump())
            finally:
                connection.close()
            digest = "dump:" + hashlib.sha256(dump.encode()).hexdigest()
        files[relative] = digest
    return files


ATTACKS = {
    function.__name__: function
    for function in (
        stdlib_shadowing_plugin,
        host_dependency_shadowing_plugin,
        plugin_vs_plugin_collision,
        pth_file_in_wheel,
        stray_top_level_module,
    )
}


@pytest.mark.parametrize("source", ["registry", "file"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_wheels_that_would_shadow_or_spill_are_refused_and_nothing_changes(
    attack, source, registry, make_client, sign, wheel_dir, plugins_dir, tmp_path, marker, audit
):
    registry.publish(sign(connector_wheel(wheel_dir / "beta", "acme.beta", distribution="acme-beta")))
    client = make_client()
    client.install("acme.beta")
    client.store.set_enabled("acme.beta", False)
    wheel, error, message = ATTACKS[attack](wheel_dir=wheel_dir / "attack", marker=marker)
    wheel = sign(wheel)
    target = str(wheel)
    if source == "registry":
        # A clean 1.0.0 makes the index list the plugin; the attack is its newest release.
        registry.publish(sign(connector_wheel(wheel_dir / "alpha", PLUGIN, distribution="acme-alpha")))
        registry.publish_unchecked(wheel, PLUGIN, VERSION)
        client.load_index()  # the index is seen (and recorded) before the snapshot
        target = PLUGIN
    before, state_before = snapshot(plugins_dir), state_snapshot(tmp_path / "state")
    assert state_before["state.sqlite3"].startswith("dump:")  # the store is compared, by its content
    with pytest.raises(error, match=message):
        client.install(target)

    assert snapshot(plugins_dir) == before
    assert state_snapshot(tmp_path / "state") == state_before
    assert imported_ids(marker) == []
    assert re.search(message, audit.fields_of("plugin.install.refused")[-1]["reason"])


def test_a_plugin_with_a_second_package_installs_and_loads_verified(make_client, sign, wheel_dir, marker):
    wheel = PluginWheel(
        "acme-alpha",
        plugins={PLUGIN: "acme_alpha"},
        files={
            "acme_alpha/__init__.py": HOOKIMPL + "from acme_alpha_vendor import VALUE\n",
            "acme_alpha_vendor/__init__.py": marked(marker, "acme_alpha_vendor") + "VALUE = 1\n",
        },
    ).build(wheel_dir)
    client = make_client()
    client.install(str(sign(wheel)))
    with PluginHost(client.settings, search_path=[]) as host:
        info = host.load().plugins[0]
    assert (info.id, info.state, info.signature_status) == (PLUGIN, PluginState.ENABLED, SignatureStatus.VERIFIED)
    assert imported_ids(marker) == ["acme_alpha_vendor"]
