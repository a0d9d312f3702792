"""The worker's main: serve one plugin to the host that started this process (`python -m aperio_plugins.worker`).

Not meant to be run by hand: the host passes the plugin id, its search path and
the limits on the command line, and speaks the protocol of docs/worker-protocol.md
on stdin and stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Sequence

from .. import _protocol as protocol
from .._spin import WORKER_SLOT, CpuBoard
from ._bootstrap import LoadFailure, load
from ._containment import (
    apply_limits,
    become_subreaper,
    die_with_parent,
    ignore_terminal_signals,
    take_protocol_fds,
)
from ._log import configure_logging, configure_structlog_if_imported
from ._server import EXIT_PROTOCOL_ERROR, Server, WorkerChannel

EXIT_LOAD_FAILED = 3


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aperio_plugins.worker", description=__doc__)
    parser.add_argument("--plugin-id", required=True)
    parser.add_argument("--search-path", default="[]", help="JSON list of the host's search path")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--memory-limit", type=int, default=0)
    parser.add_argument("--cpu-limit", type=int, default=0)
    parser.add_argument("--max-frame-bytes", type=int, default=64 * 1024 * 1024)
    # What contains this worker (see _sandbox.py): "bwrap" (a sandbox whose init is our parent) or "subreaper".
    parser.add_argument("--containment", choices=("bwrap", "subreaper"), default="subreaper")
    # The CPU board the host shares (a descriptor it passed) and the longest spin per wait (`_spin.py`).
    parser.add_argument("--cpu-board", type=int, default=-1)
    parser.add_argument("--spin-us", type=int, default=0)
    return parser.parse_args(argv)


def _board(fd: int, spin_us: int) -> CpuBoard | None:
    """Return this side of the CPU board the host passed, or None (no board, or spinning is off).

    Called first thing, before any descriptor is opened: the number cannot name anything else yet.
    """
    if fd < 0:
        return None
    try:
        return CpuBoard(fd, WORKER_SLOT, spin_us / 1e6) if spin_us > 0 else None
    except (OSError, ValueError):  # not a board after all: serve without spinning
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # the mapping stays; a plugin's subprocesses must not inherit the descriptor


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; return its exit status (0 when the host closed the channel)."""
    args = _arguments(argv)
    board = _board(args.cpu_board, args.spin_us)
    # 1. Containment, before any plugin code can run.
    if args.containment == "bwrap":
        # Our parent is the sandbox's init, which dies with the host (--die-with-parent) and takes
        # the whole PID namespace with it; the host's pid is not even visible in here.
        die_with_parent(os.getppid())
    else:
        die_with_parent(args.parent_pid)
        become_subreaper()
    fd_in, fd_out = take_protocol_fds()
    ignore_terminal_signals()
    apply_limits(args.memory_limit or None, args.cpu_limit or None)
    audit_logger = configure_logging()
    # 2. Inspect, verify, admit and load the plugin, all over again.
    loaded = load(args.plugin_id, [str(entry) for entry in json.loads(args.search_path)], audit_logger)
    configure_structlog_if_imported()
    # 3. Handshake. The versions are read here, at run time, from the protocol module.
    channel = WorkerChannel(fd_in, fd_out, args.max_frame_bytes)
    channel.write_line(protocol.handshake_line(protocol.PROTOCOL_VERSIONS, os.getpid()))
    try:
        with channel.read_lock:
            hello = channel.receive()
    except protocol.ProtocolError:
        return EXIT_PROTOCOL_ERROR
    if hello is None:
        return 0  # the host refused our versions and closed the channel
    if hello[0] != protocol.HELLO or len(hello) < 2 or hello[1] not in protocol.PROTOCOL_VERSIONS:
        channel.send([protocol.FAILED, {"message": f"unexpected first message {hello[:2]!r}", "stage": None}])
        return EXIT_PROTOCOL_ERROR
    if isinstance(loaded, LoadFailure):
        channel.send([protocol.FAILED, {"message": loaded.message, "stage": loaded.stage}])
        return EXIT_LOAD_FAILED
    plugin, description = loaded
    description["pid"] = os.getpid()
    # Everything loaded so far lives as long as the worker: keep the collector from walking it
    # again and again, which would show as latency spikes on calls.
    gc.freeze()
    channel.send([protocol.READY, description])
    # 4. Serve until the host closes stdin.
    try:
        return Server(channel, plugin, board).run()
    except protocol.ProtocolError as exc:
        print(f"aperio worker: protocol error from the host: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL_ERROR
