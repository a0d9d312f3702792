"""A Splunk HTTP Event Collector on 127.0.0.1 for the destination's tests.

POST /services/collector/event with `Authorization: Splunk <token>`; the body
is parsed as HEC parses it, concatenated JSON objects, and answered with HEC's
own codes: 0 Success, 1 Token disabled, 2 Token is required, 3 Invalid
authorization, 4 Invalid token, 5 No data, 6 Invalid data format, 7 Incorrect
index, 10 Data channel is missing, 12 Event field is required, 13 Event field
cannot be blank, each error with `invalid-event-number` where HEC sends it.
A request is indexed whole or not at all. Answers can be scripted per request
number (server busy, code 9; an invalid event HEC found), and a request can be
dropped: the connection closes with no answer, as when a collector goes away.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aperio_hookspecs.testing import MemoryContext, make_context

HEC_TOKEN = "7e2f3c8a-0b51-4f0e-9c2d-5a6b7c8d9e0f"
PLUGIN_ID = "aperio.splunk-hec"
EVENT_PATH = "/services/collector/event"


@dataclass(frozen=True)
class Posted:
    path: str
    authorization: str | None
    channel: str | None
    content_type: str | None
    body: bytes
    idempotency_key: str | None = None


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeHec:
    url: str = ""
    token: str = HEC_TOKEN
    disabled_tokens: set[str] = field(default_factory=set)
    allowed_indexes: set[str] = field(default_factory=lambda: {"main"})
    default_index: str = "main"
    require_channel: bool = False
    delay: float = 0.0
    indexed: list[dict[str, Any]] = field(default_factory=list)
    posts: list[Posted] = field(default_factory=list)
    scripted: dict[int, Scripted] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_request(self, number: int, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        """Script the answer to the `number`th POST (1-based) instead of processing it."""
        self.scripted[number] = Scripted(status, body, headers or {})

    def drop_request(self, number: int) -> None:
        """Close the connection of the `number`th POST (1-based) without answering it."""
        self.dropped.add(number)

    def indexed_ids(self) -> list[str]:
        return [event["event"]["id"] for event in self.indexed]


def parse_hec_body(body: bytes) -> list[Any]:
    """Split a body into its JSON values the way HEC does; raise ValueError with the index of a bad one."""
    decoder = json.JSONDecoder()
    text = body.decode("utf-8")
    values: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return values
        try:
            value, position = decoder.raw_decode(text, position)
        except ValueError:
            raise ValueError(len(values)) from None
        values.append(value)


def _check(hec: FakeHec, values: list[Any]) -> tuple[int, dict[str, Any]] | None:
    for number, value in enumerate(values):
        if not isinstance(value, dict):
            return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": number}
        if "event" not in value:
            return 400, {"text": "Event field is required", "code": 12, "invalid-event-number": number}
        if value["event"] in ("", None):
            return 400, {"text": "Event field cannot be blank", "code": 13, "invalid-event-number": number}
        if value.get("index", hec.default_index) not in hec.allowed_indexes:
            return 400, {"text": "Incorrect index", "code": 7, "invalid-event-number": number}
    return None


def _handler_for(hec: FakeHec) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            authorization = self.headers.get("Authorization")
            channel = self.headers.get("X-Splunk-Request-Channel")
            with hec.lock:
                key = self.headers.get("X-Aperio-Idempotency-Key")
                hec.posts.append(Posted(self.path, authorization, channel, self.headers.get("Content-Type"), body, key))
                number = len(hec.posts)
            if number in hec.dropped:
                self.close_connection = True
                return
            if hec.delay:
                hec.released.wait(hec.delay)
            status, answer, headers = self._process(body, authorization, channel, number)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _process(self, body, authorization, channel, number):
            if self.path != EVENT_PATH:
                return 404, {"text": "The requested URL was not found on this server.", "code": 404}, {}
            if not authorization:
                return 401, {"text": "Token is required", "code": 2}, {}
            scheme, _, token = authorization.partition(" ")
            if scheme != "Splunk" or not token:
                return 401, {"text": "Invalid authorization", "code": 3}, {}
            if token in hec.disabled_tokens:
                return 403, {"text": "Token disabled", "code": 1}, {}
            if token != hec.token:
                return 403, {"text": "Invalid token", "code": 4}, {}
            scripted = hec.scripted.pop(number, None)
            if scripted is not None:
                return scripted.status, scripted.body, scripted.headers
            if hec.require_channel and not channel:
                return 400, {"text": "Data channel is missing", "code": 10}, {}
            if not body.strip():
                return 400, {"text": "No data", "code": 5}, {}
            try:
                values = parse_hec_body(body)
            except ValueError as error:
                return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": error.args[0]}, {}
            refusal = _check(hec, values)
            if refusal is not None:
                return refusal[0], refusal[1], {}
            with hec.lock:
                hec.indexed.extend(values)
            return 200, {"text": "Success", "code": 0}, {}

    return Handler


@pytest.fixture
def hec_server() -> Iterator[FakeHec]:
    hec = FakeHec()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(hec))
    # A short poll interval keeps shutdown() at teardown from waiting half a second.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    hec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hec
    finally:
        hec.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hec_context() -> MemoryContext:
    return make_context(PLUGIN_ID, credentials={"splunk:hec": HEC_TOKEN})


@pytest.fixture
def hec_parse():
    """The fake's body parser, for tests that look inside what was posted."""
    return parse_hec_body
