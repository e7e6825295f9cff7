"""What this node holds in python-socketio, read and never changed (pure, no I/O).

The manager's parts ask these questions of python-socketio's room table (``manager.rooms`` and
the base class's public ``is_connected`` / ``get_participants``); they are functions of that
state, not calls into :class:`~socketio_servicebus.manager.client_manager.ServiceBusManager`.
"""

from __future__ import annotations

from typing import Any

from socketio.base_manager import BaseManager  # type: ignore[import-untyped]

from socketio_servicebus.wire.envelope import Envelope, Kind

__all__ = ["client_count", "local_sockets", "room_size", "touches_local"]


def local_sockets(mgr: BaseManager, node_id: str, namespace: str, room: Any) -> list[dict[str, Any]]:
    """This node's sockets of ``namespace`` (in ``room``), as a fetch_sockets reply lists them."""
    if namespace not in mgr.rooms:
        return []
    return [
        {"sid": sid, "namespace": namespace, "rooms": mgr.get_rooms(sid, namespace), "node": node_id}
        for sid, _ in mgr.get_participants(namespace, room)
    ]


def touches_local(mgr: BaseManager, env: Envelope) -> bool:
    """Would ``env`` act on a socket of this node? (A refused no-op is not a forgery.)"""
    b = env.body
    ns = b.get("namespace") or env.ns
    if ns not in mgr.rooms:
        return False
    if env.kind in (Kind.DISCONNECT, Kind.ENTER_ROOM, Kind.LEAVE_ROOM):
        sid = b.get("sid")
        return bool(mgr.is_connected(sid, ns) or mgr.is_pre_connected(sid, ns))
    rooms = b.get("room")
    for room in rooms if isinstance(rooms, list) else [rooms]:
        try:
            if room in mgr.rooms[ns] and mgr.rooms[ns][room]:
                return True
        except TypeError:  # an unhashable room name: python-socketio would not find it either
            continue
    return False


def room_size(mgr: BaseManager, env: Envelope) -> int | None:
    """This node's clients in the envelope's room (for the deliver span), when it names one."""
    room = env.body.get("room")
    if not isinstance(room, str):
        return None
    return len(mgr.rooms.get(env.ns, {}).get(room) or ())


def client_count(mgr: BaseManager) -> int:
    return sum(len(ns.get(None, ())) for ns in mgr.rooms.values())
