"""The worker side of the protocol: read frames, run calls, answer pings and cancels.

The worker runs one call at a time, on the thread that read it, because a
hand-off to another thread costs more than the rest of a round trip. While a
call runs nobody reads the channel, except the call itself when it asks the
host for KV or a credential: frames that arrive meanwhile are handled then
(pings answered, cancels noted, further calls queued in order). A call that
never asks the host anything is supervised by its deadline on the host side.
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import msgspec

from aperio_hookspecs import DeliveryBatch, PluginAPIError, RemediationRequest, SyncRequest

from .. import _protocol as protocol
from .._codec import EnvelopeData, EnvelopeError, envelope_ext, materialize
from .._spin import CpuBoard, spin_until_ready
from ._rebuild import rebuild
from ._remote import RemoteContext, remote_exception

MAX_TRACEBACK_CHARS = 16_000
EXIT_PROTOCOL_ERROR = 2

# What each kind of registration is asked to do, and with which envelope.
OPERATIONS: Mapping[str, tuple[str, type[Any]]] = {
    "connector": ("sync", SyncRequest),
    "remediation": ("remediate", RemediationRequest),
    "destination": ("deliver", DeliveryBatch),
}


class WorkerChannel:
    """Frames over two file descriptors. Any thread may send; one thread at a time receives."""

    def __init__(self, fd_in: int, fd_out: int, max_frame_bytes: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._decoder = protocol.FrameDecoder(max_frame_bytes)
        self._ready: deque[list[Any]] = deque()
        self._poller = select.poll()
        self._poller.register(fd_in, select.POLLIN)
        self._poll_now = functools.partial(self._poller.poll, 0)

    def send(self, message: list[Any]) -> None:
        """Send one message; raise TypeError, ValueError or OverflowError if it cannot be encoded."""
        payload = protocol.pack(message)
        with self._write_lock:
            protocol.write_frame(self.fd_out, payload)

    def send_packed(self, payload: bytes) -> None:
        """Send one message already encoded."""
        with self._write_lock:
            protocol.write_frame(self.fd_out, payload)

    def write_line(self, line: bytes) -> None:
        """Write the handshake line: raw bytes, before any frame."""
        with self._write_lock:
            while line:
                line = line[os.write(self.fd_out, line) :]

    def receive(self, timeout: float | None = None, spin: float = 0.0) -> list[Any] | None:
        """Return the next message, None at end of input; raise TimeoutError after `timeout` seconds.

        With `spin` (seconds), check for input without sleeping for that long before a blocking read.
        The caller holds `read_lock`. Raises `ProtocolError` for a malformed frame.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._poller.poll(max(1, int(remaining * 1000))):
                    raise TimeoutError
            elif spin > 0:
                spin_until_ready(self._poll_now, spin)  # then the read finds the input, or blocks
                spin = 0.0
            data = os.read(self.fd_in, 1 << 16)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()


class Plugin(msgspec.Struct, frozen=True):
    """What the worker serves: the plugin's hookimpls by hook name and its registrations by (kind, name)."""

    plugin_id: str
    hooks: Mapping[str, Callable[..., Any]]
    registrations: Mapping[tuple[str, str], Any]


class _Running:
    """A hook call in progress: what a cancel marks. (An invoke's `RemoteContext` plays this part.)"""

    __slots__ = ("call_id", "cancelled", "closed")

    def __init__(self, call_id: object) -> None:
        self.call_id = call_id
        self.cancelled = False
        self.closed = False


class Server:
    """Serves one plugin over one channel until the host closes it."""

    def __init__(self, channel: WorkerChannel, plugin: Plugin, board: CpuBoard | None = None) -> None:
        self._channel = channel
        self._plugin = plugin
        self._board = board  # shared with the host when spinning is on (`_spin.py`)
        self._last_wait = 0.0  # seconds between an answer and the next call, last timed apart
        self._queued: deque[list[Any]] = deque()
        self._current: RemoteContext | _Running | None = None
        self._context_lock = threading.Lock()
        self._request_ids = itertools.count(1)

    def run(self) -> int:
        """Serve until the host closes the channel; return the process exit status."""
        channel, queued, board = self._channel, self._queued, self._board
        read_lock, receive = channel.read_lock, channel.receive
        # Bound once: the loop runs once per call, and each lookup is paid there.
        hook, execute, control, hook_kind, invoke_kind = (
            self._hook,
            self._execute,
            self._handle_control,
            protocol.HOOK,
            protocol.INVOKE,
        )
        apart = board.apart if board is not None else None
        while True:
            if queued:
                message: list[Any] | None = queued.popleft()
            elif apart is not None and (cpu := apart()) >= 0:
                message = self._receive_timed(cpu)
            else:
                with read_lock:
                    message = receive()
            if message is None:
                return 0
            kind = message[0]
            if kind == hook_kind:
                hook(message)
            elif kind == invoke_kind:
                execute(message)
            else:
                control(message)

    def _receive_timed(self, cpu: int) -> list[Any] | None:
        """Wait for the next message on `cpu` while the host last waited on another: spin first if
        calls have been coming close together, and time the wait for the next decision."""
        board, channel = self._board, self._channel
        assert board is not None

        def receive(spin: float) -> list[Any] | None:
            with channel.read_lock:
                return channel.receive(spin=spin)

        message, self._last_wait = board.timed_wait(cpu, self._last_wait, receive)
        return message

    def _handle_control(self, message: list[Any]) -> None:
        """Answer a ping, note a cancel, or queue a call that arrived while another one runs."""
        kind = message[0]
        if kind == protocol.PING:
            self._channel.send([protocol.PONG, message[1]])
        elif kind == protocol.CANCEL:
            self._cancel(message[1])
        elif kind in (protocol.HOOK, protocol.INVOKE):
            self._queued.append(message)
        elif kind not in (protocol.CTX_OK, protocol.CTX_ERROR):  # a stale answer to a request given up on
            raise protocol.ProtocolError(f"unexpected message kind {kind!r} from the host")

    def _cancel(self, call_id: object) -> None:
        if self._current is not None and self._current.call_id == call_id:
            self._current.cancelled = True
            return
        for queued in self._queued:
            if queued[1] == call_id:
                self._queued.remove(queued)
                self._channel.send([protocol.CANCELLED, call_id])
                return

    # -- calls ---------------------------------------------------------------

    def _hook(self, message: list[Any]) -> None:
        """Run a hookimpl. A hookimpl sees no context: the call is only recorded as running, for cancels."""
        call_id = message[1] if len(message) > 1 else None
        try:
            _, call_id, hook, arguments, _timeout = message
            function = self._plugin.hooks.get(hook)
            if function is None:
                raise KeyError(f"plugin {self._plugin.plugin_id!r} does not implement hook {hook!r}")
            # The host validated them: no second validation. An envelope argument, the usual case, is
            # rebuilt directly; anything else goes through the general walk.
            kwargs = (
                {
                    key: rebuild(value) if type(value) is EnvelopeData else materialize(value, rebuild)
                    for key, value in arguments.items()
                }
                if type(arguments) is dict
                else materialize(arguments, rebuild)
            )
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            self._send_error(call_id, exc, boundary=isinstance(exc, EnvelopeError))
            return
        running = self._current = _Running(call_id)
        try:
            value = function(**kwargs)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's failure is reported; the worker serves on
            self._send_error(call_id, exc, boundary=False)
        else:
            self._send_result(call_id, value)
        finally:
            running.closed = True
            self._current = None

    def _execute(self, message: list[Any]) -> None:
        call_id = message[1] if len(message) > 1 else None
        try:
            context, bound, request = self._prepare(message)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            self._send_error(call_id, exc, boundary=isinstance(exc, EnvelopeError))
            return
        self._current = context
        try:
            value = bound(context, request)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's failure is reported; the worker serves on
            self._send_error(call_id, exc, boundary=False)
        else:
            self._send_result(call_id, value)
        finally:
            context.closed = True
            self._current = None

    def _prepare(self, message: list[Any]) -> tuple[RemoteContext, Callable[..., Any], Any]:
        """Return the call's context, the bound method to run and its request; raise for a call the plugin cannot take.

        The request is rebuilt from the JSON the host serialized from a model it already holds,
        without validating it again (`_rebuild`).
        """
        _, call_id, kind, name, payload, timeout, invocation_id, scopes = message
        implementation = self._plugin.registrations.get((kind, name))
        if implementation is None:
            raise KeyError(f"plugin {self._plugin.plugin_id!r} registered no {kind} {name!r}")
        method, expected = OPERATIONS[kind]
        request = rebuild(payload) if isinstance(payload, EnvelopeData) else payload
        if not isinstance(request, expected):
            raise TypeError(f"a {kind} takes a {expected.__name__}, got {type(request).__name__}")
        context = self._context(call_id, timeout, invocation_id, scopes)
        return context, getattr(implementation, method), request

    def _context(self, call_id: int, timeout: float, invocation_id: str, scopes: Any) -> RemoteContext:
        return RemoteContext(
            call_id=call_id,
            plugin_id=self._plugin.plugin_id,
            invocation_id=str(invocation_id),
            timeout=float(timeout),
            scopes=frozenset(map(str, scopes)),
            request=self._request,
            send_log=self._send_log,
        )

    def _send_result(self, call_id: Any, value: Any) -> None:
        try:
            ext = None if value is None else envelope_ext(value)
            if (ext is not None or value is None) and type(call_id) is int:
                # An envelope or nothing, the usual answers: encoded without the checking encoder.
                self._channel.send_packed(protocol.pack_plain([protocol.RESULT, call_id, ext]))
            else:
                self._channel.send([protocol.RESULT, call_id, value])
        except (TypeError, ValueError, OverflowError) as exc:
            self._send_error(call_id, exc, boundary=True)

    def _send_error(self, call_id: Any, exc: BaseException, *, boundary: bool) -> None:
        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-MAX_TRACEBACK_CHARS:]
        except MemoryError:  # formatting needs memory; the plugin may just have used it all
            text = f"{type(exc).__name__} (traceback unavailable: out of memory)"
        cls = type(exc)
        name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        details = {"type": name, "message": str(exc), "traceback": text, "boundary": boundary}
        self._channel.send([protocol.ERROR, call_id, details])

    def _send_log(self, call_id: int, level: str, event: str, fields: dict[str, Any]) -> None:
        try:
            self._channel.send([protocol.LOG, call_id, level, event, fields])
        except (TypeError, ValueError, OverflowError):
            # A log call must not fail the plugin for an odd field: send its repr instead.
            self._channel.send([protocol.LOG, call_id, level, event, {k: repr(v) for k, v in fields.items()}])

    # -- context requests ----------------------------------------------------

    def _request(self, context: RemoteContext, operation: str, arguments: list[Any]) -> Any:
        """Ask the host to perform a context operation for the running call; return its answer."""
        if context.closed:
            raise PluginAPIError(f"the invocation context was used after its call returned ({operation})")
        with self._context_lock, self._channel.read_lock:
            request_id = next(self._request_ids)
            self._channel.send([protocol.CTX, context.call_id, request_id, operation, arguments])
            while True:
                try:
                    message = self._channel.receive(timeout=context.remaining())
                except protocol.ProtocolError as exc:
                    _die_of_protocol_error(exc)
                except TimeoutError:
                    reason = f"no answer from the host to {operation} before the deadline"
                    raise remote_exception(context, operation, arguments, "DeadlineExceededError", reason) from None
                if message is None:
                    raise PluginAPIError(f"the host closed the channel during {operation}")
                kind = message[0]
                if kind in (protocol.CTX_OK, protocol.CTX_ERROR) and message[1] == request_id:
                    if kind == protocol.CTX_OK:
                        return message[2]
                    raise remote_exception(context, operation, arguments, str(message[2]), str(message[3]))
                try:
                    self._handle_control(message)
                except protocol.ProtocolError as exc:
                    _die_of_protocol_error(exc)


def _die_of_protocol_error(exc: protocol.ProtocolError) -> NoReturn:
    # Raised inside a plugin's context call, the error could be caught by the
    # plugin; a host that breaks the protocol ends the worker instead.
    os.write(2, f"aperio worker: protocol error from the host: {exc}\n".encode())
    os._exit(EXIT_PROTOCOL_ERROR)
