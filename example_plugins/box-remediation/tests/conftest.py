"""Box files and folders on 127.0.0.1 for the remediation's tests.

GET and PUT /2.0/files/{id} and /2.0/folders/{id}, with `fields` selection,
bearer-token checks (Box's empty-bodied 401 with a WWW-Authenticate challenge),
Box's 403 and 404 error objects, and a PUT that really changes the server's
item: `{"shared_link": null}` removes the link, an object sets one. Faults
(429 with Retry-After, 5xx, arbitrary answers) can be queued per method and path.
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

BOX_WRITE_TOKEN = "box-write-token-51c7"
PLUGIN_ID = "aperio.box-remediation"
COLLECTIONS = {"files": "file", "folders": "folder"}
ERRORS = {
    403: ("access_denied_insufficient_permissions", "Access denied - insufficient permission"),
    404: ("not_found", "Could not find the specified resource"),
    429: ("rate_limit_exceeded", "Request rate limit exceeded, please try again later"),
    500: ("internal_server_error", "Internal Server Error"),
    503: ("unavailable", "Unavailable"),
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


@dataclass
class Fault:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class FakeBoxItems:
    url: str = ""
    token: str = BOX_WRITE_TOKEN
    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_item(self, kind: str, item_id: str, *, access: str | None = "open") -> dict[str, Any]:
        link = None
        if access is not None:
            link = {
                "url": f"https://app.box.com/s/{item_id}x7k2q9",
                "download_url": None if kind == "folder" else f"https://app.box.com/shared/static/{item_id}x7k2q9.pdf",
                "vanity_url": None,
                "vanity_name": None,
                "access": access,
                "effective_access": access,
                "effective_permission": "can_download",
                "unshared_at": None,
                "is_password_enabled": False,
                "permissions": {"can_download": True, "can_preview": True, "can_edit": False},
                "download_count": 3,
                "preview_count": 12,
            }
        item = {
            "type": kind,
            "id": item_id,
            "etag": "1",
            "name": f"{kind}-{item_id}",
            "shared_link": link,
            "owned_by": {"type": "user", "id": "11446498", "name": "Ava Admin", "login": "ava@example.com"},
        }
        self.items[(kind, item_id)] = item
        return item

    def link_of(self, kind: str, item_id: str) -> dict[str, Any] | None:
        return self.items[(kind, item_id)]["shared_link"]

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        if body is None and status in ERRORS:
            code, message = ERRORS[status]
            body = {"type": "error", "status": status, "code": code, "message": message, "request_id": "abc123"}
        for _ in range(times):
            self.faults.append(Fault(method, path, status, headers or {}, body))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if (fault.method, fault.path) == (method, path):
                    return self.faults.pop(index)
        return None

    def methods(self) -> list[str]:
        return [request.method for request in self.requests]


def _handler_for(box: FakeBoxItems) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            with box.lock:
                box.requests.append(Recorded(method, parts.path, query, self.headers.get("Authorization"), body))
            fault = box.take_fault(method, parts.path)
            if fault is not None:
                self._json(fault.status, fault.body, fault.headers)
                return
            if self.headers.get("Authorization") != f"Bearer {box.token}":
                challenge = (
                    'Bearer realm="Service", error="invalid_token", '
                    'error_description="The access token provided is invalid."'
                )
                self._json(401, None, {"WWW-Authenticate": challenge})
                return
            segments = parts.path.split("/")
            if len(segments) != 4 or segments[1] != "2.0" or segments[2] not in COLLECTIONS:
                self._error(404)
                return
            key = (COLLECTIONS[segments[2]], segments[3])
            if key not in box.items:
                self._error(404)
            elif key in box.forbidden:
                self._error(403)
            elif method == "PUT" and not self._update(box.items[key], body):
                self._error(400, "bad_request", "Invalid value for shared_link")
            else:
                self._json(200, _select(box.items[key], query.get("fields")))

        def _update(self, item: dict[str, Any], body: Any) -> bool:
            if not isinstance(body, dict) or "shared_link" not in body:
                return False
            change = body["shared_link"]
            if change is None:
                item["shared_link"] = None
            elif isinstance(change, dict):
                access = change.get("access", "open")
                item["shared_link"] = {
                    "url": f"https://app.box.com/s/{item['id']}new",
                    "access": access,
                    "effective_access": access,
                    "is_password_enabled": False,
                }
            else:
                return False
            item["etag"] = str(int(item["etag"]) + 1)
            return True

        def _error(self, status: int, code: str | None = None, message: str | None = None) -> None:
            default_code, default_message = ERRORS.get(status, ("error", "error"))
            self._json(
                status,
                {
                    "type": "error",
                    "status": status,
                    "code": code or default_code,
                    "message": message or default_message,
                    "request_id": "req-7f2e",
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


def _select(item: dict[str, Any], fields: str | None) -> dict[str, Any]:
    # With `fields`, Box returns those plus the base fields type, id and etag.
    if fields is None:
        return dict(item)
    kept = set(fields.split(",")) | {"type", "id", "etag"}
    return {key: value for key, value in item.items() if key in kept}


@pytest.fixture
def box_items() -> Iterator[FakeBoxItems]:
    box = FakeBoxItems()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(box))
    # A short poll interval keeps shutdown() at teardown from waiting half a second.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def box_write_context() -> MemoryContext:
    return make_context(PLUGIN_ID, credentials={"box:write": BOX_WRITE_TOKEN})
