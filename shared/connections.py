"""Resolve a Functions *connection* setting the way the Functions host does.

A binding's ``connection="Name"`` names app settings, not a secret:

* ``Name`` holding a connection string (``AzureWebJobsName`` is the host's fallback), or
* identity-based: ``Name__fullyQualifiedNamespace`` (Service Bus), ``Name__tableServiceUri`` /
  ``Name__accountName`` (Tables), ``Name__serviceUri`` / ``Name__endpoint`` (Web PubSub), with
  optional ``Name__credential=managedidentity`` and ``Name__clientId``.

``Name:fullyQualifiedNamespace`` (the ``:`` section form) is read as well, because that is what
``__`` means in Functions configuration. Only ``function_app.py``, the local runner and tests read
the environment; library code receives the :class:`Connection` values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Connection", "ConnectionNotConfigured", "resolve", "credential_for", "AZURITE_TABLES"]

#: Well-known Azurite development account (public, documented by Microsoft).
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_TABLES = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class ConnectionNotConfigured(LookupError):
    """Neither a connection string nor identity settings exist for a connection name."""


@dataclass(frozen=True)
class Connection:
    """What a connection name resolved to."""

    name: str
    connection_string: str | None = None
    #: identity-based: the endpoint value (namespace FQDN, table service URI, Web PubSub URL)
    endpoint: str | None = None
    credential: str | None = None
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None

    def describe(self) -> str:
        if self.connection_string is not None:
            return f"{self.name} (connection string)"
        return f"{self.name} (identity: {self.endpoint}, credential={self.credential or 'default'})"


def _get(env: Mapping[str, str], name: str) -> str | None:
    for key in (name, name.replace("__", ":")):
        value = env.get(key)
        if value:
            return value
    return None


_ENDPOINT_KEYS = {
    "servicebus": ("fullyQualifiedNamespace",),
    "tables": ("tableServiceUri", "accountName"),
    "webpubsub": ("endpoint", "serviceUri"),
}


def resolve(name: str, kind: str, env: Mapping[str, str] | None = None) -> Connection:
    """Resolve connection ``name`` for ``kind`` (``servicebus``, ``tables``, ``webpubsub``)."""
    env = os.environ if env is None else env
    conn_str = _get(env, name) or _get(env, f"AzureWebJobs{name}")
    if conn_str:
        if kind == "tables" and conn_str.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
            conn_str = AZURITE_TABLES
        return Connection(name, connection_string=conn_str)
    for key in _ENDPOINT_KEYS[kind]:
        value = _get(env, f"{name}__{key}")
        if value:
            if key == "accountName":
                value = f"https://{value}.table.core.windows.net/"
            return Connection(
                name,
                endpoint=value,
                credential=_get(env, f"{name}__credential"),
                client_id=_get(env, f"{name}__clientId"),
            )
    expected = " or ".join(f"{name}__{k}" for k in _ENDPOINT_KEYS[kind])
    raise ConnectionNotConfigured(
        f"connection {name!r} is not configured: set app setting {name} (a connection string) or {expected}"
    )


def credential_for(conn: Connection) -> Any:
    """An aio token credential for an identity-based connection (None for connection strings)."""
    if conn.connection_string is not None:
        return None
    if (conn.credential or "").lower() == "managedidentity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=conn.client_id) if conn.client_id else ManagedIdentityCredential()
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=conn.client_id) if conn.client_id else DefaultAzureCredential()
