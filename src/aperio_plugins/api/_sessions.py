"""The console's sessions: an opaque cookie naming a session kept in server memory, with its CSRF token.

The browser holds only a random session id (HttpOnly, SameSite=Strict). The API token an operator
signs in with stays in this process's memory, so that every request re-checks it with the same
`Tokens.authenticate` the API uses: a revoked or expired token signs the session out at once, and
the cookie alone is worth nothing after a restart. Every session, signed in or not, carries a CSRF
token that its forms must send back; the sign-in form is covered too (no login CSRF), and signing in
starts a new session (no session fixation). Imports no web framework.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

# Anonymous sessions exist only to carry the sign-in form's CSRF token; anyone can make them, so
# they are bounded apart from signed-in ones and a flood of them cannot sign an operator out.
_MAX_ANONYMOUS = 5_000
_MAX_SIGNED_IN = 1_000
ANONYMOUS_IDLE_SECONDS = 3_600.0
SIGNED_IN_IDLE_SECONDS = 8 * 3_600.0
SIGNED_IN_LIFETIME_SECONDS = 24 * 3_600.0


@dataclass
class Session:
    """One browser's session: `token` is None until it signs in; `notice` is shown once, then cleared."""

    csrf: str
    created: float
    last_seen: float
    token: str | None = field(default=None, repr=False)
    name: str | None = None
    notice: str | None = None

    def csrf_matches(self, offered: str | None) -> bool:
        """Whether `offered` is this session's CSRF token (constant time)."""
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())


def _key(session_id: str) -> str:
    # Sessions are found by the digest of their id, so a lookup's timing says nothing about live ids.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The console's sessions in memory, bounded, expiring when idle and after a maximum lifetime."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._signed_in: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, *, token: str | None = None, name: str | None = None) -> tuple[str, Session]:
        """Return a new session id (the cookie's value, never stored) and its session."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(csrf=secrets.token_urlsafe(32), created=now, last_seen=now, token=token, name=name)
        table, bound = (self._anonymous, _MAX_ANONYMOUS) if token is None else (self._signed_in, _MAX_SIGNED_IN)
        with self._lock:
            table[_key(session_id)] = session
            while len(table) > bound:
                table.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """Return the live session `session_id` names, or None (unknown, idle too long or too old)."""
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        now = self.clock()
        with self._lock:
            for table, idle in ((self._signed_in, SIGNED_IN_IDLE_SECONDS), (self._anonymous, ANONYMOUS_IDLE_SECONDS)):
                session = table.get(key)
                if session is None:
                    continue
                too_old = session.token is not None and now - session.created > SIGNED_IN_LIFETIME_SECONDS
                if now - session.last_seen > idle or too_old:
                    del table[key]
                    return None
                session.last_seen = now
                table.move_to_end(key)
                return session
        return None

    def end(self, session_id: str | None) -> None:
        """Forget the session (sign-out, or a session whose token no longer authenticates)."""
        if not session_id:
            return
        key = _key(session_id)
        with self._lock:
            self._signed_in.pop(key, None)
            self._anonymous.pop(key, None)
