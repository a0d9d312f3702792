"""One timed start-up, run in a fresh interpreter: `python _startup_child.py '<request json>'`.

The request names a mode (`baseline`, `host`, `stages` or `profile`), the
environment directory, a state directory and the number of plugins expected.
The child prints one JSON object with its own timings (seconds of wall time,
and `cpu_s`, the process's CPU time over the same span) on stdout;
anything wrong (a plugin missing or refused) goes to stderr with exit code 1.

Libraries are imported before the clock starts, and their import time is
reported separately, so that both sides are timed on the same work: find the
plugins' entry points and import the plugin modules (the host also inspects,
admits and registers them).
"""

from __future__ import annotations

import cProfile
import functools
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pstats
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

GROUP = "aperio.plugins"
BASE_LIBRARIES = ("pluggy", "aperio_hookspecs")
HOST_LIBRARIES = (*BASE_LIBRARIES, "aperio_plugins")


def import_libraries(names: Sequence[str]) -> float:
    """Import `names` and return how long it took."""
    start = perf_counter()
    for name in names:
        importlib.import_module(name)
    return perf_counter() - start


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(1)


def plugin_entry_points(root: Path) -> list[importlib.metadata.EntryPoint]:
    """`importlib.metadata.entry_points(group=...)`, restricted to `root`."""
    saved = sys.path[:]
    sys.path[:] = [str(root)]
    try:
        return list(importlib.metadata.entry_points(group=GROUP))
    finally:
        sys.path[:] = saved


def run_baseline(request: dict[str, Any]) -> dict[str, float]:
    """Bare entry points plus importing the plugin modules; registration with pluggy timed on its own."""
    libraries = import_libraries(BASE_LIBRARIES)
    import pluggy

    import aperio_hookspecs
    from aperio_hookspecs import specs as api_specs

    root = Path(request["root"])
    start, cpu_start = perf_counter(), process_time()
    entry_points = plugin_entry_points(root)
    found = perf_counter()
    sys.path.append(str(root))
    plugins = [(entry_point.name, entry_point.load()) for entry_point in entry_points]
    imported, cpu_imported = perf_counter(), process_time()
    manager = pluggy.PluginManager(aperio_hookspecs.PROJECT_NAME)
    manager.add_hookspecs(api_specs)
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    registered = perf_counter()
    if len(plugins) != request["expect"]:
        fail(f"baseline found {len(plugins)} plugins, expected {request['expect']}")
    return {
        "libraries_s": libraries,
        "discover_s": found - start,
        "import_s": imported - found,
        "register_s": registered - imported,
        "total_s": imported - start,
        "cpu_s": cpu_imported - cpu_start,
    }


def start_host(request: dict[str, Any], audit_logger: Any = None) -> dict[str, float]:
    """Construct a `PluginHost` on the environment and load it; return the timings."""
    from aperio_plugins import HostSettings, PluginHost, TrustMode

    root, state_dir = Path(request["root"]), Path(request["state_dir"])
    start, cpu_start = perf_counter(), process_time()
    # bench_host.py --activation eager measures the host that imports every plugin at start.
    activation = os.environ.get("BENCH_ACTIVATION", "lazy")
    settings = HostSettings(
        plugins_dir=root, state_dir=state_dir, plugin_trust_mode=TrustMode.WARN, plugin_activation=activation
    )
    host = PluginHost(settings, search_path=[], audit_logger=audit_logger)
    constructed = perf_counter()
    report = host.load()
    loaded, cpu_loaded = perf_counter(), process_time()
    host.close()
    if len(report.enabled) != request["expect"] or report.failed:
        errors = "; ".join(f"{info.id}: {info.error}" for info in report.failed)
        fail(f"host enabled {len(report.enabled)} plugins, expected {request['expect']}; failed: {errors}")
    return {
        "construct_s": constructed - start,
        "load_s": loaded - constructed,
        "total_s": loaded - start,
        "cpu_s": cpu_loaded - cpu_start,
    }


def run_host(request: dict[str, Any]) -> dict[str, float]:
    libraries = import_libraries(HOST_LIBRARIES)
    return {"libraries_s": libraries, **start_host(request)}


class StageClock:
    """Accumulates the wall time spent inside wrapped functions, by stage name."""

    def __init__(self) -> None:
        self.totals: defaultdict[str, float] = defaultdict(float)

    def timed(self, function: Callable[..., Any], stage: str) -> Callable[..., Any]:
        totals = self.totals

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[stage] += perf_counter() - start

        return wrapper

    def wrap(self, owner: object, attribute: str, stage: str) -> None:
        """Time `owner.attribute` as `stage`; a function the host does not have (yet) is skipped."""
        function = getattr(owner, attribute, None)
        if function is not None:
            setattr(owner, attribute, self.timed(function, stage))


class TimedLogger:
    """An audit logger that times the default one's calls."""

    def __init__(self, logger: Any, clock: StageClock) -> None:
        self.info = clock.timed(logger.info, "audit events")
        self.warning = clock.timed(logger.warning, "audit events")
        self.error = clock.timed(logger.error, "audit events")


def instrument(clock: StageClock) -> None:
    """Wrap each pipeline stage where the host and the stage modules look it up (benchmark only)."""
    from aperio_plugins import _host, _state, importing
    from aperio_plugins.pipeline import admit, discover, inspect, load, register, verify

    # Names of successive versions of the host and its stages; a name the measured code lacks is skipped.
    for module, attribute, stage in (
        (_host, "load_trust_store", "trust store load"),
        (discover, "discover", "discover"),
        (discover, "search_roots", "search roots"),
        (inspect, "inspect_candidate", "inspect"),
        (verify, "verify_installed", "verify"),
        (admit, "admit", "admit"),
        (load, "install_importer", "verified importer"),
        (importing, "install_importer", "verified importer"),  # looked up there since it loads on first use
        (load, "import_plugin", "import"),
    ):
        clock.wrap(module, attribute, stage)
    clock.wrap(inspect, "read_api_requirement", "inspect: METADATA + Requires-Dist")
    clock.wrap(inspect, "read_manifest", "inspect: manifest TOML + pydantic")
    clock.wrap(register, "prepare", "prepare (guards)")
    clock.wrap(register, "register", "register (pluggy + catalog)")
    clock.wrap(_state.SQLiteStateStore, "in_directory", "state store open")
    clock.wrap(_state.SQLiteStateStore, "enabled_flags", "state store read")
    if importlib.util.find_spec("aperio_plugins._cache") is not None:
        from aperio_plugins import _cache

        cache_class = getattr(_cache, "DiscoveryCache", None)
        clock.wrap(cache_class, "_read", "discovery cache read")
        clock.wrap(cache_class, "save", "discovery cache save")


def run_stages(request: dict[str, Any]) -> dict[str, float]:
    """A host start with each stage timed; returns the stage totals and the whole."""
    import_libraries(HOST_LIBRARIES)
    from aperio_plugins._audit import default_audit_logger

    clock = StageClock()
    instrument(clock)
    timings = start_host(request, audit_logger=TimedLogger(default_audit_logger(), clock))
    return {**timings, **{f"stage:{stage}": seconds for stage, seconds in clock.totals.items()}}


def run_profile(request: dict[str, Any]) -> dict[str, float]:
    """A host start under cProfile; writes the stats to `request['profile']`, prints the top to stderr."""
    import_libraries(HOST_LIBRARIES)
    profiler = cProfile.Profile()
    profiler.enable()
    timings = start_host(request)
    profiler.disable()
    profiler.dump_stats(request["profile"])
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue(), file=sys.stderr)
    return timings


MODES: dict[str, Callable[[dict[str, Any]], dict[str, float]]] = {
    "baseline": run_baseline,
    "host": run_host,
    "stages": run_stages,
    "profile": run_profile,
}


def main(argv: Sequence[str]) -> None:
    request = json.loads(argv[1])
    print(json.dumps(MODES[request["mode"]](request)))


if __name__ == "__main__":
    main(sys.argv)
