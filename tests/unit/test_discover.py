"""discover: distributions and entry points from metadata alone, in search-path order."""

from __future__ import annotations

from pathlib import Path

from aperio_plugins._model import Origin
from aperio_plugins.pipeline.discover import discover, search_roots


def distribution(root: Path, name: str, version: str, entry_points: str | None) -> Path:
    metadata_dir = root / f"{name}-{version}.dist-info"
    metadata_dir.mkdir(parents=True)
    (metadata_dir / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points is not None:
        (metadata_dir / "entry_points.txt").write_text(entry_points)
    return metadata_dir


def plugins(*pairs: tuple[str, str]) -> str:
    return "[aperio.plugins]\n" + "".join(f"{plugin_id} = {value}\n" for plugin_id, value in pairs)


def test_candidates_come_in_search_path_order_with_their_origin(tmp_path):
    env, plugins_dir = tmp_path / "env", tmp_path / "plugins"
    distribution(env, "acme_b", "1.0", plugins(("acme.b", "acme_b")))
    distribution(env, "acme_a", "2.0", plugins(("acme.a", "acme_a:plugin")))
    distribution(plugins_dir, "acme_c", "3.0", plugins(("acme.c", "acme_c")))

    found = discover(search_roots([env], plugins_dir))

    rows = [(c.plugin_id, c.entry_point, c.distribution, c.version, c.origin, c.position) for c in found.candidates]
    assert rows == [
        ("acme.a", "acme_a:plugin", "acme_a", "2.0", Origin.ENVIRONMENT, 0),  # sorted within a directory
        ("acme.b", "acme_b", "acme_b", "1.0", Origin.ENVIRONMENT, 1),
        ("acme.c", "acme_c", "acme_c", "3.0", Origin.PLUGINS_DIR, 2),
    ]
    assert found.broken == ()


def test_other_groups_and_distributions_without_entry_points_are_not_candidates(tmp_path):
    distribution(tmp_path, "tool", "1.0", "[console_scripts]\ntool = tool:main\n")
    distribution(tmp_path, "library", "1.0", None)

    assert discover(search_roots([tmp_path], None)).candidates == ()


def test_an_unparsable_entry_points_file_is_reported_and_does_not_stop_the_others(tmp_path):
    distribution(tmp_path, "acme_bad", "1.0", "[aperio.plugins]\nacme.bad\n")  # a line with no "="
    distribution(tmp_path, "acme_good", "1.0", plugins(("acme.good", "acme_good")))

    found = discover(search_roots([tmp_path], None))

    assert [c.plugin_id for c in found.candidates] == ["acme.good"]
    assert [(b.name, b.reason.startswith("unreadable entry_points.txt")) for b in found.broken] == [
        ("acme_bad-1.0.dist-info", True)
    ]


def test_the_plugins_directory_keeps_its_origin_when_also_on_the_environment_path(tmp_path):
    plugins_dir, env = tmp_path / "plugins", tmp_path / "env"
    plugins_dir.mkdir()
    env.mkdir()

    roots = search_roots([env, plugins_dir, env, tmp_path / "missing"], plugins_dir)

    assert [(root.path, root.origin) for root in roots] == [
        (env.resolve(), Origin.ENVIRONMENT),
        (plugins_dir.resolve(), Origin.PLUGINS_DIR),
    ]


def test_discovery_never_imports_the_plugin(tmp_path):
    marker = tmp_path / "ran"
    distribution(tmp_path, "acme_loud", "1.0", plugins(("acme.loud", "acme_loud")))
    (tmp_path / "acme_loud.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    assert [c.plugin_id for c in discover(search_roots([tmp_path], None)).candidates] == ["acme.loud"]
    assert not marker.exists()
