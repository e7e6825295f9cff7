"""The one place that turns the node's configuration into Service Bus SDK client options.

:func:`sdk_options` gives everything the node opens with: the credentials, the
``ServiceBusClient`` keyword arguments (transport, proxy, the local CONNECT tunnel), the
``ServiceBusAdministrationClient`` ones, and the manager's
:class:`~socketio_servicebus.manager.options.ConnectionOptions`. The startup probe
(:mod:`relay_node.probe`) and the manager (:mod:`relay_node.server`) both take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.servicebus import TransportType

from socketio_servicebus.manager.options import ConnectionOptions
from socketio_servicebus.servicebus.clients import is_emulator

from .config import RelayConfig

__all__ = ["SdkOptions", "admin_kwargs", "client_kwargs", "endpoint_of", "key_name_of", "needs_tunnel", "sdk_options"]


@dataclass(frozen=True)
class SdkOptions:
    #: ``connection_string`` / ``fully_qualified_namespace`` / ``credential`` for every client
    credentials: dict[str, Any]
    #: ``ServiceBusClient`` keyword arguments
    client: dict[str, Any]
    #: ``ServiceBusAdministrationClient`` keyword arguments
    admin: dict[str, Any]

    def connection(self, cfg: RelayConfig) -> ConnectionOptions:
        """The manager's connection options."""
        return ConnectionOptions(**self.credentials, topic=cfg.topic, subscription=cfg.subscription,
                                 receive_mode=cfg.receive_mode, client_options=self.client,
                                 admin_options=self.admin)


def sdk_options(cfg: RelayConfig, credential: Any = None) -> SdkOptions:
    """What the node's clients open with; call it after the tunnel (if any) is listening."""
    return SdkOptions(
        credentials={"connection_string": cfg.connection_string,
                     "fully_qualified_namespace": cfg.fully_qualified_namespace, "credential": credential},
        client=client_kwargs(cfg),
        admin=admin_kwargs(cfg),
    )


def endpoint_of(cfg: RelayConfig) -> str:
    if cfg.connection_string:
        for part in cfg.connection_string.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() == "endpoint":
                return value.strip().rstrip("/")
    return f"sb://{cfg.fully_qualified_namespace}"


def key_name_of(cfg: RelayConfig) -> str:
    if cfg.connection_string:
        for part in cfg.connection_string.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() == "sharedaccesskeyname":
                return value.strip()
        return "(shared access signature)"
    return "DefaultAzureCredential"


def needs_tunnel(cfg: RelayConfig) -> bool:
    """The emulator's plain ``ws://`` through a proxy: aiohttp would not ask for CONNECT
    (see ``socketio_servicebus.servicebus.tunnel``), so the node opens the tunnel itself."""
    return (cfg.transport == "websockets" and cfg.http_proxy is not None
            and bool(cfg.connection_string) and is_emulator(cfg.connection_string))


def client_kwargs(cfg: RelayConfig) -> dict[str, Any]:
    """Transport and proxy settings for every Service Bus client the node opens.

    ``servicebus_client`` then derives what the SDK does not: ``custom_endpoint_address`` for the
    emulator's port and an ``http://`` URL as ``proxy_hostname`` (``websocket_options``).
    """
    kwargs: dict[str, Any] = {}
    if cfg.transport == "websockets":
        kwargs["transport_type"] = TransportType.AmqpOverWebsocket
    if cfg.custom_endpoint_address:  # the emulator through the local CONNECT tunnel
        kwargs["custom_endpoint_address"] = cfg.custom_endpoint_address
    elif cfg.http_proxy is not None:
        kwargs["http_proxy"] = cfg.http_proxy.to_sdk()
    return kwargs


def admin_kwargs(cfg: RelayConfig) -> dict[str, Any]:
    """The admin API is HTTPS (plain HTTP to the emulator): azure-core's ``proxies`` carries the same proxy."""
    if cfg.http_proxy is None:
        return {}
    url = cfg.http_proxy.url()
    return {"proxies": {"https": url, "http": url}}


