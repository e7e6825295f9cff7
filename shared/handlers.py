"""The bodies of the Function App's functions; ``function_app.py`` only declares the bindings.

Every handler takes the :class:`~shared.appcontext.AppContext` first, then the binding value
(``func.ServiceBusMessage`` or ``func.HttpRequest``), so tests call them with real
``azure.functions`` objects and a context built from a dict of settings.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.appcontext import AppContext
from shared.edge import webpubsub as wps
from shared.edge.emit_api import EmitRequestError, parse_emit_request, publish_emit
from shared.persistence import history as hist
from shared.persistence.hooks import HookRegistry
from shared.persistence.hooks import hooks as default_hooks
from shared.routing.plan import RoutePlan
from shared.routing.router import message_body, route_message
from socketio_servicebus.wire.envelope import Batch, EnvelopeError

__all__ = [
    "router",
    "persist",
    "webpubsub",
    "history_http",
    "emit_http",
    "negotiate_http",
    "MalformedMessage",
]

log = logging.getLogger("socketio_servicebus.functions")


class MalformedMessage(ValueError):
    """A persist/webpubsub message whose body is not a valid batch (retried, then dead-lettered)."""


# ---------------------------------------------------------------- Service Bus triggers
async def router(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> RoutePlan:
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


async def persist(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> int:
    """Store the persisted emits of one message, then run the hooks. Returns the number stored."""
    batch = _decode("persist", region, msg)
    events = [ev for env in batch.envelopes if env.persist and (ev := hist.stored_event(env, region))]
    if not events:
        return 0
    table = ctx.table_client()
    await hist.store_events(table, events)
    registry: HookRegistry = ctx.hooks if ctx.hooks is not None else default_hooks
    for ev in events:
        await registry.run(ev)
    log.info("persist[%s] message %s: stored %d event(s)", region, msg.message_id, len(events))
    return len(events)


async def webpubsub(ctx: AppContext, region: str, msg: func.ServiceBusMessage) -> int:
    batch = _decode("webpubsub", region, msg)
    return await wps.push_batch(ctx, batch)


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


async def history_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/history?ns=/&room=R&after=<cursor>&limit=N`` -> ``{"events": [...], "next": cursor|null}``."""
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
    page = await hist.query_history(ctx.table_client(), ns=ns, room=room, after=after, limit=limit)
    return _json(200, page.to_json(), headers={"Cache-Control": "no-store"})


async def emit_http(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/emit`` with ``{namespace, room | to, event, data, persist}`` -> 202 ``{"id"}``."""
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
    try:
        env = await publish_emit(sender, emit, region=region)
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
