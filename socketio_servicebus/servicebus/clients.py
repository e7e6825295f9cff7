"""Service Bus clients made the same way for Azure and for the local emulator.

The SDK's ``ServiceBusAdministrationClient`` always speaks HTTPS to the connection string's
host and port. Against the emulator (``UseDevelopmentEmulator=true``) the one local-only
adjustment is a transport that sends those requests as plain HTTP to the same port, where the
emulator serves its admin API beside AMQP. Everything in this project that creates or deletes
topics, subscriptions or rules goes through :func:`admin_client`.

AMQP over WebSockets (``transport_type=TransportType.AmqpOverWebsocket``) needs two settings
the SDK does not derive, which :func:`websocket_options` fills in for :func:`servicebus_client`:

- over WebSockets the SDK connects to port 443 whatever the connection string says, unless
  ``custom_endpoint_address`` names host and port; against the emulator (plain ``ws://`` on the
  namespace's port) it is set to the connection string's ``sb://host:port``;
- the async SDK hands ``http_proxy["proxy_hostname"]`` to aiohttp as a URL, so a bare host
  (``proxy.corp``) fails with ``InvalidURL``; it is given as ``http://proxy.corp``.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.servicebus import TransportType
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient

from socketio_servicebus.errors import ConnectionSettingsError as ConnectionSettingsError
from socketio_servicebus.servicebus.proxy import host_and_port


def parse_connection_string(conn_str: str) -> dict[str, str]:
    """Key/value pairs of a Service Bus connection string, keys lower-cased."""
    parts: dict[str, str] = {}
    for item in (conn_str or "").strip().strip(";").split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConnectionSettingsError(
                f"connection string part {key.strip()!r} has no '='; expected "
                "Endpoint=sb://<namespace>/;SharedAccessKeyName=<name>;SharedAccessKey=<key>"
            )
        parts[key.strip().lower()] = value.strip()
    if "endpoint" not in parts or not parts["endpoint"].startswith("sb://"):
        raise ConnectionSettingsError(
            "connection string needs Endpoint=sb://<namespace>.servicebus.windows.net/ "
            "(or sb://localhost:<port> with UseDevelopmentEmulator=true)"
        )
    has_key = "sharedaccesskeyname" in parts and "sharedaccesskey" in parts
    if not has_key and "sharedaccesssignature" not in parts:
        raise ConnectionSettingsError(
            "connection string needs SharedAccessKeyName and SharedAccessKey (or SharedAccessSignature)"
        )
    return parts


def is_emulator(conn_str: str | None) -> bool:
    return bool(conn_str) and parse_connection_string(conn_str or "").get("usedevelopmentemulator") == "true"


#: the port the SDK uses for an emulator connection string without one (plain AMQP)
EMULATOR_DEFAULT_PORT = 5672


def emulator_address(conn_str: str) -> tuple[str, int]:
    """Host and port of an emulator connection string's ``Endpoint=sb://host[:port]``."""
    endpoint = parse_connection_string(conn_str)["endpoint"]
    authority = endpoint[len("sb://"):].split("/", 1)[0]
    host, port = host_and_port("//" + authority, f"Endpoint {endpoint!r}")
    return host, port or EMULATOR_DEFAULT_PORT


def aio_proxy(proxy: dict[str, Any]) -> dict[str, Any]:
    """The SDK's ``http_proxy`` dict with ``proxy_hostname`` as the URL aiohttp needs."""
    host = str(proxy.get("proxy_hostname") or "")
    if host and "://" not in host:
        host = f"http://[{host}]" if ":" in host else f"http://{host}"
        return {**proxy, "proxy_hostname": host}
    return proxy


def websocket_options(connection_string: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for the aio ``ServiceBusClient`` with the WebSocket settings derived (see module doc).

    Explicit ``custom_endpoint_address`` and URL-form proxies are kept as given.
    """
    out = dict(kwargs)
    proxy = out.get("http_proxy")
    if isinstance(proxy, dict):
        out["http_proxy"] = aio_proxy(proxy)
    websockets = bool(proxy) or out.get("transport_type") == TransportType.AmqpOverWebsocket
    if websockets and connection_string and is_emulator(connection_string) and not out.get("custom_endpoint_address"):
        host, port = emulator_address(connection_string)
        out["custom_endpoint_address"] = f"sb://{'[' + host + ']' if ':' in host else host}:{port}"
    return out


class _PlainHttpTransport(AioHttpTransport):  # type: ignore[misc]
    """Sends the admin client's https:// requests as http:// (emulator only)."""

    async def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith("https://"):
            request.url = "http://" + request.url[len("https://"):]
        return await super().send(request, **kwargs)


def admin_client(
    *,
    connection_string: str | None = None,
    fully_qualified_namespace: str | None = None,
    credential: AsyncTokenCredential | None = None,
    **kwargs: Any,
) -> ServiceBusAdministrationClient:
    """An aio admin client for Azure or for the emulator."""
    if connection_string:
        if is_emulator(connection_string):
            kwargs.setdefault("transport", _PlainHttpTransport())
        return ServiceBusAdministrationClient.from_connection_string(connection_string, **kwargs)
    if fully_qualified_namespace and credential is not None:
        return ServiceBusAdministrationClient(fully_qualified_namespace, credential, **kwargs)
    raise ConnectionSettingsError("give a connection string, or a fully qualified namespace and a credential")


def servicebus_client(
    *,
    connection_string: str | None = None,
    fully_qualified_namespace: str | None = None,
    credential: AsyncTokenCredential | None = None,
    **kwargs: Any,
) -> ServiceBusClient:
    """An aio data-plane client for Azure or for the emulator (WebSocket settings: :func:`websocket_options`)."""
    if connection_string:
        parse_connection_string(connection_string)
        return ServiceBusClient.from_connection_string(connection_string, **websocket_options(connection_string, kwargs))
    if fully_qualified_namespace and credential is not None:
        return ServiceBusClient(fully_qualified_namespace, credential, **websocket_options(None, kwargs))
    raise ConnectionSettingsError("give a connection string, or a fully qualified namespace and a credential")
