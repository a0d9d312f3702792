"""Benchmark of signature verification, as ratios measured in one run.

    python benchmarks/bench_trust.py [--quick] [--json OUT]

1. Verifying an installed plugin of 20 files / 200 KB and of 2,000 files / 20 MB
   (`verify_installed`: signature, statement, every file hashed, unexpected
   files listed) against reading and hashing the same files with hashlib alone.
2. A host start with 50 signed plugins in `strict` against the same 50 plugins
   unsigned in `disabled`, each start in a fresh interpreter.

Figures are reported against the goals, never asserted. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

from _stats import paired_ratio

from aperio_plugins import HostSettings, TrustMode
from aperio_plugins._model import Origin
from aperio_plugins._trust import load_trust_store
from aperio_plugins._verify import verify_installed
from aperio_plugins.pipeline.discover import SearchRoot, discover
from aperio_plugins.pipeline.inspect import inspect_candidate
from aperio_plugins.testing import (
    PluginWheel,
    generate_signing_key,
    install_wheels,
    manifest_toml,
    sign_wheel_with_key,
)

HOOK = "from aperio_hookspecs import hookimpl\n\n@hookimpl\ndef aperio_finding_raised(finding):\n    return None\n"


def _plugin_files(package: str, files: int, total_bytes: int) -> dict[str, str | bytes]:
    size = max(1, total_bytes // files)
    contents: dict[str, str | bytes] = {f"{package}/__init__.py": HOOK}
    for index in range(files - 1):
        # Deterministic filler that compresses poorly, like real code and data.
        block = hashlib.sha256(f"{package}{index}".encode()).hexdigest().encode()
        contents[f"{package}/data/f{index:05d}.bin"] = (block * (size // len(block) + 1))[:size]
    return contents


def _build(root: Path, name: str, files: int, total_bytes: int, key: Path | None) -> Path:
    package = name.replace("-", "_")
    plugin_id = f"bench.{name}"
    # The hooks are declared, as the templates do: a host activates the plugin on first use.
    manifest = manifest_toml(
        {plugin_id: {"summary": f"{plugin_id} test plugin", "kinds": ["connector"], "hooks": ["aperio_finding_raised"]}}
    )
    wheel = PluginWheel(
        name, plugins={plugin_id: package}, files=_plugin_files(package, files, total_bytes), manifest=manifest
    ).build(root / "wheels")
    return sign_wheel_with_key(wheel, key) if key is not None else wheel


def _settings(root: Path, plugins: Path, mode: TrustMode, keys: Path) -> HostSettings:
    return HostSettings(
        plugins_dir=plugins,
        state_dir=root / f"state-{mode.value}",
        plugin_trust_mode=mode,
        plugin_trusted_keys_dir=keys,
        plugin_trusted_identities=root / "none.toml",
        environment="development",
    )


def _hash_all(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            hashlib.sha256(path.read_bytes()).hexdigest()


def measure_verification(
    root: Path, files: int, total_bytes: int, key: Path, keys: Path, rounds: int
) -> dict[str, float]:
    plugins = root / f"plugins-{files}"
    name = f"verify-{files}"
    install_wheels([_build(root, name, files, total_bytes, key)], target=plugins)
    (candidate,) = discover([SearchRoot(plugins, Origin.PLUGINS_DIR)]).candidates
    inspected = inspect_candidate(candidate, [plugins])
    trust = load_trust_store(_settings(root, plugins, TrustMode.STRICT, keys))
    package_dir = plugins / name.replace("-", "_")
    verified, hashed = [], []
    for _ in range(rounds):
        start = perf_counter()
        result = verify_installed(inspected, trust)
        verified.append(perf_counter() - start)
        start = perf_counter()
        _hash_all(package_dir)
        hashed.append(perf_counter() - start)
    assert result.status.value == "verified", result.detail
    return {
        "files": files,
        "bytes": total_bytes,
        "verify_ms": statistics.median(verified) * 1000,
        "hash_ms": statistics.median(hashed) * 1000,
        "ratio": paired_ratio(verified, hashed),
    }


# The clock starts after the host library is imported: its import costs the
# same in both modes and would otherwise hide the difference being measured.
CHILD = """
import json, sys, time
from aperio_plugins import HostSettings, PluginHost
settings = HostSettings.model_validate_json(sys.argv[1])
start = time.perf_counter()
with PluginHost(settings, search_path=[]) as host:
    report = host.load()
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "enabled": len(report.enabled)}))
"""


def _start(settings: HostSettings) -> tuple[float, int]:
    # The state directory persists between starts, as on a real host: the
    # discovery cache and the verified code cache are warm after the first.
    output = subprocess.run(
        [sys.executable, "-c", CHILD, settings.model_dump_json()], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output)
    return float(result["seconds"]), int(result["enabled"])


def measure_signed_start(root: Path, count: int, key: Path, keys: Path, rounds: int) -> dict[str, float]:
    signed, unsigned = root / "start-signed", root / "start-unsigned"
    for index in range(count):
        name = f"start-{index:02d}"
        wheel = _build(root / "unsigned", name, 3, 6_000, None)
        install_wheels([wheel], target=unsigned)
        install_wheels([sign_wheel_with_key(wheel, key, out=root / "signed" / wheel.name)], target=signed)
    strict = _settings(root, signed, TrustMode.STRICT, keys)
    disabled = _settings(root, unsigned, TrustMode.DISABLED, keys)
    cold_strict, _ = _start(strict)
    _start(disabled)  # warm the page cache, the .pyc files and both hosts' caches
    strict_times, disabled_times = [], []
    for _ in range(rounds):
        seconds, enabled = _start(strict)
        assert enabled == count, "every signed plugin must come up verified"
        strict_times.append(seconds)
        disabled_times.append(_start(disabled)[0])
    return {
        "plugins": count,
        "strict_ms": statistics.median(strict_times) * 1000,
        "disabled_ms": statistics.median(disabled_times) * 1000,
        "ratio": paired_ratio(strict_times, disabled_times),
        "strict_cold_ms": cold_strict * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a smaller large plugin")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rounds = 3 if args.quick else 15
    with tempfile.TemporaryDirectory(prefix="aperio-bench-trust-") as temporary:
        root = Path(temporary)
        key, public = generate_signing_key(root / "author")
        keys = root / "keys"
        keys.mkdir(mode=0o700)
        shutil.copy(public, keys)
        os.chmod(keys, 0o700)
        small = measure_verification(root, 20, 200_000, key, keys, rounds)
        large = measure_verification(root, 200 if args.quick else 2000, 20_000_000, key, keys, rounds)
        start = measure_signed_start(root, 10 if args.quick else 50, key, keys, 3 if args.quick else 7)
    figures = {"python": sys.version.split()[0], "verify_small": small, "verify_large": large, "start": start}
    print(f"Python {figures['python']}, {os.cpu_count()} cores")
    print("| plugin | verify_installed | hashlib alone | ratio | goal |")
    print("|---|---|---|---|---|")
    for label, row, goal in (("small", small, "-"), ("large", large, "<= 0.75x")):
        print(
            f"| {label}: {row['files']} files, {row['bytes'] / 1e6:.1f} MB | {row['verify_ms']:.2f} ms"
            f" | {row['hash_ms']:.2f} ms | {row['ratio']:.2f}x | {goal} |"
        )
    print()
    print("| start | strict, signed | disabled, unsigned | ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| {start['plugins']} plugins | {start['strict_ms']:.0f} ms | {start['disabled_ms']:.0f} ms"
        f" | {start['ratio']:.2f}x | <= 1.3x |"
    )
    print(f"(first strict start, with cold caches: {start['strict_cold_ms']:.0f} ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
