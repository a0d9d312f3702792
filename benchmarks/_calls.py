"""Hook call benchmark: `host.hook.aperio_finding_raised(...)` against raw pluggy, in one process.

For each plugin count the same plugin distributions are loaded by a guarded
host and an unguarded host, and the unguarded host's plugin modules are
registered directly in a bare `pluggy.PluginManager`. Every round takes one
sample of each configuration, in a rotating order; each sample is a timeit
loop of about `sample_seconds`.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pluggy
from _environment import PluginSpec, write_plugins
from _stats import paired_ratio

import aperio_hookspecs
from aperio_hookspecs import Finding, Resource, Severity
from aperio_hookspecs import specs as api_specs
from aperio_plugins import HostSettings, PluginHost, TrustMode

CONFIGS = ("raw pluggy", "unguarded", "guarded")
HOST_STATEMENT = "host.hook.aperio_finding_raised(finding=finding)"
RAW_STATEMENT = "manager.hook.aperio_finding_raised(finding=finding)"


@dataclass(frozen=True)
class CallFigures:
    """Seconds per hook call, one sample per round, for each configuration at one plugin count."""

    plugins: int
    number: int
    samples: dict[str, list[float]]

    def median(self, config: str) -> float:
        return statistics.median(self.samples[config])

    def ratio(self, config: str) -> float:
        """The median over rounds of this configuration's sample divided by raw pluggy's of the same round."""
        return paired_ratio(self.samples[config], self.samples["raw pluggy"])

    def ratio_of_medians(self, config: str) -> float:
        return self.median(config) / self.median("raw pluggy")

    def ratio_of_mins(self, config: str) -> float:
        return min(self.samples[config]) / min(self.samples["raw pluggy"])

    def as_json(self) -> dict[str, Any]:
        return {
            "plugins": self.plugins,
            "calls_per_sample": self.number,
            "rounds": len(self.samples["raw pluggy"]),
            "median_us": {config: 1e6 * self.median(config) for config in CONFIGS},
            "min_us": {config: 1e6 * min(self.samples[config]) for config in CONFIGS},
            "ratio_paired_median": {config: self.ratio(config) for config in CONFIGS},
            "ratio_of_medians": {config: self.ratio_of_medians(config) for config in CONFIGS},
            "ratio_of_mins": {config: self.ratio_of_mins(config) for config in CONFIGS},
        }


def sample_finding() -> Finding:
    """A realistic finding: a shared link open to anyone, with evidence."""
    return Finding(
        id="box-shared-link-8812731",
        provider="box",
        title="File shared with an open link",
        severity=Severity.HIGH,
        resource=Resource(
            type="file",
            id="8812731",
            name="Q3 board deck.pptx",
            owner="cfo@example.com",
            attributes={"path": "/Finance/Board", "size": 4_812_331},
        ),
        description="Anyone with the link can view and download this file.",
        detected_at=datetime(2026, 11, 22, 9, 30, tzinfo=timezone.utc),
        remediation_action="box.remove_shared_link",
        evidence={"shared_link": {"access": "open", "can_download": True}, "created_by": "cfo@example.com"},
    )


def _host(stack: ExitStack, root: Path, state_dir: Path, guard: bool, expected: int) -> PluginHost:
    settings = HostSettings(plugins_dir=root, state_dir=state_dir, plugin_trust_mode=TrustMode.WARN)
    host = stack.enter_context(PluginHost(settings, search_path=[], guard_calls=guard))
    report = host.load()
    if len(report.enabled) != expected:
        raise RuntimeError(f"host enabled {len(report.enabled)} of {expected} plugins: {report.failed}")
    return host


def _raw_manager(specs: Sequence[PluginSpec]) -> pluggy.PluginManager:
    # The modules the last host imported: the very functions the unguarded host calls.
    manager = pluggy.PluginManager(aperio_hookspecs.PROJECT_NAME)
    manager.add_hookspecs(api_specs)
    for spec in specs:
        manager.register(sys.modules[spec.module], name=spec.plugin_id)
    return manager


def _timers(stack: ExitStack, workdir: Path, count: int, finding: Finding) -> dict[str, timeit.Timer]:
    root = workdir / f"calls-{count}"
    specs = write_plugins(root, f"calls{count}", count)
    guarded = _host(stack, root, workdir / "state" / f"calls-{count}-guarded", True, count)
    unguarded = _host(stack, root, workdir / "state" / f"calls-{count}-unguarded", False, count)
    # Asking for the implementations activates the hosts' plugins (lazy activation); the raw
    # manager then registers the modules the unguarded host imported last.
    found = [len(host.hook.aperio_finding_raised.get_hookimpls()) for host in (guarded, unguarded)]
    manager = _raw_manager(specs)
    found.append(len(manager.hook.aperio_finding_raised.get_hookimpls()))
    if found != [count] * 3:
        raise RuntimeError(f"expected {count} implementations of aperio_finding_raised, found {found}")
    return {
        "raw pluggy": timeit.Timer(RAW_STATEMENT, globals={"manager": manager, "finding": finding}),
        "unguarded": timeit.Timer(HOST_STATEMENT, globals={"host": unguarded, "finding": finding}),
        "guarded": timeit.Timer(HOST_STATEMENT, globals={"host": guarded, "finding": finding}),
    }


def _calls_per_sample(timer: timeit.Timer, sample_seconds: float) -> int:
    per_call = min(timer.repeat(repeat=3, number=1000)) / 1000
    return max(100, int(sample_seconds / per_call))


def _measure_count(workdir: Path, count: int, rounds: int, sample_seconds: float, finding: Finding) -> CallFigures:
    with ExitStack() as stack:
        timers = _timers(stack, workdir, count, finding)
        number = _calls_per_sample(timers["raw pluggy"], sample_seconds)
        samples: dict[str, list[float]] = {config: [] for config in CONFIGS}
        for round_index in range(rounds):
            offset = round_index % len(CONFIGS)
            for config in (*CONFIGS[offset:], *CONFIGS[:offset]):
                samples[config].append(timers[config].timeit(number) / number)
    return CallFigures(count, number, samples)


def measure_calls(
    workdir: Path, counts: Sequence[int], rounds: int, sample_seconds: float, progress: Callable[[str], None]
) -> list[CallFigures]:
    """Return the call figures for each plugin count in `counts`."""
    finding = sample_finding()
    figures = []
    for count in counts:
        progress(f"hook calls with {count} plugin(s)")
        figures.append(_measure_count(workdir, count, rounds, sample_seconds, finding))
    return figures
