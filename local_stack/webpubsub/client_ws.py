"""The client endpoint ``/client/hubs/{hub}?access_token=<jwt>``: one WebSocket per connection.

The handshake checks the token (``tokens.client_grant``) and the subprotocol; then the
connection is registered in its hub, joins the groups of its ``webpubsub.group`` claims and, with
a subprotocol, gets the ``connected`` system event. Two tasks per connection: this handler reads
client frames, a writer drains the connection's outbox (``hubs.Connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from .hubs import Close, Connection, Hub
from .protocol import (
    FrameError,
    JoinGroup,
    LeaveGroup,
    Protocol,
    SendEvent,
    SendToGroup,
    SequenceAck,
    ack_frame,
    parse_client_frame,
)
from .rest import SERVICE_KEY
from .tokens import TokenError, can_join_leave, can_send_to, client_grant

__all__ = ["client_endpoint", "client_audiences"]

log = logging.getLogger("local_stack.webpubsub")

SUPPORTED = (Protocol.JSON_RELIABLE.value, Protocol.JSON.value)
MAX_ACK_IDS = 10_000


def client_audiences(request: web.Request, hub: str) -> list[str]:
    """The ``aud`` values a client token may carry here: the endpoint of the connection string the
    token was made with (``http``/``https``; ``localhost`` and ``127.0.0.1`` are one host)."""
    port = request.url.port
    hosts = {request.host, f"127.0.0.1:{port}", f"localhost:{port}"}
    return [f"{scheme}://{host}/client/hubs/{hub}" for scheme in ("http", "https") for host in sorted(hosts)]


def _requested_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


async def client_endpoint(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    hub_name = request.match_info["hub"]
    if "awps_reconnection_token" in request.query:
        service.counters["connections.recovery-refused"] += 1
        return web.json_response({"code": "NotFound", "message": "connection recovery is not supported by the "
                                  "local Web PubSub service: connect again"}, status=404)
    token = request.query.get("access_token", "")
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    try:
        grant = client_grant(token, service.access_key, client_audiences(request, hub_name))
    except TokenError as exc:
        service.counters["connections.unauthorized"] += 1
        return web.json_response({"code": "Unauthorized", "message": str(exc)}, status=401)
    requested = _requested_protocols(request)
    chosen = next((p for p in requested if p in SUPPORTED), None)
    if requested and chosen is None:
        return web.json_response({"code": "BadRequest", "message": f"unsupported subprotocol(s) {requested}; "
                                  f"supported: {', '.join(SUPPORTED)}"}, status=400)
    ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), heartbeat=30.0, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    protocol = Protocol(chosen or "")
    conn = service.new_connection(hub_name, protocol, grant.user_id, grant.roles)
    hub = service.hub(hub_name)
    for group in grant.groups:
        hub.join(conn, group)
    conn.welcome()
    writer = asyncio.create_task(_write(ws, conn), name=f"webpubsub-write-{conn.id}")
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and protocol.structured:
                _handle(hub, conn, msg.data)
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                # plain clients' messages (and binary frames on the JSON protocols) would go to an
                # upstream event handler; the local service has none
                service.counters["dropped.upstream-not-configured"] += 1
            if writer.done():
                break
    finally:
        hub.remove(conn)
        service.counters["connections.closed"] += 1
        service.forget_if_empty(hub)
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writer
        await ws.close()
    return ws


async def _write(ws: web.WebSocketResponse, conn: Connection) -> None:
    while True:
        item = await conn.outbox.get()
        if isinstance(item, Close):
            await ws.close(code=item.code, message=item.reason.encode()[:120])
            return
        if isinstance(item, bytes):
            await ws.send_bytes(item)
        else:
            await ws.send_str(item)


def _ack(conn: Connection, ack_id: int | None, error: tuple[str, str] | None = None) -> None:
    if ack_id is not None:
        conn.send_frame(ack_frame(ack_id, error))


def _handle(hub: Hub, conn: Connection, text: str) -> None:
    counters = conn.counters
    try:
        frame = parse_client_frame(text)
    except FrameError as exc:
        counters["frames.invalid"] += 1
        if exc.ack_id is not None:
            _ack(conn, exc.ack_id, ("BadRequest", str(exc)))
        else:
            log.info("webpubsub: connection %s sent an invalid frame: %s", conn.id, exc)
        return
    if isinstance(frame, SequenceAck):
        conn.acked_sequence_id = max(conn.acked_sequence_id, frame.sequence_id)
        return
    if frame.ack_id is not None:
        if frame.ack_id in conn.ack_ids:
            _ack(conn, frame.ack_id, ("Duplicate", f"ackId {frame.ack_id} was used before on this connection"))
            return
        if len(conn.ack_ids) >= MAX_ACK_IDS:
            conn.ack_ids.clear()
        conn.ack_ids.add(frame.ack_id)
    if isinstance(frame, JoinGroup | LeaveGroup):
        if not can_join_leave(frozenset(conn.roles), frame.group):
            counters["frames.forbidden"] += 1
            _ack(conn, frame.ack_id, ("Forbidden", f"the connection has no permission to join or leave group "
                                                   f"{frame.group!r} (role webpubsub.joinLeaveGroup[.<group>])"))
            return
        (hub.join if isinstance(frame, JoinGroup) else hub.leave)(conn, frame.group)
        _ack(conn, frame.ack_id)
    elif isinstance(frame, SendToGroup):
        if not can_send_to(frozenset(conn.roles), frame.group):
            counters["frames.forbidden"] += 1
            _ack(conn, frame.ack_id, ("Forbidden", f"the connection has no permission to send to group "
                                                   f"{frame.group!r} (role webpubsub.sendToGroup[.<group>])"))
            return
        members = [m for m in hub.group_members(frame.group) if not (frame.no_echo and m is conn)]
        hub.broadcast(members, frame.payload, group=frame.group, from_user_id=conn.user_id)
        _ack(conn, frame.ack_id)
    elif isinstance(frame, SendEvent):
        counters["dropped.upstream-not-configured"] += 1
        _ack(conn, frame.ack_id, ("InternalServerError", f"event {frame.event!r} not delivered: the local Web "
                                                         "PubSub service has no upstream event handler"))
