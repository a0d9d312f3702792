"""Propagation delay of a `disable` across a fleet of 3 real `aperio serve` hosts (issue 14).

Goal: p99 below 2 s. Each round disables (then, next round, enables) a plugin through host 0's
API and times how long until hosts 1 and 2 answer with the new state, polling their API every
10 ms; the figure of a round is the slower of the two. Run against a real PostgreSQL on 127.0.0.1
(LISTEN/NOTIFY) and against one SQLite file (polling every 0.5 s).

    .venv/bin/python benchmarks/bench_fleet.py [--rounds 40] [--backend postgres|sqlite|both]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from fleet_hosts import Fleet, Served  # the tests' real-process helpers
from plugin_builders import connector_wheel
from postgres_server import find_bindir, start_server

from aperio_plugins.testing import install_wheels

HOSTS = 3
PLUGIN = "acme.bench"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(shared: dict[str, str], directory: Path, rounds: int) -> list[float]:
    fleet = Fleet(directory, shared, [])
    wheel = connector_wheel(directory / "wheels", PLUGIN)
    names = [f"host-{index}" for index in range(HOSTS)]
    for name in names:
        install_wheels([wheel], target=fleet.plugins_dir(name))
    hosts: list[Served] = [fleet.start(name) for name in names]
    token = fleet.token
    assert token is not None
    delays: list[float] = []
    try:
        for round_ in range(rounds):
            action, wanted = ("disable", "disabled") if round_ % 2 == 0 else ("enable", "enabled")
            start = time.perf_counter()
            response = hosts[0].post(f"/api/v1/plugins/{PLUGIN}/{action}", token)
            response.raise_for_status()
            pending = set(hosts[1:])
            while pending:
                pending = {host for host in pending if host.state_of(PLUGIN, token) != wanted}
                if pending:
                    time.sleep(0.01)
                if time.perf_counter() - start > 30:
                    raise RuntimeError(f"round {round_}: no propagation within 30 s")
            delays.append(time.perf_counter() - start)
            time.sleep(0.2)  # decisions spaced apart, as operators make them
    finally:
        for host in hosts:
            host.stop()
    return delays


def report(label: str, delays: list[float]) -> None:
    p50, p99 = _percentile(delays, 0.5), _percentile(delays, 0.99)
    verdict = "meets" if p99 < 2.0 else "MISSES"
    print(
        f"{label:<28} rounds {len(delays):>3}  p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
        f"  max {max(delays) * 1000:7.1f} ms  mean {statistics.fmean(delays) * 1000:7.1f} ms"
        f"  ({verdict} the goal p99 < 2 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        root = Path(scratch)
        if args.backend in ("postgres", "both"):
            bindir = find_bindir()
            if bindir is None:
                print("postgres: skipped, no PostgreSQL server binaries (apt-get install postgresql)")
            else:
                server = start_server(bindir)
                try:
                    url = server.create_database("bench_fleet")
                    delays = measure({"APERIO_STATE_URL": url}, root / "postgres", args.rounds)
                    report("postgres (LISTEN/NOTIFY)", delays)
                finally:
                    server.stop()
                    shutil.rmtree(server.directory, ignore_errors=True)
        if args.backend in ("sqlite", "both"):
            state = root / "sqlite" / "shared-state"
            delays = measure({"APERIO_STATE_DIR": str(state)}, root / "sqlite", args.rounds)
            report("sqlite (polling, 0.5 s)", delays)


if __name__ == "__main__":
    main()
