"""Benchmark of the aperio plugin host against raw pluggy and bare importlib.metadata, as ratios.

    python benchmarks/bench_host.py [--quick] [--json OUT] [--profile] [--keep]

Measures, in one run on this machine:

1. a hook call through `host.hook.aperio_finding_raised(...)` with 1, 5 and 20
   plugins, guarded and unguarded, against the same implementations in a bare
   `pluggy.PluginManager`;
2. start-up on site-packages-like directories of 300 and 1,000 distributions
   with 10 and 50 plugins: bare `entry_points()` + importing the plugin
   modules, against a cold and a warm `PluginHost(...).load()`, each in a
   fresh interpreter.

Figures are reported against the goals, never asserted. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import pluggy
from _calls import measure_calls
from _report import calls_table, goals, goals_table, stages_table, startup_table
from _startup import Environment, measure_stages, measure_startup, prepare, profile_start

import aperio_hookspecs
import aperio_plugins


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    call_counts: tuple[int, ...]
    call_rounds: int
    call_sample_seconds: float
    environments: tuple[tuple[int, int], ...]  # (distributions, plugins)
    startup_rounds: int
    stage_runs: int


FULL = Plan(
    call_counts=(1, 5, 20),
    call_rounds=1001,
    call_sample_seconds=0.002,
    environments=((300, 10), (300, 50), (1000, 10), (1000, 50)),
    startup_rounds=21,
    stage_runs=7,
)
QUICK = Plan(
    call_counts=(1, 5, 20),
    call_rounds=101,
    call_sample_seconds=0.002,
    environments=((1000, 50),),
    startup_rounds=3,
    stage_runs=1,
)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pluggy": pluggy.__version__,
        "aperio_plugins": aperio_plugins.__version__,
        "aperio_hookspecs": aperio_hookspecs.__version__,
    }


def source_state() -> dict[str, Any]:
    """Which host code was measured: where it was imported from, a digest of it, and its git state.

    Other work may change src/ between two runs, or during one; the digest tells the code apart.
    """
    packages = [Path(module.__file__ or "").parent for module in (aperio_plugins, aperio_hookspecs)]
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package.parent).as_posix().encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(packages[0])]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", *map(str, packages)], capture_output=True, text=True, check=False
    )
    return {
        "imported_from": [str(package) for package in packages],
        "commit": commit.stdout.strip() or None,
        "uncommitted_changes": [line[3:] for line in status.stdout.splitlines()],
        "sources_sha256": digest.hexdigest()[:16],
    }


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def header(figures: dict[str, Any]) -> str:
    """Where and on what the figures were measured; a busy machine shows in the load averages."""
    info, source = figures["machine"], figures["source"]
    before, after = (", ".join(f"{value:.2f}" for value in info[key]) for key in ("load_average", "load_average_after"))
    return (
        f"aperio-plugins benchmark: Python {info['python']}, pluggy {info['pluggy']}, {info['cpus']} CPUs,"
        f" {info['cpu_model'] or info['platform']}\n"
        f"host sources {source['sources_sha256']} (commit {source['commit']},"
        f" {len(source['uncommitted_changes'])} files changed); load average before {before}, after {after}\n"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under ~30 s")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON to OUT")
    parser.add_argument("--profile", action="store_true", help="add cProfile listings of one cold and one warm start")
    parser.add_argument("--keep", action="store_true", help="keep the generated environments and print where")
    parser.add_argument(
        "--activation",
        choices=("lazy", "eager"),
        default="lazy",
        help="the hosts' APERIO_PLUGIN_ACTIVATION (the plugins declare their hooks; eager imports them at start)",
    )
    return parser.parse_args(argv)


def run(plan: Plan, workdir: Path, profile: bool) -> tuple[dict[str, Any], list[str]]:
    """Run the plan; return the JSON figures and the report lines."""
    source, measured_on = source_state(), machine()
    calls = measure_calls(workdir, plan.call_counts, plan.call_rounds, plan.call_sample_seconds, progress)
    environments: list[Environment] = []
    for distributions, plugins in plan.environments:
        progress(f"writing and warming {plugins} plugins among {distributions} distributions")
        environments.append(prepare(workdir, distributions, plugins))
    startup = measure_startup(environments, plan.startup_rounds, workdir, progress)
    largest = environments[-1]
    progress(f"stage breakdown on {largest.label}")
    stages = measure_stages(largest, plan.stage_runs, workdir)
    result = goals(calls, startup)
    lines = [
        *calls_table(calls), "",
        *startup_table(startup), "",
        *stages_table(stages, f"{largest.plugins} plugins / {largest.distributions} dists"), "",
        *goals_table(result),
    ]  # fmt: skip
    if profile:
        for kind in ("cold", "warm"):
            output = workdir / f"host-start-{kind}.prof"
            lines += ["", f"cProfile of one {kind} start ({output}):", profile_start(largest, kind, workdir, output)]
    figures = {
        "machine": measured_on,
        "source": source,
        "quick": plan is QUICK,
        "hook_calls": [figure.as_json() for figure in calls],
        "startup": [figure.as_json() for figure in startup],
        "stages_median_ms": {
            kind: {name: 1000 * seconds for name, seconds in timings.items()} for kind, timings in stages.items()
        },
        "goals": [goal.as_json() for goal in result],
    }
    return figures, lines


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    os.environ["BENCH_ACTIVATION"] = args.activation  # read by every start-up child
    plan = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="aperio-bench-"))
    started = perf_counter()
    try:
        figures, lines = run(plan, workdir, args.profile)
    finally:
        if args.keep:
            progress(f"environments kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["elapsed_s"] = perf_counter() - started
    figures["machine"]["load_average_after"] = os.getloadavg()
    if source_state()["sources_sha256"] != figures["source"]["sources_sha256"]:
        progress("warning: src/ changed during the run; these figures mix two versions of the host")
        figures["source"]["changed_during_run"] = True
    print(header(figures))
    print("\n".join(lines))
    print(f"\n({figures['elapsed_s']:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
