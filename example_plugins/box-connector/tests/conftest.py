"""A Box API on 127.0.0.1 for the connector's tests.

It serves GET /2.0/users (offset pagination, `fields` selection: `role` only
when asked for, as Box does) and GET /2.0/events?stream_type=admin_logs
(opaque stream positions, `limit` <= 500), checks the bearer token on every
call (a wrong one gets Box's empty-bodied 401 with a WWW-Authenticate
challenge), and can be told to answer the next calls with faults (429 with
Retry-After, 5xx) or to answer slowly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from aperio_hookspecs.testing import MemoryContext, make_context

BOX_READ_TOKEN = "box-read-token-9f3a"
PLUGIN_ID = "aperio.box-connector"
# admin_logs stream positions are large opaque integers sent as strings.
POSITION_BASE = 1152922976252290886
ALWAYS_RETURNED_USER_FIELDS = ("type", "id")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class Fault:
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass
class FakeBox:
    url: str = ""
    token: str = BOX_READ_TOKEN
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    delay: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, name: str, *, role: str = "user", status: str = "active") -> dict[str, Any]:
        user_id = str(10_000_000 + len(self.users))
        login = f"{name.lower().replace(' ', '.')}@example.com"
        user = {
            "type": "user",
            "id": user_id,
            "name": name,
            "login": login,
            "status": status,
            "role": role,
            "created_at": "2023-01-09T08:00:00-08:00",
            "modified_at": "2024-04-30T17:12:44-07:00",
            "language": "en",
            "timezone": "America/Los_Angeles",
            "space_amount": 11345156112,
            "space_used": 1237009,
            "max_upload_size": 2147483648,
            "job_title": "",
            "phone": "",
            "address": "",
            "avatar_url": f"https://app.box.com/api/avatar/large/{user_id}",
        }
        self.users.append(user)
        return user

    def add_event(
        self,
        event_type: str,
        *,
        source: dict[str, Any] | None = None,
        additional_details: dict[str, Any] | None = None,
        created_by: dict[str, Any] | None = None,
        created_at: str | None = None,
    ) -> dict[str, Any]:
        number = len(self.events) + 1
        event = {
            "type": "event",
            "event_id": f"a3f8c1d2-{number:04d}-4f6e-9b1a-0c2d3e4f5a6b",
            "event_type": event_type,
            "created_at": created_at or f"2024-05-06T10:{number % 60:02d}:00-07:00",
            "created_by": created_by
            or {"type": "user", "id": "11446498", "name": "Ava Admin", "login": "ava@example.com"},
            "source": source,
            "ip_address": "203.0.113.7",
            "session_id": None,
            "additional_details": additional_details,
        }
        self.events.append(event)
        return event

    def fail_next(self, path: str, status: int, *, headers: dict[str, str] | None = None, times: int = 1) -> None:
        body = {"type": "error", "status": status, "code": _ERROR_CODES.get(status, "error"), "message": "injected"}
        if status == 429:
            body["message"] = "Request rate limit exceeded, please try again later"
        for _ in range(times):
            self.faults.append(Fault(path, status, headers or {}, body))

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.path == path:
                    return self.faults.pop(index)
        return None

    def calls(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path]


_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    429: "rate_limit_exceeded",
    500: "internal_server_error",
    503: "unavailable",
}


def _handler_for(box: FakeBox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
            with box.lock:
                box.requests.append(Recorded("GET", parts.path, query, self.headers.get("Authorization")))
            if box.delay:
                box.released.wait(box.delay)
            fault = box.take_fault(parts.path)
            if fault is not None:
                self._json(fault.status, fault.body, fault.headers)
            elif self.headers.get("Authorization") != f"Bearer {box.token}":
                challenge = (
                    'Bearer realm="Service", error="invalid_token", '
                    'error_description="The access token provided is invalid."'
                )
                self._json(401, None, {"WWW-Authenticate": challenge})
            elif parts.path == "/2.0/users":
                self._users(query)
            elif parts.path == "/2.0/events":
                self._events(query)
            else:
                self._json(404, {"type": "error", "status": 404, "code": "not_found", "message": "Not Found"})

        def _users(self, query: dict[str, str]) -> None:
            limit, offset = int(query.get("limit", "100")), int(query.get("offset", "0"))
            if not 1 <= limit <= 1000:
                self._json(400, {"type": "error", "status": 400, "code": "bad_request", "message": "limit"})
                return
            # Box returns the requested fields (plus type and id), or else its
            # default fields, which leave `role` out.
            page = box.users[offset : offset + limit]
            if "fields" in query:
                kept = set(query["fields"].split(",")) | set(ALWAYS_RETURNED_USER_FIELDS)
                entries = [{key: value for key, value in user.items() if key in kept} for user in page]
            else:
                entries = [{key: value for key, value in user.items() if key != "role"} for user in page]
            self._json(200, {"total_count": len(box.users), "limit": limit, "offset": offset, "entries": entries})

        def _events(self, query: dict[str, str]) -> None:
            limit = int(query.get("limit", "100"))
            position = query.get("stream_position", "0")
            if query.get("stream_type") != "admin_logs" or not 1 <= limit <= 500:
                self._json(400, {"type": "error", "status": 400, "code": "bad_request", "message": "Bad Request"})
                return
            start = 0 if position == "0" else int(position) - POSITION_BASE
            entries = box.events[start : start + limit]
            self._json(
                200,
                {
                    "chunk_size": len(entries),
                    "next_stream_position": str(POSITION_BASE + start + len(entries)),
                    "entries": entries,
                },
            )

        def _json(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def box_api() -> Iterator[FakeBox]:
    box = FakeBox()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(box))
    # A short poll interval keeps shutdown() at teardown from waiting half a second.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield box
    finally:
        box.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def box_read_context() -> MemoryContext:
    return make_context(PLUGIN_ID, credentials={"box:read": BOX_READ_TOKEN})
