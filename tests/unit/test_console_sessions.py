"""The console's session store: ids found only by their own value, idle and total lifetimes, bounds, CSRF checks."""

from __future__ import annotations

from aperio_plugins.api import _sessions
from aperio_plugins.api._sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_found_by_its_id_only_and_ends_on_sign_out():
    sessions = Sessions()
    session_id, session = sessions.start(token="aperio_x", name="ops")
    assert sessions.get(session_id) is session
    assert sessions.get(session_id[:-1]) is None
    assert sessions.get("") is None
    assert sessions.get("x" * 101) is None
    sessions.end(session_id)
    assert sessions.get(session_id) is None


def test_the_csrf_token_matches_only_itself():
    _, session = Sessions().start()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf[:-1])
    assert not session.csrf_matches(session.csrf + "x")
    assert not session.csrf_matches(Sessions().start()[1].csrf)


def test_sessions_expire_when_idle_and_after_their_lifetime():
    clock = Clock()
    sessions = Sessions(clock)
    anonymous_id, _ = sessions.start()
    signed_in_id, _ = sessions.start(token="aperio_x", name="ops")
    clock.now += _sessions.ANONYMOUS_IDLE_SECONDS + 1
    assert sessions.get(anonymous_id) is None
    assert sessions.get(signed_in_id) is not None  # kept alive by this visit
    for _ in range(int(_sessions.SIGNED_IN_LIFETIME_SECONDS // _sessions.SIGNED_IN_IDLE_SECONDS) + 1):
        clock.now += _sessions.SIGNED_IN_IDLE_SECONDS - 1
        visited = sessions.get(signed_in_id)
    assert visited is None  # active all along, yet past its whole lifetime
    idle_id, _ = sessions.start(token="aperio_y", name="ops")
    clock.now += _sessions.SIGNED_IN_IDLE_SECONDS + 1
    assert sessions.get(idle_id) is None


def test_a_flood_of_anonymous_sessions_does_not_sign_anyone_out(monkeypatch):
    monkeypatch.setattr(_sessions, "_MAX_ANONYMOUS", 10)
    sessions = Sessions()
    operator_id, _ = sessions.start(token="aperio_x", name="ops")
    first_anonymous, _ = sessions.start()
    for _ in range(50):
        sessions.start()
    assert sessions.get(operator_id) is not None
    assert sessions.get(first_anonymous) is None  # the oldest anonymous ones make room
