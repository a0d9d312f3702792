"""A small TCP proxy on 127.0.0.1 that a test can cut and heal: a network partition between one
process and a server (tests/fleet: one `aperio serve` host and PostgreSQL), the others untouched.

`cut()` closes every live connection (both ends see it at once) and refuses new ones (the
listening socket is closed, so a connect gets ECONNREFUSED rather than hanging); `heal()` listens
again on the same port. Threads, one pair per connection, bounded by `max_connections`; every
socket has a timeout, and `close()` (or the context manager) stops it all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until cut or closed."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, max_connections: int = 64) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._closed = False
        self.accepted = 0  # connections forwarded since the start: a test can see the host reconnect
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        # accept() wakes up now and then to see whether the proxy was cut or closed.
        listener.settimeout(0.2)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy", daemon=True)
        self._acceptor.start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed by cut() or close()
            with self._lock:
                if self._listener is not listener or len(self._live) >= self.max_connections * 2:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._live.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(1.0)
        try:
            while True:
                try:
                    data = source.recv(_CHUNK)
                except TimeoutError:
                    with self._lock:
                        if source not in self._live:
                            return
                    continue
                if not data:
                    return
                sink.sendall(data)
        except OSError:
            return
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._live.discard(sock)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._live) // 2

    def cut(self) -> None:
        """Refuse new connections and close the live ones: the host is cut off from the server."""
        with self._lock:
            listener, self._listener = self._listener, None
            live = list(self._live)
        if listener is not None:
            listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        self._drop(*live)

    def heal(self) -> None:
        """Accept connections again, on the same port."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._listener is None:
            self._listen(self.port)

    def close(self) -> None:
        self._closed = True
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
