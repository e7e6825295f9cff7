"""A minimal TCP load balancer for tests: each new connection goes to the first backend whose
``/readyz`` answered 200 at the last probe (every 0.2 s), as a cloud load balancer takes a
draining node out of rotation. Bytes are copied both ways; nothing is parsed."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp


class ReadyBalancer:
    def __init__(self, backends: list[int], probe_interval: float = 0.2) -> None:
        self.backends = list(backends)
        self.ready: list[int] = list(backends)
        self.interval = probe_interval
        self.port = 0
        self.routed: dict[int, int] = {}
        self._server: asyncio.Server | None = None
        self._probe: asyncio.Task[None] | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ReadyBalancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._probe = asyncio.create_task(self._probe_loop())
        return self

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _probe_loop(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while True:
                ready = []
                for port in self.backends:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            if resp.status == 200:
                                ready.append(port)
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                self.ready = ready
                await asyncio.sleep(self.interval)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.ready:
            writer.close()  # no backend: a refused connection, as a load balancer with none healthy
            return
        port = self.ready[0]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        self.routed[port] = self.routed.get(port, 0) + 1
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
