"""Start-up benchmark: bare entry points + imports against a cold and a warm `PluginHost` start.

Every timed start runs in a fresh interpreter (`_startup_child.py`), so that no
side finds plugin modules already in `sys.modules`. Each environment is written
once; one untimed run of each side first writes the `.pyc` files and fills the
page cache. Rounds then interleave every environment and every kind of start,
rotating the order, and each figure is the median over rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _environment import PluginSpec, write_environment
from _stats import paired_ratio

CHILD = Path(__file__).with_name("_startup_child.py")
KINDS = ("baseline", "cold", "warm")


@dataclass(frozen=True)
class Environment:
    """One written environment: its size, where it is, and the state directory the warm starts reuse."""

    distributions: int
    plugins: int
    root: Path
    warm_state: Path
    specs: tuple[PluginSpec, ...]

    @property
    def label(self) -> str:
        return f"{self.plugins} / {self.distributions}"


@dataclass
class StartupFigures:
    """Samples of one environment, seconds per start, by kind; `parts` keeps the children's splits."""

    environment: Environment
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    parts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def median(self, kind: str) -> float:
        return statistics.median(self.samples[kind])

    def ratio(self, kind: str) -> float:
        """Median over rounds of this kind's start divided by the baseline start of the same round."""
        return paired_ratio(self.samples[kind], self.samples["baseline"])

    def ratio_of_medians(self, kind: str) -> float:
        return self.median(kind) / self.median("baseline")

    def cpu_ratio(self, kind: str) -> float:
        """Like `ratio`, on CPU time: unaffected by time the child spent waiting for a core."""
        return paired_ratio(self.parts[f"{kind}:cpu"], self.parts["baseline:cpu"])

    def part(self, name: str) -> float:
        return statistics.median(self.parts[name])

    def as_json(self) -> dict[str, Any]:
        return {
            "distributions": self.environment.distributions,
            "plugins": self.environment.plugins,
            "median_ms": {kind: 1000 * self.median(kind) for kind in KINDS},
            "min_ms": {kind: 1000 * min(self.samples[kind]) for kind in KINDS},
            "ratio_paired_median": {kind: self.ratio(kind) for kind in KINDS},
            "ratio_of_medians": {kind: self.ratio_of_medians(kind) for kind in KINDS},
            "cpu_ratio_paired_median": {kind: self.cpu_ratio(kind) for kind in KINDS},
            "parts_median_ms": {name: 1000 * self.part(name) for name in sorted(self.parts)},
            "samples_ms": {kind: [1000 * s for s in self.samples[kind]] for kind in KINDS},
        }


def _child_environment() -> dict[str, str]:
    # No APERIO_* setting may leak into the host, and bytecode must be written
    # by the warm-up run so that every timed run reads the same .pyc files.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("APERIO_") and name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }


def run_child(request: dict[str, Any], workdir: Path) -> dict[str, float]:
    """Run one start in a fresh interpreter and return its self-reported timings (seconds)."""
    completed = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(request)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=_child_environment(),
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{request['mode']} start failed ({completed.returncode}): {completed.stderr.strip()}")
    timings: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return timings


def _fresh_state(workdir: Path) -> Path:
    return workdir / "state" / uuid.uuid4().hex


def request_for(kind: str, environment: Environment, workdir: Path) -> dict[str, Any]:
    """The child request for one start: cold starts get a state directory that does not exist yet."""
    mode = "baseline" if kind == "baseline" else "host"
    state = environment.warm_state if kind == "warm" else _fresh_state(workdir)
    return {"mode": mode, "root": str(environment.root), "state_dir": str(state), "expect": environment.plugins}


def _check_bytecode(environment: Environment) -> None:
    missing = [
        spec.module
        for spec in environment.specs
        if not any((environment.root / spec.package).glob("__pycache__/plugin.*.pyc"))
    ]
    if missing:
        raise RuntimeError(f"warm-up wrote no .pyc for {', '.join(missing)}")


def prepare(workdir: Path, distributions: int, plugins: int) -> Environment:
    """Write one environment, then warm it: one untimed baseline start and one host start.

    The host start leaves the state directory that the warm starts reuse.
    """
    root = workdir / f"site-{distributions}-{plugins}"
    specs = write_environment(root, f"p{plugins}d{distributions}", distributions, plugins)
    environment = Environment(distributions, plugins, root.resolve(), _fresh_state(workdir), tuple(specs))
    run_child(request_for("baseline", environment, workdir), workdir)
    run_child({**request_for("cold", environment, workdir), "state_dir": str(environment.warm_state)}, workdir)
    _check_bytecode(environment)
    return environment


def _rotated(kinds: Sequence[str], offset: int) -> list[str]:
    offset %= len(kinds)
    return [*kinds[offset:], *kinds[:offset]]


def _record(figures: StartupFigures, kind: str, timings: dict[str, float]) -> None:
    figures.samples[kind].append(timings["total_s"])
    for name, seconds in timings.items():
        if name != "total_s":
            figures.parts[f"{kind}:{name.removesuffix('_s')}"].append(seconds)


def measure_startup(
    environments: Sequence[Environment], rounds: int, workdir: Path, progress: Callable[[str], None]
) -> list[StartupFigures]:
    """Time every kind of start on every environment, `rounds` times, interleaved."""
    figures = [StartupFigures(environment) for environment in environments]
    for round_index in range(rounds):
        progress(f"start-up round {round_index + 1}/{rounds}")
        for position, figure in enumerate(figures):
            for kind in _rotated(KINDS, round_index + position):
                timings = run_child(request_for(kind, figure.environment, workdir), workdir)
                _record(figure, kind, timings)
    return figures


def measure_stages(environment: Environment, runs: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Median seconds per pipeline stage of cold and warm host starts (instrumented, so slightly slower)."""
    samples: dict[str, defaultdict[str, list[float]]] = {"cold": defaultdict(list), "warm": defaultdict(list)}
    for run in range(runs):
        for kind in _rotated(list(samples), run):
            request = {**request_for(kind, environment, workdir), "mode": "stages"}
            for name, seconds in run_child(request, workdir).items():
                samples[kind][name].append(seconds)
    return {
        kind: {name: statistics.median(values) for name, values in timings.items()} for kind, timings in samples.items()
    }


def profile_start(environment: Environment, kind: str, workdir: Path, output: Path) -> str:
    """Profile one host start with cProfile; write the stats to `output`, return the top listing."""
    request = {**request_for(kind, environment, workdir), "mode": "profile", "profile": str(output)}
    completed = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(request)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=_child_environment(),
        check=True,
    )
    return completed.stderr
