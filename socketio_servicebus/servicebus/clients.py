"""Service Bus clients made the same way for Azure and for the local emulator.

The SDK's ``ServiceBusAdministrationClient`` always speaks HTTPS to the connection string's
host and port. Against the emulator (``UseDevelopmentEmulator=true``) the one local-only
adjustment is a transport that sends those requests as plain HTTP to the same port, where the
emulator serves its admin API beside AMQP. Everything in this project that creates or deletes
topics, subscriptions or rules goes through :func:`admin_client`.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient


class ConnectionSettingsError(ValueError):
    """A connection string or namespace setting that cannot work; the message says what to fix."""


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
    """An aio data-plane client for Azure or for the emulator."""
    if connection_string:
        parse_connection_string(connection_string)
        return ServiceBusClient.from_connection_string(connection_string, **kwargs)
    if fully_qualified_namespace and credential is not None:
        return ServiceBusClient(fully_qualified_namespace, credential, **kwargs)
    raise ConnectionSettingsError("give a connection string, or a fully qualified namespace and a credential")
