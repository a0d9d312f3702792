"""A real uvicorn server for an ASGI app, on a socket bound to 127.0.0.1:0, in a thread of the test."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from aperio_plugins import PluginHost
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.api import ALL_PERMISSIONS, Permission, Tokens, create_app


class LiveServer:
    """`with LiveServer(app) as server:` serves `app` until the block ends; `server.url` is its base."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", limit_concurrency=None))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


class Api:
    """A served host with one token per permission set, and an httpx client per token."""

    def __init__(self, host: PluginHost, store: SQLiteStateStore, **app_options: Any) -> None:
        self.host = host
        self.store = store
        self.tokens = Tokens(store)
        self.live = LiveServer(create_app(host, store, **app_options))
        self.clients: list[httpx.Client] = []
        self.token: dict[str, str] = {}

    def __enter__(self) -> Api:
        self.live.__enter__()
        self.token["admin"] = self.tokens.create("admin", ALL_PERMISSIONS).token
        self.token["reader"] = self.tokens.create("reader", [Permission.READ]).token
        self.token["operator"] = self.tokens.create("operator", [Permission.READ, Permission.ADMIN]).token
        self.token["runner"] = self.tokens.create("runner", [Permission.EXECUTE]).token
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        self.live.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.live.url

    def client(self, who: str | None = "admin", *, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client sending the token of `who` (None: no token), or `token` as given."""
        secret = token if token is not None else self.token[who] if who else None
        headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.clients.append(client)
        return client
