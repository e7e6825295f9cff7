"""The emulator process: one listening port per namespace, AMQP and admin HTTP on the same port.

The ``azure-servicebus`` admin client always talks HTTP(S) to the host and port of the
connection string, so each port sniffs its first bytes: ``AMQP`` starts the AMQP engine,
anything else goes to the admin HTTP application (aiohttp). That application also serves AMQP
over WebSockets at ``/$servicebus/websocket`` (see :mod:`servicebus_emulator.websocket`), so
Azure's one port for everything (443) maps to one port here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from .admin_http import make_admin_app
from .amqp import AmqpConnection
from .config import EmulatorConfig, NamespaceConfig
from .entities import Namespace
from .errors import EntityNotFound
from .persistence import DataDir
from .runtime import LiveConnection
from .websocket import WebSocketEndpoint
from .websocket import endpoint as websocket_endpoint

log = logging.getLogger("servicebus_emulator")

TICK_SECONDS = 0.05


class _Sniffer(asyncio.Protocol):
    """Reads the first bytes of a connection and hands it to AMQP or HTTP."""

    def __init__(self, runtime: NamespaceRuntime):
        self.runtime = runtime
        self.buffer = b""
        self.io: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.io = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < 4 and b"AMQP".startswith(self.buffer):
            return
        assert self.io is not None
        protocol: asyncio.Protocol
        if self.buffer.startswith(b"AMQP"):
            protocol = AmqpConnection(self.runtime)
        else:
            protocol = self.runtime.http_protocol()
        self.io.set_protocol(protocol)
        protocol.connection_made(self.io)
        protocol.data_received(self.buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class NamespaceRuntime:
    """A namespace with its listening socket and live connections (the adapters see it as a
    :class:`~servicebus_emulator.runtime.Runtime`)."""

    def __init__(self, config: NamespaceConfig, host: str, port: int, advertised_host: str = "localhost",
                 data_dir: DataDir | None = None):
        self.config = config
        self.data_dir = data_dir
        journal = data_dir.journal(config.name) if data_dir is not None else None
        self.namespace = Namespace(config, time.time, journal)
        self.host = host
        self.port = port
        self.advertised_host = advertised_host
        self.connections: set[LiveConnection] = set()
        self.websockets = WebSocketEndpoint(self)
        self._server: asyncio.AbstractServer | None = None
        self._http_runner: web.AppRunner | None = None
        self.namespace.on_delete.append(self._entity_deleted)

    def connection_opened(self, conn: LiveConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: LiveConnection) -> None:
        self.connections.discard(conn)

    def _entity_deleted(self, path: str) -> None:
        error = EntityNotFound(f"The messaging entity '{self.namespace.name}:{path}' was deleted.")
        for conn in list(self.connections):
            conn.detach_links_to(path, error)

    def persist(self) -> None:
        """Make every state change so far durable (``--data-dir``); called before any byte that
        reveals a change leaves the emulator. Without a data dir: nothing to do."""
        if self.data_dir is not None:
            self.data_dir.commit_or_exit()

    def http_protocol(self) -> asyncio.Protocol:
        assert self._http_runner is not None and self._http_runner.server is not None
        return self._http_runner.server()

    async def start(self) -> None:
        app = make_admin_app(self, self.websockets.add_routes)
        self._http_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._http_runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Sniffer(self), self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._http_runner is not None:
            await self._http_runner.cleanup()

    def connection_string(self, key_name: str | None = None) -> str:
        policy = next((p for p in self.config.policies if key_name in (None, p.name)), self.config.policies[0])
        return (
            f"Endpoint=sb://{self.advertised_host}:{self.port};SharedAccessKeyName={policy.name};"
            f"SharedAccessKey={policy.key};UseDevelopmentEmulator=true"
        )


class Emulator:
    """Start/stop all namespaces of a configuration in the running event loop."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 5672,
                 data_dir: DataDir | None = None):
        self.config = config
        self.host = host
        self.base_port = port
        self.data_dir = data_dir
        self.runtimes: dict[str, NamespaceRuntime] = {}
        self._ticker: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        for i, ns in enumerate(self.config.namespaces):
            port = ns.port if ns.port is not None else (self.base_port + i if self.base_port else 0)
            runtime = NamespaceRuntime(ns, self.host, port, data_dir=self.data_dir)
            if self.data_dir is not None:
                counts = self.data_dir.restore(runtime.namespace)
                log.info("namespace %s restored from %s: %s", ns.name, self.data_dir.path, counts)
            await runtime.start()
            self.runtimes[ns.name] = runtime
            log.info("namespace %s listening on %s:%d (AMQP, admin HTTP, AMQP over WebSockets at %s)",
                     ns.name, self.host, runtime.port, websocket_endpoint(self.host, runtime.port))
        if self.data_dir is not None:
            self.data_dir.commit_or_exit()  # what the config added is stored before "ready"
        self._ticker = asyncio.create_task(self._tick_forever(), name="emulator-ticker")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for runtime in self.runtimes.values():
                try:
                    runtime.namespace.tick()
                except Exception:  # the clock must keep running
                    log.exception("tick failed for %s", runtime.namespace.name)
            if self.data_dir is not None:
                self.data_dir.commit_or_exit()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for runtime in self.runtimes.values():
            await runtime.stop()
        if self.data_dir is not None:
            self.data_dir.close()

    def connection_strings(self) -> dict[str, str]:
        return {name: rt.connection_string() for name, rt in self.runtimes.items()}

    def websocket_endpoints(self) -> dict[str, str]:
        """``ws://host:port/$servicebus/websocket`` per namespace (same port as AMQP)."""
        return {name: websocket_endpoint(self.host, rt.port) for name, rt in self.runtimes.items()}
