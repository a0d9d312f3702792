"""inspect: the manifest and the plugin API requirement, read from files without importing the plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from aperio_plugins._model import Candidate, Isolation, PluginKind
from aperio_plugins.errors import ManifestError
from aperio_plugins.pipeline.discover import discover, search_roots
from aperio_plugins.pipeline.inspect import inspect_candidate
from aperio_plugins.testing import manifest_toml

GOOD_SECTION = {"summary": "Box users", "kinds": ["connector"], "credential_scopes": ["box:read"]}


def laid_out(
    root: Path,
    *,
    plugin_id: str = "acme.box",
    requires: tuple[str, ...] = ("aperio-hookspecs>=1.0,<2",),
    version: str = "1.2.0",
    manifest: str | None = None,
) -> Candidate:
    """Lay out an installed distribution by hand and return its one discovered candidate."""
    metadata_dir = root / f"acme_box-{version}.dist-info"
    metadata_dir.mkdir(parents=True)
    headers = ["Metadata-Version: 2.1", "Name: acme-box", f"Version: {version}"]
    headers += [f"Requires-Dist: {requirement}" for requirement in requires]
    (metadata_dir / "METADATA").write_text("\n".join(headers) + "\n\nA long description.\n")
    (metadata_dir / "entry_points.txt").write_text(f"[aperio.plugins]\n{plugin_id} = acme_box\n")
    (root / "acme_box").mkdir()
    if manifest is None:
        manifest = manifest_toml({plugin_id: GOOD_SECTION})
    (root / "acme_box" / "aperio-plugin.toml").write_text(manifest)
    (candidate,) = discover(search_roots([root], None)).candidates
    return candidate


def test_a_valid_distribution_is_inspected_from_its_files(tmp_path):
    inspected = inspect_candidate(laid_out(tmp_path))

    assert (inspected.distribution, inspected.version, inspected.api_requirement) == ("acme-box", "1.2.0", "<2,>=1.0")
    manifest = inspected.manifest
    assert (manifest.summary, manifest.kinds, manifest.credential_scopes) == (
        "Box users",
        (PluginKind.CONNECTOR,),
        ("box:read",),
    )
    assert manifest.isolation is Isolation.ANY
    assert manifest.network is True  # a connector talks to its provider unless it says otherwise


def test_an_api_requirement_behind_an_extra_is_not_a_requirement(tmp_path):
    candidate = laid_out(tmp_path, requires=("aperio-hookspecs>=1.0; extra == 'dev'",))
    with pytest.raises(ManifestError, match=r"METADATA: declares no requirement on aperio-hookspecs") as refused:
        inspect_candidate(candidate)
    assert refused.value.plugin_id == "acme.box"


@pytest.mark.parametrize(
    ("fault", "manifest", "message"),
    [
        ("missing_section", manifest_toml({"acme.other": GOOD_SECTION}), r'no \[plugins\."acme\.box"\] table'),
        ("not_toml", "manifest_version = = 1", r"not valid TOML"),
        ("newer_format", "manifest_version = 9\n", r"manifest_version 9 is newer than this host understands"),
        (
            "unknown_kind",
            manifest_toml({"acme.box": {"summary": "x", "kinds": ["miner"]}}),
            r'plugins\."acme\.box"\.kinds\[0\]: Input should be',
        ),
        (
            "extra_field",
            manifest_toml({"acme.box": {**GOOD_SECTION, "run_as_root": True}}),
            r'plugins\."acme\.box"\.run_as_root: Extra inputs are not permitted',
        ),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path, fault, manifest, message):
    with pytest.raises(ManifestError, match=message):
        inspect_candidate(laid_out(tmp_path, manifest=manifest))


def test_an_invalid_version_in_metadata_is_refused(tmp_path):
    with pytest.raises(ManifestError, match=r"METADATA: Version 'one' is not a valid version"):
        inspect_candidate(laid_out(tmp_path, version="one"))


def test_a_look_alike_plugin_id_is_refused_before_any_file_is_read(tmp_path):
    look_alike = "acme.b\u043ex"  # a Cyrillic o
    with pytest.raises(ManifestError, match=r"entry_points\.txt: plugin id .* has non-ASCII characters"):
        inspect_candidate(laid_out(tmp_path, plugin_id=look_alike))
