"""The Azure Web PubSub edge: socket.io emits pushed to Web PubSub clients, and client negotiation.

Mapping (one Web PubSub hub per socket.io namespace):

* namespace ``/`` -> hub ``SIO_WEBPUBSUB_HUB`` (default ``socketio``); namespace ``/chat`` ->
  ``socketio_chat``. Characters a hub name cannot hold become ``_``; when that loses information
  (``/a-b`` vs ``/a_b``) an 8-hex-digit hash of the namespace is appended, so hubs never collide.
* ``room`` -> ``send_to_group(room)``; no room -> ``send_to_all``. A python-socketio ``to=sid``
  emit is a room named after the sid, so it becomes a group of that name: Web PubSub clients have
  no socket.io sid, the group is normally empty, and the call is a cheap no-op (a client may join
  a group named after its own id to receive such messages).
* payload: JSON ``{"event": ..., "data": ...}`` (``data`` is the single argument of
  ``emit(event, data)``, the argument list otherwise). Binary socket.io emits are not pushed
  (Web PubSub JSON messages cannot carry them); they are logged and skipped.
* ``skip_sid`` and ``callback`` have no Web PubSub meaning and are ignored.
* An emit naming more rooms than ``SIO_WEBPUBSUB_MAX_ROOMS`` (default 100) is not pushed at all
  (logged at warning, counted in :data:`refused_too_many_rooms`): one 256 KB message of room lists
  would otherwise make tens of thousands of REST calls, each retried.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from socketio_servicebus.wire.envelope import Batch, Envelope, Kind

__all__ = ["hub_for_namespace", "payload_for", "push_batch", "negotiate", "group_name_ok"]

log = logging.getLogger("socketio_servicebus.webpubsub")

_HUB_BAD = re.compile(r"[^A-Za-z0-9_]")
_GROUP_MAX = 1024
_DEFAULT_MAX_ROOMS = 100
#: emits refused for naming too many rooms (per process)
refused_too_many_rooms = 0


def hub_for_namespace(base_hub: str, ns: str) -> str:
    """Web PubSub hub for a socket.io namespace (see module docstring)."""
    base = _HUB_BAD.sub("_", base_hub) or "socketio"
    if not base[0].isalpha():
        base = "h" + base
    rest = ns.strip("/")
    if not rest:
        return base[:128]
    clean = _HUB_BAD.sub("_", rest)
    hub = f"{base}_{clean}"
    if clean != rest:
        hub += "_" + hashlib.sha256(ns.encode()).hexdigest()[:8]
    if len(hub) > 128:
        hub = hub[:119] + "_" + hashlib.sha256(ns.encode()).hexdigest()[:8]
    return hub


def group_name_ok(group: str) -> bool:
    return 0 < len(group) <= _GROUP_MAX and not group.isspace()


def payload_for(env: Envelope) -> dict[str, Any] | None:
    """The Web PubSub JSON message for an emit envelope, or ``None`` if it cannot be pushed."""
    if env.kind is not Kind.EMIT:
        return None
    body = env.body
    if body.get("binary"):
        return None
    args = body.get("data")
    if not isinstance(args, list):
        args = [args]
    return {"event": body.get("event"), "data": args[0] if len(args) == 1 else args}


async def push_batch(ctx: Any, batch: Batch) -> int:
    """Send every emit of ``batch`` to Web PubSub; returns the number of REST calls made.

    Any failure propagates: the invocation fails and Service Bus redelivers (clients may then see
    an emit twice; Web PubSub has no idempotency key).
    """
    global refused_too_many_rooms
    sent = 0
    max_rooms = int(getattr(ctx.settings, "webpubsub_max_rooms", _DEFAULT_MAX_ROOMS))
    for env in batch.envelopes:
        payload = payload_for(env)
        if payload is None:
            if env.kind is Kind.EMIT:
                log.warning("webpubsub: envelope %s is a binary emit, not pushed", env.id)
            continue
        client = ctx.webpubsub_client(hub_for_namespace(ctx.settings.webpubsub_hub, env.ns))
        rooms = env.body.get("room")
        if isinstance(rooms, list) and len(rooms) > max_rooms:
            refused_too_many_rooms += 1
            log.warning("webpubsub: envelope %s from node %s names %d rooms (max %d, SIO_WEBPUBSUB_MAX_ROOMS): "
                        "not pushed", env.id, env.origin_node, len(rooms), max_rooms)
            continue
        if rooms is None:
            await client.send_to_all(payload, content_type="application/json")
            sent += 1
            continue
        for room in rooms if isinstance(rooms, list) else [rooms]:
            group = str(room)
            if not group_name_ok(group):
                log.warning("webpubsub: room %r cannot be a Web PubSub group, skipped", group[:80])
                continue
            await client.send_to_group(group, payload, content_type="application/json")
            sent += 1
    return sent


async def negotiate(
    ctx: Any, *, ns: str = "/", user_id: str | None = None, rooms: list[str] | None = None, minutes: int = 60
) -> dict[str, Any]:
    """Client access for Web PubSub: ``{"url", "hub", "groups"}``.

    The token lets the client join/leave exactly the requested rooms' groups and pre-joins them.
    """
    hub = hub_for_namespace(ctx.settings.webpubsub_hub, ns)
    groups = [r for r in rooms or [] if group_name_ok(r)]
    roles = [f"webpubsub.joinLeaveGroup.{g}" for g in groups]
    client = ctx.webpubsub_client(hub)
    token = await client.get_client_access_token(
        user_id=user_id, roles=roles or None, groups=groups or None, minutes_to_expire=minutes
    )
    return {"url": token["url"], "hub": hub, "groups": groups}
