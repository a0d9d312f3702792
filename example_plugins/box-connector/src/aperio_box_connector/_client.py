"""The Box API calls the connector makes: one page of users, one page of enterprise events."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aperio_hookspecs import ProviderError
from aperio_hookspecs.http import HttpTransport, Response

PROVIDER = "box"
# `role` is not among the fields GET /users returns by default; without it no
# admin can be told apart from a user.
USER_FIELDS = "type,id,name,login,status,role,created_at,modified_at"

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class UsersPage:
    entries: list[JsonObject]
    total_count: int


@dataclass(frozen=True)
class EventsPage:
    entries: list[JsonObject]
    next_stream_position: str


class BoxClient:
    """Read-only calls to the Box API with one bearer token."""

    def __init__(self, transport: HttpTransport, *, base_url: str, token: str) -> None:
        self._transport = transport
        self._base_url = base_url
        self._token = token

    def users_page(self, offset: int, limit: int) -> UsersPage:
        """Return one offset page of the enterprise's users; raise `ProviderError` on any refusal."""
        body = self._get("/2.0/users", {"limit": limit, "offset": offset, "fields": USER_FIELDS})
        total = body.get("total_count")
        if not isinstance(total, int):
            raise ProviderError(PROVIDER, "GET /2.0/users: answer has no integer total_count")
        return UsersPage(entries=_entries(body, "/2.0/users"), total_count=total)

    def events_page(self, stream_position: str, limit: int) -> EventsPage:
        """Return one page of the admin_logs stream from `stream_position`; raise `ProviderError` on any refusal."""
        query: dict[str, str | int] = {"stream_type": "admin_logs", "stream_position": stream_position, "limit": limit}
        body = self._get("/2.0/events", query)
        position = body.get("next_stream_position")
        # Box sends the position as a string for admin_logs and as a number
        # for the user stream; both are opaque to us.
        if not isinstance(position, (str, int)) or isinstance(position, bool) or position == "":
            raise ProviderError(PROVIDER, "GET /2.0/events: answer has no next_stream_position")
        return EventsPage(entries=_entries(body, "/2.0/events"), next_stream_position=str(position))

    def _get(self, path: str, query: dict[str, str | int]) -> JsonObject:
        url = f"{self._base_url}{path}?{urllib.parse.urlencode(query)}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        response = self._transport.request("GET", url, headers=headers)
        if not response.ok:
            raise box_error(f"GET {path}", response)
        try:
            body = json.loads(response.body)
        except ValueError:
            raise ProviderError(PROVIDER, f"GET {path}: answer is not JSON", status=response.status) from None
        if not isinstance(body, dict):
            raise ProviderError(PROVIDER, f"GET {path}: answer is not a JSON object", status=response.status)
        return body


def _entries(body: JsonObject, what: str) -> list[JsonObject]:
    entries = body.get("entries")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ProviderError(PROVIDER, f"GET {what}: answer has no list of entries")
    return entries


def box_error(call: str, response: Response) -> ProviderError:
    """Return the `ProviderError` for a non-2xx answer, with Box's own code, message and request id."""
    detail = _detail(response)
    if response.status == 401:
        message = f"{call}: access token refused ({detail})"
    elif response.status == 429:
        retry_after = response.header("retry-after") or "none"
        message = f"{call}: rate limited, retries exhausted or past the deadline (Retry-After: {retry_after}; {detail})"
    elif response.status >= 500:
        message = f"{call}: server error, retries exhausted ({detail})"
    else:
        message = f"{call}: {detail}"
    return ProviderError(PROVIDER, message, status=response.status)


def _detail(response: Response) -> str:
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("type") == "error":
        parts = [str(body[key]) for key in ("code", "message") if body.get(key)]
        if body.get("request_id"):
            parts.append(f"request_id {body['request_id']}")
        if parts:
            return ", ".join(parts)
    # Box answers an expired or wrong token with an empty body and the reason
    # in the WWW-Authenticate challenge.
    challenge = response.header("www-authenticate") or ""
    described = re.search(r'error_description="([^"]*)"', challenge)
    if described:
        return described.group(1)
    return http.client.responses.get(response.status, "unexpected answer")
