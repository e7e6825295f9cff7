"""The data-plane REST API under ``/api/hubs/{hub}/...``, as ``azure-messaging-webpubsubservice``
calls it (api-version 2024-12-01), with the status codes that SDK expects.

Every call needs ``api-version`` and a bearer token signed with the access key whose ``aud`` is
the request URL (``tokens.verify_rest_token``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable

import jwt
from aiohttp import web

from .hubs import Connection, Hub, Service
from .protocol import Payload, payload_from_rest
from .tokens import TokenError, verify_rest_token

__all__ = ["add_rest_routes", "rest_auth_middleware", "SERVICE_KEY"]

log = logging.getLogger("local_stack.webpubsub")

SERVICE_KEY: web.AppKey[Service] = web.AppKey("webpubsub_service", Service)
PERMISSIONS = ("joinLeaveGroup", "sendToGroup")
HUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


@web.middleware
async def rest_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    hub = request.match_info.get("hub")
    if hub is not None and not HUB_NAME.fullmatch(hub):
        return _error(400, "BadRequest", "a hub name starts with a letter and has at most 128 letters, digits or '_'")
    if not request.path.startswith("/api/"):
        return await handler(request)
    service = request.app[SERVICE_KEY]
    url = f"{request.scheme}://{request.host}{request.raw_path}"
    try:
        verify_rest_token(request.headers.get("Authorization"), service.access_key, url)
    except TokenError as exc:
        service.counters["rest.unauthorized"] += 1
        return _error(401, "Unauthorized", str(exc))
    if not request.query.get("api-version"):
        return _error(400, "BadRequest", "the api-version query parameter is required")
    return await handler(request)


def _hub(request: web.Request) -> Hub | None:
    return request.app[SERVICE_KEY].existing(request.match_info["hub"])


async def _payload(request: web.Request) -> Payload | web.Response:
    """The message of a ``:send`` call, or the 400 answer for a body the service refuses."""
    if request.query.get("filter"):
        return _error(400, "BadRequest", "OData 'filter' is not supported by the local Web PubSub service")
    try:
        return payload_from_rest(request.headers.get("Content-Type", ""), await request.read())
    except ValueError as exc:
        return _error(400, "BadRequest", str(exc))


def _accepted(request: web.Request, delivered: int) -> web.Response:
    counters = request.app[SERVICE_KEY].counters
    counters["rest.sends"] += 1
    if delivered == 0:
        counters["rest.sends-to-nobody"] += 1
    return web.Response(status=202)


async def send_to_all(request: web.Request) -> web.StreamResponse:
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    hub = _hub(request)
    n = hub.broadcast(hub.connections.values(), payload, excluded=request.query.getall("excluded", [])) if hub else 0
    return _accepted(request, n)


async def send_to_group(request: web.Request) -> web.StreamResponse:
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    hub, group = _hub(request), request.match_info["group"]
    n = hub.broadcast(hub.group_members(group), payload, excluded=request.query.getall("excluded", []),
                      group=group) if hub else 0
    return _accepted(request, n)


async def send_to_user(request: web.Request) -> web.StreamResponse:
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    hub = _hub(request)
    n = hub.broadcast(hub.user_connections(request.match_info["user"]), payload) if hub else 0
    return _accepted(request, n)


async def send_to_connection(request: web.Request) -> web.StreamResponse:
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    conn = _connection(request)
    n = conn.deliver(payload) if conn else False
    return _accepted(request, int(n))


def _connection(request: web.Request) -> Connection | None:
    hub = _hub(request)
    return hub.connections.get(request.match_info["conn"]) if hub else None


def _close_all(conns: list[Connection], request: web.Request) -> web.Response:
    skip = set(request.query.getall("excluded", []))
    reason = request.query.get("reason", "")
    for conn in conns:
        if conn.id not in skip:
            conn.close(reason)
    return web.Response(status=204)


async def close_all(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return _close_all(list(hub.connections.values()) if hub else [], request)


async def close_group(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return _close_all(hub.group_members(request.match_info["group"]) if hub else [], request)


async def close_user(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return _close_all(hub.user_connections(request.match_info["user"]) if hub else [], request)


async def close_connection(request: web.Request) -> web.StreamResponse:
    conn = _connection(request)
    if conn is not None:
        conn.close(request.query.get("reason", ""))
    return web.Response(status=204)


async def connection_exists(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200 if _connection(request) else 404)


async def group_exists(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return web.Response(status=200 if hub and hub.group_members(request.match_info["group"]) else 404)


async def user_exists(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return web.Response(status=200 if hub and hub.user_connections(request.match_info["user"]) else 404)


async def add_connection_to_group(request: web.Request) -> web.StreamResponse:
    conn, hub = _connection(request), _hub(request)
    if conn is None or hub is None:
        return _error(404, "NotFound", "no such connection")
    hub.join(conn, request.match_info["group"])
    return web.Response(status=200)


async def remove_connection_from_group(request: web.Request) -> web.StreamResponse:
    conn, hub = _connection(request), _hub(request)
    if conn is not None and hub is not None:
        hub.leave(conn, request.match_info["group"])
    return web.Response(status=204)


async def remove_connection_from_all_groups(request: web.Request) -> web.StreamResponse:
    conn, hub = _connection(request), _hub(request)
    if conn is not None and hub is not None:
        for group in list(conn.groups):
            hub.leave(conn, group)
    return web.Response(status=204)


async def add_user_to_group(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    if hub is not None:
        for conn in hub.user_connections(request.match_info["user"]):
            hub.join(conn, request.match_info["group"])
    return web.Response(status=200)


async def remove_user_from_group(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    if hub is not None:
        for conn in hub.user_connections(request.match_info["user"]):
            hub.leave(conn, request.match_info["group"])
    return web.Response(status=204)


async def remove_user_from_all_groups(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    if hub is not None:
        for conn in hub.user_connections(request.match_info["user"]):
            for group in list(conn.groups):
                hub.leave(conn, group)
    return web.Response(status=204)


async def list_connections(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    members = hub.group_members(request.match_info["group"]) if hub else []
    value = [{"connectionId": c.id, "userId": c.user_id} for c in members]
    return web.json_response({"value": value, "nextLink": None})


def _role(request: web.Request) -> str | None:
    permission = request.match_info["permission"]
    if permission not in PERMISSIONS:
        return None
    target = request.query.get("targetName")
    return f"webpubsub.{permission}" + (f".{target}" if target else "")


async def permission(request: web.Request) -> web.StreamResponse:
    role = _role(request)
    if role is None:
        return _error(400, "BadRequest", f"permission must be one of {', '.join(PERMISSIONS)}")
    conn = _connection(request)
    if request.method == "HEAD":
        return web.Response(status=200 if conn and role in conn.roles else 404)
    if conn is None:
        return _error(404, "NotFound", "no such connection") if request.method == "PUT" else web.Response(status=204)
    if request.method == "PUT":
        conn.roles.add(role)
        return web.Response(status=200)
    conn.roles.discard(role)
    return web.Response(status=204)


async def generate_token(request: web.Request) -> web.StreamResponse:
    hub = request.match_info["hub"]
    try:
        minutes = int(request.query.get("minutesToExpire", "60"))
    except ValueError:
        return _error(400, "BadRequest", "minutesToExpire must be an integer")
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, object] = {"aud": f"{request.scheme}://{request.host}/client/hubs/{hub}", "iat": now,
                                 "exp": now + dt.timedelta(minutes=max(1, minutes))}
    if request.query.get("userId"):
        claims["sub"] = request.query["userId"]
    if roles := request.query.getall("role", []):
        claims["role"] = roles
    if groups := request.query.getall("group", []):
        claims["webpubsub.group"] = groups
    token = jwt.encode(claims, request.app[SERVICE_KEY].access_key, algorithm="HS256")
    return web.json_response({"token": token})


def add_rest_routes(app: web.Application) -> None:
    base = "/api/hubs/{hub}"
    r = app.router
    r.add_post(base + "/:send", send_to_all)
    r.add_post(base + "/:closeConnections", close_all)
    r.add_post(base + "/:generateToken", generate_token)
    r.add_post(base + "/groups/{group}/:send", send_to_group)
    r.add_post(base + "/groups/{group}/:closeConnections", close_group)
    r.add_route("HEAD", base + "/groups/{group}", group_exists)
    r.add_get(base + "/groups/{group}/connections", list_connections, allow_head=False)
    r.add_put(base + "/groups/{group}/connections/{conn}", add_connection_to_group)
    r.add_delete(base + "/groups/{group}/connections/{conn}", remove_connection_from_group)
    r.add_post(base + "/users/{user}/:send", send_to_user)
    r.add_post(base + "/users/{user}/:closeConnections", close_user)
    r.add_route("HEAD", base + "/users/{user}", user_exists)
    r.add_put(base + "/users/{user}/groups/{group}", add_user_to_group)
    r.add_delete(base + "/users/{user}/groups/{group}", remove_user_from_group)
    r.add_delete(base + "/users/{user}/groups", remove_user_from_all_groups)
    r.add_post(base + "/connections/{conn}/:send", send_to_connection)
    r.add_route("HEAD", base + "/connections/{conn}", connection_exists)
    r.add_delete(base + "/connections/{conn}", close_connection)
    r.add_delete(base + "/connections/{conn}/groups", remove_connection_from_all_groups)
    for method in ("PUT", "HEAD", "DELETE"):
        r.add_route(method, base + "/permissions/{permission}/connections/{conn}", permission)
