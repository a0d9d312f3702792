"""The benchmark's goals and its plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _calls import CallFigures
from _startup import StartupFigures

GOAL_CALL_PLUGINS = 5
GOAL_STARTUP_SIZE = (1000, 50)


@dataclass(frozen=True)
class Goal:
    """One target: a measured ratio against the largest ratio that meets it."""

    name: str
    measured: float
    target: float

    @property
    def met(self) -> bool:
        return self.measured <= self.target

    def verdict(self) -> str:
        if self.met:
            return "met"
        return f"missed by {100 * (self.measured / self.target - 1):.0f}%"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "target": self.target, "met": self.met}


def goals(calls: Sequence[CallFigures], startup: Sequence[StartupFigures]) -> list[Goal]:
    """The four goals, for the configurations that were measured."""
    result = []
    for call in calls:
        if call.plugins == GOAL_CALL_PLUGINS:
            result.append(
                Goal("guarded hook call, 5 plugins", call.ratio("guarded"), 1.1)
            )  # raised from 1.2 (issue 11)
            result.append(Goal("unguarded hook call, 5 plugins", call.ratio("unguarded"), 1.05))
    for start in startup:
        if (start.environment.distributions, start.environment.plugins) == GOAL_STARTUP_SIZE:
            result.append(Goal("cold host start, 50 plugins / 1,000 dists", start.ratio("cold"), 1.3))
            result.append(Goal("warm host start, 50 plugins / 1,000 dists", start.ratio("warm"), 0.8))
    return result


def calls_table(calls: Sequence[CallFigures]) -> list[str]:
    rounds = len(calls[0].samples["raw pluggy"]) if calls else 0
    lines = [
        f"Hook call host.hook.aperio_finding_raised(finding=...), {rounds} interleaved rounds:",
        "time = median per call; ratio = median of the per-round ratios to raw pluggy",
        f"{'plugins':>7}  {'raw pluggy':>10}  {'unguarded':>16}  {'guarded':>16}",
    ]
    for figure in calls:
        cells = [
            f"{1e6 * figure.median(config):7.2f} µs {figure.ratio(config):5.2f}x" for config in ("unguarded", "guarded")
        ]
        lines.append(
            f"{figure.plugins:>7}  {1e6 * figure.median('raw pluggy'):7.2f} µs  {cells[0]:>16}  {cells[1]:>16}"
        )
    return lines


def startup_table(startup: Sequence[StartupFigures]) -> list[str]:
    rounds = len(startup[0].samples["baseline"]) if startup else 0
    lines = [
        f"Start-up, each in a fresh interpreter with the libraries imported first, {rounds} interleaved rounds:",
        "time = median; ratio = median of the per-round ratios to the baseline",
        f"{'plugins / dists':>15}  {'baseline':>9}  {'cold host':>16}  {'warm host':>16}  {'CPU-time ratio':>14}"
        f"  {'lib import base/host':>21}",
    ]
    for figure in startup:
        cells = [f"{1000 * figure.median(kind):7.1f} ms {figure.ratio(kind):5.2f}x" for kind in ("cold", "warm")]
        cpu = f"{figure.cpu_ratio('cold'):.2f}x {figure.cpu_ratio('warm'):.2f}x"
        imports = f"{1000 * figure.part('baseline:libraries'):.0f} / {1000 * figure.part('cold:libraries'):.0f} ms"
        lines.append(
            f"{figure.environment.label:>15}  {1000 * figure.median('baseline'):6.1f} ms"
            f"  {cells[0]:>16}  {cells[1]:>16}  {cpu:>14}  {imports:>21}"
        )
    lines.append("baseline = entry_points(group=...) + import; parts (median ms):")
    for figure in startup:
        parts = ", ".join(
            f"{name.split(':', 1)[1]} {1000 * figure.part(name):.1f}"
            for name in ("baseline:discover", "baseline:import", "baseline:register", "cold:construct", "cold:load")
        )
        lines.append(f"  {figure.environment.label:>13}: {parts}")
    return lines


# (stage key reported by the child, label, nested): pipeline order; nested rows are part of the row above.
_STAGE_ROWS = (
    ("construct_s", "HostSettings + PluginHost()", False),
    ("stage:state store open", "SQLite state store open", True),
    ("stage:discovery cache read", "discovery cache read", True),
    ("stage:trust store load", "trust store load", True),
    ("stage:discover", "discover (scan, entry_points.txt)", False),
    ("stage:state store read", "state store read (enable flags)", False),
    ("stage:search roots", "search roots (resolve, per plugin)", False),
    ("stage:inspect", "inspect", False),
    ("stage:inspect: METADATA + Requires-Dist", "METADATA + Requires-Dist", True),
    ("stage:inspect: manifest TOML + pydantic", "manifest: TOML + pydantic", True),
    ("stage:verify", "verify", False),
    ("stage:admit", "admit (API compatibility)", False),
    ("stage:verified importer", "verified importer install", False),
    ("stage:import", "import (loader)", False),
    ("stage:prepare (guards)", "prepare (hookimpls, guards)", False),
    ("stage:register (pluggy + catalog)", "register (pluggy, catalog)", False),
    ("stage:audit events", "audit events (structlog)", False),
    ("stage:discovery cache save", "discovery cache save", False),
)
_OTHER = "other (bookkeeping in load())"


def stage_rows(stages: dict[str, float]) -> dict[str, tuple[float, bool]]:
    """Seconds per stage label in pipeline order, then the unattributed rest of `load()`."""
    rows = {label: (stages[key], nested) for key, label, nested in _STAGE_ROWS if key in stages}
    attributed = sum(stages.get(key, 0.0) for key, _, nested in _STAGE_ROWS if not nested and key != "construct_s")
    rows[_OTHER] = (stages["load_s"] - attributed, False)
    return rows


def stages_table(stages: dict[str, dict[str, float]], label: str) -> list[str]:
    """Cold and warm stage timings side by side, each with its share of that start."""
    kinds = [kind for kind in ("cold", "warm") if kind in stages]
    rows = {kind: stage_rows(stages[kind]) for kind in kinds}
    header = "".join(f"  {kind + ' ' + format(1000 * stages[kind]['total_s'], '.1f') + ' ms':>22}" for kind in kinds)
    lines = [f"Host start by stage, {label}: instrumented, median ms and share of that start", f"{'':<46}{header}"]
    labels = list(dict.fromkeys(name for kind in kinds for name in rows[kind]))
    for name in labels:
        nested = any(rows[kind].get(name, (0.0, False))[1] for kind in kinds)
        cells = ""
        for kind in kinds:
            seconds = rows[kind].get(name, (0.0, False))[0]
            cells += f"  {1000 * seconds:11.2f} {100 * seconds / stages[kind]['total_s']:6.1f}%  "
        lines.append(f"  {'  of which ' + name if nested else name:<44}{cells}".rstrip())
    return lines


def goals_table(result: Sequence[Goal]) -> list[str]:
    lines = ["Goals (ratios; reported, not asserted)"]
    for goal in result:
        lines.append(f"  {goal.name:<44} {goal.measured:5.2f}x  target ≤ {goal.target:.2f}x  {goal.verdict()}")
    return lines
