"""The local Web PubSub service (local_stack/webpubsub) in a thread of its own, for synchronous
fixtures, and a WebSocket client that keeps the frames it receives."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp

from local_stack.webpubsub import WebPubSubServer

__all__ = ["FrameClient", "WebPubSubThread"]

JSON_PROTOCOL = "json.webpubsub.azure.v1"


class WebPubSubThread:
    """``start()`` serves on a free 127.0.0.1 port until ``stop()``."""

    def __init__(self, access_key: str) -> None:
        self.access_key = access_key
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://127.0.0.1:{self.port};AccessKey={self.access_key};Version=1.0;"

    def start(self) -> None:
        async def serve() -> None:
            server = WebPubSubServer(access_key=self.access_key)
            await server.start()
            self.port = server.port
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await server.stop()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="webpubsub-service", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local Web PubSub service did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


class FrameClient:
    """One client connection (``json.webpubsub.azure.v1`` unless ``protocol=None``)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, protocol: str | None = JSON_PROTOCOL) -> FrameClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, protocols=(protocol,) if protocol else ())
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def next(self, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """The next frame: JSON-decoded with a subprotocol, str/bytes without; close types as is."""
        msg = await self.ws.receive(timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data) if self.ws.protocol else msg.data
        if msg.type is aiohttp.WSMsgType.BINARY:
            return msg.data
        return msg.type

    async def frames_within(self, seconds: float) -> list[Any]:
        """Every frame that arrives within ``seconds``."""
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                out.append(await self.next(left))
            except TimeoutError:
                break
        return out

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
