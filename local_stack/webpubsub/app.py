"""The aiohttp application of the local Web PubSub service and a runner for it."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from .client_ws import client_endpoint
from .hubs import Service
from .rest import SERVICE_KEY, add_rest_routes, rest_auth_middleware

__all__ = ["ACCESS_KEY", "STATS_PATH", "connection_string", "make_app", "WebPubSubServer"]

#: the local stack's key (not a secret: the service binds 127.0.0.1 and holds nothing)
ACCESS_KEY = "bG9jYWwtd2VicHVic3ViLXNlcnZpY2Uta2V5LTAxMjM0NTY3ODk="
#: connections and groups per hub, for the dashboard and tests (no token: local only)
STATS_PATH = "/_local/stats"


def connection_string(port: int, key: str = ACCESS_KEY, host: str = "127.0.0.1") -> str:
    return f"Endpoint=http://{host}:{port};AccessKey={key};Version=1.0;"


def make_app(access_key: str = ACCESS_KEY) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024 + 1024, middlewares=[rest_auth_middleware])
    service = Service(access_key)
    app[SERVICE_KEY] = service

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(service.stats())

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close_clients(_: web.Application) -> None:
        for hub in list(service.hubs.values()):
            for conn in list(hub.connections.values()):
                conn.close("service stopping", code=1001)

    add_rest_routes(app)
    app.router.add_get("/client/hubs/{hub}", client_endpoint)
    app.router.add_get(STATS_PATH, stats)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(close_clients)
    return app


class WebPubSubServer:
    """The service on ``host:port`` (0: a free port) inside the running event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, access_key: str = ACCESS_KEY) -> None:
        self.host = host
        self.port = port
        self.access_key = access_key
        self.app = make_app(access_key)
        self._runner: web.AppRunner | None = None

    @property
    def service(self) -> Service:
        return self.app[SERVICE_KEY]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, self.access_key, self.host)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve(host: str, port: int, access_key: str) -> None:
    server = WebPubSubServer(host=host, port=port, access_key=access_key)
    await server.start()
    print(f"webpubsub service listening on {server.endpoint}", flush=True)
    print(f"webpubsub connection string: Endpoint={server.endpoint};AccessKey=<--access-key>;Version=1.0;",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
