"""The relay node process: Service Bus manager + python-socketio + ops routes, served by uvicorn.

Lifecycle (one log line each): probe Service Bus → start the manager → subscription ready →
listening → (signal) draining → subscription deleted → stopped. :class:`RelayNode` owns it; the
entry point only parses configuration and maps :class:`StartupError` to an exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvicorn

from socketio_servicebus.manager.client_manager import ServiceBusManager
from socketio_servicebus.manager.options import BatchingOptions, ClusterOptions, Limits
from socketio_servicebus.servicebus.clients import emulator_address
from socketio_servicebus.servicebus.tunnel import ConnectTunnel
from socketio_servicebus.topology import load_topology

from . import authorize
from .auth import Authorizer
from .config import RelayConfig
from .connection_cap import ConnectionCap
from .guard import install_connect_guard
from .history import EVENT as HISTORY_TOKEN_EVENT
from .history import HistoryTokenIssuer
from .loading import LoadError, load_ref, setup_apps
from .metrics import CONTENT_TYPE, make_registry
from .ops import OPS_SCOPE_KEY, OpsServer
from .oversize import hard_cap, refuse_oversized
from .probe import StartupError, probe
from .ratelimit import RateLimiter, install_rate_limit
from .sdk_options import SdkOptions, endpoint_of, needs_tunnel, sdk_options

log = logging.getLogger("relay_node")

STATIC_DIR = Path(__file__).with_name("static")
CLIENT_JS = STATIC_DIR / "vendor" / "socket.io.min.js"
_STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                 "/index.html": ("index.html", "text/html; charset=utf-8"),
                 "/app.js": ("app.js", "text/javascript; charset=utf-8")}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _DrainGate:
    """While draining, refuse new Engine.IO sessions with 503 before socket.io sees them.

    A refused handshake is a transport error for the official clients, so they keep retrying
    with backoff and, behind a load balancer, land on a ready node. (A socket.io-level
    ``connect_error`` would stop them.) Requests of existing sessions (``sid=`` in the query)
    pass until the node closes them.
    """

    def __init__(self, node: RelayNode, app: Any):
        self.node = node
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.node.draining and scope["type"] in ("http", "websocket")
                and scope.get("path", "").startswith("/socket.io")
                and b"sid=" not in scope.get("query_string", b"")):
            self.node._counts["refused_draining"] += 1
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013})
            else:
                await _respond_json(send, 503, {"error": "draining", "node": self.node.cfg.node_id},
                                    extra=[(b"retry-after", b"1")])
            return
        if scope["type"] == "http" and scope.get("path", "").startswith("/socket.io"):
            # engine.io refuses an oversized long-polling POST only after its ASGI adapter has
            # started reading it, and then never answers: refuse it here, unread (413)
            limit = self.node.cfg.max_http_buffer_size
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                    await _respond_json(send, 413, {"error": f"request body over {limit} bytes"},
                                        extra=[(b"connection", b"close")])
                    return
        if scope["type"] == "websocket":  # an oversized event gets an error, not a closed connection
            receive = refuse_oversized(receive, send, self.node.cfg.max_http_buffer_size)
        await self.app(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the node drains first, then stops uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RelayNode:
    def __init__(
        self,
        cfg: RelayConfig,
        *,
        manager_factory: Callable[..., Any] | None = None,
        credential: Any = None,
        run_probe: bool = True,
    ):
        self.cfg = cfg
        self.credential = credential
        self.run_probe = run_probe
        self.manager_factory = manager_factory
        self.draining = False
        self.started_at = time.time()
        self.port: int | None = None
        self.manager: Any = None
        self.tunnel: ConnectTunnel | None = None
        self.sio: Any = None
        self.asgi: Any = None
        self.authorizer = Authorizer.from_config(cfg)
        self.history_tokens: HistoryTokenIssuer | None = None
        self.room_access: authorize.RoomAccess | None = None
        self.rate_limiter = RateLimiter(rate=cfg.rate_limit, burst=cfg.rate_burst,
                                        disconnect_after=cfg.rate_limit_disconnect_after)
        self.connection_cap: ConnectionCap | None = None
        self.ops: OpsServer | None = None
        self._uvicorn: _Uvicorn | None = None
        self._serve_task: asyncio.Task[Any] | None = None
        self._stopped = asyncio.Event()
        self._drain_task: asyncio.Task[Any] | None = None
        self._counts = {"connects": 0, "refused_draining": 0}
        self.registry, self.render_metrics = make_registry(self)

    # ------------------------------------------------------------------ state for the routes
    def connected_clients(self) -> dict[str, int]:
        if self.manager is None:
            return {}
        return {ns: len(rooms.get(None, ())) for ns, rooms in getattr(self.manager, "rooms", {}).items()}

    def safe_health(self) -> dict[str, Any]:
        if self.manager is None:
            return {"connected": False, "subscription_ready": False, "ready": False,
                    "last_error": "starting", "buffered": 0}
        try:
            return dict(self.manager.health())
        except Exception as exc:  # noqa: BLE001 - a probe must answer even if the manager is broken; the error is the reason
            return {"ready": False, "last_error": f"health() failed: {exc}"}

    def counters(self) -> list[tuple[str, str, float]]:
        return [
            ("connections_accepted", "socket.io connections accepted", self._counts["connects"]),
            ("connections_refused_unauthorized", "connections refused by auth", self.authorizer.refused),
            ("connections_refused_draining", "connections refused while draining", self._counts["refused_draining"]),
            ("history_tokens_issued", "history tokens issued", self.history_tokens.issued if self.history_tokens else 0),
            ("history_tokens_refused", "history token requests refused",
             self.history_tokens.refused if self.history_tokens else 0),
            ("history_tokens_resumed", "history tokens that resumed an earlier membership",
             self.history_tokens.resumed if self.history_tokens else 0),
            ("room_joins_refused", "joins refused by the authorize_room hook",
             self.room_access.refused if self.room_access else 0),
            ("events_rate_limited", "client events refused by the per-socket rate limit", self.rate_limiter.limited),
            ("clients_disconnected_rate_limit", "clients disconnected for exceeding the rate limit persistently",
             self.rate_limiter.disconnected),
            ("connections_refused_max", "connections refused with 503 at --max-connections",
             self.connection_cap.refused if self.connection_cap else 0),
        ]

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        health = self.safe_health()
        body: dict[str, Any] = {"node": self.cfg.node_id, "region": self.cfg.region, "health": health}
        if self.draining:
            return False, {**body, "ready": False, "reason": "draining"}
        if not health.get("ready"):
            if health.get("reason"):  # the manager says why (ServiceBusManager does)
                return False, {**body, "ready": False, "reason": str(health["reason"])}
            if not health.get("connected"):
                reason = "servicebus not connected"
            elif not health.get("subscription_ready"):
                reason = "subscription not ready"
            else:
                reason = "manager not ready"
            if health.get("last_error"):
                reason += f": {health['last_error']}"
            return False, {**body, "ready": False, "reason": reason}
        return True, {**body, "ready": True}

    # ------------------------------------------------------------------ building
    def _make_manager(self, options: SdkOptions) -> Any:
        kwargs: dict[str, Any] = dict(
            connection=options.connection(self.cfg),
            cluster=ClusterOptions(auto_delete_on_idle=self.cfg.auto_delete_on_idle,
                                   subscription_check_interval=self.cfg.subscription_check_interval),
            # the Function App's subscriptions (router, persist, webpubsub) share the topic
            batching=BatchingOptions(send_interval=self.cfg.send_interval, credit_budget=self.cfg.credit_budget,
                                     extra_subscriptions=len(load_topology()["functionSubscriptions"])),
            limits=Limits(max_nodes=self.cfg.max_nodes),
            node_id=self.cfg.node_id,
            region=self.cfg.region,
            logger=logging.getLogger("relay_node.manager"),
        )
        if self.cfg.zones is not None:
            kwargs["zones"] = self.cfg.zones
        factory = self.manager_factory if self.manager_factory is not None else ServiceBusManager
        return factory(**kwargs)

    async def _guard(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        if self.draining:
            self._counts["refused_draining"] += 1
            raise socketio.exceptions.ConnectionRefusedError("draining: this node is shutting down, reconnect")
        claims = await self.authorizer(environ, auth)
        environ["relay.claims"] = claims
        self._counts["connects"] += 1

    async def build(self, options: SdkOptions | None = None) -> None:
        """Manager, server and apps, without network I/O."""
        self.manager = self._make_manager(options if options is not None else sdk_options(self.cfg, self.credential))
        cors: Any = self.cfg.cors_origins
        if cors == ["*"]:
            cors = "*"
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=self.manager,
            cors_allowed_origins=cors,
            max_http_buffer_size=self.cfg.max_http_buffer_size,
            logger=False,
            engineio_logger=False,
        )
        hook = load_ref(self.cfg.authorize_room, "--authorize-room") if self.cfg.authorize_room else authorize.allow_join
        self.room_access = authorize.attach(self.sio, authorize.RoomAccess(hook))
        await setup_apps(self.sio, self.cfg.apps)
        namespaces = install_connect_guard(self.sio, self._guard)  # last: it wraps what the apps registered
        self.history_tokens = HistoryTokenIssuer(
            self.sio, key=self.cfg.history_token_key, ttl=self.cfg.history_token_ttl, node_id=self.cfg.node_id,
            history_url=self.cfg.history_url)
        self.history_tokens.install(namespaces)
        install_rate_limit(self.sio, self.rate_limiter)  # after every handler is registered
        self.connection_cap = ConnectionCap(socketio.ASGIApp(self.sio, other_asgi_app=self._routes),
                                            limit=self.cfg.max_connections,
                                            count=lambda: len(getattr(self.sio.eio, "sockets", {})))
        self.asgi = _DrainGate(self, self.connection_cap)

    # ------------------------------------------------------------------ HTTP routes
    async def _routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope.get("path", "/")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
            return
        if path == "/healthz":
            body = {"status": "ok", "node": self.cfg.node_id, "region": self.cfg.region,
                    "uptime": round(time.time() - self.started_at, 3), "draining": self.draining}
            await _respond_json(send, 200, body)
        elif path in ("/readyz", "/metrics") and self.cfg.ops_port is not None and not scope.get(OPS_SCOPE_KEY):
            await _respond(send, 404, b"not found (served on the ops port)\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ok, body = self.readiness()
            await _respond_json(send, 200 if ok else 503, body)
        elif path == "/metrics":
            await _respond(send, 200, self.render_metrics(), CONTENT_TYPE)
        elif path == "/config.json":
            body = {"node": self.cfg.node_id, "region": self.cfg.region, "historyUrl": self.cfg.history_url,
                    "authRequired": self.authorizer.enabled, "chatRoomPrefix": "chat:",
                    "historyTokens": bool(self.history_tokens and self.history_tokens.enabled)}
            body["dashboardUrl"] = self.cfg.dashboard_url
            await _respond_json(send, 200, body, extra=[(b"cache-control", b"no-store")])
        elif path == "/socket.io.min.js":
            await _respond(send, 200, CLIENT_JS.read_bytes(), "text/javascript; charset=utf-8",
                           extra=[(b"cache-control", b"public, max-age=3600")])
        elif path in _STATIC_FILES:
            name, ctype = _STATIC_FILES[path]
            await _respond(send, 200, (STATIC_DIR / name).read_bytes(), ctype)
        else:
            await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8")

    # ------------------------------------------------------------------ running
    async def start(self) -> None:
        """Probe, build, start the manager, bind and serve. Raises StartupError."""
        cfg = self.cfg
        log.info("connecting to Service Bus %s (topic %s, %s, node %s, region %s)", endpoint_of(cfg), cfg.topic,
                 f"subscription {cfg.subscription}" if cfg.subscription else "own subscription",
                 cfg.node_id, cfg.region)
        if cfg.transport == "websockets":
            log.info("transport: AMQP over WebSockets%s",
                     f" through the HTTP proxy {cfg.http_proxy.display}" if cfg.http_proxy else "")
        if needs_tunnel(cfg):
            await self._open_tunnel()  # sets cfg.custom_endpoint_address: before the options
        options = sdk_options(cfg, self.credential)
        deadline = time.monotonic() + cfg.startup_timeout
        if self.run_probe:
            try:
                await probe(cfg, options, deadline=deadline)
            except StartupError as exc:
                tunnel = self.tunnel
                if tunnel is not None and tunnel.failed and not tunnel.opened and cfg.http_proxy is not None:
                    raise StartupError(f"{exc}; the proxy {cfg.http_proxy.display} did not open a tunnel: "
                                       f"{tunnel.last_error}", fatal=exc.fatal) from exc
                raise
        try:
            await self.build(options)
        except LoadError as exc:
            raise StartupError(str(exc), fatal=True) from exc
        tokens = self.history_tokens
        if tokens is not None and tokens.enabled:
            log.info("history tokens: on (%s, lifetime %.0f s, key id %s)", HISTORY_TOKEN_EVENT, tokens.ttl,
                     tokens.key_id)
        else:
            log.warning("history tokens: off (SIO_HISTORY_TOKEN_KEY not set): this node's clients cannot read "
                        "the history API after a reconnect")
        if not self.authorizer.enabled:
            log.warning("client auth: off (no --auth-jwt-key, --auth-jwt-public-key[-file] or --auth-callback): any "
                        "client that reaches %s:%s may connect, join rooms and chat", cfg.host, cfg.port)
        if cfg.zones is not None:
            log.info("trust zones: on, this node signs as zone %s (kid %s); known: %s", cfg.zones.local_zone,
                     cfg.zones.signer.kid if cfg.zones.signer else "-", cfg.zones.describe())
        else:
            log.warning("trust zones: off (no --zone / SIO_ZONE): every holder of the Service Bus key is trusted")
        self.sio.manager_initialized = True
        await self.manager.start()
        ready = await self.manager.wait_ready(max(1.0, deadline - time.monotonic()))
        name = getattr(self.manager, "subscription_name", cfg.subscription or f"node-{cfg.node_id}")
        if ready:
            log.info("subscription %s ready", name)
        else:
            log.warning("subscription %s not ready after %.0fs (%s); serving anyway, /readyz answers 503",
                        name, cfg.startup_timeout, self.safe_health().get("last_error"))
        sock = _bind(cfg.host, cfg.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi, log_config=None, access_log=False, lifespan="off", ws="auto",
            timeout_graceful_shutdown=2, ws_ping_interval=20, ws_ping_timeout=20,
            # up to the hard cap an oversized message is answered with an error (relay_node/oversize.py);
            # above it, it is refused while it arrives (close 1009), not buffered up to uvicorn's 16 MiB
            ws_max_size=hard_cap(cfg.max_http_buffer_size),
            log_level="debug" if cfg.log_level == "DEBUG" else "warning",
        )
        self._uvicorn = _Uvicorn(config)
        self._serve_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name="uvicorn")
        while not self._uvicorn.started:
            if self._serve_task.done():
                await self._serve_task
                raise StartupError(f"cannot serve on {cfg.host}:{self.port}", fatal=False)
            await asyncio.sleep(0.02)
        url_host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        if cfg.ops_port is not None:
            self.ops = OpsServer(self._routes)
            ops_port = await self.ops.start(_bind(cfg.host, cfg.ops_port))
            log.info("ops port: /metrics, /readyz, /healthz on http://%s:%d (not on the public port)", url_host,
                     ops_port)
            print(f"relay-node ops port on http://{url_host}:{ops_port}", flush=True)
        log.info("listening on http://%s:%d", url_host, self.port)
        print(f"relay-node listening on http://{url_host}:{self.port}", flush=True)

    async def _open_tunnel(self) -> None:
        cfg = self.cfg
        assert cfg.http_proxy is not None and cfg.connection_string
        host, port = emulator_address(cfg.connection_string)
        proxy = cfg.http_proxy
        self.tunnel = ConnectTunnel(proxy.hostname, proxy.port, host, port,
                                    username=proxy.username, password=proxy.password)
        local = await self.tunnel.start()
        cfg.custom_endpoint_address = f"sb://127.0.0.1:{local}"
        log.info("emulator over plain ws://: CONNECT tunnel 127.0.0.1:%d -> proxy %s -> %s:%d", local,
                 proxy.display, host, port)

    async def close_tunnel(self) -> None:
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            await tunnel.close()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)

    def request_stop(self, sig: int | None = None) -> None:
        if self._drain_task is None:
            log.info("received %s", signal.Signals(sig).name if sig else "stop request")
            self._drain_task = asyncio.ensure_future(self.drain())
        elif self._uvicorn is not None:  # second signal: stop now
            log.warning("second signal: stopping without waiting")
            self._uvicorn.force_exit = True
            self._uvicorn.should_exit = True

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def drain(self) -> None:
        """Refuse new connections, flush, move clients away, delete the subscription, stop."""
        self.draining = True
        cfg = self.cfg
        log.info("draining (at most %.0fs): /readyz now answers 503", cfg.drain_seconds)
        deadline = time.monotonic() + cfg.drain_seconds

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        try:
            async with asyncio.timeout(cfg.drain_seconds):
                if self.manager is None:
                    raise _NothingToDrain
                await self._move_clients(left)
                if hasattr(self.manager, "flush"):
                    await self.manager.flush(min(left(), 5.0))
                await self.manager.close()
                if cfg.subscription:
                    log.info("subscription %s kept (pre-provisioned)", cfg.subscription)
                else:
                    log.info("subscription %s deleted", getattr(self.manager, "subscription_name", "?"))
        except _NothingToDrain:
            pass
        except TimeoutError:
            log.warning("drain took longer than %.0fs; stopping anyway", cfg.drain_seconds)
        except Exception:
            log.exception("drain failed; stopping anyway")
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._serve_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._serve_task), 5.0)
                except Exception as exc:  # noqa: BLE001 - stopping anyway; logged
                    log.warning("uvicorn did not stop cleanly (%s: %s); forcing exit", type(exc).__name__, exc)
                    self._uvicorn.force_exit = True
        if self.ops is not None:
            await self.ops.stop()
        await self.close_tunnel()
        if self.credential is not None and hasattr(self.credential, "close"):
            with contextlib.suppress(Exception):
                await self.credential.close()
        log.info("stopped")
        self._stopped.set()

    async def _move_clients(self, left: Callable[[], float]) -> None:
        """Tell every client to go: ``relay:reconnect``, then drop its Engine.IO transport.

        The transport is closed without an Engine.IO ``close`` packet (and so without a socket.io
        disconnect): to the official clients (JS, python-socketio) that is a lost connection, which
        they reconnect from on their own, with their default backoff, through the load balancer to
        a node that is still ready. A ``close`` packet would be a server disconnect, which
        python-socketio's client never reconnects from.
        """
        eio_sids = list(getattr(self.sio.eio, "sockets", {}).keys())
        if not eio_sids:
            return
        log.info("closing %d client connection(s) so they reconnect elsewhere", len(eio_sids))
        with contextlib.suppress(Exception):
            await self.sio.emit("relay:reconnect", {"reason": "draining", "node": self.cfg.node_id},
                                ignore_queue=True)
        await asyncio.sleep(min(0.2, left()))
        for eio_sid in eio_sids:
            with contextlib.suppress(Exception):
                await _drop_transport(self.sio.eio, eio_sid)


async def _drop_transport(eio: Any, eio_sid: str) -> None:
    """Close one Engine.IO session like a lost connection: the server forgets it (socket.io
    disconnect handlers run), no ``close`` packet is sent, the WebSocket is closed after what was
    queued before (the writer stops at the ``None``) and a pending long-poll returns empty; the
    client's next poll finds no session (400), a transport error it reconnects from."""
    sock = eio.sockets.get(eio_sid)
    if sock is None:
        return
    await sock.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
    sock.queue.put_nowait(None)
    eio.sockets.pop(eio_sid, None)


class _NothingToDrain(Exception):
    pass


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
                           "(0 = any free port)", fatal=True) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _respond(send: Send, status: int, body: bytes, ctype: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, json.dumps(obj, default=str).encode() + b"\n", "application/json", extra)
