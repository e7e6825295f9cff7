"""The dashboard's small aiohttp app: the page, its script, uPlot, and one server-sent event stream.

Routes: ``/`` (the page), ``/dashboard.js``, ``/vendor/uPlot.iife.min.js`` and
``/vendor/uPlot.min.css`` (from ``node_modules/uplot``, locked by ``package-lock.json``; no CDN),
``/state.json`` (the current state and plot history, for scripts) and ``/events`` (SSE: one
``data:`` line of JSON per collector tick, with the plot points the client has not seen yet);
the trace view ``/traces`` with the stack's OTLP collector (``POST /v1/traces``, ``traces.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from .collector import Collector
from .traces import TraceStore, add_routes

STATIC = Path(__file__).with_name("static")
UPLOT_DIST = Path(__file__).resolve().parents[2] / "node_modules" / "uplot" / "dist"
KEEPALIVE_SECONDS = 15.0

log = logging.getLogger("local_stack.dashboard")

_FILES = {
    "/": (STATIC / "index.html", "text/html"),
    "/dashboard.js": (STATIC / "dashboard.js", "text/javascript"),
    "/traces": (STATIC / "traces.html", "text/html"),
    "/traces.js": (STATIC / "traces.js", "text/javascript"),
    "/vendor/uPlot.iife.min.js": (UPLOT_DIST / "uPlot.iife.min.js", "text/javascript"),
    "/vendor/uPlot.min.css": (UPLOT_DIST / "uPlot.min.css", "text/css"),
}


def _message(collector: Collector, after: int) -> dict[str, Any]:
    return {"state": collector.state, "points": [p for p in collector.points if p["seq"] > after]}


class Dashboard:
    """Serves the collector's state on ``host:port`` (0 = any free port) and runs its loop."""

    def __init__(self, collector: Collector, *, host: str = "127.0.0.1", port: int = 0,
                 traces: TraceStore | None = None):
        self.collector = collector
        #: the OTLP collector of the stack (``/v1/traces``) and the trace view's data (``/traces``)
        self.traces = traces if traces is not None else TraceStore()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application()
        for path in _FILES:
            app.router.add_get(path, self._file)
        app.router.add_get("/state.json", self._state)
        app.router.add_get("/events", self._events)
        add_routes(app, self.traces)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        self._loop_task = asyncio.create_task(self.collector.run(), name="dashboard-collector")
        return self.url

    async def stop(self) -> None:
        await self.collector.close()
        if self._loop_task is not None:
            # the loop ends by itself once closed; its outcome (even a cancelled tick) is not ours
            done, _ = await asyncio.wait({self._loop_task}, timeout=5)
            if not done:
                self._loop_task.cancel()
                await asyncio.wait({self._loop_task}, timeout=5)
            if self._loop_task.done() and not self._loop_task.cancelled() and self._loop_task.exception():
                log.warning("dashboard collector ended with %r", self._loop_task.exception())
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers --------------------------------------------------------------------------
    async def _file(self, request: web.Request) -> web.StreamResponse:
        path, ctype = _FILES[request.path]
        if not path.is_file():
            raise web.HTTPNotFound(text=f"{path.name} is missing: run `npm ci` (make run does it)\n")
        return web.Response(body=path.read_bytes(), content_type=ctype, charset="utf-8",
                            headers={"cache-control": "no-cache"})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(_message(self.collector, 0))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                           "x-accel-buffering": "no"})
        await resp.prepare(request)
        collector = self.collector
        sent = 0
        try:
            await resp.write(b"retry: 1000\n\n")
            while not collector.closed:
                if collector.seq > sent:
                    message = _message(collector, sent)
                    sent = collector.state["seq"]
                    await resp.write(b"data: " + json.dumps(message, default=str).encode() + b"\n\n")
                elif not await collector.wait_newer(sent, KEEPALIVE_SECONDS) and not collector.closed:
                    await resp.write(b": keep-alive\n\n")
        except ConnectionResetError:  # the page went away
            pass
        return resp
