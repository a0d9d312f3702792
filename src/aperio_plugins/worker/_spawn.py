"""How the host starts a worker: its command line, its scrubbed environment, its private directory.

`spawn` must run on the supervisor thread: the kernel ties a worker's
parent-death signal to the thread that forked it.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .._receipt import host_public_key_path
from .._settings import HostSettings
from ._settings import WorkerSettings

# Variables every worker gets from the host's environment when they are set:
# what locates programs, and what decides text encoding and time zone.
_PASSED = ("PATH", "LANG", "TZ")
_PASSED_PREFIXES = ("LC_",)


def _inside(path: str, directory: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(directory.resolve())
    except (OSError, ValueError):
        return False


def import_path(plugins_dir: Path, entries: Sequence[str] | None = None) -> list[str]:
    """Return the host's import path for the worker's PYTHONPATH: the same libraries, no plugin folder.

    The interpreter's own directories are left out (the worker has them anyway),
    and so is the plugins directory: on PYTHONPATH it would come before the
    standard library, and a planted module there would run before verification.
    """
    builtin = {
        str(Path(path).resolve()) for key, path in sysconfig.get_paths().items() if key.endswith(("lib", "stdlib"))
    }
    kept: list[str] = []
    for entry in sys.path if entries is None else entries:
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        if _inside(entry, plugins_dir) or str(Path(entry).resolve()) in builtin or entry in kept:
            continue
        kept.append(entry)
    return kept


def _setting_value(value: object) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def worker_environment(
    settings: HostSettings, options: WorkerSettings, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the worker's whole environment: a few neutral variables, the host's settings
    (from the settings object, never copied from the host's environment), PYTHONPATH, and
    the operator's allowlist. Nothing else: no token or key the host holds reaches a plugin.
    """
    source = os.environ if source is None else source
    env = {name: source[name] for name in _PASSED if name in source}
    env.update({name: value for name, value in source.items() if name.startswith(_PASSED_PREFIXES)})
    for name, value in settings.model_dump().items():
        # The worker keeps its state in its private directory, and never installs anything.
        if name not in ("state_dir", "plugin_receipt_key") and not name.startswith("registry_"):
            env[f"APERIO_{name.upper()}"] = _setting_value(value)
    # Only the public half of the host's receipt key: the worker checks install receipts, never writes one.
    receipt_key = settings.plugin_receipt_key or host_public_key_path(settings.state_dir)
    env["APERIO_PLUGIN_RECEIPT_KEY"] = str(receipt_key)
    path = import_path(settings.plugins_dir)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    env.update({name: source[name] for name in options.env_allowlist if name in source})
    return env


def worker_command(plugin_id: str, search_path: Iterable[str], options: WorkerSettings) -> list[str]:
    """Return the argument vector of `python -m aperio_plugins.worker` for one plugin."""
    # -P (3.11+) keeps the working directory off sys.path; the directory is private anyway.
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    return [
        sys.executable,
        *flags,
        "-m",
        "aperio_plugins.worker",
        "--plugin-id",
        plugin_id,
        "--search-path",
        json.dumps([str(entry) for entry in search_path]),
        "--parent-pid",
        str(os.getpid()),
        "--memory-limit",
        str(options.memory_limit or 0),
        "--cpu-limit",
        str(options.cpu_time_limit or 0),
        "--max-frame-bytes",
        str(options.max_frame_bytes),
    ]


def private_directory(plugin_id: str) -> Path:
    """Create the worker's working directory, readable by the host's user only."""
    safe = "".join(char if char.isalnum() or char in "._-" else "_" for char in plugin_id)[:60]
    return Path(tempfile.mkdtemp(prefix=f"aperio-worker-{safe}-"))


def spawn(command: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start the worker: pipes on stdin, stdout and stderr, its own session (a terminal's Ctrl-C
    is for the host, which stops its workers itself), no inherited descriptors."""
    return subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        close_fds=True,
        start_new_session=True,
        bufsize=0,
    )
