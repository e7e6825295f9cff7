"""The HTTP emit API: validate a request, publish one socket.io emit into the home region's topic.

``parse_emit_request`` turns the raw body into an :class:`EmitRequest` or raises
:class:`EmitRequestError` with a message that says exactly what is wrong (HTTP 400).

``publish_emit`` publishes the same python-socketio message dict that
``AsyncPubSubManager.emit`` publishes (``method/event/data/binary/namespace/room/skip_sid/
callback/host_id``) wrapped in an envelope (``socketio_servicebus.wire.envelope``), so relay nodes handle it exactly
like an emit from another node.

Why not ``ServiceBusManager(..., write_only=True).emit``: the manager queues into a background
outbox and returns before Service Bus has accepted anything, and it does not hand back the
envelope id. An HTTP API must answer 202 only once the send succeeded (a Functions instance can
be recycled right after it answers) and returns the id, so this module awaits the send of the
very envelope the write-only manager would publish. Relay nodes cannot tell the two apart.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from azure.servicebus import ServiceBusMessage as SBMessage

from socketio_servicebus.wire.envelope import DEFAULT_BATCH_BYTES, Envelope, EnvelopeError, Kind, pack_batches
from socketio_servicebus.zones import BusGuard

__all__ = ["EmitRequest", "EmitRequestError", "parse_emit_request", "publish_emit", "NODE_ID"]

#: Origin node id of everything the Function App publishes (never a relay node's id).
NODE_ID = f"functions-{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

#: socket.io reserves these event names on the client side.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"})
#: the relay nodes' own events (``relay:reconnect``, ``relay:history_token``...): only a node sends them
RESERVED_PREFIX = "relay:"
_FIELDS = ("namespace", "room", "to", "event", "data", "persist")
#: deepest nesting of arrays/objects a body may have (the Service Bus SDK's own decoder caps at 64)
MAX_DEPTH = 64


class EmitRequestError(ValueError):
    """The request is invalid; ``str(exc)`` is the message for the client."""


@dataclass(frozen=True)
class EmitRequest:
    event: str
    data: Any
    namespace: str = "/"
    room: str | None = None
    persist: bool = False


def _type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _depth(doc: Any) -> int:
    """Nesting depth of arrays/objects in ``doc``, without recursion (a scalar is 0)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_emit_request(body: bytes, *, max_bytes: int, content_type: str | None = None) -> EmitRequest:
    if len(body) > max_bytes:
        raise EmitRequestError(f"body is {len(body)} bytes; the limit is {max_bytes} bytes (Service Bus message size)")
    if not body.strip():
        raise EmitRequestError('empty body; send JSON {"event": ..., "data": ..., "room" | "to": ..., "namespace": ...}')
    if content_type and "json" not in content_type.lower():
        raise EmitRequestError(f"Content-Type must be application/json, not {content_type!r}")
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except UnicodeDecodeError:
        raise EmitRequestError("body is not UTF-8") from None
    except ValueError as exc:
        raise EmitRequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # a body of nested '[[[[...' deeper than the parser's stack
        raise EmitRequestError(f"body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    if _depth(doc) > MAX_DEPTH:
        raise EmitRequestError(f"body is nested too deeply (at most {MAX_DEPTH} levels)")
    if not isinstance(doc, dict):
        raise EmitRequestError(f"body must be a JSON object, got {_type(doc)}")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise EmitRequestError(f"unknown field(s) {unknown}; allowed: {list(_FIELDS)}")
    errors: list[str] = []
    event = doc.get("event")
    if "event" not in doc:
        errors.append("missing field 'event' (string)")
    elif not isinstance(event, str) or not event:
        errors.append(f"'event' must be a non-empty string, got {_type(event)}")
    elif event in RESERVED_EVENTS:
        errors.append(f"'event' {event!r} is reserved by socket.io")
    elif event.startswith(RESERVED_PREFIX):
        errors.append(f"'event' {event[:64]!r} is reserved: '{RESERVED_PREFIX}*' events come from relay nodes only")
    elif len(event) > 256:
        errors.append("'event' is longer than 256 characters")
    ns = doc.get("namespace", "/")
    if ns is None:
        ns = "/"
    if not isinstance(ns, str) or not ns.startswith("/"):
        errors.append(f"'namespace' must be a string starting with '/', got {ns!r}"[:200])
    room, to = doc.get("room"), doc.get("to")
    if room is not None and to is not None:
        errors.append("give 'room' or 'to' (a socket id), not both")
    for name, value in (("room", room), ("to", to)):
        if value is not None and (not isinstance(value, str) or not value):
            errors.append(f"'{name}' must be a non-empty string, got {_type(value)}")
    persist = doc.get("persist", False)
    if not isinstance(persist, bool):
        errors.append(f"'persist' must be true or false, got {_type(persist)}")
    if errors:
        raise EmitRequestError("; ".join(errors))
    return EmitRequest(event=str(event), data=doc.get("data"), namespace=ns, room=to or room, persist=persist)


def build_envelope(req: EmitRequest, *, node_id: str, region: str, traceparent: str | None = None,
                   tracestate: str | None = None) -> Envelope:
    message = {
        "method": "emit",
        "event": req.event,
        "data": list(req.data) if isinstance(req.data, tuple) else [req.data],
        "binary": False,
        "namespace": req.namespace,
        "room": req.room,
        "skip_sid": None,
        "callback": None,
        "host_id": node_id,
    }
    return Envelope(
        kind=Kind.EMIT, origin_node=node_id, origin_region=region, ns=req.namespace, persist=req.persist, body=message,
        traceparent=traceparent, tracestate=tracestate,
    )


async def publish_emit(sender: Any, req: EmitRequest, *, node_id: str = NODE_ID, region: str,
                       traceparent: str | None = None, tracestate: str | None = None,
                       guard: BusGuard | None = None) -> Envelope:
    """Publish ``req`` through ``sender`` (an aio topic sender of ``region``'s namespace).

    With trust zones on, ``guard`` signs it as the Function App's zone (the cloud zone).

    Raises :class:`EmitRequestError` if the emit does not fit in one Service Bus message.
    """
    env = build_envelope(req, node_id=node_id, region=region, traceparent=traceparent, tracestate=tracestate)
    try:
        ((batch, body),) = pack_batches([env], max_bytes=DEFAULT_BATCH_BYTES)
    except EnvelopeError as exc:
        raise EmitRequestError(f"the emit does not fit in one Service Bus message: {exc}") from None
    props = batch.application_properties()
    if guard is not None:
        props.update(guard.sign(batch, body))
    await sender.send_messages(SBMessage(body, message_id=env.id, application_properties=props))
    return env
