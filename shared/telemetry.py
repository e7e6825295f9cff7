"""Spans of the Function App (``socketio_servicebus.tracing``; off until an SDK is configured).

The functions continue the trace of each emit from its envelope (``tp``), not from the Functions
host's invocation context: the host carries a Service Bus trigger's context only in some setups,
and a Service Bus message here holds many emits. A batch-level span takes the first traced
envelope's context as parent and links to the others. HTTP APIs continue the caller's
``traceparent`` header. See ``docs/observability.md``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry.trace import Span, SpanKind

from socketio_servicebus.tracing import (
    AttrValue,
    Op,
    Tracing,
    context_from_headers,
    messaging_attributes,
    parent_and_links,
    set_error,
    socketio_attributes,
    trace_id_of,
)
from socketio_servicebus.wire.envelope import Batch, EnvelopeError

__all__ = ["TRACING", "setup", "batch_span", "message_span", "forward_span", "http_span", "emit_span", "status"]

TRACING = Tracing()
_R = TypeVar("_R")
SERVICE_NAME = "socketio-servicebus-functions"


def setup(region: str | None, env: Mapping[str, str] | None = None) -> Any:
    """Configure the SDK from the environment (``function_app.py`` at import), if the ``[otel]``
    packages are installed and the environment asks for it; returns the provider or None."""
    env = os.environ if env is None else env
    try:
        from socketio_servicebus import otel
    except ImportError:  # opentelemetry-sdk not installed: tracing stays off
        return None
    app = env.get("WEBSITE_SITE_NAME") or "function-runner"
    settings = otel.settings_from_env(SERVICE_NAME, f"{app}/{region or '-'}", region=region, env=env)
    return otel.configure(settings) if settings is not None else None


def _batch_attributes(batch: Batch) -> dict[str, AttrValue]:
    first = batch.envelopes[0]
    attrs: dict[str, AttrValue] = {"socketio.namespace": first.ns}
    if len(batch.envelopes) == 1:
        attrs.update(socketio_attributes(first.body, first.ns))
    attrs["socketio.origin_node"] = first.origin_node
    attrs["socketio.hops"] = batch.hops
    return attrs


@contextmanager
def batch_span(op_name: str, topic: str, subscription: str, region: str, batch: Batch,
               message_id: str | None) -> Iterator[Span | None]:
    """``<op_name> <topic>`` (CONSUMER, process) for one received Service Bus message; None when
    none of its envelopes is traced (nothing to join the span to)."""
    if not TRACING.on:
        yield None
        return
    parent, links = parent_and_links(batch.envelopes)
    if parent is None:
        yield None
        return
    attrs = {**messaging_attributes(Op.PROCESS, op_name, topic, subscription=subscription,
                                    count=len(batch.envelopes), message_id=message_id),
             **_batch_attributes(batch), "socketio.region": region}
    with TRACING.span(f"{op_name} {topic}", kind=SpanKind.CONSUMER, attributes=attrs, parent=parent,
                      links=links) as span:
        yield span


@contextmanager
def message_span(op_name: str, topic: str, subscription: str, region: str, body: Callable[[], bytes],
                 message_id: str | None) -> Iterator[Span | None]:
    """:func:`batch_span` for a message whose ``body()`` the handler decodes itself: decoded here
    a second time, only while tracing is on."""
    if not TRACING.on:
        yield None
        return
    try:
        batch = Batch.decode(body())
    except EnvelopeError:  # the handler reports it; no trace to join it to
        yield None
        return
    with batch_span(op_name, topic, subscription, region, batch, message_id) as span:
        yield span


@contextmanager
def forward_span(topic: str, target: str, batch: Batch) -> Iterator[Batch]:
    """``send <topic>`` (PRODUCER) into ``target``'s topic; yields the batch to send, whose
    envelopes of this trace now name this span as their parent (the next region's spans hang
    under the router's forward); envelopes of other traces keep their own context."""
    if not TRACING.on or parent_and_links(batch.envelopes)[0] is None:
        yield batch  # off, or nothing traced in this message
        return
    attrs = {**messaging_attributes(Op.SEND, "send", topic, count=len(batch.envelopes)),
             "socketio.target_region": target, "socketio.hops": batch.hops}
    with TRACING.span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
        if span is None:
            yield batch
            return
        trace_id = span.get_span_context().trace_id
        tp, ts = TRACING.inject()
        envs = tuple(
            dataclasses.replace(e, traceparent=tp, tracestate=ts) if trace_id_of(e.traceparent) == trace_id else e
            for e in batch.envelopes)
        yield Batch(envs, batch.hops, batch.visited)


@contextmanager
def http_span(method: str, route: str, headers: Mapping[str, str],
              attributes: Mapping[str, AttrValue] | None = None) -> Iterator[Span | None]:
    """``<METHOD> <route>`` (SERVER), continuing the caller's ``traceparent`` header."""
    if not TRACING.on:
        yield None
        return
    attrs: dict[str, AttrValue] = {"http.request.method": method, "http.route": route, **(attributes or {})}
    parent = context_from_headers(headers)
    with TRACING.span(f"{method} {route}", kind=SpanKind.SERVER, attributes=attrs, parent=parent,
                      root=parent is None) as span:
        yield span


def status(span: Span | None, resp: _R) -> _R:
    """Record an HTTP response's status code on ``span`` (5xx marks it failed); returns ``resp``."""
    if span is not None:
        code = int(getattr(resp, "status_code", 0))
        span.set_attribute("http.response.status_code", code)
        if code >= 500:
            set_error(span, f"HTTP {code}")
    return resp


@contextmanager
def emit_span(topic: str, body: Mapping[str, Any], ns: str) -> Iterator[tuple[str | None, str | None]]:
    """``emit <topic>`` (PRODUCER, create+send) around the emit API's publish; yields the
    ``(traceparent, tracestate)`` to put into the envelope, ``(None, None)`` when off."""
    if not TRACING.on:
        yield None, None
        return
    attrs = {**messaging_attributes(Op.CREATE, "emit", topic, count=1), **socketio_attributes(body, ns)}
    with TRACING.span(f"emit {topic}", kind=SpanKind.PRODUCER, attributes=attrs):
        yield TRACING.inject()
