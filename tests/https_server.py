"""A registry server on 127.0.0.1 for tests: bytes at paths over HTTPS (or HTTP), and faults a download must survive.

    with RegistryServer(tmp_path) as server:
        server.serve("/index.json", b"{}")
        limits = TransferLimits(..., ca_bundle=server.ca_bundle)
        fetch_bytes(server.url("/index.json"), limits, max_bytes=1024)

Every route can be replaced while the server runs. Handlers that stream slowly
or forever watch a stop event, so `close()` returns at once, and every one ends
by itself within a minute even if nobody closes the server.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tls_certs import make_server_certificate

Route = Callable[["_Handler", threading.Event], None]

_ZEROS = bytes(64 * 1024)
_ENDLESS_MAX_BYTES = 2 * 1024**3
_ENDLESS_MAX_SECONDS = 60.0
# A client that stops reading (or never finishes a handshake) must not hold a handler thread for long.
_SOCKET_TIMEOUT = 10.0


class RegistryServer:
    """An HTTPS server on 127.0.0.1 (plain HTTP with `plain_http=True`) whose routes a test sets.

    `base_url` is `https://127.0.0.1:PORT` (or `http://…`), `host_port` is `127.0.0.1:PORT`
    as `TransferLimits.insecure_hosts` lists it, `ca_bundle` trusts the server's
    certificate (None for plain HTTP), and `requests_log` holds the path of every GET, in order.
    The certificate is made in a fresh folder under `directory` (a temporary one by default).
    """

    def __init__(self, directory: Path | None = None, *, plain_http: bool = False) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scratch = tempfile.TemporaryDirectory(prefix="aperio-server-") if directory is None else None
        self.requests_log: list[str] = []
        self.ca_bundle: Path | None = None
        context: ssl.SSLContext | None = None
        if not plain_http:
            parent = Path(self._scratch.name) if self._scratch is not None else directory
            assert parent is not None
            # A folder of its own, so that two servers under one tmp_path do not overwrite each other's CA.
            certificate = make_server_certificate(Path(tempfile.mkdtemp(prefix="tls-", dir=parent)))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certificate.certificate, certificate.private_key)
            self.ca_bundle = certificate.ca_bundle
        self._server = _Server(self, context)
        port = self._server.server_address[1]
        self.host_port = f"127.0.0.1:{port}"
        self.base_url = f"{'http' if plain_http else 'https'}://{self.host_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"registry-{port}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; handlers still streaming see the stop event and end on their own."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._scratch is not None:
            self._scratch.cleanup()

    def url(self, path: str) -> str:
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def route(self, path: str, handler: Route) -> None:
        """Serve `path` with `handler(request_handler, stop_event)`, replacing what was there."""
        with self._lock:
            self._routes[path] = handler

    def serve(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(200, len(data), content_type)
            request.wfile.write(data)

        self.route(path, handler)

    def truncated(self, path: str, data: bytes, declared_length: int) -> None:
        """Announce `declared_length` bytes, send `data` (fewer), then close the connection."""

        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(200, declared_length)
            request.wfile.write(data)

        self.route(path, handler)

    def endless(self, path: str, declared_length: int | None = None) -> None:
        """Stream zero bytes until the client leaves (or 2 GiB, or 60 s), announcing `declared_length` if given."""

        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(200, declared_length)
            limit = min(_ENDLESS_MAX_BYTES, declared_length if declared_length is not None else _ENDLESS_MAX_BYTES)
            deadline = time.monotonic() + _ENDLESS_MAX_SECONDS
            sent = 0
            while sent < limit and not stop.is_set() and time.monotonic() < deadline:
                piece = _ZEROS[: limit - sent]
                request.wfile.write(piece)
                sent += len(piece)

        self.route(path, handler)

    def slow(self, path: str, data: bytes, delay_per_chunk: float, chunk: int) -> None:
        """Send `data` (its length announced) `chunk` bytes at a time, waiting `delay_per_chunk` s after each."""

        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(200, len(data))
            for offset in range(0, len(data), chunk):
                request.wfile.write(data[offset : offset + chunk])
                if stop.wait(delay_per_chunk):
                    return

        self.route(path, handler)

    def stall(self, path: str, seconds: float, data: bytes = b"late") -> None:
        """Send the headers (announcing `data`), then nothing for `seconds`, then `data`."""

        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(200, len(data))
            if not stop.wait(seconds):
                request.wfile.write(data)

        self.route(path, handler)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def handler(request: _Handler, stop: threading.Event) -> None:
            request.start_body(status, 0, headers={"Location": location})

        self.route(path, handler)

    def _take(self, path: str) -> Route | None:
        with self._lock:
            self.requests_log.append(path)
            return self._routes.get(path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, registry: RegistryServer, context: ssl.SSLContext | None) -> None:
        self.registry = registry
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, rather than in
        # accept(): a client that never completes it cannot stall the server.
        if self.context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_SOCKET_TIMEOUT)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except OSError:  # a client that does not trust the certificate hangs up mid-handshake
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_WR)
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # clients that hang up mid-body are what these servers are for


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _SOCKET_TIMEOUT

    def do_GET(self) -> None:
        route = self.server.registry._take(self.path)
        try:
            if route is None:
                self.start_body(404, 9, "text/plain")
                self.wfile.write(b"not found")
            else:
                route(self, self.server.registry._stop)
        except OSError:  # the client left: a download that refused the rest of the body
            self.close_connection = True

    def start_body(
        self,
        status: int,
        length: int | None,
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send the status line and headers; `length` None sends no Content-Length (the body ends at close)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None
