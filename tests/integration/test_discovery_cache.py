"""The discovery cache: used when nothing changed, invalidated by any change, harmless when broken."""

from __future__ import annotations

import json
import os
import shutil

from plugin_builders import connector_wheel

from aperio_plugins import PluginState


def _ids(host):
    return sorted(info.id for info in host.load().plugins if info.state is PluginState.ENABLED)


def test_a_warm_start_uses_what_the_cold_start_read(make_host, install, wheel_dir, plugins_dir, tmp_path):
    install(connector_wheel(wheel_dir, "acme.cached"))
    assert _ids(make_host()) == ["acme.cached"]
    cache = json.loads((tmp_path / "state" / "discovery-cache.json").read_text())
    assert any(key.endswith("acme_cached-1.0.0.dist-info") for key in cache["entry_points"])

    # Rewrite entry_points.txt in place with the same size, mtime and inode: only a
    # host that trusts its cache still sees the old plugin id.
    path = plugins_dir / "acme_cached-1.0.0.dist-info" / "entry_points.txt"
    status = path.stat()
    text = path.read_text()
    with path.open("r+") as stream:
        stream.write(text.replace("acme.cached", "acme.cachex"))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert _ids(make_host()) == ["acme.cached"]
    assert [info.id for info in make_host(discovery_cache=False).load().plugins] == ["acme.cachex"]


def test_an_edited_entry_points_file_invalidates_its_entry(make_host, install, wheel_dir, plugins_dir):
    install(connector_wheel(wheel_dir, "acme.cached"))
    assert _ids(make_host()) == ["acme.cached"]
    path = plugins_dir / "acme_cached-1.0.0.dist-info" / "entry_points.txt"
    path.write_text(path.read_text() + "acme.second = acme_cached\n")
    manifest = plugins_dir / "acme_cached" / "aperio-plugin.toml"
    manifest.write_text(manifest.read_text() + '\n[plugins."acme.second"]\nsummary = "x"\nkinds = ["connector"]\n')
    host = make_host()
    infos = {info.id: info for info in host.load().plugins}
    assert infos["acme.cached"].state is PluginState.ENABLED
    # The new entry point was seen; it names the same module, whose connector name is taken.
    assert "connector 'acme_cached' is already registered by plugin 'acme.cached'" in infos["acme.second"].error


def test_installing_and_removing_distributions_is_seen(make_host, install, wheel_dir, plugins_dir):
    install(connector_wheel(wheel_dir, "acme.one", package="acme_one"))
    assert _ids(make_host()) == ["acme.one"]
    install(connector_wheel(wheel_dir, "acme.two", package="acme_two"))
    assert _ids(make_host()) == ["acme.one", "acme.two"]
    shutil.rmtree(plugins_dir / "acme_one-1.0.0.dist-info")
    shutil.rmtree(plugins_dir / "acme_one")
    assert _ids(make_host()) == ["acme.two"]


def test_a_changed_manifest_is_read_again(make_host, install, wheel_dir, plugins_dir):
    install(connector_wheel(wheel_dir, "acme.one", package="acme_one"))
    host = make_host()
    host.load()
    assert host.get("acme.one").summary == "acme.one test plugin"
    manifest = plugins_dir / "acme_one" / "aperio-plugin.toml"
    manifest.write_text(manifest.read_text().replace("acme.one test plugin", "changed summary, longer"))
    again = make_host()
    again.load()
    assert again.get("acme.one").summary == "changed summary, longer"


def test_a_corrupted_cache_is_ignored(make_host, install, wheel_dir, tmp_path):
    install(connector_wheel(wheel_dir, "acme.one", package="acme_one"))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "discovery-cache.json").write_text('{"format": 1, "entry_points": [1, 2')
    assert _ids(make_host()) == ["acme.one"]
    assert "entry_points" in json.loads((tmp_path / "state" / "discovery-cache.json").read_text())
