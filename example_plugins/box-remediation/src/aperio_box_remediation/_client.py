"""The two Box calls the handler makes: read an item's shared link, and remove it."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

from aperio_hookspecs import ProviderError
from aperio_hookspecs.http import HttpTransport, Response

PROVIDER = "box"
# Box's collection names, by resource type; nothing else reaches a URL path.
COLLECTIONS = {"file": "files", "folder": "folders"}

JsonObject = dict[str, Any]


class ItemUnavailable(Exception):
    """Box answered 403 or 404 for the item itself: a result for this request, not a provider failure."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class BoxItems:
    """Shared-link calls on Box files and folders with one bearer token."""

    def __init__(self, transport: HttpTransport, *, base_url: str, token: str) -> None:
        self._transport = transport
        self._base_url = base_url
        self._token = token

    def shared_link(self, kind: str, item_id: str) -> JsonObject | None:
        """Return the item's shared link object, or None when it has none.

        Raises `ItemUnavailable` on 403/404 and `ProviderError` on any other refusal.
        """
        return self._call("GET", kind, item_id, None)

    def remove_shared_link(self, kind: str, item_id: str) -> JsonObject | None:
        """Remove the item's shared link the way Box documents it; return the link Box reports afterwards.

        Raises `ItemUnavailable` on 403/404 and `ProviderError` on any other refusal.
        """
        return self._call("PUT", kind, item_id, {"shared_link": None})

    def _call(self, method: str, kind: str, item_id: str, payload: JsonObject | None) -> JsonObject | None:
        path = f"/2.0/{COLLECTIONS[kind]}/{item_id}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        # PUT {"shared_link": null} is idempotent, so the transport may retry it like a GET.
        url = f"{self._base_url}{path}?fields=shared_link"
        response = self._transport.request(method, url, headers=headers, body=body)
        call = f"{method} {path}"
        if response.status in (403, 404):
            raise ItemUnavailable(response.status, _detail(response))
        if not response.ok:
            raise box_error(call, response)
        try:
            item = json.loads(response.body)
        except ValueError:
            raise ProviderError(PROVIDER, f"{call}: answer is not JSON", status=response.status) from None
        if not isinstance(item, dict) or "shared_link" not in item:
            raise ProviderError(PROVIDER, f"{call}: answer has no shared_link field", status=response.status)
        link = item["shared_link"]
        if link is not None and not isinstance(link, dict):
            raise ProviderError(PROVIDER, f"{call}: shared_link is neither null nor an object", status=response.status)
        return link


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
