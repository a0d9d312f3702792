"""A Splunk HEC receiver on 127.0.0.1 that counts what it indexed and the idempotency keys it saw.

It speaks HEC's `/services/collector/event` (concatenated event objects, `Authorization: Splunk
TOKEN`, `{"text": "Success", "code": 0}`), and can be told to refuse everything (HTTP 400, code 6,
as HEC refuses invalid data), to fail the next requests (503, server busy), or to take its time
(so that a test can kill the delivering host while a batch is in flight).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "hec-test-token"


@dataclass
class HecReceiver:
    url: str = ""
    refuse: str | None = None  # HEC's text for a refusal of every request
    fail_next: int = 0  # answer this many requests 503 (busy) before indexing again
    fail_requests: set[int] = field(default_factory=set)  # 1-based numbers of requests to answer 503
    delay: float = 0.0  # seconds before answering each request
    indexed: list[tuple[str | None, str]] = field(default_factory=list)  # (idempotency key, envelope id)
    header_keys: list[str | None] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(envelope_id for _, envelope_id in self.indexed)

    def keys_of(self, envelope_id: str) -> list[str | None]:
        with self.lock:
            return [key for key, seen in self.indexed if seen == envelope_id]


def _parse(body: bytes) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    text, position, events = body.decode(), 0, []
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        value, position = decoder.raw_decode(text, position)
        events.append(value)
    return events


def _handler(receiver: HecReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.delay:
                time.sleep(receiver.delay)
            with receiver.lock:
                receiver.requests += 1
                if self.headers.get("Authorization") != f"Splunk {TOKEN}":
                    self._answer(403, {"text": "Invalid token", "code": 4})
                    return
                if receiver.refuse is not None:
                    self._answer(400, {"text": receiver.refuse, "code": 6, "invalid-event-number": 0})
                    return
                if receiver.fail_next > 0 or receiver.requests in receiver.fail_requests:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    self._answer(503, {"text": "Server is busy", "code": 9})
                    return
                receiver.header_keys.append(self.headers.get("X-Aperio-Idempotency-Key"))
                for event in _parse(body):
                    key = (event.get("fields") or {}).get("aperio_idempotency_key")
                    receiver.indexed.append((key, event["event"]["id"]))
            self._answer(200, {"text": "Success", "code": 0})

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client SIGKILLed mid-request resets its connection: expected here, not news


@contextmanager
def hec_receiver() -> Iterator[HecReceiver]:
    receiver = HecReceiver()
    server = _QuietServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
