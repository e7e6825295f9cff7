"""AMQP over WebSockets: the SDK's ``TransportType.AmqpOverWebsocket`` on the namespace's port.

The SDK opens ``ws://<host>:<port>/$servicebus/websocket`` (``wss://`` on Azure; the emulator
has no TLS) with the subprotocol ``AMQPWSB10`` and then writes the AMQP byte stream in binary
WebSocket messages. Message boundaries mean nothing: one message may hold part of an AMQP
frame or several frames, in both directions.

:class:`WebSocketBridge` is a small ``asyncio.Transport`` between an aiohttp
``WebSocketResponse`` and an unchanged :class:`~servicebus_emulator.amqp.AmqpConnection`:

- in: each binary message is pushed into the AMQP engine before the next one is read, so a
  client that sends faster than the engine works is held back by TCP flow control;
- out: the engine's ``write`` calls are queued and sent by one writer task that awaits aiohttp's
  drain. When more than ``HIGH_WATER`` bytes wait, the bridge stops reading the client (as a TCP
  transport would pause its protocol) until the queue is below ``LOW_WATER``, so the client
  cannot ask for more (credit, requests) while it does not read. What is already queued is what
  the client's own link credit allowed (credit x message size); a client that lets more than
  ``MAX_BUFFERED`` bytes pile up is disconnected and the loss logged (its locked messages stay
  locked until ``locked_until``, as for any dropped connection, as on Azure). (The TCP path buffers in asyncio without a cap.)
- close: the client's close frame (or a dropped socket) ends the AMQP connection
  (``connection_lost``); the engine closing its side flushes what is queued, then sends a
  WebSocket close 1000;
- refused: a request that is not a WebSocket upgrade, or one that does not offer ``AMQPWSB10``,
  gets HTTP 400 with a one-line reason; a text message closes the socket with 1003.

:class:`WebSocketEndpoint` is the path of one namespace: it accepts or refuses upgrades and keeps
the counters, served at ``GET /$emulator/websockets`` (JSON, no auth, like ``/health``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import WSMsgType, web

from .amqp import AmqpConnection
from .runtime import Runtime

log = logging.getLogger("servicebus_emulator.websocket")

PATH = "/$servicebus/websocket"
SUBPROTOCOL = "AMQPWSB10"
#: largest WebSocket message accepted from a client (the SDK sends one AMQP frame per message)
MAX_MESSAGE = 4 * 1024 * 1024
#: coalesce queued engine output into WebSocket messages of at most this size
MAX_OUT_MESSAGE = 256 * 1024
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
MAX_BUFFERED = 64 * 1024 * 1024
#: how long the close handshake and the last flush may take
CLOSE_TIMEOUT = 5.0


@dataclass
class WebSocketStats:
    """What went over ``/$servicebus/websocket`` on one namespace since start."""

    connections_total: int = 0
    connections_open: int = 0
    refused: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reads_paused: int = 0
    overflow_disconnects: int = 0
    #: most bytes ever queued for one client (bounded by MAX_BUFFERED)
    max_buffered: int = 0


class WebSocketBridge(asyncio.Transport):
    """Carries one AMQP connection over one server-side WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, runtime: Runtime, peer: str, stats: WebSocketStats):
        super().__init__()
        self.ws = ws
        self.peer = peer
        self.stats = stats
        self.protocol = AmqpConnection(runtime)
        self._out: deque[bytes] = deque()
        self.buffered = 0
        self._wakeup = asyncio.Event()
        self._may_read = asyncio.Event()
        self._may_read.set()
        self._closing = False
        self._close_code = 1000
        self._close_reason = b"AMQP connection closed"
        self.bytes_in = 0
        self.bytes_out = 0

    # -- the asyncio.Transport surface AmqpConnection uses ----------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._out.append(bytes(data))
        self.buffered += len(data)
        self._wakeup.set()
        if self.buffered > self.stats.max_buffered:
            self.stats.max_buffered = self.buffered
        if self.buffered > MAX_BUFFERED:
            self.stats.overflow_disconnects += 1
            log.warning(
                "websocket %s: the client left %d bytes unread (limit %d); disconnecting it, its "
                "locked messages are redelivered when their locks expire", self.peer, self.buffered, MAX_BUFFERED,
            )
            self.abort()
        elif self.buffered > HIGH_WATER and self._may_read.is_set():
            self.stats.reads_paused += 1
            self._may_read.clear()
            self.protocol.pause_writing()

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        self._may_read.set()

    def abort(self, code: int = 1011, reason: bytes = b"AMQP connection aborted") -> None:
        dropped = self.buffered
        self._close_code, self._close_reason = code, reason
        self._out.clear()
        self.buffered = 0
        self.close()
        if dropped and not self.ws.closed:
            log.info("websocket %s: aborted with %d bytes unsent", self.peer, dropped)

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "websocket":
            return self.ws
        return default

    # -- the two loops ----------------------------------------------------------------------
    async def run(self) -> None:
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        log.info("websocket %s: AMQP connection opened (%s)", self.peer, SUBPROTOCOL)
        self.protocol.connection_made(self)
        writer = asyncio.create_task(self._write_loop(), name=f"amqp-ws-writer-{self.peer}")
        error: Exception | None = None
        try:
            error = await self._read_loop()
        finally:
            self.close()
            try:
                await asyncio.wait_for(writer, CLOSE_TIMEOUT)
            except (TimeoutError, ConnectionError, RuntimeError) as exc:
                log.info("websocket %s: close did not complete (%s)", self.peer, type(exc).__name__)
                writer.cancel()
            finally:
                self.stats.connections_open -= 1
                self.protocol.connection_lost(error)
                log.info("websocket %s: AMQP connection closed (in %d bytes, out %d bytes, close code %s)",
                         self.peer, self.bytes_in, self.bytes_out, self.ws.close_code)

    async def _read_loop(self) -> Exception | None:
        while not self._closing:
            if not self._may_read.is_set():
                await self._may_read.wait()
                continue
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                self.bytes_in += len(data)
                self.stats.bytes_in += len(data)
                self.stats.messages_in += 1
                self.protocol.data_received(data)
            elif msg.type == WSMsgType.TEXT:
                log.warning("websocket %s: text message received; AMQP over WebSockets uses binary messages "
                            "only, closing with 1003", self.peer)
                self.abort(1003, b"AMQPWSB10 carries binary messages only")
                return None
            elif msg.type == WSMsgType.ERROR:
                return msg.data if isinstance(msg.data, Exception) else ConnectionError(str(msg.data))
            else:  # CLOSE / CLOSING / CLOSED: the client is gone or going
                return None
        return None

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._out:
                    if self._closing:
                        break
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                parts = [self._out.popleft()]
                size = len(parts[0])
                while self._out and size + len(self._out[0]) <= MAX_OUT_MESSAGE:
                    part = self._out.popleft()
                    parts.append(part)
                    size += len(part)
                self.buffered -= size
                await self.ws.send_bytes(b"".join(parts) if len(parts) > 1 else parts[0])
                self.bytes_out += size
                self.stats.bytes_out += size
                self.stats.messages_out += 1
                if not self._may_read.is_set() and self.buffered <= LOW_WATER:
                    self._may_read.set()
                    self.protocol.resume_writing()
        except (ConnectionError, RuntimeError) as exc:  # the client went away; the read loop sees it too
            log.info("websocket %s: send failed (%s); %d bytes unsent", self.peer, exc, self.buffered)
            self._out.clear()
            self.buffered = 0
            self.close()
            return
        if not self.ws.closed:
            await self.ws.close(code=self._close_code, message=self._close_reason)


class WebSocketEndpoint:
    """``/$servicebus/websocket`` of one namespace, and its counters at ``/$emulator/websockets``."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.stats = WebSocketStats()

    def add_routes(self, app: web.Application) -> None:
        """Register both paths (before any catch-all route)."""
        app.router.add_route("*", PATH, self.accept)
        app.router.add_route("GET", "/$emulator/websockets", self.report)

    def _refuse(self, status: int, reason: str, request: web.Request) -> web.Response:
        self.stats.refused += 1
        log.warning("websocket %s: refused %s %s: %s", request.remote, request.method, request.path, reason)
        return web.Response(status=status, text=reason + "\n")

    async def accept(self, request: web.Request) -> web.StreamResponse:
        """Upgrade to AMQP over WebSockets and carry the AMQP connection until it ends."""
        if request.method != "GET":
            return self._refuse(405, f"{PATH} takes a WebSocket upgrade (GET), not {request.method}", request)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._refuse(400, f"{PATH} takes a WebSocket upgrade with subprotocol {SUBPROTOCOL} "
                                "(AMQP over WebSockets); this request has no 'Upgrade: websocket'", request)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=MAX_MESSAGE, timeout=CLOSE_TIMEOUT,
                                   compress=False)
        ready = ws.can_prepare(request)
        if not ready.ok:
            return self._refuse(400, "invalid WebSocket handshake (check Sec-WebSocket-Key and "
                                "Sec-WebSocket-Version: 13)", request)
        if ready.protocol != SUBPROTOCOL:
            return self._refuse(400, f"subprotocol {SUBPROTOCOL} required (AMQP 1.0 over WebSockets); "
                                f"the request offered {offered.strip() or 'none'}", request)
        await ws.prepare(request)
        peer = f"{request.remote}"
        if request.transport is not None:
            name = request.transport.get_extra_info("peername")
            if isinstance(name, tuple) and len(name) >= 2:
                peer = f"{name[0]}:{name[1]}"
        await WebSocketBridge(ws, self.runtime, peer, self.stats).run()
        return ws

    async def report(self, request: web.Request) -> web.Response:
        """The counters as JSON."""
        return web.json_response(asdict(self.stats))


def endpoint(host: str, port: int) -> str:
    """The URL the SDK opens (print it; the SDK is pointed at it with ``custom_endpoint_address``)."""
    shown = f"[{host}]" if ":" in host else host
    return f"ws://{shown}:{port}{PATH}"
