"""Whole-process start-up of what every `aperio` command and host application pays, interleaved.

Goals (issue 11): `import aperio_plugins` at most 1.3x `import pluggy, aperio_hookspecs`;
`aperio plugin list --json` with the example plugins installed, on a warm state directory,
at most 4x a bare `python -c` that lists the `aperio.plugins` entry points with
`importlib.metadata`. Each round runs every command once, in turn, so that the machine's
drift hits all of them alike; ratios are medians of per-round ratios, of wall-clock time and of
the child's CPU time (user + system, which excludes waiting for a core on a busy machine).

Bytecode is written and used, as for an installed package (pip compiles `.pyc` files at install):
`PYTHONDONTWRITEBYTECODE` and `PYTHONPYCACHEPREFIX` are removed from the children's environment, as
`bench_host.py` does, and the untimed warm-up writes them. Without that, an editable install on a
machine that sets `PYTHONDONTWRITEBYTECODE=1` compiles every `aperio_plugins` and `aperio_hookspecs`
module from source in every timed run, which the bare listing never does.

    .venv/bin/python benchmarks/bench_cli.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import resource
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
BASE_IMPORT = "import pluggy, aperio_hookspecs"
BARE = "bare entry-points listing"
COMMANDS = {
    "import pluggy, aperio_hookspecs": [PYTHON, "-c", "import pluggy, aperio_hookspecs"],
    "import aperio_plugins": [PYTHON, "-c", "import aperio_plugins"],
    "from aperio_plugins import PluginHost": [PYTHON, "-c", "from aperio_plugins import PluginHost"],
    "bare entry-points listing": [PYTHON, "-c", BARE_LISTING],
    "aperio plugin list --json": [APERIO, "plugin", "list", "--json"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `command` once; return its wall-clock and CPU time in seconds."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as state:
        # The example plugins as quickstart installed them; trust the demo key so they load verified.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("APERIO_") and name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        }
        env = {
            **inherited,
            "APERIO_STATE_DIR": state,
            "APERIO_PLUGINS_DIR": str(Path(state) / "plugins"),
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(Path(".demo/trusted-keys").resolve()),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
        }
        for command in COMMANDS.values():
            # Warm the state directory, the discovery cache, the OS file cache and the bytecode.
            timed(command, env)
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.rounds):
            for name, command in COMMANDS.items():
                wall, used = timed(command, env)
                times[name].append(wall)
                cpu[name].append(used)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds; median wall / CPU time")
    for name in COMMANDS:
        wall_ms, cpu_ms = (sorted(samples[name])[len(samples[name]) // 2] * 1000 for samples in (times, cpu))
        print(f"{name:40s} {wall_ms:7.1f} ms {cpu_ms:7.1f} ms")
    for label, sample, reference, goal in (
        ("import aperio_plugins / import pluggy, aperio_hookspecs", "import aperio_plugins", BASE_IMPORT, "goal 1.3x"),
        (
            "from aperio_plugins import PluginHost / the same",
            "from aperio_plugins import PluginHost",
            BASE_IMPORT,
            "no goal; what a host application pays",
        ),
        ("aperio plugin list --json / bare listing", "aperio plugin list --json", BARE, "goal 4x"),
    ):
        wall = paired_ratio(times[sample], times[reference])
        used = paired_ratio(cpu[sample], cpu[reference])
        print(f"{label}: {wall:.2f}x, CPU time {used:.2f}x ({goal})")


if __name__ == "__main__":
    main()
