"""The bodies of the Function App's functions; ``function_app.py`` only declares the bindings.

Every handler takes the :class:`~shared.appcontext.AppContext` first, then the binding value
(``func.ServiceBusMessage`` or ``func.HttpRequest``), so tests call them with real
``azure.functions`` objects and a context built from a dict of settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared import telemetry
from shared.appcontext import AppContext
from shared.edge import webpubsub as wps
from shared.edge.emit_api import EmitRequestError, parse_emit_request, publish_emit
from shared.persistence import history as hist
from shared.persistence.hooks import HookRegistry
from shared.persistence.hooks import hooks as default_hooks
from shared.routing.plan import RoutePlan
from shared.routing.router import message_body, message_properties, route_message
from socketio_servicebus.history_token import TokenError
from socketio_servicebus.history_token import verify as verify_history_token
from socketio_servicebus.wire.envelope import Batch, Envelope, EnvelopeError

__all__ = [
    "router",
    "persist",
    "webpubsub",
    "history_http",
    "history_server_http",
    "emit_http",
    "negotiate_http",
    "MalformedMessage",
]

log = logging.getLogger("socketio_servicebus.functions")


class MalformedMessage(ValueError):
    """A persist/webpubsub message whose body is not a valid batch (retried, then dead-lettered)."""


# ---------------------------------------------------------------- Service Bus triggers
async def router(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> RoutePlan:
    with telemetry.message_span("route", ctx.settings.topic, "router", region, lambda: message_body(msg),
                                msg.message_id):
        return await route_message(ctx, region, msg)


def _decode(kind: str, region: str, msg: func.ServiceBusMessage) -> Batch:
    try:
        return Batch.decode(message_body(msg))
    except EnvelopeError as exc:
        log.error(
            "%s[%s] message %s is malformed (%s), delivery %s: dead-lettered after maxDeliveryCount",
            kind, region, msg.message_id, exc, msg.delivery_count,
        )
        raise MalformedMessage(f"{kind}: message {msg.message_id}: {exc}") from None


def _admitted(ctx: AppContext, kind: str, region: str, msg: func.ServiceBusMessage, batch: Batch) -> list[Envelope]:
    """The envelopes whose proof of origin and zone policy hold (all of them with zones off)."""
    if ctx.guard is None:
        return list(batch.envelopes)
    from shared.trust import admit

    return admit(ctx, kind, region, msg, message_body(msg), message_properties(msg), batch).envelopes


async def persist(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> int:
    """Store the persisted emits of one message, then run the hooks. Returns the number stored."""
    batch = _decode("persist", region, msg)
    with telemetry.batch_span("persist", ctx.settings.topic, "persist", region, batch, msg.message_id) as span:
        events = [ev for env in _admitted(ctx, "persist", region, msg, batch) if env.persist and (ev := hist.stored_event(env, region))]
        if not events:
            return 0
        table = ctx.table_client()
        events = await hist.store_events(table, events)  # with their cursors (a redelivery: the first ones)
        registry: HookRegistry = ctx.hooks if ctx.hooks is not None else default_hooks
        for ev in events:
            await registry.run(ev)
        log.info("persist[%s] message %s: stored %d event(s)", region, msg.message_id, len(events))
        if span is not None:
            span.set_attribute("socketio.stored", len(events))
        return len(events)


async def webpubsub(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> int:
    batch = _decode("webpubsub", region, msg)
    envelopes = _admitted(ctx, "webpubsub", region, msg, batch)
    if len(envelopes) != len(batch.envelopes):
        if not envelopes:
            return 0
        batch = Batch(tuple(envelopes), batch.hops, batch.visited)
    with telemetry.batch_span("webpubsub", ctx.settings.topic, "webpubsub", region, batch, msg.message_id) as span:
        pushed = await wps.push_batch(ctx, batch)
        if span is not None:
            span.set_attribute("socketio.delivered", pushed)
        return pushed


# ---------------------------------------------------------------- HTTP
def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(doc, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers=headers,
    )


def _error(status: int, message: str) -> func.HttpResponse:
    return _json(status, {"error": message})


@dataclass(frozen=True)
class _HistoryQuery:
    ns: str
    room: str | None
    after: str | None
    limit: int


def _history_query(req: func.HttpRequest) -> _HistoryQuery | func.HttpResponse:
    params = req.params
    ns = params.get("ns") or "/"
    if not ns.startswith("/"):
        return _error(400, f"'ns' must start with '/', got {ns!r}"[:200])
    room = params.get("room") or None
    after = params.get("after") or None
    if after is not None and not hist.CURSOR_RE.match(after):
        return _error(400, "'after' must be a cursor returned as 'next' or an event's 'cursor'")
    raw_limit = params.get("limit") or str(hist.DEFAULT_LIMIT)
    try:
        limit = int(raw_limit)
    except ValueError:
        return _error(400, f"'limit' must be an integer, got {raw_limit!r}"[:200])
    if not 1 <= limit <= hist.MAX_LIMIT:
        return _error(400, f"'limit' must be between 1 and {hist.MAX_LIMIT}")
    return _HistoryQuery(ns, room, after, limit)


async def _history_page(ctx: AppContext, q: _HistoryQuery, *, since: float = 0.0) -> func.HttpResponse:
    page = await hist.query_history(ctx.table_client(), ns=q.ns, room=q.room, after=q.after, limit=q.limit,
                                    since=since)
    return _json(200, page.to_json(), headers={"Cache-Control": "no-store"})


_UNCONFIGURED_LOG_EVERY = 60.0
_unconfigured_logged: dict[str, float] = {}


def _bearer(req: func.HttpRequest) -> str | None:
    header = req.headers.get("authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _unauthorized(reason: str, *, key_given: bool = False) -> func.HttpResponse:
    if key_given:
        reason += "; a function key is accepted on /api/history/server, not here"
    # RFC 6750: the scheme the client should use
    return _json(401, {"error": reason}, headers={
        "WWW-Authenticate": 'Bearer realm="sio-history", error="invalid_token"', "Cache-Control": "no-store"})


async def history_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    with telemetry.http_span("GET", "/api/history", req.headers, _room_attrs(req)) as span:
        return telemetry.status(span, await _history_http(ctx, req))


def _room_attrs(req: func.HttpRequest) -> dict[str, str]:
    return {k: v for k, v in (("socketio.namespace", req.params.get("ns") or "/"),
                              ("socketio.room", req.params.get("room") or "")) if v}


async def _history_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/history?ns=/&room=R&after=<cursor>&limit=N`` with ``Authorization: Bearer <history token>``
    -> ``{"events": [...], "next": cursor|null}``.

    The function is anonymous at the host (browsers hold no function key); it requires a history
    token minted by a relay node for this namespace and room (``socketio_servicebus.history_token``):
    401 without a valid one, 403 for another room, 503 while the key is not configured. It serves
    nothing older than the token's ``since`` (the time its socket joined the room), unless the
    token grants the whole history (``since`` 0, only when the node's ``authorize_room`` hook says so).
    """
    keys = ctx.settings.history_keys
    if not keys.configured:
        problem = str(ctx.settings.history_keys_problem)
        now = time.monotonic()
        if now - _unconfigured_logged.get(problem, -_UNCONFIGURED_LOG_EVERY) >= _UNCONFIGURED_LOG_EVERY:
            _unconfigured_logged[problem] = now  # at most once a minute: refused requests must not flood the log
            log.error("history: refusing every request (503): %s (set it on the Function App and the relay nodes)",
                      problem)
        return _error(503, "history tokens are not configured on this Function App")
    key_given = bool(req.headers.get("x-functions-key") or req.params.get("code"))
    try:
        claims = verify_history_token(_bearer(req), keys)
    except TokenError as exc:
        log.info("history: 401 (%s)", exc.reason)
        return _unauthorized(exc.reason, key_given=key_given)
    q = _history_query(req)
    if isinstance(q, func.HttpResponse):
        return q
    if not claims.covers(q.ns, q.room):
        log.info("history: 403, token of %s/%s (node %s) for %s room %r",
                 claims.sub or "-", claims.sid or "-", claims.iss or "-", q.ns, q.room)
        return _json(403, {"error": "the token does not cover this namespace and room"},
                     headers={"Cache-Control": "no-store"})
    # nothing older than the time the socket joined, unless the node's authorize_room hook granted it all
    return await _history_page(ctx, q, since=claims.since)


async def history_server_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/history/server?...``: the same query for server-side callers, any room.

    ``authLevel: function``: the Functions host (and ``function_runner`` locally) answers 401 before
    this runs unless the request carries a function (or host) key in ``x-functions-key`` or ``?code=``.
    """
    with telemetry.http_span("GET", "/api/history/server", req.headers, _room_attrs(req)) as span:
        q = _history_query(req)
        if isinstance(q, func.HttpResponse):
            return telemetry.status(span, q)
        return telemetry.status(span, await _history_page(ctx, q))


async def emit_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/emit`` with ``{namespace, room | to, event, data, persist}`` -> 202 ``{"id"}``."""
    with telemetry.http_span("POST", "/api/emit", req.headers) as span:
        return telemetry.status(span, await _emit_http(ctx, req))


async def _emit_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    try:
        emit = parse_emit_request(
            req.get_body() or b"", max_bytes=ctx.settings.emit_max_bytes, content_type=req.headers.get("content-type")
        )
    except EmitRequestError as exc:
        return _error(400, str(exc))
    region = ctx.settings.region
    if not region:
        return _error(503, "SIO_REGION is not configured")
    sender = await ctx.home_sender()
    body = {"method": "emit", "event": emit.event, "room": emit.room}
    try:
        with telemetry.emit_span(ctx.settings.topic, body, emit.namespace) as (tp, ts):
            env = await publish_emit(sender, emit, region=region, traceparent=tp, tracestate=ts,
                                    guard=ctx.guard)
    except EmitRequestError as exc:
        return _error(400, str(exc))
    except Exception:
        await ctx.drop_sender(sender)
        raise
    return _json(202, {"id": env.id, "region": region, "namespace": emit.namespace, "room": emit.room})


async def negotiate_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/negotiate?ns=/&userId=u&rooms=a,b`` -> ``{"url", "hub", "groups"}``."""
    ns = req.params.get("ns") or "/"
    if not ns.startswith("/"):
        return _error(400, "'ns' must start with '/'")
    user = req.params.get("userId") or None
    rooms = [r for r in (req.params.get("rooms") or "").split(",") if r]
    if len(rooms) > 100:
        return _error(400, "at most 100 rooms")
    return _json(200, await wps.negotiate(ctx, ns=ns, user_id=user, rooms=rooms))
