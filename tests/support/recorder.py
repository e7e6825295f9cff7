"""A local HTTP server that records what a client sends (used for Web PubSub).

There is no Web PubSub emulator, so the tests run the REAL ``WebPubSubServiceClient`` against
this recorder and assert on the REST calls it makes (method, path, hub, group, query, body,
Authorization header). It answers 202 to sends and 200 to anything else.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Recorded", "Recorder"]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.fail_next = 0
        self.fail_status = 503

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.rel_url.raw_path, dict(request.query), dict(request.headers), body)
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=self.fail_status)
        return web.Response(status=202 if "/:send" in request.path else 200)

    def start(self) -> None:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=10 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def clear(self) -> None:
        self.requests.clear()

    def matching(self, path_part: str) -> list[Recorded]:
        return [r for r in list(self.requests) if path_part in r.path]

    def wait_for(self, path_part: str, count: int = 1, timeout: float = 15.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(path_part)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"recorder saw {len(self.matching(path_part))} request(s) to {path_part!r}, wanted {count}: "
                             f"{[r.path for r in self.requests]}")

    def __repr__(self) -> str:  # pragma: no cover
        return f"Recorder(port={self.port}, requests={len(self.requests)})"


