"""The service's state: hubs, their connections, groups and users; no network I/O.

A :class:`Connection` owns a bounded queue of outbound frames that its WebSocket handler drains
(``client_ws.py``); delivering never waits on a slow client. A full queue drops the message and
counts it (``dropped["slow-client"]``), as nothing may be lost silently.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .protocol import Payload, Protocol, connected_frame, disconnected_frame, message_frame

__all__ = ["CLOSED_BY_SERVER", "Close", "Connection", "ConnectionState", "Hub", "Service", "OUTBOX_LIMIT"]

log = logging.getLogger("local_stack.webpubsub")

OUTBOX_LIMIT = 1000
#: WebSocket close code of a close the server asked for (REST ``close_*``): 1008 tells the official
#: clients not to try connection recovery (they open a new connection if they reconnect at all)
CLOSED_BY_SERVER = 1008


@dataclass(frozen=True)
class Close:
    """The last item of an outbox: close the WebSocket with this code and reason."""

    code: int
    reason: str


Outbound = str | bytes | Close


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(eq=False)
class Connection:
    hub: str
    protocol: Protocol
    user_id: str | None
    roles: set[str]
    counters: Counter[str]
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    groups: set[str] = field(default_factory=set)
    state: ConnectionState = ConnectionState.OPEN
    connected_at: float = field(default_factory=time.time)
    outbox: asyncio.Queue[Outbound] = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT + 1))
    #: reliable protocol: the last sequenceId sent and the last one the client acknowledged
    sequence_id: int = 0
    acked_sequence_id: int = 0
    ack_ids: set[int] = field(default_factory=set)

    def _put(self, item: Outbound) -> bool:
        if self.state is not ConnectionState.OPEN:
            self.counters["dropped.connection-closing"] += 1
            return False
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            self.counters["dropped.slow-client"] += 1
            log.warning("webpubsub: connection %s of hub %s is %d frames behind: message dropped",
                        self.id, self.hub, OUTBOX_LIMIT)
            return False
        self.outbox.put_nowait(item)
        return True

    def send_frame(self, frame: str) -> bool:
        """A protocol frame (ack, system event); plain connections get none."""
        return self.protocol.structured and self._put(frame)

    def deliver(self, payload: Payload, *, group: str | None = None, from_user_id: str | None = None) -> bool:
        """One message, framed for this connection's protocol."""
        if self.protocol is Protocol.PLAIN:
            item: Outbound = payload.body if payload.data_type.value == "binary" else payload.body.decode("utf-8")
        else:
            seq = None
            if self.protocol is Protocol.JSON_RELIABLE:
                self.sequence_id += 1
                seq = self.sequence_id
            item = message_frame(payload, group=group, from_user_id=from_user_id, sequence_id=seq)
        ok = self._put(item)
        if ok:
            self.counters["messages.delivered"] += 1
        return ok

    def welcome(self) -> None:
        token = secrets.token_urlsafe(24) if self.protocol is Protocol.JSON_RELIABLE else None
        self.send_frame(connected_frame(self.id, self.user_id, token))

    def close(self, reason: str, code: int = CLOSED_BY_SERVER) -> None:
        """Tell the client (subprotocols: a ``disconnected`` event) and end its outbox."""
        if self.state is not ConnectionState.OPEN:
            return
        if reason:
            self.send_frame(disconnected_frame(reason))
        self.state = ConnectionState.CLOSING
        self.outbox.put_nowait(Close(code, reason))  # the queue keeps one slot for this

    def describe(self) -> dict[str, Any]:
        return {"connectionId": self.id, "userId": self.user_id, "protocol": self.protocol.value or "plain",
                "groups": sorted(self.groups), "connectedAt": self.connected_at, "state": self.state.value}


@dataclass
class Hub:
    name: str
    connections: dict[str, Connection] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=dict)

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        if conn.user_id is not None:
            self.users.setdefault(conn.user_id, set()).add(conn.id)

    def remove(self, conn: Connection) -> None:
        conn.state = ConnectionState.CLOSED
        self.connections.pop(conn.id, None)
        for group in list(conn.groups):
            self.leave(conn, group)
        if conn.user_id is not None:
            ids = self.users.get(conn.user_id, set())
            ids.discard(conn.id)
            if not ids:
                self.users.pop(conn.user_id, None)

    def join(self, conn: Connection, group: str) -> None:
        conn.groups.add(group)
        self.groups.setdefault(group, set()).add(conn.id)

    def leave(self, conn: Connection, group: str) -> None:
        conn.groups.discard(group)
        members = self.groups.get(group)
        if members is not None:
            members.discard(conn.id)
            if not members:
                del self.groups[group]

    def group_members(self, group: str) -> list[Connection]:
        return [self.connections[c] for c in self.groups.get(group, ()) if c in self.connections]

    def user_connections(self, user_id: str) -> list[Connection]:
        return [self.connections[c] for c in self.users.get(user_id, ()) if c in self.connections]

    def broadcast(self, targets: Iterable[Connection], payload: Payload, *, excluded: Iterable[str] = (),
                  group: str | None = None, from_user_id: str | None = None) -> int:
        skip = set(excluded)
        return sum(conn.deliver(payload, group=group, from_user_id=from_user_id)
                   for conn in list(targets) if conn.id not in skip)

    def describe(self) -> dict[str, Any]:
        return {
            "hub": self.name,
            "connections": [c.describe() for c in self.connections.values()],
            "groups": {g: len(m) for g, m in sorted(self.groups.items())},
            "users": {u: len(m) for u, m in sorted(self.users.items())},
        }


@dataclass
class Service:
    access_key: str
    hubs: dict[str, Hub] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.time)

    def hub(self, name: str) -> Hub:
        hub = self.hubs.get(name)
        if hub is None:
            hub = self.hubs[name] = Hub(name)
        return hub

    def existing(self, name: str) -> Hub | None:
        return self.hubs.get(name)

    def forget_if_empty(self, hub: Hub) -> None:
        if not hub.connections and not hub.groups:
            self.hubs.pop(hub.name, None)

    def new_connection(self, hub: str, protocol: Protocol, user_id: str | None, roles: Iterable[str]) -> Connection:
        conn = Connection(hub=hub, protocol=protocol, user_id=user_id, roles=set(roles), counters=self.counters)
        self.hub(hub).add(conn)
        self.counters["connections.opened"] += 1
        return conn

    def stats(self) -> dict[str, Any]:
        return {
            "service": "local Web PubSub (socketio-servicebus local_stack.webpubsub)",
            "startedAt": self.started,
            "counters": dict(sorted(self.counters.items())),
            "hubs": [h.describe() for _, h in sorted(self.hubs.items())],
        }
