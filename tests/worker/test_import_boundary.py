"""A worker serves its plugin behind the same import boundary as the host: the plugins directory is
not on the worker's import path, so a module planted there is never imported by the worker."""

from __future__ import annotations

import pytest

from aperio_plugins.errors import HandshakeError
from worker.helpers import PROBE_SOURCE

PLANTED = "import pathlib\npathlib.Path({marker!r}).write_text('planted ran')\n"


@pytest.mark.parametrize("planted", ["planted_module.py", "planted_pkg/__init__.py"])
def test_unowned_module_in_plugins_dir_is_not_importable_in_a_worker(
    planted, start_worker, plugins_dir, marker, tmp_path
):
    name = planted.split("/")[0].removesuffix(".py")
    (plugins_dir / planted).parent.mkdir(parents=True, exist_ok=True)
    (plugins_dir / planted).write_text(PLANTED.format(marker=str(marker)))
    with pytest.raises(HandshakeError, match=rf"No module named '{name}': .*no installed distribution owns it"):
        start_worker("acme.victim", source=f"import {name}\n" + PROBE_SOURCE)
    assert not marker.exists()


def test_a_plugin_beside_a_planted_module_runs_in_its_worker(start_worker, plugins_dir, marker):
    (plugins_dir / "planted_module.py").write_text(PLANTED.format(marker=str(marker)))
    plugin = start_worker("acme.beside", source=PROBE_SOURCE)
    assert plugin.status().pid is not None
    assert not marker.exists()
