"""The built-in demo app: rooms and chat across every node (and, with the router, every region).

Client → server events (each answers through the ack; errors also arrive as an ``error`` event):

- ``join`` ``"room"`` → ``{"ok": true, "room", "node", "region"}``
- ``leave`` ``"room"`` → ``{"ok": true, "room"}``
- ``chat`` ``{"room", "text"}`` → ``{"ok": true, "id"}``; every member of the room on every node
  receives ``chat`` ``{"room", "text", "sid", "node", "region", "id", "ts"[, "user"][, "trace"]}``
  (``trace``: the trace id of this message when the node traces, see docs/observability.md)
- ``who`` ``"room"`` → ``{"room", "members": [{"sid", "node", "region"}...], "count", "missing"}``, only
  for a room the socket is in (each call asks every node); ``missing`` lists the ids of the nodes
  that did not answer within the manager's request timeout (their members are not in
  ``members``); empty when every node answered

``join`` asks the node's ``authorize_room`` hook first (:mod:`relay_node.authorize`); a refused
join answers ``{"error": "not allowed to join ..."}``.

Chat rooms live under the socket.io room ``chat:<name>`` so a client can never join another
client's private sid room. ``chat`` events are marked ``persist`` for the Functions history store
when the manager supports it.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanKind

from socketio_servicebus.tracing import Tracing

from . import authorize

log = logging.getLogger("relay_node.chat")
_TRACING = Tracing()

NAMESPACE = "/"
ROOM_PREFIX = "chat:"
MAX_TEXT = 2000
ROOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
MAX_ROOMS_PER_CLIENT = 32


class ChatError(ValueError):
    pass


def room_name(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("room")
    if not isinstance(value, str) or not ROOM_RE.match(value):
        raise ChatError("room must be 1-48 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def chat_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatError("text must be a string")
    text = value.strip()
    if not text:
        raise ChatError("text is empty")
    if len(text) > MAX_TEXT:
        raise ChatError(f"text is longer than {MAX_TEXT} characters")
    return text


def _supports(func: Any, kwarg: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return kwarg in params


Handler = Callable[..., Any]


def _on(sio: Any, event: str) -> Callable[[Handler], Handler]:
    """``@sio.on(event, namespace=NAMESPACE)`` with a typed signature."""
    def register(handler: Handler) -> Handler:
        sio.on(event, handler, namespace=NAMESPACE)
        return handler

    return register


def setup(sio: Any) -> None:
    manager = sio.manager
    node = str(getattr(manager, "node_id", "") or "local")
    region = str(getattr(manager, "region", "") or "local")
    persist_kw = {"persist": True} if _supports(manager.emit, "persist") else {}

    async def fail(sid: str, event: str, exc: Exception) -> dict[str, Any]:
        error = {"error": str(exc), "event": event}
        await sio.emit("error", error, to=sid, namespace=NAMESPACE)
        return error

    def joined(sid: str) -> list[str]:
        return [r[len(ROOM_PREFIX):] for r in sio.rooms(sid, namespace=NAMESPACE) if r.startswith(ROOM_PREFIX)]

    def user_of(sid: str) -> str | None:
        try:
            claims = (sio.get_environ(sid, namespace=NAMESPACE) or {}).get("relay.claims") or {}
        except KeyError:
            return None
        name = claims.get("name") or claims.get("sub")
        return str(name)[:64] if name else None

    @_on(sio, "join")
    async def join(sid: str, data: Any = None) -> dict[str, Any]:
        try:
            room = room_name(data)
            if room not in joined(sid) and len(joined(sid)) >= MAX_ROOMS_PER_CLIENT:
                raise ChatError(f"at most {MAX_ROOMS_PER_CLIENT} rooms per connection")
        except ChatError as exc:
            return await fail(sid, "join", exc)
        if await authorize.of(sio).admit(sio, NAMESPACE, sid, ROOM_PREFIX + room) is authorize.Grant.DENIED:
            return await fail(sid, "join", ChatError(f"not allowed to join {room!r}"))
        await sio.enter_room(sid, ROOM_PREFIX + room, namespace=NAMESPACE)
        return {"ok": True, "room": room, "node": node, "region": region}

    @_on(sio, "leave")
    async def leave(sid: str, data: Any = None) -> dict[str, Any]:
        try:
            room = room_name(data)
        except ChatError as exc:
            return await fail(sid, "leave", exc)
        await sio.leave_room(sid, ROOM_PREFIX + room, namespace=NAMESPACE)
        authorize.of(sio).forget(sio, NAMESPACE, sid, ROOM_PREFIX + room)
        return {"ok": True, "room": room}

    @_on(sio, "chat")
    async def chat(sid: str, data: Any = None) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise ChatError('chat takes {"room": ..., "text": ...}')
            room = room_name(data.get("room"))
            text = chat_text(data.get("text"))
            if room not in joined(sid):
                raise ChatError(f"join {room!r} before chatting in it")
        except ChatError as exc:
            return await fail(sid, "chat", exc)
        message: dict[str, Any] = {
            "room": room, "text": text, "sid": sid, "node": node, "region": region,
            "id": uuid.uuid4().hex, "ts": time.time(),
        }
        user = user_of(sid)
        if user:
            message["user"] = user
        # the span of this chat message; the manager's emit span hangs under it (docs/observability.md)
        with _TRACING.span("chat " + ROOM_PREFIX + room, kind=SpanKind.SERVER, attributes={
                "chat.message_id": message["id"], "socketio.room": ROOM_PREFIX + room, "socketio.event": "chat",
                "socketio.namespace": NAMESPACE, "socketio.node_id": node}) as span:
            if span is not None:
                message["trace"] = format(span.get_span_context().trace_id, "032x")  # shown small, for support
            await manager.emit("chat", message, namespace=NAMESPACE, room=ROOM_PREFIX + room, **persist_kw)
        reply = {"ok": True, "id": message["id"]}
        if "trace" in message:
            reply["trace"] = message["trace"]
        return reply

    @_on(sio, "who")
    async def who(sid: str, data: Any = None) -> dict[str, Any]:
        try:
            room = room_name(data)
            if room not in joined(sid):  # a member list costs one request to every node
                raise ChatError(f"join {room!r} before asking who is in it")
        except ChatError as exc:
            return await fail(sid, "who", exc)
        try:
            members, missing = await room_members(sio, NAMESPACE, ROOM_PREFIX + room, node, region)
        except Exception as exc:  # noqa: BLE001 - a failed cross-node query answers with the error, logged
            log.warning("who %s failed: %s", room, exc)
            return await fail(sid, "who", ChatError(f"member list unavailable: {exc}"))
        return {"room": room, "members": members, "count": len(members), "missing": missing}


def _member(item: Any, node: str, regions: dict[str, str]) -> dict[str, Any]:
    if isinstance(item, dict):
        sid = item.get("sid") or item.get("id")
        where = str(item.get("node") or item.get("node_id") or node)
    else:
        sid, where = item, node
    return {"sid": str(sid), "node": where, "region": regions.get(where, "")}


async def room_members(
    sio: Any, namespace: str, room: str, node: str, region: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Members of ``room`` on every node, with their node and region, and the ids of the nodes
    that did not answer (the ``missing`` of the manager's result; none for a plain manager).

    ``manager.fetch_sockets`` (which names each socket's node) is preferred over
    ``manager.room_members`` (sids only); a plain manager answers with the local members.
    """
    manager = sio.manager
    regions = {node: region}
    if hasattr(manager, "nodes"):
        for info in manager.nodes():
            regions.setdefault(str(info.get("node_id")), str(info.get("region", "")))
    if hasattr(manager, "fetch_sockets"):
        items: list[Any] = await manager.fetch_sockets(namespace=namespace, room=room)
    elif hasattr(manager, "room_members"):
        items = await manager.room_members(namespace, room)
    else:
        items = [sid for sid, _ in manager.get_participants(namespace, room)]
    members = [_member(i, node, regions) for i in items]
    missing = sorted(str(n) for n in getattr(items, "missing", ()))
    return sorted(members, key=lambda m: (m["node"], m["sid"])), missing
