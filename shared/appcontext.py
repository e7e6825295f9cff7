"""Function App settings (read once, from the environment) and the clients built from them.

``function_app.py`` builds one :class:`AppContext` at import time with :meth:`AppContext.from_env`;
handlers receive it as an argument, so tests can build their own from a dict.

Clients (Service Bus per region, the events table, Web PubSub per hub) are created lazily on first
use and cached **per running event loop**: the Python worker runs every async function on one loop,
so in production each client is created once; tests that use a fresh loop per test get fresh clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.connections import Connection, credential_for, resolve
from shared.routing.plan import RegionMap
from socketio_servicebus.history_token import HistoryKeys, KeyConfigError
from socketio_servicebus.topology import load_topology
from socketio_servicebus.zones import BusGuard, ZoneSet, load_zones

__all__ = ["AppSettings", "AppContext", "EXTRA_SETTINGS"]

log = logging.getLogger("socketio_servicebus.functions")

_TOPO = load_topology()
_NAMES = _TOPO["appSettings"]

#: Settings this code reads that topology.json does not (yet) name.
EXTRA_SETTINGS = {
    # Max accepted body of POST /api/emit in bytes (default: the Service Bus Standard limit).
    "emitMaxBytes": "SIO_EMIT_MAX_BYTES",
    # History token keys of on-premise sites, each confined to room prefixes (JSON; secret).
    "historyTokenScopedKeys": "SIO_HISTORY_TOKEN_SCOPED_KEYS",
    # Most rooms one emit may name before the Web PubSub push refuses it (amplification bound).
    "webPubSubMaxRooms": "SIO_WEBPUBSUB_MAX_ROOMS",
    # Trust zones (socketio_servicebus.zones): the zone document, this app's zone and its key.
    "zones": "SIO_ZONES",
    "zonesFile": "SIO_ZONES_FILE",
    "zone": "SIO_ZONE",
    "zoneKey": "SIO_ZONE_KEY",
}

#: Default of ``SIO_WEBPUBSUB_MAX_ROOMS``.
DEFAULT_WEBPUBSUB_MAX_ROOMS = 100


def region_connection_name(region: str) -> str:
    """``ServiceBusConnection_<region>`` (``topology.json`` -> ``regionConnectionTemplate``)."""
    return str(_TOPO["regionConnectionTemplate"]).replace("{region}", region)


@dataclass(frozen=True)
class AppSettings:
    region: str | None
    region_map: RegionMap
    topic: str
    history_table: str
    webpubsub_hub: str
    hooks_module: str | None
    emit_max_bytes: int
    #: keys that verify history tokens (``SIO_HISTORY_TOKEN_KEY`` [+ ``_PREVIOUS``]); none = history refused
    history_keys: HistoryKeys = field(default_factory=lambda: HistoryKeys(None))
    #: why ``GET /api/history`` refuses every request (key missing or unusable), else ``None``
    history_keys_problem: str | None = None
    #: trust zones (``SIO_ZONE`` set): verify, police and sign bus messages; ``None`` = zones off
    zones: ZoneSet | None = None
    webpubsub_max_rooms: int = DEFAULT_WEBPUBSUB_MAX_ROOMS
    service_bus_connection: str = _NAMES["serviceBusConnection"]
    tables_connection: str = _NAMES["tablesConnection"]
    webpubsub_connection: str = _NAMES["webPubSubConnection"]
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppSettings:
        env = dict(os.environ if env is None else env)
        region = env.get(_NAMES["region"]) or None
        rmap = RegionMap.parse(env.get(_NAMES["regionMap"]))
        if not len(rmap) and region:
            # A single-region deployment may leave the map out.
            rmap = RegionMap.parse({region: {}})
        if region and region not in rmap:
            from shared.routing.plan import RegionMapError

            raise RegionMapError(f"{_NAMES['region']}={region!r} is not a key of {_NAMES['regionMap']}")
        from socketio_servicebus.wire.envelope import SERVICEBUS_MAX_MESSAGE_BYTES

        key_names = (_NAMES["historyTokenKey"], _NAMES["historyTokenKeyPrevious"])
        problem: str | None = None
        try:
            keys = HistoryKeys.from_settings(env.get(key_names[0]), env.get(key_names[1]), names=key_names)
            keys = keys.with_scoped(env.get(EXTRA_SETTINGS["historyTokenScopedKeys"]),
                                    name=EXTRA_SETTINGS["historyTokenScopedKeys"])
        except KeyConfigError as exc:
            keys, problem = HistoryKeys(None), str(exc)
        if problem is None and not keys.configured:
            problem = f"{key_names[0]} is not set"
        return cls(
            region=region or (rmap.names[0] if len(rmap) else None),
            region_map=rmap,
            topic=env.get(_NAMES["topic"]) or _TOPO["topic"],
            history_table=env.get(_NAMES["historyTable"]) or _TOPO["defaults"]["historyTable"],
            webpubsub_hub=env.get(_NAMES["webPubSubHub"]) or _TOPO["defaults"]["webPubSubHub"],
            hooks_module=env.get(_NAMES["hooksModule"]) or None,
            emit_max_bytes=int(env.get(EXTRA_SETTINGS["emitMaxBytes"]) or SERVICEBUS_MAX_MESSAGE_BYTES),
            history_keys=keys,
            history_keys_problem=problem,
            zones=load_zones(env),  # ZoneConfigError: the app must not run with a broken zone setup
            webpubsub_max_rooms=int(env.get(EXTRA_SETTINGS["webPubSubMaxRooms"]) or DEFAULT_WEBPUBSUB_MAX_ROOMS),
            env=env,
        )

    def region_connection(self, region: str) -> Connection:
        """How to reach ``region``'s namespace: ``ServiceBusConnection_<region>`` (string or identity),
        else the region map's ``fullyQualifiedNamespace`` with the default identity."""
        name = region_connection_name(region)
        try:
            return resolve(name, "servicebus", self.env)
        except LookupError:
            spec = self.region_map.regions.get(region)
            if spec is not None and spec.fully_qualified_namespace:
                return Connection(name, endpoint=spec.fully_qualified_namespace)
            raise

    def home_connection(self) -> Connection:
        """The emit API's namespace: ``ServiceBusConnection``, else the home region's connection."""
        try:
            return resolve(self.service_bus_connection, "servicebus", self.env)
        except LookupError:
            if self.region:
                return self.region_connection(self.region)
            raise


class _PerLoop:
    """Objects cached per running event loop."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def cache(self) -> dict[Any, Any]:
        loop = asyncio.get_running_loop()
        return self._by_loop.setdefault(loop, {})


class _SerialSender:
    """An SDK topic sender whose sends run one at a time.

    The SDK's aio sender is not safe for concurrent ``send_messages`` calls, and concurrent
    function invocations share one sender per namespace: interleaved sends on one link broke the
    AMQP connection under load, and each failure closed the sender under the invocations still
    using it (a self-sustaining storm of ``'NoneType' object has no attribute ...`` errors that
    leaked a connection per attempt).
    """

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._lock = asyncio.Lock()
        self.closed = False

    async def send_messages(self, message: Any, **kwargs: Any) -> Any:
        async with self._lock:
            if self.closed:
                raise ConnectionError("the sender was closed after a failed send; the message will be retried")
            return await self._sender.send_messages(message, **kwargs)

    async def close(self) -> None:
        self.closed = True
        async with self._lock:
            await self._sender.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sender, name)


class AppContext:
    """Settings + lazily created clients. One per Function App process."""

    #: Service Bus client retry settings for sends from the router and the emit API: fail fast so
    #: the invocation fails and Service Bus redelivers (the retry that matters is MaxDeliveryCount).
    SB_CLIENT_KWARGS: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "retry_backoff_max": 4}

    def __init__(self, settings: AppSettings, *, hooks: Any = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self._clients = _PerLoop()
        #: verifies, polices and signs bus messages when zones are on (``SIO_ZONE``)
        self.guard: BusGuard | None = BusGuard(settings.zones) if settings.zones is not None else None
        if self.guard is not None:
            log.info("trust zones: this app is zone %s; known: %s", self.guard.zones.local_zone,
                     self.guard.zones.describe())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppContext:
        return cls(AppSettings.from_env(env))

    # ------------------------------------------------------------ Service Bus
    def _sb_client(self, conn: Connection) -> Any:
        cache = self._clients.cache()
        key = ("sb", conn)
        client = cache.get(key)
        if client is None:
            from socketio_servicebus.servicebus.clients import servicebus_client

            if conn.connection_string is not None:
                client = servicebus_client(connection_string=conn.connection_string, **self.SB_CLIENT_KWARGS)
            else:
                client = servicebus_client(
                    fully_qualified_namespace=conn.endpoint,
                    credential=credential_for(conn),
                    **self.SB_CLIENT_KWARGS,
                )
            cache[key] = client
        return client

    async def topic_sender(self, conn: Connection) -> Any:
        """A cached, open aio topic sender for the namespace of ``conn``.

        Opened once under a lock: the SDK's sender is not safe to open from several concurrent
        first sends (concurrent invocations race in ``_open`` and fail with AttributeError), nor
        to send from several at once: it is wrapped so sends take turns (:class:`_SerialSender`).
        """
        cache = self._clients.cache()
        key = ("sender", conn, self.settings.topic)
        sender = cache.get(key)
        if sender is not None:
            return sender
        lock = cache.setdefault(("sender-lock", key), asyncio.Lock())
        async with lock:
            sender = cache.get(key)
            if sender is None:
                raw = self._sb_client(conn).get_topic_sender(self.settings.topic)
                await raw.__aenter__()
                sender = cache[key] = _SerialSender(raw)
        return sender

    async def region_sender(self, region: str) -> Any:
        return await self.topic_sender(self.settings.region_connection(region))

    async def home_sender(self) -> Any:
        return await self.topic_sender(self.settings.home_connection())

    async def drop_sender(self, sender: Any) -> None:
        """Forget (and close) a sender after a failure, so the next attempt reconnects."""
        cache = self._clients.cache()
        for key, value in list(cache.items()):
            if value is sender:
                del cache[key]
        try:
            await sender.close()
        except Exception:  # noqa: BLE001 - best effort
            log.debug("closing a failed sender raised", exc_info=True)

    # ------------------------------------------------------------ Tables
    def table_client(self) -> Any:
        cache = self._clients.cache()
        client = cache.get("table")
        if client is None:
            from azure.data.tables.aio import TableClient

            conn = resolve(self.settings.tables_connection, "tables", self.settings.env)
            if conn.connection_string is not None:
                client = TableClient.from_connection_string(conn.connection_string, self.settings.history_table)
            else:
                client = TableClient(str(conn.endpoint), self.settings.history_table, credential=credential_for(conn))
            cache["table"] = client
        return client

    # ------------------------------------------------------------ Web PubSub
    def webpubsub_client(self, hub: str) -> Any:
        cache = self._clients.cache()
        key = ("wps", hub)
        client = cache.get(key)
        if client is None:
            from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

            conn = resolve(self.settings.webpubsub_connection, "webpubsub", self.settings.env)
            if conn.connection_string is not None:
                client = WebPubSubServiceClient.from_connection_string(conn.connection_string, hub=hub)
            else:
                client = WebPubSubServiceClient(str(conn.endpoint), hub, credential=credential_for(conn))
            cache[key] = client
        return client

    async def aclose(self) -> None:
        """Close the clients of the current loop (the runner and tests call this)."""
        cache = self._clients.cache()
        for value in list(cache.values()):
            try:
                await value.close()
            except Exception:  # noqa: BLE001
                log.debug("close failed", exc_info=True)
        cache.clear()
