"""Benchmark of `GET /api/v1/plugins` (50 plugins) under 50 concurrent clients against a real uvicorn,
beside a bare FastAPI route in the same server process returning the same JSON.

    python benchmarks/bench_api.py [--quick] [--json OUT]

The server runs in a child process (so that the load generator does not share its GIL): the full
API app (bearer token checked against the SQLite state store, the host's snapshot, `as_dict`) and,
in the same app, `GET /bare/plugins`: no authorization, a precomputed list of the same dicts,
serialized per request. Rounds alternate between the two routes; each round is 50 clients issuing
requests back to back over keep-alive connections. Figures are p50 and p99 latency per route, and
their ratio (goal: at most 1.5x), reported, never asserted. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
GOAL = 1.5


def serve(root: Path, port_file: Path) -> None:
    """The child: 50 plugins in a plugins directory, the API app plus the bare route, on a free port."""
    import socket

    import uvicorn
    from _environment import write_plugins
    from fastapi.responses import JSONResponse

    from aperio_plugins import HostSettings, PluginHost, TrustMode
    from aperio_plugins._state import SQLiteStateStore
    from aperio_plugins.api import ALL_PERMISSIONS, Tokens, create_app
    from aperio_plugins.api._trail import recording_audit_logger

    plugins_dir = root / "plugins"
    write_plugins(plugins_dir, "api", 50)
    settings = HostSettings(
        plugins_dir=plugins_dir,
        state_dir=root / "state",
        plugin_trusted_keys_dir=root / "keys",
        plugin_trusted_identities=root / "identities.toml",
        plugin_trust_mode=TrustMode.WARN,
    )
    store = SQLiteStateStore.in_directory(settings.state_dir)
    host = PluginHost(settings, search_path=[], state_store=store, audit_logger=recording_audit_logger(store))
    report = host.load()
    assert len(report.enabled) == 50, [info.error for info in report.failed]
    token = Tokens(store).create("bench", ALL_PERMISSIONS).token
    app = create_app(host, store)
    same = [info.as_dict() for info in host.plugins()]

    @app.get("/bare/plugins")
    def bare() -> JSONResponse:
        return JSONResponse(same)

    # Time spent inside the server per request (ASGI call to last body byte), by path: on a shared
    # 2-core machine the load generator can be the bottleneck, which hides the server's own cost.
    inside: dict[str, list[float]] = {}

    @app.get("/bench/inside")
    def inside_figures() -> dict[str, list[float]]:
        figures = {path: sorted(values) for path, values in inside.items()}
        inside.clear()
        return figures

    def timed(inner: Any) -> Any:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            started = time.perf_counter()
            await inner(scope, receive, send)
            if scope["type"] == "http" and scope["path"] in ("/api/v1/plugins", "/bare/plugins"):
                inside.setdefault(scope["path"], []).append(time.perf_counter() - started)

        return middleware

    served_app: Any = timed(app)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_file.write_text(json.dumps({"port": sock.getsockname()[1], "token": token}))
    uvicorn.Server(uvicorn.Config(served_app, log_level="warning", access_log=False)).run(sockets=[sock])


async def _round(
    url: str, headers: dict[str, str], clients: int, per_client: int, *, check: bool = False
) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for _ in range(per_client):
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - started)
                # The body is parsed only in the warm-up: parsing 50 plugins per request would load the client.
                if response.status_code != 200 or (check and len(response.json()) != 50):
                    raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 20 s)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return
    rounds, clients, per_client = (4, 50, 10) if args.quick else (10, 50, 20)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        port_file = root / "port.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(port_file)], env=env)
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists() or not port_file.read_text():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the benchmark server did not start")
                time.sleep(0.1)
            served = json.loads(port_file.read_text())
            base = f"http://127.0.0.1:{served['port']}"
            auth = {"Authorization": f"Bearer {served['token']}"}
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            samples: dict[str, list[float]] = {"api": [], "bare": []}
            inside: dict[str, list[float]] = {"api": [], "bare": []}
            p50s: dict[str, list[float]] = {"api": [], "bare": []}
            asyncio.run(_round(f"{base}/api/v1/plugins", auth, clients, 2, check=True))  # warm up both
            asyncio.run(_round(f"{base}/bare/plugins", {}, clients, 2, check=True))
            for index in range(rounds):
                order = ("api", "bare") if index % 2 == 0 else ("bare", "api")
                for name in order:
                    url = f"{base}/api/v1/plugins" if name == "api" else f"{base}/bare/plugins"
                    latencies = asyncio.run(_round(url, auth if name == "api" else {}, clients, per_client))
                    samples[name].extend(latencies)
                    p50s[name].append(statistics.median(latencies))
                    measured = httpx.get(f"{base}/bench/inside", timeout=30).json()
                    inside[name].extend(measured.get("/api/v1/plugins" if name == "api" else "/bare/plugins", []))
        finally:
            child.terminate()
            child.wait(timeout=30)
    figures = {
        name: {
            "requests": len(values),
            "p50_ms": _percentile(values, 0.50) * 1000,
            "p99_ms": _percentile(values, 0.99) * 1000,
        }
        for name, values in samples.items()
    }
    ratio_p50 = figures["api"]["p50_ms"] / figures["bare"]["p50_ms"]
    ratio_p99 = figures["api"]["p99_ms"] / figures["bare"]["p99_ms"]
    for name, values in inside.items():
        figures[name]["inside_p50_ms"] = _percentile(values, 0.50) * 1000
        figures[name]["inside_p99_ms"] = _percentile(values, 0.99) * 1000
    inside_p50 = figures["api"]["inside_p50_ms"] / figures["bare"]["inside_p50_ms"]
    inside_p99 = figures["api"]["inside_p99_ms"] / figures["bare"]["inside_p99_ms"]
    print(f"GET /api/v1/plugins, 50 plugins, {clients} concurrent clients, {rounds} rounds per route")
    header = f"{'route':<22}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}{'in-server p50':>15}{'in-server p99':>15}"
    print(header)
    for name, label in (("bare", "bare FastAPI route"), ("api", "operator API")):
        row = figures[name]
        print(
            f"{label:<22}{row['requests']:>10}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
            f"{row['inside_p50_ms']:>15.2f}{row['inside_p99_ms']:>15.2f}"
        )
    ratios = {"p50": ratio_p50, "p99": ratio_p99, "in-server p50": inside_p50, "in-server p99": inside_p99}
    for label, ratio in ratios.items():
        print(f"{label} ratio {ratio:.2f}x (goal <= {GOAL}x): {'met' if ratio <= GOAL else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({**figures, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
