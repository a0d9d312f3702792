"""How the host starts a worker: its command line, its scrubbed environment, its private directory,
and the process object that ends the worker's whole tree.

`spawn` must run on the supervisor thread: the kernel ties a worker's
parent-death signal to the thread that forked it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import select
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._receipt import host_public_key_path
from ..._settings import HostSettings
from .._settings import WorkerSettings
from .._spin import CpuBoard
from .._tree import kill_descendants
from ._runtime import private_directory, record_group, remove_private_directory
from ._sandbox import Containment, SandboxPlan, wrap

# Variables every worker gets from the host's environment when they are set:
# what locates programs, and what decides text encoding and time zone.
_PASSED = ("PATH", "LANG", "TZ")
_PASSED_PREFIXES = ("LC_",)
_POLL_INTERVAL = 0.005  # seconds between polls of a timed wait for a worker's exit
# bwrap reports the sandbox's pid 1 on --info-fd right after creating it: milliseconds, or it failed.
_INFO_TIMEOUT = 5.0
# The sandbox's pid 1 exits just after telling bwrap the worker's status; past this bound it is killed.
_INIT_EXIT_BOUND = 1.0


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
        # The worker keeps its state in its private directory, and never installs anything; the
        # shared store's URL carries the database password, which no plugin may read.
        if value is not None and not name.startswith(("state_", "registry_")) and name != "plugin_receipt_key":
            env[f"APERIO_{name.upper()}"] = _setting_value(value)
    # Only the public half of the host's receipt key: the worker checks install receipts, never writes one.
    receipt_key = settings.plugin_receipt_key or host_public_key_path(settings.state_dir)
    env["APERIO_PLUGIN_RECEIPT_KEY"] = str(receipt_key)
    path = import_path(settings.plugins_dir)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    env.update({name: source[name] for name in options.env_allowlist if name in source})
    return env


def worker_command(
    plugin_id: str,
    search_path: Iterable[str],
    options: WorkerSettings,
    containment: Containment = Containment.SUBREAPER,
) -> list[str]:
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
        "--containment",
        containment.value,
    ]


def spawn(
    command: Sequence[str], env: Mapping[str, str], plugin_id: str, sandbox: SandboxPlan, spin: float = 0.0
) -> ContainedPopen:
    """Start the worker contained as `sandbox` says, in a new private directory of its own: pipes
    on stdin, stdout and stderr, its own session (a terminal's Ctrl-C is for the host, which stops
    its workers itself), no inherited descriptors but its CPU board when `spin` (seconds, the
    longest spin per wait; `_spin.py`) is above 0. Raises `OSError`.

    bwrap itself gets the scrubbed environment too: as the sandbox's pid 1 it
    stays visible to the worker, and so would its environment, at /proc/1/environ.
    """
    directory = private_directory(plugin_id)
    # The filesystem is read-only in the sandbox: a plugin's temporary files go to its directory.
    environment = {**env, "TMPDIR": str(directory)}
    created = CpuBoard.create(spin) if spin > 0 and sys.platform.startswith("linux") else None
    board_fd: tuple[int, ...] = ()
    if created is not None:
        board_fd = (created[1],)
        command = [*command, "--cpu-board", str(created[1]), "--spin-us", str(round(spin * 1e6))]
    try:
        popen = ContainedPopen(
            wrap(sandbox, command, directory),
            sandbox.containment,
            directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=directory,
            close_fds=True,
            start_new_session=True,
            bufsize=0,
            pass_fds=board_fd,
        )
        popen.board = None if created is None else created[0]
        if sandbox.containment is Containment.SUBREAPER:
            record_group(directory, popen.pid)  # for the next host, should this one be SIGKILLed
        return popen
    except BaseException:
        remove_private_directory(directory)
        raise
    finally:
        for fd in board_fd:
            os.close(fd)  # the worker has its copy; the host keeps the mapping


class ContainedPopen(subprocess.Popen[bytes]):
    """A worker's process, which ends its whole tree, and removes the worker's directory once reaped.

    Under bubblewrap the process is bwrap: signalling it ends the sandbox, and
    the kernel ends everything inside. bwrap reports a worker killed by signal N
    as status 128+N; `returncode` turns that back into -N, as for any process
    (a worker that exits with status 129 or more by itself is reported as
    signalled too). Under the subreaper fallback, `terminate()` and `kill()`
    first hold the worker still and SIGKILL its descendants, and its process
    group is killed once it has exited and before it is reaped (while its pid
    still names the group).
    """

    def __init__(self, args: Sequence[str], containment: Containment, directory: Path, **options: Any) -> None:
        self.containment = containment
        # The tree walk needs /proc and waitid(WNOWAIT): Linux. Elsewhere only the directory is looked after.
        self._subreaper = containment is Containment.SUBREAPER and sys.platform.startswith("linux")
        self.directory = directory
        self.board: CpuBoard | None = None  # the host's side of the CPU board, when spinning is on
        self._cleanup_lock = threading.Lock()
        self._cleaned = False
        self._group_killed = False
        self._status: int | None = None
        self._init_pidfd: int | None = None
        command = list(args)
        info: tuple[int, int] | None = None
        if containment is Containment.BWRAP and hasattr(os, "pidfd_open"):
            info = os.pipe()
            command[1:1] = ["--info-fd", str(info[1])]
            options["pass_fds"] = (*options.get("pass_fds", ()), info[1])
        try:
            super().__init__(command, **options)
        finally:
            if info is not None:
                os.close(info[1])
        if info is not None:
            self._init_pidfd = _sandbox_init(info[0])

    # bwrap's own process returns the worker's status as soon as the worker has died, without
    # waiting for the sandbox's pid 1, its child, which the kernel then hands to the system's init.
    # Held by a pidfd from the start, that process is waited for (not reaped: it is no longer ours)
    # before the worker counts as gone, so that nothing of a stopped worker is still running.
    def _wait_for_sandbox_init(self) -> None:
        pidfd, self._init_pidfd = self._init_pidfd, None
        if pidfd is None:
            return
        try:
            if not select.select([pidfd], [], [], _INIT_EXIT_BOUND)[0]:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], _INIT_EXIT_BOUND)
        finally:
            os.close(pidfd)

    @property
    def returncode(self) -> int | None:
        return self._status

    @returncode.setter
    def returncode(self, value: int | None) -> None:
        if self.containment is Containment.BWRAP and value is not None and value > 128:
            with contextlib.suppress(ValueError):
                value = -signal.Signals(value - 128).value
        self._status = value

    def send_signal(self, sig: int) -> None:
        if self._subreaper and sig in (signal.SIGTERM, signal.SIGKILL):
            if self.poll() is not None:
                return
            # Held still, the worker can neither fork nor reap; its orphans stay its children.
            os.kill(self.pid, signal.SIGSTOP)
            try:
                kill_descendants(self.pid, reap=False)
                super().send_signal(sig)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGCONT)
            return
        super().send_signal(sig)

    def poll(self) -> int | None:
        if self.returncode is None and self._subreaper:
            self._kill_group_if_exited(block=False)
        status = super().poll()
        if status is not None:
            self._cleanup()
        return status

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._subreaper:
            if timeout is None:
                self._kill_group_if_exited(block=True)
            else:
                # Through poll(), which kills the group before reaping; Popen's own timed wait polls too.
                deadline = time.monotonic() + timeout
                while self.poll() is None:
                    if time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(self.args, timeout)
                    time.sleep(_POLL_INTERVAL)
        status = super().wait(timeout)
        self._cleanup()
        return status

    def _kill_group_if_exited(self, *, block: bool) -> None:
        # WNOWAIT leaves the exited worker a zombie: its pid, and so its group id, cannot be reused yet.
        try:
            exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG))
        except ChildProcessError:
            return  # reaped already
        if exited is None or self._group_killed:
            return
        self._group_killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        with self._cleanup_lock:
            if self._cleaned:
                return
            self._cleaned = True
        self._wait_for_sandbox_init()
        remove_private_directory(self.directory)


def _sandbox_init(info_fd: int) -> int | None:
    """Read bwrap's `{"child-pid": N}` from its info pipe and return a pidfd of that process (the
    sandbox's pid 1), or None when bwrap said nothing in time (it failed before making the sandbox)."""
    data = b""
    deadline = time.monotonic() + _INFO_TIMEOUT
    try:
        # Not read to the end: the sandbox may keep the pipe open; one JSON object is all there is.
        while b"}" not in data and (left := deadline - time.monotonic()) > 0:
            if not select.select([info_fd], [], [], left)[0]:
                break
            chunk = os.read(info_fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(info_fd)
    try:
        pid = json.loads(data)["child-pid"]
        return os.pidfd_open(pid) if isinstance(pid, int) and pid > 1 else None
    except (ValueError, KeyError, TypeError, OSError):
        return None
