"""The ops port (``--ops-port``): ``/metrics``, ``/readyz`` and ``/healthz`` on a port of their own.

With it, the public port answers 404 for ``/metrics`` and ``/readyz`` (which name the node, its
Service Bus state and error text), so only what can reach the ops port (the platform's probes,
a scraper inside the network) sees them. ``/healthz`` stays on both ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

__all__ = ["OPS_PATHS", "OPS_SCOPE_KEY", "OpsServer"]

log = logging.getLogger("relay_node.ops")

OPS_PATHS = frozenset({"/metrics", "/readyz", "/healthz"})
#: set in the scope of requests that came in on the ops port
OPS_SCOPE_KEY = "relay.ops"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the node handles signals
        yield


class OpsServer:
    def __init__(self, routes: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.routes = routes
        self.port: int | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[Any] | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") not in OPS_PATHS:
            body = b"not found (the ops port serves /metrics, /readyz, /healthz)\n"
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.routes({**scope, OPS_SCOPE_KEY: True}, receive, send)

    async def start(self, sock: socket.socket) -> int:
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", interface="asgi3",
                                timeout_graceful_shutdown=1, log_level="warning")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="uvicorn-ops")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise OSError(f"the ops server on port {self.port} stopped at start")
            await asyncio.sleep(0.02)
        return self.port

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 3.0)
        except Exception as exc:  # noqa: BLE001 - stopping anyway; logged
            log.warning("ops server did not stop cleanly (%s); forcing exit", type(exc).__name__)
            self._server.force_exit = True
