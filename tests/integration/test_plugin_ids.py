"""The plugin id rule (ASCII, the index's pattern) holds at install, in the index, and at load."""

from __future__ import annotations

import json

import pytest
from index_builders import index_document
from plugin_builders import imported_ids
from wheel_attacks import homoglyph_plugin_id, safe_wheel

from aperio_plugins import FailureStage, PluginState
from aperio_plugins._ids import plugin_id_problem
from aperio_plugins.errors import IndexFormatError
from aperio_plugins.registry._index import parse_index

LOOKALIKE = "\u0430cme.safe"


def test_a_homoglyph_id_installed_with_plain_pip_fails_at_inspect_and_never_runs(wheel_dir, install, make_host, marker):
    install(safe_wheel(wheel_dir / "real", marker=marker), homoglyph_plugin_id(wheel_dir / "fake", marker=marker))
    report = make_host("warn").load()
    infos = {info.id: info for info in report.plugins}
    assert infos["acme.safe"].state is PluginState.ENABLED
    fake = infos[LOOKALIKE]
    assert fake.state is PluginState.FAILED
    assert fake.failure_stage is FailureStage.INSPECT
    assert "plugin id '\\u0430cme.safe' has non-ASCII characters" in fake.error
    assert imported_ids(marker) == ["acme.safe"]


@pytest.mark.parametrize(
    ("plugin_id", "valid"),
    [
        ("acme.safe", True),
        ("a", True),
        ("0-9_x.y", True),
        (LOOKALIKE, False),
        ("Acme.safe", False),
        ("acme.safe\n", False),
        ("-acme", False),
        ("acme safe", False),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
    ],
)
def test_the_index_and_the_wheel_reader_apply_the_same_rule(plugin_id, valid):
    document = index_document()
    document["plugins"][0]["id"] = plugin_id
    try:
        parse_index(json.dumps(document).encode(), "test")
        index_accepts = True
    except IndexFormatError:
        index_accepts = False
    assert index_accepts is valid
    assert (plugin_id_problem(plugin_id) is None) is valid
