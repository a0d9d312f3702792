"""This host's name in a fleet: what the audit trail and the fleet's heartbeats call it."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

HOST_NAME_VARIABLE = "APERIO_HOST_NAME"


@lru_cache(maxsize=1)
def host_name() -> str:
    """Return `APERIO_HOST_NAME`, or the machine's hostname and this process's id.

    The pid tells two `aperio serve` processes on one machine apart; an operator who wants a name
    that survives restarts sets APERIO_HOST_NAME.
    """
    configured = os.environ.get(HOST_NAME_VARIABLE, "").strip()
    return configured[:200] if configured else f"{socket.gethostname()}:{os.getpid()}"
