"""The distribution as the host sees it: entry point, hook implementation, manifest."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import pluggy
import pytest
from aperio_splunk_hec import HEC_SCOPE, SplunkHec
from packaging.requirements import Requirement

from aperio_hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, specs

PLUGIN_ID = "aperio.splunk-hec"


def entry_point() -> importlib.metadata.EntryPoint:
    (found,) = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == PLUGIN_ID]
    return found


def test_entry_point_names_the_hookimpl_module_and_depends_only_on_the_sdk():
    found = entry_point()

    assert found.value == "aperio_splunk_hec.plugin"
    assert found.dist is not None
    assert (found.dist.name, found.dist.version) == ("aperio-splunk-hec", "1.0.0")
    requirements = found.dist.requires or []
    # The SDK and its HTTP helper's extra, nothing else: the host's environment provides both.
    parsed = [Requirement(requirement) for requirement in requirements]
    assert [(requirement.name, requirement.extras) for requirement in parsed] == [("aperio-hookspecs", {"http"})]


def test_the_hookimpl_registers_the_destination():
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(specs)
    manager.register(entry_point().load(), name=PLUGIN_ID)
    registered: list[object] = []

    manager.hook.aperio_register_destinations(register=registered.append)

    (destination,) = registered
    assert isinstance(destination, SplunkHec)
    assert destination.name == "splunk-hec"


def test_manifest_declares_exactly_what_the_code_uses():
    tomllib = pytest.importorskip("tomllib")
    text = importlib.resources.files("aperio_splunk_hec").joinpath("aperio-plugin.toml").read_text("utf-8")

    manifest = tomllib.loads(text)

    assert manifest["manifest_version"] == 1
    assert list(manifest["plugins"]) == [PLUGIN_ID]
    section = manifest["plugins"][PLUGIN_ID]
    assert set(section) <= {"summary", "kinds", "credential_scopes", "isolation", "homepage", "hooks"}
    # Exactly the hooks plugin.py implements: the host imports the plugin on their first call.
    assert section["hooks"] == ["aperio_register_destinations"]
    assert section["kinds"] == ["destination"]
    assert section["credential_scopes"] == [HEC_SCOPE] == ["splunk:hec"]
    assert 0 < len(section["summary"]) <= 200
