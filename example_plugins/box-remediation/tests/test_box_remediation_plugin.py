"""The distribution as the host sees it: entry point, hook implementation, manifest."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import pluggy
import pytest
from aperio_box_remediation import WRITE_SCOPE, RemoveSharedLink
from packaging.requirements import Requirement

from aperio_hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, specs

PLUGIN_ID = "aperio.box-remediation"


def entry_point() -> importlib.metadata.EntryPoint:
    (found,) = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == PLUGIN_ID]
    return found


def test_entry_point_names_the_hookimpl_module_and_depends_only_on_the_sdk():
    found = entry_point()

    assert found.value == "aperio_box_remediation.plugin"
    assert found.dist is not None
    assert (found.dist.name, found.dist.version) == ("aperio-box-remediation", "1.0.0")
    requirements = found.dist.requires or []
    # The SDK and its HTTP helper's extra, nothing else: the host's environment provides both.
    parsed = [Requirement(requirement) for requirement in requirements]
    assert [(requirement.name, requirement.extras) for requirement in parsed] == [("aperio-hookspecs", {"http"})]


def test_the_hookimpl_registers_the_remove_shared_link_handler():
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(specs)
    manager.register(entry_point().load(), name=PLUGIN_ID)
    registered: list[object] = []

    manager.hook.aperio_register_remediations(register=registered.append)

    (handler,) = registered
    assert isinstance(handler, RemoveSharedLink)
    assert handler.action.name == "box.remove-shared-link"


def test_manifest_declares_exactly_what_the_code_uses():
    tomllib = pytest.importorskip("tomllib")
    text = importlib.resources.files("aperio_box_remediation").joinpath("aperio-plugin.toml").read_text("utf-8")

    manifest = tomllib.loads(text)

    assert manifest["manifest_version"] == 1
    assert list(manifest["plugins"]) == [PLUGIN_ID]
    section = manifest["plugins"][PLUGIN_ID]
    assert set(section) <= {"summary", "kinds", "credential_scopes", "isolation", "homepage", "hooks"}
    # Exactly the hooks plugin.py implements: the host imports the plugin on their first call.
    assert section["hooks"] == ["aperio_register_remediations"]
    assert section["kinds"] == ["remediation"]
    assert section["credential_scopes"] == [WRITE_SCOPE] == ["box:write"]
    assert 0 < len(section["summary"]) <= 200
