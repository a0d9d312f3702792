"""Who owns what in the plugins directory, read from real RECORD files, and which wheel layouts and
top-level names a plugin may have."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aperio_plugins._cache import DiscoveryCache, file_key
from aperio_plugins._ownership import (
    HostModules,
    collision,
    import_names,
    record_paths,
    record_sizes,
    scan_plugins_dir,
    wheel_layout_problem,
)
from aperio_plugins.testing import PluginWheel, install_wheels

EXTENSION = "fast.cpython-311-x86_64-linux-gnu.so"


def write_dist(root: Path, dist_info: str, files: dict[str, str], *, plugin: bool = False) -> None:
    (root / dist_info).mkdir(parents=True)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    record = [f"{path},sha256=x,1" for path in files] + [f"{dist_info}/RECORD,,"]
    (root / dist_info / "RECORD").write_text("\n".join(record) + "\n")
    if plugin:
        (root / dist_info / "entry_points.txt").write_text("[aperio.plugins]\nacme.x = acme_x\n")


def test_record_paths_keep_quoted_paths_and_drop_paths_outside_the_root(tmp_path):
    (tmp_path / "d.dist-info").mkdir()
    (tmp_path / "d.dist-info" / "RECORD").write_text(
        'pkg/__init__.py,sha256=a,1\n"pkg/a,b.txt",sha256=b,2\n../../bin/tool,,\n/etc/passwd,,\npkg/__pycache__/x.pyc,,\n'
    )
    assert record_paths(tmp_path / "d.dist-info") == ["pkg/__init__.py", "pkg/a,b.txt", "pkg/__pycache__/x.pyc"]
    assert record_paths(tmp_path / "missing.dist-info") == []


def test_record_sizes_are_read_where_stated_and_none_where_not_a_plain_number(tmp_path):
    (tmp_path / "d.dist-info").mkdir()
    (tmp_path / "d.dist-info" / "RECORD").write_text(
        'pkg/a.py,sha256=a,120\n"pkg/a,b.txt",sha256=b,7\nd.dist-info/RECORD,,\n'
        f"pkg/sup.bin,sha256=c,\u00b2\npkg/huge.bin,sha256=d,{'9' * 5000}\npkg/neg.bin,sha256=e,-1\nbare\n",
        encoding="utf-8",
    )
    assert record_sizes(tmp_path / "d.dist-info") == {
        "pkg/a.py": 120,
        "pkg/a,b.txt": 7,
        "d.dist-info/RECORD": None,
        "pkg/sup.bin": None,
        "pkg/huge.bin": None,
        "pkg/neg.bin": None,
        "bare": None,
    }
    assert record_sizes(tmp_path / "missing.dist-info") == {}


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["acme/__init__.py", "acme/sub/x.py"], {"acme"}),
        (["mod.py", EXTENSION, "acme-1.0.dist-info/METADATA"], {"mod", "fast"}),
        (["evil.pth", "README.txt", "__pycache__/mod.cpython-311.pyc", "x.data/scripts/t"], set()),
    ],
)
def test_import_names(paths, expected):
    assert import_names(paths) == expected


ENTRY = {"acme.x": "acme_x:plugin"}


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        (["acme_x/__init__.py", "acme_x_vendor/__init__.py", "acme_x-1.0.dist-info/RECORD"], None),
        (["acme_x/__init__.py", "acme_x.libs/libz.so"], None),
        (["acme_x.py", "acme_x-1.0.dist-info/RECORD"], None),
        (["acme_x/__init__.py", "evil.pth"], "evil.pth is a .pth file"),
        (["acme_x/__init__.py", "helpers.py"], "helpers.py is not part of a package its entry points name (acme_x)"),
        (["acme_x/__init__.py", "README.txt"], "README.txt is not part of a package"),
        (["acme_x/__init__.py", "__pycache__/x.pyc"], "__pycache__/ is not a package it can import"),
        (["acme_x/__init__.py", "not-a-name/x.py"], "not-a-name/ is not a package it can import"),
    ],
)
def test_wheel_layout_problem(members, problem):
    found = wheel_layout_problem(members, ENTRY)
    assert found == problem if problem is None else problem in found


def test_scan_reports_unowned_entries_and_a_second_dist_info(tmp_path):
    write_dist(tmp_path, "acme_x-1.0.dist-info", {"acme_x/__init__.py": ""}, plugin=True)
    write_dist(tmp_path, "acme_x-0.9.dist-info", {"acme_x/__init__.py": ""}, plugin=True)
    write_dist(tmp_path, "helpers-2.0.dist-info", {"helpers/__init__.py": ""})
    (tmp_path / "planted.py").write_text("")
    (tmp_path / "planted_pkg").mkdir()
    (tmp_path / "acme_x" / "added.py").write_text("")
    (tmp_path / ".aperio").mkdir()

    layout = scan_plugins_dir(tmp_path)
    assert layout.unowned == ("planted.py", "planted_pkg/")
    assert layout.duplicates == (("acme_x-0.9.dist-info", "acme_x-1.0.dist-info"),)
    assert [d.describe() for d in layout.owners("acme_x")] == ["acme_x 0.9", "acme_x 1.0"]
    assert [(d.name, d.is_plugin) for d in layout.distributions] == [
        ("acme_x", True),
        ("acme_x", True),
        ("helpers", False),
    ]
    assert scan_plugins_dir(tmp_path, deep=True).unowned == ("acme_x/added.py", "planted.py", "planted_pkg/")
    messages = [problem.message for problem in layout.problems()]
    assert any("planted.py, planted_pkg/" in message for message in messages)
    assert any("2 .dist-info directories" in message for message in messages)


def test_scan_reads_each_record_once_with_a_cache(tmp_path):
    write_dist(tmp_path / "plugins", "helpers-2.0.dist-info", {"helpers/__init__.py": ""})
    cache = DiscoveryCache(tmp_path / "cache.json")
    first = scan_plugins_dir(tmp_path / "plugins", cache=cache)
    cache.save()
    # A RECORD whose stat signature is unchanged comes from the cache; a changed one is read again.
    warm = DiscoveryCache(tmp_path / "cache.json")
    metadata_dir = tmp_path / "plugins" / "helpers-2.0.dist-info"
    key = file_key(metadata_dir / "RECORD")
    assert warm.record(str(metadata_dir), key) == ["helpers/__init__.py", "helpers-2.0.dist-info/RECORD"]
    assert scan_plugins_dir(tmp_path / "plugins", cache=warm).distributions == first.distributions
    assert warm.record(str(metadata_dir), (0, 0, 0)) is None


def test_collision_names_the_owner(tmp_path):
    assert (
        collision(["shlex"], "acme-x") == "its top-level module 'shlex' collides with 'shlex' of the standard library"
    )
    host = HostModules(tmp_path)
    assert "of distribution pluggy in the host's environment" in collision(["pluggy"], "acme-x", host=host)
    assert collision(["acme_not_anywhere_xyz"], "acme-x", host=host) is None
    write_dist(tmp_path, "acme_y-1.0.dist-info", {"acme_shared/__init__.py": ""}, plugin=True)
    layout = scan_plugins_dir(tmp_path)
    assert "of plugin acme_y 1.0 in the plugins directory" in collision(["acme_shared"], "acme-x", layout=layout)
    assert collision(["acme_shared"], "acme-y", layout=layout) is None  # its own release


def test_host_modules_never_look_in_the_plugins_directory(tmp_path, monkeypatch):
    (tmp_path / "only_in_plugins_dir.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert HostModules(tmp_path).provider("only_in_plugins_dir", "acme-x") is None
    assert HostModules(None).provider("only_in_plugins_dir", "acme-x") is not None


def test_the_same_plugin_in_the_environment_is_not_a_collision(tmp_path, monkeypatch):
    wheel = PluginWheel("acme-twice", plugins={"acme.twice": "acme_twice"}, files={"acme_twice/__init__.py": ""})
    install_wheels([wheel.build(tmp_path / "wheels")], target=tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    host = HostModules(tmp_path / "plugins")
    assert host.provider("acme_twice", "acme-twice") is None
    assert host.provider("acme_twice", "acme-other") == "distribution acme-twice in the host's environment"
    assert sys.modules.get("acme_twice") is None  # found, never imported
