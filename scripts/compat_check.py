"""Check plugin API skew on the host in this environment (used by `nox -s compat`).

Builds the box connector example (which requires aperio-hookspecs[http]>=1.1,<2) with
its real build backend, and a synthetic plugin that requires 2.x, installs both
into a plugins directory with pip, loads them, and exits non-zero unless the
first is enabled and the second refused for its major version.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from aperio_plugins import HostSettings, PluginHost, PluginState, TrustMode
from aperio_plugins.testing import PluginWheel, install_wheels

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect-api", required=True)
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    wheels, plugins = args.workdir / "wheels", args.workdir / "plugins"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(wheels),
            str(ROOT / "example_plugins" / "box-connector"),
        ],
        check=True,
    )
    future = PluginWheel(
        "acme-future",
        plugins={"acme.future": "acme_future"},
        files={"acme_future/__init__.py": "raise SystemExit('must never be imported')\n"},
        requires=("aperio-hookspecs>=2.0,<3",),
    ).build(wheels)
    install_wheels([*wheels.glob("aperio_box_connector-*.whl"), future], target=plugins)

    settings = HostSettings(plugins_dir=plugins, state_dir=args.workdir / "state", plugin_trust_mode=TrustMode.WARN)
    with PluginHost(settings, search_path=[]) as host:
        print(f"host plugin API: {host.api_version}")
        if host.api_version != args.expect_api:
            print(f"FAIL: expected the host to run plugin API {args.expect_api}")
            return 1
        infos = {info.id: info for info in host.load().plugins}
    box, future_info = infos["aperio.box-connector"], infos["acme.future"]
    print(f"aperio.box-connector ({box.api_requirement}): {box.state.value}")
    print(f"acme.future ({future_info.api_requirement}): {future_info.state.value}: {future_info.error}")
    ok = (
        box.state is PluginState.ENABLED
        and future_info.state is PluginState.FAILED
        and "major versions differ" in (future_info.error or "")
        and args.expect_api in (future_info.error or "")
    )
    print("compat: OK" if ok else "compat: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
