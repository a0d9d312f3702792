"""Whole-process start-up of what every `aperio` command and host application pays, interleaved.

Goals (issue 11): `import aperio_plugins` at most 1.3x `import pluggy, aperio_hookspecs`;
`aperio plugin list --json` with the example plugins installed, on a warm state directory,
at most 4x a bare `python -c` that lists the `aperio.plugins` entry points with
`importlib.metadata`. Each round runs every command once, in turn, so that the machine's
drift hits all of them alike; ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/bench_cli.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _stats import paired_ratio  # a sibling module of the benchmark scripts

PYTHON = sys.executable
APERIO = str(Path(sys.executable).with_name("aperio"))
BARE_LISTING = (
    "import importlib.metadata as m; print([(e.name, e.value) for e in m.entry_points(group='aperio.plugins')])"
)
COMMANDS = {
    "import pluggy, aperio_hookspecs": [PYTHON, "-c", "import pluggy, aperio_hookspecs"],
    "import aperio_plugins": [PYTHON, "-c", "import aperio_plugins"],
    "from aperio_plugins import PluginHost": [PYTHON, "-c", "from aperio_plugins import PluginHost"],
    "bare entry-points listing": [PYTHON, "-c", BARE_LISTING],
    "aperio plugin list --json": [APERIO, "plugin", "list", "--json"],
}


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as state:
        # The example plugins as quickstart installed them; trust the demo key so they load verified.
        env = {
            **os.environ,
            "APERIO_STATE_DIR": state,
            "APERIO_PLUGINS_DIR": str(Path(state) / "plugins"),
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(Path(".demo/trusted-keys").resolve()),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
        }
        for command in COMMANDS.values():
            timed(command, env)  # warm the state directory, the discovery cache and the OS file cache
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.rounds):
            for name, command in COMMANDS.items():
                times[name].append(timed(command, env))
    median = {name: sorted(samples)[len(samples) // 2] * 1000 for name, samples in times.items()}
    for name, ms in median.items():
        print(f"{name:40s} {ms:7.1f} ms")
    imports = paired_ratio(times["import aperio_plugins"], times["import pluggy, aperio_hookspecs"])
    host = paired_ratio(times["from aperio_plugins import PluginHost"], times["import pluggy, aperio_hookspecs"])
    listing = paired_ratio(times["aperio plugin list --json"], times["bare entry-points listing"])
    print(f"import aperio_plugins / import pluggy, aperio_hookspecs: {imports:.2f}x (goal 1.3x)")
    print(f"from aperio_plugins import PluginHost / the same: {host:.2f}x (no goal; what a host application pays)")
    print(f"aperio plugin list --json / bare listing: {listing:.2f}x (goal 4x)")


if __name__ == "__main__":
    main()
