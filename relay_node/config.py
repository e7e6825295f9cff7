"""Relay node configuration: one dataclass, built from argv + an environment mapping.

Only :mod:`relay_node.cli` passes ``os.environ`` in; everything else receives a
:class:`RelayConfig`. Each flag has a matching environment variable (flag wins); the table in
``docs/relay-node.md`` lists the same pairs as :data:`ENV_VARS`.
"""

from __future__ import annotations

import argparse
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from socketio_servicebus.history_token import MAX_TTL, MIN_KEY_CHARS
from socketio_servicebus.servicebus.clients import ConnectionSettingsError, parse_connection_string
from socketio_servicebus.servicebus.proxy import ProxySettings, parse_proxy_url
from socketio_servicebus.zones import ZoneConfigError, ZoneSet, load_zones
from socketio_servicebus.zones.bounds import DEFAULT_MAX_REGISTRY_NODES
from socketio_servicebus.zones.config import SETTING_ZONE_KEY, SETTING_ZONES

PROG = "relay-node"

#: flag dest -> environment variable
ENV_VARS: dict[str, str] = {
    "host": "RELAY_HOST",
    "port": "RELAY_PORT",
    "node_id": "RELAY_NODE_ID",
    "region": "RELAY_REGION",
    "connection_string": "SERVICEBUS_CONNECTION_STRING",
    "fully_qualified_namespace": "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
    "topic": "SERVICEBUS_TOPIC",
    "subscription": "RELAY_SUBSCRIPTION",
    "receive_mode": "RELAY_RECEIVE_MODE",
    "transport": "SERVICEBUS_TRANSPORT",
    "http_proxy": "RELAY_HTTP_PROXY",
    "cors_origins": "RELAY_CORS_ORIGINS",
    "apps": "RELAY_APPS",
    "auth_jwt_key": "RELAY_AUTH_JWT_KEY",
    "auth_jwt_public_key_file": "RELAY_AUTH_JWT_PUBLIC_KEY_FILE",
    "auth_jwt_public_key": "RELAY_AUTH_JWT_PUBLIC_KEY",
    "auth_jwt_audience": "RELAY_AUTH_JWT_AUDIENCE",
    "auth_jwt_issuer": "RELAY_AUTH_JWT_ISSUER",
    "auth_callback": "RELAY_AUTH_CALLBACK",
    "authorize_room": "RELAY_AUTHORIZE_ROOM",
    "rate_limit": "RELAY_RATE_LIMIT",
    "rate_burst": "RELAY_RATE_BURST",
    "rate_limit_disconnect_after": "RELAY_RATE_LIMIT_DISCONNECT_AFTER",
    "max_connections": "RELAY_MAX_CONNECTIONS",
    "ops_port": "RELAY_OPS_PORT",
    "history_url": "RELAY_HISTORY_URL",
    "dashboard_url": "RELAY_DASHBOARD_URL",
    # the Function App's setting of the same name (socketio_servicebus/topology.json appSettings.historyTokenKey)
    "history_token_key": "SIO_HISTORY_TOKEN_KEY",
    "history_token_ttl": "RELAY_HISTORY_TOKEN_TTL",
    # trust zones (socketio_servicebus.zones; the Function App reads the same names)
    "zone": "SIO_ZONE",
    "zone_key_file": "SIO_ZONE_KEY_FILE",
    "zones_file": "SIO_ZONES_FILE",
    "max_nodes": "RELAY_MAX_NODES",
    # environment only (a secret; a JSON document): no flag
    "zone_key": "SIO_ZONE_KEY",
    "zones": "SIO_ZONES",
    "drain_seconds": "RELAY_DRAIN_SECONDS",
    "auto_delete_on_idle": "RELAY_AUTO_DELETE_ON_IDLE",
    "subscription_check_interval": "RELAY_SUBSCRIPTION_CHECK_INTERVAL",
    "credit_budget": "RELAY_CREDIT_BUDGET",
    "send_interval": "RELAY_SEND_INTERVAL",
    "max_http_buffer_size": "RELAY_MAX_HTTP_BUFFER_SIZE",
    "startup_timeout": "RELAY_STARTUP_TIMEOUT",
    "log_level": "RELAY_LOG_LEVEL",
}

DEFAULT_APP = "relay_node.chat:setup"
#: an HS256 client-auth secret shorter than this is refused (RFC 7518 3.2: a key of >= 256 bits)
MIN_JWT_KEY_CHARS = 32
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and what to fix."""


@dataclass
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    node_id: str = ""
    region: str = "local"
    connection_string: str | None = field(default=None, repr=False)
    fully_qualified_namespace: str | None = None
    topic: str = "socketio"
    subscription: str | None = None
    receive_mode: str = "receive_and_delete"
    transport: str = "amqp"
    http_proxy: ProxySettings | None = None
    #: set at start, not from flags: ``sb://127.0.0.1:<port>`` of the local CONNECT tunnel that
    #: carries the emulator's plain ``ws://`` through ``http_proxy`` (``RelayNode.start``)
    custom_endpoint_address: str | None = None
    #: ``None`` = same origin only (python-socketio's default); ``["*"]`` = any origin
    cors_origins: list[str] | None = None
    apps: list[str] = field(default_factory=lambda: [DEFAULT_APP])
    auth_jwt_key: str | None = field(default=None, repr=False)
    auth_jwt_public_key: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    auth_callback: str | None = None
    #: ``module:function`` ``authorize_room(claims, room) -> bool | "read-history"``; none = anyone joins
    authorize_room: str | None = None
    #: per-socket token bucket: events per second, and the burst a socket may send at once
    rate_limit: float = 20.0
    rate_burst: float = 60.0
    #: refused events in a row after which the socket is disconnected (0 = never)
    rate_limit_disconnect_after: int = 100
    #: Engine.IO sessions this node accepts at once; more are answered 503 (0 = no cap)
    max_connections: int = 10_000
    #: serve /metrics and /readyz on this port only (same host); ``None`` = on the public port
    ops_port: int | None = None
    history_url: str | None = None
    #: a dashboard the demo page links to (the local stack sets it); none = no link
    dashboard_url: str | None = None
    #: shared with the Function App; ``None`` = this node offers no history tokens
    history_token_key: str | None = field(default=None, repr=False)
    history_token_ttl: float = 300.0
    #: trust zones: sign what this node sends, verify and police what it receives; ``None`` = off
    zones: ZoneSet | None = field(default=None, repr=False)
    #: most other nodes the registry holds (amplification bound)
    max_nodes: int = DEFAULT_MAX_REGISTRY_NODES
    drain_seconds: float = 10.0
    #: AutoDeleteOnIdle of the node's own subscription, seconds (Azure's minimum is 300)
    auto_delete_on_idle: float = 300.0
    subscription_check_interval: float = 60.0
    #: credits per second of the namespace for credit-aware batching; None: off
    credit_budget: float | None = None
    #: the manager's send_interval (latency budget of its batch window), seconds
    send_interval: float = 0.015
    #: largest socket.io message (and long-polling request body) a client may send, bytes
    max_http_buffer_size: int = 1_000_000
    startup_timeout: float = 20.0
    log_level: str = "INFO"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_jwt_key or self.auth_jwt_public_key or self.auth_callback)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A python-socketio node scaled out over an Azure Service Bus topic. "
        "Every flag can also be set by the environment variable shown in brackets; the flag wins.",
    )

    def add(*names: str, dest: str, help: str, **kw: object) -> None:
        p.add_argument(*names, dest=dest, help=f"{help} [{ENV_VARS[dest]}]", default=None, **kw)  # type: ignore[arg-type]

    add("--host", dest="host", help="address to bind (default 127.0.0.1; 0.0.0.0 in containers)")
    add("--port", dest="port", help="port to bind; 0 = ephemeral, the bound port is printed (default 8000)")
    add("--node-id", dest="node_id", help="this node's id (default: <hostname>-<8 hex>); its own subscription is node-<id>")
    add("--region", dest="region", help="region label of this node (default local)")
    add("--connection-string", dest="connection_string", help="Service Bus connection string (SAS key)")
    add("--fully-qualified-namespace", dest="fully_qualified_namespace",
        help="<ns>.servicebus.windows.net, authenticated with DefaultAzureCredential")
    add("--topic", dest="topic", help="Service Bus topic (default socketio)")
    add("--subscription", dest="subscription",
        help="pre-provisioned subscription to read (no Manage right needed); default: create node-<id>")
    add("--receive-mode", dest="receive_mode", help="receive_and_delete (default; at-most-once, no settlement cost) or peek_lock")
    add("--transport", dest="transport",
        help="amqp (TCP 5671, default) or websockets (AMQP over WebSockets on 443, proxy-friendly; "
        "against the emulator: its own port)")
    add("--http-proxy", dest="http_proxy",
        help="HTTP proxy for Service Bus, http://[user:password@]host:port (implies --transport websockets)")
    add("--cors-origins", dest="cors_origins",
        help="comma list of allowed browser origins, or * for any (default: same origin only)")
    add("--app", dest="apps", action="append",
        help="socket.io app to load, package.module:setup; repeatable (default relay_node.chat:setup); "
        "the env var takes a comma list")
    add("--auth-jwt-key", dest="auth_jwt_key", help="HS256 secret: clients must connect with auth={token: JWT}")
    add("--auth-jwt-public-key-file", dest="auth_jwt_public_key_file",
        help="PEM public key file: clients must present an RS256 JWT")
    add("--auth-jwt-audience", dest="auth_jwt_audience", help="required JWT aud claim (optional)")
    add("--auth-jwt-issuer", dest="auth_jwt_issuer", help="required JWT iss claim (optional)")
    add("--auth-callback", dest="auth_callback",
        help="module:function, async def authorize(environ, auth) -> bool | dict")
    add("--auth-jwt-public-key", dest="auth_jwt_public_key",
        help="PEM public key text (instead of a file; for a container secret): clients must present an RS256 JWT")
    add("--authorize-room", dest="authorize_room",
        help="module:function, authorize_room(claims, room) -> bool | 'read-history', asked before every join "
        "(default: anyone may join, no history older than the join)")
    add("--rate-limit", dest="rate_limit",
        help="events per second one socket may send, on average (default 20; 0 = no limit)")
    add("--rate-burst", dest="rate_burst", help="events one socket may send at once (default 60)")
    add("--rate-limit-disconnect-after", dest="rate_limit_disconnect_after",
        help="refused events in a row after which a socket is disconnected (default 100; 0 = never)")
    add("--max-connections", dest="max_connections",
        help="connections this node holds at once; more are answered 503 (default 10000; 0 = no cap)")
    add("--ops-port", dest="ops_port",
        help="serve /metrics and /readyz on this port (same host) instead of the public one")
    add("--history-url", dest="history_url",
        help="base URL of the Functions history API the demo page calls after a reconnect")
    add("--dashboard-url", dest="dashboard_url",
        help="URL of a dashboard the demo page links to (default: no link)")
    add("--history-token-key", dest="history_token_key",
        help="key shared with the Function App to sign history tokens (>= 32 characters; prefer the env var: "
        "flags show in the process list); unset = no tokens, the node's clients cannot read history")
    add("--history-token-ttl", dest="history_token_ttl",
        help="lifetime of a history token in seconds (default 300, at most 3600)")
    add("--zone", dest="zone",
        help="trust zone of this node (e.g. cloud, factory1): sign what it sends with the zone's key "
        "(SIO_ZONE_KEY or --zone-key-file), verify and police what it receives; unset = zones off")
    add("--zone-key-file", dest="zone_key_file", help="file holding this zone's private key (base64url seed)")
    add("--zones-file", dest="zones_file",
        help="zone document: every zone's public keys, node ids and room prefixes (or JSON in SIO_ZONES)")
    add("--max-nodes", dest="max_nodes", help="most other nodes kept in the registry (default 1000)")
    add("--drain-seconds", dest="drain_seconds", help="upper bound of a graceful shutdown (default 10)")
    add("--auto-delete-on-idle", dest="auto_delete_on_idle",
        help="AutoDeleteOnIdle of the node's own subscription in seconds (default 300, Azure's minimum)")
    add("--subscription-check-interval", dest="subscription_check_interval",
        help="seconds between checks that the own subscription keeps its rule (default 60; 0 = never)")
    add("--credit-budget", dest="credit_budget",
        help="credits per second of the Service Bus namespace (Standard: 1000): batch so the fleet stays "
        "within it (default: off; see docs/scale.md)")
    add("--send-interval", dest="send_interval",
        help="longest an emit waits for companions in a batch, seconds (default 0.015)")
    add("--max-http-buffer-size", dest="max_http_buffer_size",
        help="largest message a client may send, bytes (default 1000000); larger ones close the connection")
    add("--startup-timeout", dest="startup_timeout",
        help="seconds to wait for Service Bus at startup before giving up (default 20)")
    add("--log-level", dest="log_level", help="DEBUG, INFO (default), WARNING, ERROR")
    return p


def _pick(ns: argparse.Namespace, env: Mapping[str, str], dest: str) -> str | None:
    value = getattr(ns, dest, None)
    if value is None:
        value = env.get(ENV_VARS[dest]) or None
    return value


def _float(text: str | None, default: float, flag: str, minimum: float = 0.0) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number, not {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum:g}, not {text}")
    return value


_PROXY_FORM = "--http-proxy must look like http://[user:password@]host:port"


def parse_proxy(text: str) -> ProxySettings:
    """Validate ``--http-proxy`` (one rule with the library: :func:`parse_proxy_url`)."""
    try:
        return parse_proxy_url(text, _PROXY_FORM)
    except ConnectionSettingsError as exc:
        raise ConfigError(str(exc)) from None


def parse_cors(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    items = [o.strip().rstrip("/") for o in text.split(",") if o.strip()]
    if "*" in items:
        return ["*"]
    for origin in items:
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"--cors-origins: {origin!r} is not an origin like https://chat.example.com")
    return items


def default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-._")[:40] or "relay"
    return f"{host}-{uuid.uuid4().hex[:8]}"


def _zones(pick: Callable[[str], str | None], env: Mapping[str, str]) -> ZoneSet | None:
    settings = {k: v for k, v in env.items() if k in (SETTING_ZONES, SETTING_ZONE_KEY)}
    for dest in ("zone", "zone_key_file", "zones_file"):
        value = pick(dest)
        if value:
            settings[ENV_VARS[dest]] = value
    try:
        zones = load_zones(settings)
    except ZoneConfigError as exc:
        raise ConfigError(f"--zone: {exc}") from None
    if zones is not None and zones.signer is None:
        raise ConfigError(f"--zone {zones.local_zone}: no private key: set {SETTING_ZONE_KEY} or --zone-key-file")
    return zones


def from_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> RelayConfig:
    """Parse argv (``None`` = ``sys.argv[1:]``) over ``env``; raises ConfigError or SystemExit(2) for --help."""
    ns = build_parser().parse_args(argv)
    cfg = RelayConfig()

    def pick(dest: str) -> str | None:
        return _pick(ns, env, dest)


    cfg.host = pick("host") or cfg.host
    port = pick("port")
    if port is not None:
        try:
            cfg.port = int(port)
        except ValueError:
            raise ConfigError(f"--port must be an integer, not {port!r}") from None
        if not 0 <= cfg.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, not {cfg.port}")
    cfg.node_id = pick("node_id") or default_node_id()
    if not _NODE_ID.match(cfg.node_id):
        raise ConfigError(f"--node-id {cfg.node_id!r}: use 1-63 letters, digits, '.', '_' or '-'")
    cfg.region = pick("region") or cfg.region

    cfg.connection_string = pick("connection_string")
    cfg.fully_qualified_namespace = pick("fully_qualified_namespace")
    if cfg.connection_string and cfg.fully_qualified_namespace:
        # both in the environment: an explicit flag decides, else the connection string wins
        if ns.fully_qualified_namespace and not ns.connection_string:
            cfg.connection_string = None
        else:
            cfg.fully_qualified_namespace = None
    if not cfg.connection_string and not cfg.fully_qualified_namespace:
        raise ConfigError(
            "no Service Bus given: pass --connection-string (or SERVICEBUS_CONNECTION_STRING) or "
            "--fully-qualified-namespace <ns>.servicebus.windows.net (or SERVICEBUS_FULLY_QUALIFIED_NAMESPACE)"
        )
    if cfg.connection_string:
        try:
            parse_connection_string(cfg.connection_string)
        except ConnectionSettingsError as exc:
            raise ConfigError(f"--connection-string: {exc}") from None
    if cfg.fully_qualified_namespace:
        fqns = cfg.fully_qualified_namespace.strip()
        fqns = re.sub(r"^(sb|https?)://", "", fqns).rstrip("/")
        if not fqns or "/" in fqns or ";" in fqns:
            raise ConfigError(
                f"--fully-qualified-namespace {cfg.fully_qualified_namespace!r}: expected <ns>.servicebus.windows.net"
            )
        cfg.fully_qualified_namespace = fqns

    cfg.topic = pick("topic") or cfg.topic
    cfg.subscription = pick("subscription")
    mode = (pick("receive_mode") or cfg.receive_mode).lower().replace("-", "_")
    if mode not in ("peek_lock", "receive_and_delete"):
        raise ConfigError(f"--receive-mode must be peek_lock or receive_and_delete, not {mode!r}")
    cfg.receive_mode = mode
    transport = (pick("transport") or cfg.transport).lower()
    if transport in ("amqpoverwebsocket", "websocket", "ws"):
        transport = "websockets"
    if transport not in ("amqp", "websockets"):
        raise ConfigError(f"--transport must be amqp or websockets, not {transport!r}")
    cfg.transport = transport
    proxy = pick("http_proxy")
    if proxy:
        cfg.http_proxy = parse_proxy(proxy)
        if cfg.transport != "websockets":
            # the SDK only tunnels AMQP over WebSockets through a proxy
            cfg.transport = "websockets"

    cfg.cors_origins = parse_cors(pick("cors_origins"))

    if ns.apps:
        apps = list(ns.apps)
    elif env.get(ENV_VARS["apps"]):
        apps = [a.strip() for a in env[ENV_VARS["apps"]].split(",") if a.strip()]
    else:
        apps = [DEFAULT_APP]
    for spec in apps:
        if not _APP_SPEC.match(spec):
            raise ConfigError(f"--app {spec!r}: expected package.module:setup")
    cfg.apps = apps

    cfg.auth_jwt_key = (pick("auth_jwt_key") or "").strip() or None
    if cfg.auth_jwt_key is not None and len(cfg.auth_jwt_key) < MIN_JWT_KEY_CHARS:
        raise ConfigError(
            f"--auth-jwt-key / {ENV_VARS['auth_jwt_key']} is {len(cfg.auth_jwt_key)} characters long: use at least "
            f"{MIN_JWT_KEY_CHARS} random characters (a short HS256 secret can be guessed offline from one token)"
        )
    cfg.auth_jwt_public_key = pick("auth_jwt_public_key")
    if cfg.auth_jwt_public_key and "PUBLIC KEY" not in cfg.auth_jwt_public_key:
        raise ConfigError(f"--auth-jwt-public-key / {ENV_VARS['auth_jwt_public_key']}: not a PEM public key")
    key_file = pick("auth_jwt_public_key_file")
    if key_file:
        try:
            cfg.auth_jwt_public_key = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--auth-jwt-public-key-file {key_file}: {exc.strerror}") from None
        if "PUBLIC KEY" not in cfg.auth_jwt_public_key:
            raise ConfigError(f"--auth-jwt-public-key-file {key_file}: not a PEM public key")
    cfg.auth_jwt_audience = pick("auth_jwt_audience")
    cfg.auth_jwt_issuer = pick("auth_jwt_issuer")
    cfg.auth_callback = pick("auth_callback")
    if cfg.auth_callback and not _APP_SPEC.match(cfg.auth_callback):
        raise ConfigError(f"--auth-callback {cfg.auth_callback!r}: expected package.module:function")
    cfg.authorize_room = pick("authorize_room")
    if cfg.authorize_room and not _APP_SPEC.match(cfg.authorize_room):
        raise ConfigError(f"--authorize-room {cfg.authorize_room!r}: expected package.module:function")
    cfg.rate_limit = _float(pick("rate_limit"), cfg.rate_limit, "--rate-limit")
    cfg.rate_burst = _float(pick("rate_burst"), cfg.rate_burst, "--rate-burst", 1.0)
    cfg.rate_limit_disconnect_after = int(_float(pick("rate_limit_disconnect_after"), cfg.rate_limit_disconnect_after,
                                                 "--rate-limit-disconnect-after"))
    cfg.max_connections = int(_float(pick("max_connections"), cfg.max_connections, "--max-connections"))
    ops_port = pick("ops_port")
    if ops_port is not None:
        if not ops_port.isdigit() or not 0 <= int(ops_port) <= 65535:
            raise ConfigError(f"--ops-port must be 0..65535, not {ops_port!r}")
        cfg.ops_port = int(ops_port)

    history = pick("history_url")
    if history:
        if not re.match(r"^https?://\S+$", history) and not history.startswith("/"):
            raise ConfigError(f"--history-url {history!r}: expected an http(s):// URL or a path")
        cfg.history_url = history.rstrip("/")
    dashboard = pick("dashboard_url")
    if dashboard:
        if not re.match(r"^https?://\S+$", dashboard):
            raise ConfigError(f"--dashboard-url {dashboard!r}: expected an http(s):// URL")
        cfg.dashboard_url = dashboard
    token_key = (pick("history_token_key") or "").strip() or None
    if token_key is not None and len(token_key) < MIN_KEY_CHARS:
        raise ConfigError(
            f"--history-token-key / {ENV_VARS['history_token_key']} is {len(token_key)} characters long: use at least "
            f"{MIN_KEY_CHARS} random characters, the same value as the Function App's setting"
        )
    cfg.history_token_key = token_key
    cfg.history_token_ttl = _float(pick("history_token_ttl"), cfg.history_token_ttl, "--history-token-ttl", 10.0)
    if cfg.history_token_ttl > MAX_TTL:
        raise ConfigError(f"--history-token-ttl must be <= {MAX_TTL} seconds, not {cfg.history_token_ttl:g}")
    cfg.zones = _zones(pick, env)
    cfg.max_nodes = int(_float(pick("max_nodes"), cfg.max_nodes, "--max-nodes", 1))
    cfg.drain_seconds = _float(pick("drain_seconds"), cfg.drain_seconds, "--drain-seconds")
    cfg.auto_delete_on_idle = _float(pick("auto_delete_on_idle"), cfg.auto_delete_on_idle,
                                     "--auto-delete-on-idle", 1.0)
    cfg.subscription_check_interval = _float(pick("subscription_check_interval"), cfg.subscription_check_interval,
                                             "--subscription-check-interval")
    budget = pick("credit_budget")
    cfg.credit_budget = _float(budget, 0.0, "--credit-budget", 1.0) if budget else None
    cfg.send_interval = _float(pick("send_interval"), cfg.send_interval, "--send-interval")
    cfg.max_http_buffer_size = int(_float(pick("max_http_buffer_size"), cfg.max_http_buffer_size,
                                          "--max-http-buffer-size", 1024))
    cfg.startup_timeout = _float(pick("startup_timeout"), cfg.startup_timeout, "--startup-timeout", 1.0)
    level = (pick("log_level") or cfg.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    cfg.log_level = level
    return cfg
