"""Small emulators of Box and Splunk HEC on 127.0.0.1 for the end-to-end test of the example plugins.

They speak the real wire formats (Box's paginated `entries`, HEC's concatenated
JSON events and `{"text", "code"}` answers) and keep server-side state that the
test can inspect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class ProviderState:
    box_token: str = "box-token"
    hec_token: str = "hec-token"
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    hec_events: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    state: ProviderState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _box_authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state.box_token}":
            self._reply(401, {"type": "error", "status": 401, "code": "unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if not self._box_authorized():
            return
        if url.path == "/2.0/users":
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            page = self.state.users[offset : offset + limit]
            self._reply(200, {"entries": page, "total_count": len(self.state.users), "offset": offset, "limit": limit})
        elif url.path == "/2.0/events":
            position, limit = int(query.get("stream_position", 0)), int(query.get("limit", 100))
            page = self.state.events[position : position + limit]
            self._reply(
                200, {"entries": page, "chunk_size": len(page), "next_stream_position": str(position + len(page))}
            )
        elif url.path.startswith("/2.0/files/") and url.path.removeprefix("/2.0/files/") in self.state.files:
            self._reply(200, self.state.files[url.path.removeprefix("/2.0/files/")])
        else:
            self._reply(404, {"type": "error", "status": 404, "code": "not_found"})

    def do_PUT(self) -> None:
        url = urlparse(self.path)
        if not self._box_authorized():
            return
        item_id = url.path.removeprefix("/2.0/files/")
        body = json.loads(self._body())
        if item_id not in self.state.files:
            self._reply(404, {"type": "error", "status": 404, "code": "not_found"})
            return
        self.state.files[item_id] = {**self.state.files[item_id], **body}
        self._reply(200, self.state.files[item_id])

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/services/collector/event":
            self._reply(404, {"text": "Not found", "code": 404})
            return
        if self.headers.get("Authorization") != f"Splunk {self.state.hec_token}":
            self._reply(403, {"text": "Invalid token", "code": 4})
            return
        decoder, text, index = json.JSONDecoder(), self._body().decode(), 0
        while index < len(text):
            while index < len(text) and text[index].isspace():
                index += 1
            if index == len(text):
                break
            event, index = decoder.raw_decode(text, index)
            self.state.hec_events.append(event)
        self._reply(200, {"text": "Success", "code": 0})


@contextmanager
def provider_server(state: ProviderState) -> Iterator[str]:
    """Serve Box and HEC on one 127.0.0.1 port; yield the base URL."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
