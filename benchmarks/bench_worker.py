"""Benchmark of a plugin call through a worker process, as ratios to in-process and raw transports.

    python benchmarks/bench_worker.py [--quick] [--calls N] [--cpu N] [--json OUT]

Measures, in one run, twice: first with this process, the worker and every
echo process pinned to one CPU (`os.sched_setaffinity`, every thread), then
unpinned. Within each, the variants are interleaved in rounds so that the
drift of a shared machine hits every column alike:

1. a trivial isolated call: a hook call through the worker that carries a
   `Finding` and returns nothing;
2. a connector's `sync` in process (the plugin's object, the host's context)
   and through a worker (`WorkerPlugin`'s proxy), with a realistic request and
   result of a few hundred bytes each; and the same `sync` as a caller makes
   it, `host.run(...)`, on a host that runs the plugin in process and on one
   that runs it in a worker (both validate the result once); and, as the floor
   under the method-alone ratio, a bare Python worker: a child that does only
   a `sync`'s required work (rebuild the request, call the plugin, serialize
   the result; the host serializes the request and validates the result),
   with no call ids, context, deadline or supervision;
3. echoes of the same requests: raw bytes over a pipe (no codec: the floor),
   `multiprocessing.Pipe` (the envelope pickled, and its dict), gRPC unary over
   a Unix socket (go-plugin's design; skipped with a note without grpcio);
4. the codec choice: a round trip that carries the envelope and re-validates it
   on both ends, as msgpack frames (this protocol) and as JSON lines;
5. worker start time (spawn to ready), against a bare interpreter, one that
   imports `aperio_hookspecs` and the plugin, and `import aperio_plugins`.

Figures are reported against the goals of issue #10, never asserted.

    python benchmarks/bench_worker.py --spin-comparison 0,30,50,100 [--spin-rounds N]

compares spin budgets (`APERIO_WORKER_SPIN_US`, one worker each) on the trivial
call only, pinned, together, with the worker held on the other CPU, and after a
split; `--spin-us US` sets the budget of a whole run (0: never spin).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import multiprocessing
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from aperio_hookspecs import Finding, Resource, SyncRequest, SyncResult
from aperio_plugins import HostSettings, Isolation, PluginHost, SandboxMode, TrustMode
from aperio_plugins._context import new_context
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.testing import PluginWheel, install_wheels
from aperio_plugins.worker import WorkerPlugin, WorkerSettings
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker._codec import envelope
from aperio_plugins.worker.supervise._placement import Placement
from aperio_plugins.worker.supervise._sandbox import Containment
from aperio_plugins.worker.supervise._sandbox import plan as sandbox_plan

PLUGIN_ID = "bench.worker"

PLUGIN_SOURCE = """
import datetime
from aperio_hookspecs import Actor, Connector, Event, Resource, SyncResult, hookimpl

class Bench(Connector):
    name = "bench"
    provider = "bench"

    def sync(self, context, request):
        event = Event(
            id="evt-" + request.cursor[-6:], provider="box", type="file.shared",
            occurred_at=datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc),
            actor=Actor(id="u-17", name="Ada Lovelace", login="ada@acme.example"),
            resource=Resource(type="file", id="f-99", name="q3-forecast.xlsx", owner="u-3"),
            ip_address="203.0.113.7",
        )
        return SyncResult(connector="bench", events=(event,), next_cursor=request.cursor + "+1", has_more=True)

@hookimpl
def aperio_register_connectors(register):
    register(Bench())

@hookimpl
def aperio_finding_raised(finding):
    return None
"""

REQUEST = SyncRequest(
    connector="bench",
    cursor="2026-11-22T10:00:00Z/page-000042",
    config={
        "tenant": "acme-corp",
        "base_url": "https://api.box.example/2.0",
        "page_size": 100,
        "include": ["logins", "shares", "admin_events"],
        "enterprise_id": "884122",
    },
    max_items=500,
)
FINDING = Finding(
    id="f-1",
    provider="box",
    title="Public link on a confidential file",
    severity="high",
    resource=Resource(type="file", id="f-99"),
    detected_at=datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc),
)

RAW_ECHO = """
import os, sys
buffer = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buffer += chunk
    while len(buffer) >= 4:
        size = int.from_bytes(buffer[:4], "big")
        if len(buffer) < 4 + size:
            break
        os.write(1, buffer[: 4 + size])
        buffer = buffer[4 + size :]
"""

MSGPACK_ECHO = """
import os
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker._codec import envelope
decoder = protocol.FrameDecoder(1 << 24)
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    for message in decoder.feed(chunk):
        request = envelope(message[4])
        protocol.write_frame(1, protocol.pack(["result", message[1], request]))
"""

BARE_WORKER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from aperio_bench_plugin import Bench
from aperio_plugins.worker.serve._rebuild import rebuild
from aperio_plugins.worker._codec import EnvelopeData
connector, buffer = Bench(), b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buffer += chunk
    while len(buffer) >= 4 and len(buffer) >= 4 + (size := int.from_bytes(buffer[:4], "big")):
        request = rebuild(EnvelopeData("sync_request", buffer[4 : 4 + size]))
        buffer = buffer[4 + size :]
        result = connector.sync(None, request)
        data = type(result).__pydantic_serializer__.to_json(result)
        os.write(1, len(data).to_bytes(4, "big") + data)
"""

JSON_ECHO = """
import json, sys
from aperio_hookspecs import SyncRequest
for line in sys.stdin.buffer:
    message = json.loads(line)
    request = SyncRequest.model_validate(message[4])
    sys.stdout.write(json.dumps(["result", message[1], request.model_dump(mode="json")]) + "\\n")
    sys.stdout.flush()
"""

GRPC_SERVER = """
import sys
from concurrent import futures
import grpc
handler = grpc.method_handlers_generic_handler(
    "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


def _silent_logger() -> Any:
    def drop(logger: Any, method: str, event: dict[str, Any]) -> Any:
        raise structlog.DropEvent

    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[drop])


def _child(source: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += os.read(fd, 65536)
    return data


def descendants(root: int) -> list[int]:
    """Return `root` and the pids of all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue  # exited meanwhile
        parent = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(stat.split("/")[2]))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pin(cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of this process and of all its descendants."""
    for pid in descendants(os.getpid()):
        for task in glob.glob(f"/proc/{pid}/task/*"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.rsplit("/", 1)[1]), cpus)


def _pipe_echo(connection: Any) -> None:
    while True:
        try:
            connection.send(connection.recv())
        except EOFError:
            return


class Bench:
    """Everything measured, set up once; each variant is a function that makes one round trip."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: list[subprocess.Popen[Any]] = []
        self.cleanups: list[Callable[[], None]] = []
        wheel = PluginWheel(
            # Not "bench_worker": that is this script's own module name, first on sys.path.
            "bench-plugin",
            plugins={PLUGIN_ID: "aperio_bench_plugin"},
            files={"aperio_bench_plugin/__init__.py": PLUGIN_SOURCE},
        )
        install_wheels([wheel.build(root / "wheels")], target=root / "plugins")
        self.settings = HostSettings(
            plugins_dir=root / "plugins",
            state_dir=root / "state",
            plugin_trusted_keys_dir=root / "keys",
            plugin_trusted_identities=root / "ids.toml",
            plugin_trust_mode=TrustMode.WARN,
        )
        store = SQLiteStateStore.in_directory(root / "host-state")
        self.cleanups.append(store.close)
        self.context = new_context(
            plugin_id=PLUGIN_ID, scopes=(), store=store, provider=None, base_logger=_silent_logger(), timeout=3600
        )
        self.payload = REQUEST.model_dump_json().encode()
        self.variants: dict[str, Callable[[], Any]] = {}
        self.notes: list[str] = []
        self.hints: Callable[[], int] = lambda: 0
        self.spins: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.interpreter: Callable[[], int | None] = lambda: None

    def close(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()
        for cleanup in reversed(self.cleanups):
            cleanup()

    # -- the calls ---------------------------------------------------------------------

    def in_process(self) -> None:
        host = PluginHost(self.settings, search_path=[], audit_logger=_silent_logger(), discovery_cache=False)
        report = host.load()
        self.cleanups.append(host.close)
        if not report.enabled:
            raise SystemExit(f"the benchmark plugin did not load: {[info.error for info in report.plugins]}")
        connector = host.connectors["bench"].implementation
        self.variants[IN_PROCESS] = lambda: connector.sync(self.context, REQUEST)
        # What a caller of the host does: a context per call, the breaker, and the result validated.
        self.variants[IN_PROCESS_RUN] = lambda: host.run(PLUGIN_ID, REQUEST)

    def worker(self) -> None:
        plugin = WorkerPlugin.start(
            PLUGIN_ID,
            settings=self.settings,
            search_path=[],
            options=WorkerSettings(call_timeout=3600),
            audit_logger=_silent_logger(),
            logger=_silent_logger(),
        )
        self.cleanups.append(plugin.stop)

        def hints() -> int:
            # The placement hints given to this worker so far (docs/worker-protocol.md): private, read for the report.
            placement = plugin._aperio_lifecycle.acquire(time.monotonic() + 10).placement
            return placement.hints if placement is not None else 0

        self.hints = hints

        def spins() -> tuple[int, int]:
            # Host-side waits that spun, and those whose answer came within the spin (`_spin.py`).
            board = plugin._aperio_lifecycle.acquire(time.monotonic() + 10).board
            return (board.spins, board.caught) if board is not None else (0, 0)

        self.spins = spins
        self.interpreter = lambda: plugin._aperio_lifecycle.acquire(time.monotonic() + 10)._interpreter_pid()
        registered: list[Any] = []
        plugin.aperio_register_connectors(registered.append)  # type: ignore[attr-defined]
        connector = registered[0]
        self.variants[WORKER] = lambda: connector.sync(self.context, REQUEST)
        self.variants[TRIVIAL] = lambda: plugin.aperio_finding_raised(FINDING)  # type: ignore[attr-defined]
        isolated = PluginHost(
            self.settings.model_copy(update={"plugin_isolation": Isolation.PROCESS}),
            search_path=[],
            audit_logger=_silent_logger(),
            discovery_cache=False,
        )
        report = isolated.load()
        self.cleanups.append(isolated.close)
        if not report.enabled:
            raise SystemExit(f"the benchmark plugin did not start in a worker: {[i.error for i in report.plugins]}")
        self.variants[WORKER_RUN] = lambda: isolated.run(PLUGIN_ID, REQUEST)

    # -- the references ------------------------------------------------------------------

    def raw_echo(self) -> None:
        child = _child(RAW_ECHO)
        self.children.append(child)
        write, read = child.stdin.fileno(), child.stdout.fileno()  # type: ignore[union-attr]
        frame = struct.pack(">I", len(self.payload)) + self.payload

        def call() -> bytes:
            os.write(write, frame)
            return _read_exactly(read, len(frame))

        self.variants["raw bytes pipe echo"] = call

    def multiprocessing_echo(self) -> None:
        parent, child_end = multiprocessing.Pipe()
        process = multiprocessing.get_context("fork").Process(target=_pipe_echo, args=(child_end,), daemon=True)
        process.start()
        self.cleanups.append(process.kill)
        as_dict = REQUEST.model_dump(mode="json")
        # The trivial call's request as the worker protocol sends it: kind, hook, arguments, timeout.
        hook_request = ("hook", "aperio_finding_raised", {"finding": FINDING}, 30.0)
        hook_as_dict = ("hook", "aperio_finding_raised", {"finding": FINDING.model_dump(mode="json")}, 30.0)

        def echo(value: Any) -> Any:
            parent.send(value)
            return parent.recv()

        self.variants["mp.Pipe echo: envelope"] = lambda: echo(REQUEST)
        self.variants["mp.Pipe echo: dict"] = lambda: echo(as_dict)
        self.variants["mp.Pipe echo: trivial request"] = lambda: echo(hook_request)
        self.variants["mp.Pipe echo: trivial, as dict"] = lambda: echo(hook_as_dict)

    def codecs(self) -> None:
        packed = _child(MSGPACK_ECHO)
        lines = _child(JSON_ECHO)
        self.children += [packed, lines]
        decoder = protocol.FrameDecoder(1 << 24)
        write, read = packed.stdin.fileno(), packed.stdout.fileno()  # type: ignore[union-attr]

        def msgpack_round_trip() -> Any:
            protocol.write_frame(write, protocol.pack(["invoke", 1, "connector", "bench", REQUEST, 30.0, "i", []]))
            messages: list[Any] = []
            while not messages:
                messages = decoder.feed(os.read(read, 65536))
            return envelope(messages[0][2])

        pending = bytearray()
        json_write, json_read = lines.stdin.fileno(), lines.stdout.fileno()  # type: ignore[union-attr]

        def json_round_trip() -> Any:
            # os.read, not readline(): an unbuffered pipe's readline reads one byte per system call.
            message = ["invoke", 1, "connector", "bench", REQUEST.model_dump(mode="json"), 30.0, "i", []]
            os.write(json_write, json.dumps(message).encode() + b"\n")
            while b"\n" not in pending:
                pending.extend(os.read(json_read, 65536))
            end = pending.index(b"\n") + 1
            answer = json.loads(bytes(pending[:end]))
            del pending[:end]
            return SyncRequest.model_validate(answer[2])

        self.variants["codec: msgpack frames"] = msgpack_round_trip
        self.variants["codec: JSON lines"] = json_round_trip

    def bare_worker(self) -> None:
        """The thinnest Python worker that does a sync's required work, and nothing else: the request
        serialized by the host and rebuilt in the child without validation (as the worker does), the
        plugin's `sync`, its result serialized by the child and validated by the host. No call ids,
        context, deadline, supervision or codec: the floor of any design that runs the plugin in
        another Python process, so that `worker: sync` can be read against it."""
        child = subprocess.Popen(
            [sys.executable, "-c", BARE_WORKER, str(self.root / "plugins")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self.children.append(child)
        write, read = child.stdin.fileno(), child.stdout.fileno()  # type: ignore[union-attr]
        serialize = SyncRequest.__pydantic_serializer__.to_json
        pending = bytearray()

        def call() -> SyncResult:
            data = serialize(REQUEST)  # each call, like the worker's: a caller's request is new every time
            os.write(write, len(data).to_bytes(4, "big") + data)
            while len(pending) < 4 or len(pending) < 4 + int.from_bytes(pending[:4], "big"):
                pending.extend(os.read(read, 65536))
            size = int.from_bytes(pending[:4], "big")
            answer = bytes(pending[4 : 4 + size])
            del pending[: 4 + size]
            return SyncResult.model_validate_json(answer)

        self.variants[BARE] = call

    def grpc_echo(self) -> None:
        try:
            import grpc  # type: ignore[import-untyped]
        except ImportError:
            self.notes.append("gRPC column skipped: grpcio is not installed (pip install grpcio)")
            return
        socket = str(self.root / "grpc.sock")
        server = subprocess.Popen([sys.executable, "-c", GRPC_SERVER, socket], stdout=subprocess.PIPE, text=True)
        self.children.append(server)
        server.stdout.readline()  # type: ignore[union-attr]
        channel = grpc.insecure_channel("unix:" + socket)
        self.cleanups.append(channel.close)
        stub = channel.unary_unary("/bench.Echo/Echo")
        self.variants["gRPC unary echo (unix socket)"] = lambda: stub(self.payload)


# -- measuring ---------------------------------------------------------------------------


def measure(variants: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, list[list[float]]]:
    """Return, per variant, the per-call times (seconds) of each round; the order rotates every round."""
    per_round = max(1, calls // rounds)
    for function in variants.values():
        for _ in range(min(200, per_round)):
            function()
    names = list(variants)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            function, times = variants[name], []
            for _ in range(per_round):
                start = clock()
                function()
                times.append((clock() - start) / 1e9)
            samples[name].append(times)
    return samples


def split_recovery(bench: Bench, repetitions: int, calls: int = 1000, window: int = 50) -> dict[str, Any]:
    """Hold the trivial call's worker on a CPU its caller is not on for 20 calls, set it free, then
    time `calls` calls; per repetition, the median of each `window` calls (seconds). Unpinned only."""
    interpreter, everything = bench.interpreter(), os.sched_getaffinity(0)
    if interpreter is None or len(everything) < 2:
        return {"skipped": "needs the worker's interpreter pid and at least two CPUs"}
    call, clock, runs = bench.variants[TRIVIAL], time.perf_counter_ns, []
    pin(everything)
    for _ in range(repetitions):
        here = int(Path("/proc/thread-self/stat").read_bytes().rsplit(b")", 1)[1].split()[36])
        os.sched_setaffinity(interpreter, everything - {here})
        for _ in range(20):
            call()
        os.sched_setaffinity(interpreter, everything)
        times = []
        for _ in range(calls):
            start = clock()
            call()
            times.append((clock() - start) / 1e9)
        runs.append([statistics.median(times[i : i + window]) for i in range(0, calls, window)])
        time.sleep(0.05)
    return {"windows": runs, "window": window}


def report_recovery(recovery: dict[str, Any], floor: float) -> list[str]:
    if "skipped" in recovery:
        return [f"Split recovery skipped: {recovery['skipped']}"]
    runs, slow = recovery["windows"], 1.5 * floor  # apart, a call costs 2 to 2.5x; beside its caller, 1x
    flags = ["".join("x" if median >= slow else "." for median in run) for run in runs]
    lines = [f"Split recovery: windows of {recovery['window']} calls after the worker was held on the other CPU"]
    lines += [f"  {' '.join(f'{median * 1e6:5.0f}' for median in run)} µs" for run in runs]
    count = sum(flag.count("x") for flag in flags)
    longest = max(len(streak) for flag in flags for streak in flag.split("."))
    total = sum(len(flag) for flag in flags)
    lines.append(
        f"  windows at 1.5x the pinned median ({slow * 1e6:.0f} µs) or more: {count} of {total}; longest run {longest}"
    )
    return lines


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(samples: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    figures = {}
    for name, rounds in samples.items():
        flat = [value for times in rounds for value in times]
        median = statistics.median(flat)
        figures[name] = {"median": median, "p99": percentile(flat, 0.99), "calls": len(flat)}
        figures[name]["p99_over_median"] = figures[name]["p99"] / median
    return figures


def paired_ratio(samples: dict[str, list[list[float]]], name: str, reference: str) -> float:
    """Median over rounds of (median of `name` in that round / median of `reference` in that round)."""
    pairs = zip(samples[name], samples[reference], strict=True)
    return statistics.median(statistics.median(ours) / statistics.median(theirs) for ours, theirs in pairs)


SPIN_MODES = ("pinned", "together", "held apart", "split")


def _spun(process: Any) -> tuple[int, int]:
    board = process.board
    return (board.spins, board.caught) if board is not None else (0, 0)


def _this_cpu() -> int:
    return int(Path("/proc/thread-self/stat").read_bytes().rsplit(b")", 1)[1].split()[36])


def spin_comparison(settings: HostSettings, budgets: list[int], rounds: int, calls: int = 500) -> list[str]:
    """The trivial call through one worker per spin budget (`APERIO_WORKER_SPIN_US`), interleaved, in
    four placements: all pinned to one CPU; unpinned ("together": where the scheduler puts them);
    the worker held on the CPU its caller is not on ("held apart"); held there for 20 calls, then
    set free ("split"). Returns report lines: median of the rounds' medians, range, median p99."""
    every = set(os.sched_getaffinity(0))
    if len(every) < 2:
        return ["Spin comparison skipped: needs at least two CPUs"]
    workers: dict[int, tuple[WorkerPlugin, Any]] = {}
    try:
        for budget in budgets:
            plugin = WorkerPlugin.start(
                PLUGIN_ID,
                settings=settings.model_copy(update={"worker_spin_us": budget}),
                search_path=[],
                options=WorkerSettings(call_timeout=3600),
                audit_logger=_silent_logger(),
                logger=_silent_logger(),
            )
            workers[budget] = (plugin, plugin._aperio_lifecycle.acquire(time.monotonic() + 10))
        lines = [f"Spin comparison: trivial call, {rounds} rounds of {calls} calls per budget, interleaved"]
        for mode in SPIN_MODES:
            pin({min(every)} if mode == "pinned" else every)
            medians: dict[int, list[float]] = {budget: [] for budget in budgets}
            p99s: dict[int, list[float]] = {budget: [] for budget in budgets}
            spins = {budget: _spun(process) for budget, (_, process) in workers.items()}
            for round_number in range(rounds):
                order = list(workers.items())
                for budget, (plugin, process) in order if round_number % 2 else order[::-1]:
                    interpreter = process._interpreter_pid()
                    if mode in ("held apart", "split"):
                        os.sched_setaffinity(interpreter, every - {_this_cpu()})
                        if mode == "split":
                            for _ in range(20):
                                plugin.aperio_finding_raised(FINDING)  # type: ignore[attr-defined]
                            os.sched_setaffinity(interpreter, every)
                    times = []
                    for _ in range(calls):
                        start = time.perf_counter_ns()
                        plugin.aperio_finding_raised(FINDING)  # type: ignore[attr-defined]
                        times.append((time.perf_counter_ns() - start) / 1e3)
                    os.sched_setaffinity(interpreter, every if mode != "pinned" else {min(every)})
                    medians[budget].append(statistics.median(times))
                    p99s[budget].append(percentile(times, 0.99))
            for budget, (_, process) in workers.items():
                spun, caught = (now - before for now, before in zip(_spun(process), spins[budget], strict=True))
                values = medians[budget]
                lines.append(
                    f"  {mode:11} spin {budget:4} µs: {statistics.median(values):6.1f} µs"
                    f" [{min(values):.1f}-{max(values):.1f}], p99 {statistics.median(p99s[budget]):7.1f} µs,"
                    f" host waits that spun {spun} of {rounds * calls} (answered within the spin {caught})"
                )
        return lines
    finally:
        pin(every)
        for plugin, _ in workers.values():
            plugin.stop()


def start_times(settings: HostSettings, runs: int) -> dict[str, float]:
    """Median seconds: bare interpreters, and a worker from spawn to ready (sandbox, if any, included)."""
    plugins = str(settings.plugins_dir)
    # The worker's interpreter flags: -P (3.11+) keeps the working directory off sys.path.
    flags = ["-P"] if sys.version_info >= (3, 11) else []

    def interpreter(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *flags, "-c", code], check=True)
        return time.perf_counter() - start

    def worker(mode: SandboxMode) -> float:
        start = time.perf_counter()
        plugin = WorkerPlugin.start(
            PLUGIN_ID,
            settings=settings.model_copy(update={"plugin_sandbox": mode}),
            search_path=[],
            audit_logger=_silent_logger(),
            logger=_silent_logger(),
        )
        elapsed = time.perf_counter() - start
        plugin.stop()
        return elapsed

    bare_sdk = f"import sys; sys.path.append({plugins!r}); import aperio_hookspecs, aperio_bench_plugin"
    sandboxed = sandbox_plan(settings, network=False).containment is Containment.BWRAP
    times: dict[str, list[float]] = {name: [] for name in (*START_REFERENCES, START)}
    if sandboxed:
        times[START_SANDBOXED] = []
    for _ in range(runs):  # interleaved, like the calls
        times["python -c pass"].append(interpreter("pass"))
        times[BARE_SDK].append(interpreter(bare_sdk))
        times["python -c 'import aperio_plugins'"].append(interpreter("import aperio_plugins"))
        times[START].append(worker(SandboxMode.NONE))
        if sandboxed:
            times[START_SANDBOXED].append(worker(SandboxMode.BWRAP))
    return {name: statistics.median(values) for name, values in times.items()}


# -- reporting ---------------------------------------------------------------------------

WORKER = "worker: sync"
TRIVIAL = "worker: trivial call (hook)"
IN_PROCESS = "in process: sync"
WORKER_RUN = "worker: host.run(sync)"
IN_PROCESS_RUN = "in process: host.run(sync)"
BARE = "bare Python worker: sync"
RAW = "raw bytes pipe echo"
START = "worker: spawn to ready, no sandbox"
START_SANDBOXED = "worker: spawn to ready, bwrap sandbox"
BARE_SDK = "python -c 'import aperio_hookspecs, <plugin>'"
START_REFERENCES = ("python -c pass", BARE_SDK, "python -c 'import aperio_plugins'")
# (call measured, reference) pairs reported as paired ratios.
RATIOS = (
    (TRIVIAL, "mp.Pipe echo: trivial request"),
    (TRIVIAL, "mp.Pipe echo: trivial, as dict"),
    (TRIVIAL, "mp.Pipe echo: envelope"),
    (TRIVIAL, RAW),
    (WORKER, IN_PROCESS),
    (BARE, IN_PROCESS),
    (WORKER, BARE),
    (WORKER_RUN, IN_PROCESS_RUN),
    (WORKER, "mp.Pipe echo: envelope"),
    (WORKER, "mp.Pipe echo: dict"),
    (WORKER, RAW),
    (WORKER, "gRPC unary echo (unix socket)"),
)
Ratios = dict[tuple[str, str], float]


def goals(figures: dict[str, dict[str, float]], ratios: Ratios) -> list[tuple[str, float, str, bool]]:
    """(goal, measured, target, met) for the goals of issue #10 on calls, where the reference was measured."""
    rows = []
    for reference, label in (
        ("mp.Pipe echo: trivial request", "trivial call: median below the mp.Pipe echo of its request"),
        ("mp.Pipe echo: trivial, as dict", "trivial call: median below the mp.Pipe echo of its dict (stricter)"),
    ):
        if (TRIVIAL, reference) in ratios:
            value = ratios[(TRIVIAL, reference)]
            rows.append((label, value, "< 1.0x", value < 1.0))
    value = ratios[(TRIVIAL, RAW)]
    rows.append(("trivial call: median at most 4x the raw-pipe ping-pong", value, "<= 4.0x", value <= 4.0))
    value = figures[TRIVIAL]["p99_over_median"]
    rows.append(("trivial call: p99 at most 3x its own median", value, "<= 3.0x", value <= 3.0))
    # Like with like: through `host.run` the result is validated once on either side (the host's
    # boundary check in process; the validation of the worker's JSON, which is not repeated, isolated).
    if (WORKER_RUN, IN_PROCESS_RUN) in ratios:
        value = ratios[(WORKER_RUN, IN_PROCESS_RUN)]
        rows.append(("sync via host.run: at most 5x the same call in process", value, "<= 5.0x", value <= 5.0))
    # The plugin's method alone: in process its result is not validated at all, through the worker it is.
    value = ratios[(WORKER, IN_PROCESS)]
    rows.append(("sync, method alone: at most 5x (in process unvalidated)", value, "<= 5.0x", value <= 5.0))
    return rows


def floor_note(ratios: Ratios) -> str | None:
    """What the thinnest Python worker costs against the method in process: the floor under the
    method-alone goal on this machine, in this run."""
    if (BARE, IN_PROCESS) not in ratios:
        return None
    return (
        f"  (floor: the bare Python worker's sync is {ratios[(BARE, IN_PROCESS)]:.2f}x the method in process;"
        f" this worker's is {ratios[(WORKER, BARE)]:.2f}x the bare one)"
    )


def start_goals(starts: dict[str, float]) -> list[tuple[str, float, str, bool]]:
    rows = []
    for name, label in ((START, "no sandbox"), (START_SANDBOXED, "bwrap sandbox")):
        if name in starts:
            value = starts[name] / starts[BARE_SDK]
            goal = f"start ({label}): at most 2x a bare interpreter importing the SDK and the plugin"
            rows.append((goal, value, "<= 2.0x", value <= 2.0))
    return rows


def report_calls(mode: str, figures: dict[str, dict[str, float]], ratios: Ratios) -> list[str]:
    calls = next(iter(figures.values()))["calls"]
    lines = [f"== {mode}: round trips, {calls} calls each, interleaved rounds =="]
    lines.append(f"{'':40}{'median':>10}{'p99':>11}{'p99/median':>12}")
    for name, row in figures.items():
        lines.append(f"{name:40}{row['median'] * 1e6:8.1f} µs{row['p99'] * 1e6:8.1f} µs{row['p99_over_median']:11.2f}x")
    lines += ["", "Paired ratios (median of the per-round ratios of medians):"]
    lines += [f"  {name} / {reference}: {ratio:.2f}x" for (name, reference), ratio in ratios.items()]
    lines += ["", "Goals (issue #10):"]
    for goal, value, target, met in goals(figures, ratios):
        lines.append(f"  {goal:70} {value:6.2f}x  target {target:8}  {'met' if met else 'MISSED'}")
    note = floor_note(ratios)
    if note is not None:
        lines.append(note)
    return [*lines, ""]


def report(results: dict[str, Any], starts: dict[str, float], notes: list[str]) -> str:
    lines = [
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs,"
        f" load average {results['load']} at the start",
        f"(sync request {len(REQUEST.model_dump_json())} B of JSON; trivial call: a {len(FINDING.model_dump_json())}"
        " B Finding in, nothing out)",
        "",
    ]
    for mode in ("pinned", "unpinned"):
        lines += report_calls(f"{mode} ({results[mode]['cpus']})", results[mode]["figures"], results[mode]["ratios"])
        lines.insert(-1, f"CPU placement hints to the worker of the trivial call and sync: {results[mode]['hints']}")
        lines.insert(
            -1,
            f"Host waits that spun for that worker's answer: {results[mode]['spins']}"
            f" (answered within the spin: {results[mode]['caught']})",
        )
    lines += ["Start (median, interleaved, unpinned):"]
    lines += [f"  {name:50}{seconds * 1000:8.0f} ms" for name, seconds in starts.items()]
    for goal, value, target, met in start_goals(starts):
        lines.append(f"  {goal:70} {value:6.2f}x  target {target:8}  {'met' if met else 'MISSED'}")
    if START_SANDBOXED not in starts:
        lines.append("  (no bwrap sandbox can be set up here: start measured without one only)")
    return "\n".join(lines + [f"Note: {note}" for note in notes])


def run_calls(bench: Bench, calls: int, rounds: int, cpus: set[int]) -> dict[str, Any]:
    pin(cpus)
    hints, (spins, caught) = bench.hints(), bench.spins()
    samples = measure(bench.variants, calls, rounds)
    hints = bench.hints() - hints
    spins, caught = (after - before for after, before in zip(bench.spins(), (spins, caught), strict=True))
    figures = summarize(samples)
    ratios = {
        (name, reference): paired_ratio(samples, name, reference)
        for name, reference in RATIOS
        if name in samples and reference in samples
    }
    return {
        "cpus": "CPUs " + ",".join(map(str, sorted(cpus))),
        "figures": figures,
        "ratios": ratios,
        "hints": hints,
        "spins": spins,
        "caught": caught,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per variant and mode (default 20,000)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    parser.add_argument("--starts", type=int, default=7, help="worker starts to take the median of (default 7)")
    parser.add_argument("--quick", action="store_true", help="2,000 calls per variant, 3 worker starts")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--split-recovery",
        type=int,
        default=0,
        metavar="N",
        help="also hold the worker on the other CPU N times and time how long the calls stay slow",
    )
    parser.add_argument(
        "--without-placement-hints",
        action="store_true",
        help="A/B switch: measure with the host's CPU placement hints switched off (docs/worker-protocol.md)",
    )
    parser.add_argument(
        "--spin-us",
        type=int,
        metavar="US",
        help="A/B switch: the workers' APERIO_WORKER_SPIN_US (0: never spin; default: the setting's own)",
    )
    parser.add_argument(
        "--spin-comparison",
        metavar="US,US,...",
        help="only compare these spin budgets on the trivial call, pinned, together, held apart and split",
    )
    parser.add_argument("--spin-rounds", type=int, default=16, help="rounds of the spin comparison")
    args = parser.parse_args(argv)
    if args.spin_comparison:
        with tempfile.TemporaryDirectory(prefix="aperio-bench-worker-") as directory:
            bench = Bench(Path(directory))
            try:
                budgets = [int(value) for value in args.spin_comparison.split(",")]
                print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())} at the start")
                print("\n".join(spin_comparison(bench.settings, budgets, args.spin_rounds)))
            finally:
                bench.close()
        return 0
    if args.spin_us is not None:
        os.environ["APERIO_WORKER_SPIN_US"] = str(args.spin_us)
    if args.without_placement_hints:
        # For comparisons only: every hint finds nothing to do.
        Placement._restrict = lambda self: None  # type: ignore[method-assign]
    calls, start_runs = (2_000, 3) if args.quick else (args.calls, args.starts)
    everything = set(os.sched_getaffinity(0))
    results: dict[str, Any] = {"load": " ".join(f"{value:.2f}" for value in os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="aperio-bench-worker-") as directory:
        bench = Bench(Path(directory))
        try:
            # multiprocessing forks first: a fork after the worker machinery has started threads copies them.
            for setup in (
                bench.multiprocessing_echo,
                bench.in_process,
                bench.worker,
                bench.raw_echo,
                bench.bare_worker,
                bench.codecs,
                bench.grpc_echo,
            ):
                setup()
            results["pinned"] = run_calls(bench, calls, args.rounds, {args.cpu})
            results["unpinned"] = run_calls(bench, calls, args.rounds, everything)
            recovery = split_recovery(bench, args.split_recovery) if args.split_recovery else None
            starts = start_times(bench.settings, start_runs)
        finally:
            bench.close()
    print(report(results, starts, bench.notes))
    if recovery is not None:
        print("\n".join(report_recovery(recovery, results["pinned"]["figures"][TRIVIAL]["median"])))
    if args.json is not None:
        payload: dict[str, Any] = {
            "load": results["load"],
            "starts": starts,
            "notes": bench.notes,
            "placement_hints": not args.without_placement_hints,
            "spin_us": bench.settings.worker_spin_us,
            "split_recovery": recovery,
        }
        for mode in ("pinned", "unpinned"):
            figures, ratios = results[mode]["figures"], results[mode]["ratios"]
            payload[mode] = {
                "hints": results[mode]["hints"],
                "spins": results[mode]["spins"],
                "caught": results[mode]["caught"],
                "figures": figures,
                "ratios": {f"{name} / {reference}": value for (name, reference), value in ratios.items()},
                "goals": [{"goal": g, "measured": v, "target": t, "met": m} for g, v, t, m in goals(figures, ratios)],
            }
        payload["start_goals"] = [
            {"goal": g, "measured": v, "target": t, "met": m} for g, v, t, m in start_goals(starts)
        ]
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
