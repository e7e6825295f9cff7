"""What the protocol adapters need from the namespace they serve, and nothing more.

``amqp.py``, ``websocket.py`` and ``admin_http.py`` depend on :class:`Runtime`, never on
``server.py``; ``server.NamespaceRuntime`` is the one implementation (it owns the listening
socket, the live connections and the data dir). So the wiring imports the adapters and no
adapter imports the wiring.
"""

from __future__ import annotations

from typing import Protocol

from .entities import Namespace
from .errors import EmulatorError


class LiveConnection(Protocol):
    """A client connection as the runtime sees it."""

    def detach_links_to(self, path: str, exc: EmulatorError) -> None:
        """The entity at ``path`` (and what lies under it) was deleted: detach its links."""

    def close(self) -> None:
        """Flush what is pending and close the connection (the emulator stops)."""


class Runtime(Protocol):
    """One namespace being served."""

    @property
    def namespace(self) -> Namespace:
        """The entity engine of the namespace."""

    def persist(self) -> None:
        """Make every state change so far durable (``--data-dir``), before any byte that
        reveals a change leaves the emulator."""

    def connection_opened(self, conn: LiveConnection) -> None:
        """A client connection starts (AMQP over TCP or over a WebSocket)."""

    def connection_closed(self, conn: LiveConnection) -> None:
        """A client connection is gone."""
