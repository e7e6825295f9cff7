"""``ConnectTunnel`` against scripted proxies on real sockets: what it sends, what it accepts, its bounds.

The path through a real proxy (tinyproxy) is in ``tests/relay_node/test_websocket_proxy.py``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from socketio_servicebus.servicebus.tunnel import MAX_HEAD, ConnectTunnel, TunnelError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedProxy:
    def __init__(self, script: Script):
        self.script = script
        self.heads: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await self.script(reader, writer)
        finally:
            writer.close()

    async def __aenter__(self) -> ScriptedProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def tunnels() -> AsyncIterator[list[ConnectTunnel]]:
    made: list[ConnectTunnel] = []
    yield made
    for tunnel in made:
        await tunnel.close()


async def test_connect_with_credentials_then_bytes_both_ways(tunnels: list[ConnectTunnel]) -> None:
    async def echo_after_200(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the 200 and the first tunnelled bytes in one segment: nothing may be lost between them
        writer.write(b"HTTP/1.1 200 Connection established\r\nX-Proxy: scripted\r\n\r\nhello ")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async with ScriptedProxy(echo_after_200) as proxy:
        tunnel = ConnectTunnel("127.0.0.1", proxy.port, "localhost", 5672, username="dom\\user", password="p@ss:w")
        tunnels.append(tunnel)
        port = await tunnel.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(range(256)) * 2000  # 512 kB: several reads and drains each way
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(6 + len(payload)), 10)
        assert got == b"hello " + payload
        writer.close()
        await writer.wait_closed()
    head = proxy.heads[0].decode()
    assert head.startswith("CONNECT localhost:5672 HTTP/1.1\r\nHost: localhost:5672\r\n")
    auth = next(line for line in head.split("\r\n") if line.startswith("Proxy-Authorization: Basic "))
    assert base64.b64decode(auth.split()[-1]).decode() == "dom\\user:p@ss:w"
    assert (tunnel.opened, tunnel.failed) == (1, 0)


async def _refuse_407(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
    await writer.drain()


async def _say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass


async def _endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (2 * MAX_HEAD) + b"\r\n\r\n")
    await writer.drain()


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (_refuse_407, "answered CONNECT localhost:5672 with 'HTTP/1.1 407 Proxy Authentication Required'"),
        (_say_nothing, "closed the connection without answering CONNECT"),
        (_endless_head, f"longer than {MAX_HEAD} bytes"),
        (_not_http, "with 'SSH-2.0-OpenSSH_9.2'"),
    ],
)
async def test_a_proxy_that_does_not_open_the_tunnel(script: Script, reason: str,
                                                     tunnels: list[ConnectTunnel]) -> None:
    async with ScriptedProxy(script) as proxy:
        tunnel = ConnectTunnel("127.0.0.1", proxy.port, "localhost", 5672, username="u", password="s3cret")
        tunnels.append(tunnel)
        with pytest.raises(TunnelError, match=reason.replace("(", r"\(")) as err:
            await tunnel.open()
        assert "s3cret" not in str(err.value)
        # through the listener: the client's connection is closed, the failure counted and kept
        port = await tunnel.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert tunnel.failed == 1 and tunnel.opened == 0
        assert tunnel.last_error is not None and reason.split("'")[0] in tunnel.last_error


async def test_no_proxy_listening_is_an_os_error(tunnels: list[ConnectTunnel]) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    tunnel = ConnectTunnel("127.0.0.1", port, "localhost", 5672, connect_timeout=2)
    tunnels.append(tunnel)
    with pytest.raises(OSError):
        await tunnel.open()
