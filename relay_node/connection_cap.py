"""A cap on the connections one relay node holds (``--max-connections``), as ASGI middleware.

A new Engine.IO session (a request to ``/socket.io/`` without ``sid=``) while the node already
holds ``limit`` sessions is answered ``503 Service Unavailable`` with ``Retry-After``, over HTTP
and on the WebSocket handshake alike (ASGI ``websocket.http.response``; a server without that
extension gets close code 1013, "try again later"), and counted in :attr:`ConnectionCap.refused`.
The official clients treat that as a transport error and retry with backoff, so behind a load
balancer they land on another node. Requests of existing sessions always pass.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ConnectionCap"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ConnectionCap:
    def __init__(self, app: Any, *, limit: int, count: Callable[[], int]):
        self.app = app
        self.limit = limit
        self.count = count
        self.refused = 0

    def _new_session(self, scope: Scope) -> bool:
        return (scope["type"] in ("http", "websocket") and scope.get("path", "").startswith("/socket.io")
                and b"sid=" not in scope.get("query_string", b""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limit > 0 and self._new_session(scope) and self.count() >= self.limit:
            self.refused += 1
            body = json.dumps({"error": f"this node holds its maximum of {self.limit} connections; retry"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"retry-after", b"5")]
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            elif "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        await self.app(scope, receive, send)
