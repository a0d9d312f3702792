"""One request to the HTTP Event Collector, and what its answer means."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

from aperio_hookspecs import ProviderError
from aperio_hookspecs.http import HttpTransport, Response

PROVIDER = "splunk"
EVENT_PATH = "/services/collector/event"
# HEC answers a missing, malformed, unknown or disabled token (codes 1-4) with 401 or 403.
AUTH_STATUSES = frozenset({401, 403})
# Refusals of what was sent rather than of who sent it: bad data (5, 6, 12,
# 13, 15), an index the token may not write (7), channel trouble (10, 11), a
# body over HEC's max_content_length (413).
REFUSAL_STATUSES = frozenset({400, 413})


@dataclass(frozen=True)
class HecAnswer:
    """HEC's JSON answer: `{"text": "Success", "code": 0}`, or an error with `invalid-event-number`."""

    status: int
    code: int | None
    text: str
    invalid_event: int | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300 and self.code in (0, None)

    def describe(self) -> str:
        code = "" if self.code is None else f"HEC code {self.code}, "
        return f"{self.text} ({code}HTTP {self.status})"


def parse_answer(response: Response) -> HecAnswer:
    """Return HEC's answer; a body that is not HEC's JSON (a proxy's page, say) keeps only the status."""
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return HecAnswer(response.status, None, http.client.responses.get(response.status, "unexpected answer"))
    code = body.get("code")
    invalid = body.get("invalid-event-number")
    return HecAnswer(
        status=response.status,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        text=str(body.get("text") or http.client.responses.get(response.status, "unexpected answer")),
        invalid_event=invalid if isinstance(invalid, int) and not isinstance(invalid, bool) else None,
    )


class HecClient:
    """Posts event objects to one collector with one token."""

    def __init__(
        self, transport: HttpTransport, *, url: str, token: str, channel: str | None, idempotency_key: str | None = None
    ) -> None:
        self._transport = transport
        self._endpoint = url + EVENT_PATH
        self._headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
        if channel is not None:
            # Required when the token has indexer acknowledgment turned on.
            self._headers["X-Splunk-Request-Channel"] = channel
        if idempotency_key is not None:
            # HEC ignores it; a proxy or receiver in front of HEC can deduplicate redeliveries on it.
            self._headers["X-Aperio-Idempotency-Key"] = idempotency_key

    def send(self, body: bytes) -> HecAnswer:
        """Post concatenated event objects; return HEC's answer when it took or refused them.

        Raises `ProviderError` when the token is refused, when HEC stays busy
        or failing after the retries (a busy HEC, code 9, has indexed nothing,
        so resending is safe), and for any answer that is not HEC's.
        """
        answer = parse_answer(self._transport.request("POST", self._endpoint, headers=self._headers, body=body))
        if 200 <= answer.status < 300 or answer.status in REFUSAL_STATUSES:
            return answer
        if answer.status in AUTH_STATUSES:
            raise ProviderError(PROVIDER, f"HEC refused the token: {answer.describe()}", status=answer.status)
        raise ProviderError(PROVIDER, f"HEC did not take the events: {answer.describe()}", status=answer.status)
