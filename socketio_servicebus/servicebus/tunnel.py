"""A local HTTP CONNECT tunnel for AMQP over plain WebSockets (``ws://``) through a proxy.

The async SDK opens its WebSocket with aiohttp. For ``wss://`` (Azure) aiohttp asks the proxy for
a ``CONNECT host:443`` tunnel, as proxies expect. For plain ``ws://`` (only the local emulator,
which has no TLS) aiohttp sends the upgrade request to the proxy in absolute form instead
(``GET ws://host:port/$servicebus/websocket``), which common proxies refuse (tinyproxy answers
400). RFC 6455 section 4.1 says a WebSocket client behind a proxy should ask it for a CONNECT
tunnel; :class:`ConnectTunnel` does that on the SDK's behalf: it listens on 127.0.0.1 and, for
every connection, asks the proxy for ``CONNECT target:port`` and then copies bytes both ways.
The SDK is pointed at it with ``custom_endpoint_address="sb://127.0.0.1:<tunnel port>"`` and
no ``http_proxy``. So the proxy sees the same CONNECT it sees from a node talking to Azure.

Bounded: each direction reads at most ``CHUNK`` bytes and waits for the other side to drain
before reading more; the proxy's answer head may be at most ``MAX_HEAD`` bytes and must come
within ``connect_timeout``. The proxy's credentials go only into ``Proxy-Authorization``; they
are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

from socketio_servicebus.errors import TunnelError as TunnelError

log = logging.getLogger("socketio_servicebus.servicebus.tunnel")

CHUNK = 64 * 1024
MAX_HEAD = 16 * 1024
#: after one direction ends, how long the other may still run
CLOSE_GRACE = 5.0


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConnectTunnel:
    """``127.0.0.1:<port>`` → proxy ``CONNECT target_host:target_port`` → target, per connection."""

    def __init__(
        self,
        proxy_host: str,
        proxy_port: int,
        target_host: str,
        target_port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 10.0,
    ):
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.target = _authority(target_host, target_port)
        self.connect_timeout = connect_timeout
        self._auth = (
            "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            if username else None
        )
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.opened = 0
        self.failed = 0
        self.last_error: str | None = None

    @property
    def proxy(self) -> str:
        """The proxy as ``http://host:port``, without credentials (for logs)."""
        return f"http://{_authority(self.proxy_host, self.proxy_port)}"

    async def start(self, host: str = "127.0.0.1") -> int:
        self._server = await asyncio.start_server(self._accept, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer), name=f"connect-tunnel-{self.target}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """One tunnel through the proxy to the target; raises :class:`TunnelError` or ``OSError``."""
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.proxy_host, self.proxy_port, limit=MAX_HEAD)
            try:
                head = f"CONNECT {self.target} HTTP/1.1\r\nHost: {self.target}\r\n"
                if self._auth:
                    head += f"Proxy-Authorization: {self._auth}\r\n"
                writer.write((head + "\r\n").encode("latin-1"))
                await writer.drain()
                try:
                    answer = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    raise TunnelError(f"the proxy's answer to CONNECT is longer than {MAX_HEAD} bytes") from None
                except asyncio.IncompleteReadError:
                    raise TunnelError("the proxy closed the connection without answering CONNECT") from None
                status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace").strip()
                fields = status.split(" ", 2)
                if len(fields) < 2 or not fields[0].startswith("HTTP/") or fields[1] != "200":
                    raise TunnelError(f"the proxy answered CONNECT {self.target} with {status[:200]!r}")
            except BaseException:
                writer.close()
                raise
        return reader, writer

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            proxy_r, proxy_w = await self.open()
        except (OSError, TimeoutError) as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("proxy %s: no tunnel to %s: %s", self.proxy, self.target, self.last_error)
            client_w.close()
            return
        self.opened += 1
        log.debug("proxy %s: tunnel %d to %s open", self.proxy, self.opened, self.target)
        pipes = [asyncio.create_task(_pipe(client_r, proxy_w)), asyncio.create_task(_pipe(proxy_r, client_w))]
        try:
            # one side done (EOF or error): give the other a moment to finish, then end both
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_GRACE)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (client_w, proxy_w):
                w.close()
            for w in (client_w, proxy_w):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.wait_closed(), 1.0)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close ``dst``; backpressure through ``drain``."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()
