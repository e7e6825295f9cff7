"""What a zone may make others do: the policy enforced where a message arrives (pure).

A **cloud** zone keeps today's rights. An **on-premise** zone, seen by a receiver in *another*
zone (a cloud node, the Functions, another site), may only:

* send envelopes from node ids it owns (``Zone.nodes``; checked for every zone);
* ``emit`` to rooms that start with one of its prefixes (every room of a room list; a broadcast
  to everyone or to a socket id outside its prefixes is refused) - and so persist only there;
* ``callback`` and ``response``: only addressed to one node (``target_node``): answering
  requests addressed to its own nodes;
* ``heartbeat`` for its own node ids (how many at once: :mod:`~socketio_servicebus.zones.bounds`);
* ``request``: ``fetch_sockets`` of a room within its prefixes (its own rooms' member lists);
  never ``server_side_emit`` (runs other nodes' handlers).

It may not ``disconnect``, ``enter_room``, ``leave_room`` or ``close_room`` anywhere but on its
own zone's nodes: those act on the receiver's sockets. Inside its own zone (sender zone ==
receiver zone) everything is allowed, as before zones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from socketio_servicebus.wire.envelope import Envelope, Kind
from socketio_servicebus.zones.config import Zone, ZoneKind

__all__ = ["Reason", "Verdict", "ACCEPT", "police"]


class Reason(enum.StrEnum):
    """Why a message or envelope was refused (the ``reason`` label of ``forged_dropped``)."""

    UNSIGNED = "unsigned"
    UNKNOWN_KID = "unknown-kid"
    ZONE_MISMATCH = "zone-mismatch"
    BAD_SIGNATURE = "bad-signature"
    NONCANONICAL = "noncanonical"
    PROPS_MISMATCH = "props-mismatch"
    NODE_NOT_IN_ZONE = "node-not-in-zone"
    ROOM_OUTSIDE_ZONE = "room-outside-zone"
    NOT_OWN_SOCKETS = "not-own-sockets"
    NOT_ADDRESSED = "not-addressed"
    REQUEST_OUTSIDE_ZONE = "request-outside-zone"
    ZONE_NODE_CAP = "zone-node-cap"
    REGISTRY_FULL = "registry-full"


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: Reason | None = None
    detail: str = ""

    @classmethod
    def refuse(cls, reason: Reason, detail: str = "") -> Verdict:
        return cls(False, reason, detail[:300])


ACCEPT = Verdict(True)

_SOCKET_KINDS = frozenset({Kind.DISCONNECT, Kind.ENTER_ROOM, Kind.LEAVE_ROOM, Kind.CLOSE_ROOM})


def _rooms(room: Any) -> list[Any]:
    return room if isinstance(room, list) else [room]


def police(sender: Zone, receiver: Zone, env: Envelope) -> Verdict:
    """May ``env``, signed by ``sender``, act on a receiver in zone ``receiver``?"""
    if not sender.owns_node(env.origin_node):
        return Verdict.refuse(Reason.NODE_NOT_IN_ZONE, f"zone {sender.name} does not sign for node {env.origin_node!r}")
    if sender.kind is ZoneKind.CLOUD or sender.name == receiver.name:
        return ACCEPT
    kind, body = env.kind, env.body
    if kind is Kind.EMIT:
        rooms = _rooms(body.get("room"))
        bad = [r for r in rooms if not sender.room_allowed(r)]
        if bad:
            shown = "everyone" if bad == [None] else repr(bad[:3])
            return Verdict.refuse(Reason.ROOM_OUTSIDE_ZONE, f"emit to {shown} outside {list(sender.rooms)}")
        return ACCEPT
    if kind in _SOCKET_KINDS:
        return Verdict.refuse(Reason.NOT_OWN_SOCKETS, f"{kind.value} of sid {str(body.get('sid'))[:40]!r} "
                                                      f"in room {str(body.get('room'))[:80]!r}")
    if kind in (Kind.CALLBACK, Kind.RESPONSE):
        return ACCEPT if env.target_node is not None else Verdict.refuse(Reason.NOT_ADDRESSED, kind.value)
    if kind is Kind.HEARTBEAT:
        return ACCEPT
    if kind is Kind.REQUEST:
        if body.get("op") == "fetch_sockets" and sender.room_allowed(body.get("room")):
            return ACCEPT
        return Verdict.refuse(Reason.REQUEST_OUTSIDE_ZONE,
                              f"{str(body.get('op'))[:40]} for room {str(body.get('room'))[:80]!r}")
    return Verdict.refuse(Reason.NOT_OWN_SOCKETS, f"kind {kind.value}")  # pragma: no cover - every Kind is above
