"""OpenTelemetry spans for socketio-servicebus, on ``opentelemetry-api`` only.

Nothing happens until the application configures an OpenTelemetry SDK (``pip install
"socketio-servicebus[otel]"`` and :func:`socketio_servicebus.otel.configure`, or any SDK setup
of its own): without one, :attr:`Tracing.on` is false, no span is started and no
``traceparent`` is written into an envelope, so the cost is one ``isinstance`` per call.

Span names and attributes follow the OpenTelemetry messaging semantic conventions
(``{messaging.operation.name} {destination}``, ``messaging.system = "servicebus"``,
``messaging.operation.type`` create/send/receive/process, ``messaging.batch.message_count``).
What a span may record: ids, counts, node, region, Socket.IO namespace, room and event name.
Never a payload, an argument of an event, a token or a connection string.

The trace context of one emit travels in its envelope (``tp`` / ``tst``, see
``docs/wire-format.md``); a Service Bus message that carries many envelopes links to each of
them.  ``docs/observability.md`` lists every span.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from socketio_servicebus._version import __version__

__all__ = [
    "AttrValue",
    "SYSTEM",
    "INSTRUMENTATION_NAME",
    "MAX_LINKS",
    "MessagingSpans",
    "Op",
    "Tracing",
    "TraceLogFilter",
    "context_from",
    "context_from_headers",
    "install_log_correlation",
    "link_from",
    "parent_and_links",
    "sampled",
    "trace_id_of",
    "set_error",
    "messaging_attributes",
    "socketio_attributes",
]

#: ``messaging.system`` for Azure Service Bus in the semantic conventions.
SYSTEM = "servicebus"
INSTRUMENTATION_NAME = "socketio_servicebus"

_PROPAGATOR = TraceContextTextMapPropagator()
_OFF_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
AttrValue = str | bool | int | float | Sequence[str]


class Op:
    """``messaging.operation.type`` values (semantic conventions, messaging spans)."""

    CREATE = "create"  # one emit becomes one envelope
    SEND = "send"  # one Service Bus message (a batch of envelopes) leaves
    RECEIVE = "receive"  # one Service Bus message arrives
    PROCESS = "process"  # one envelope is handled (delivered, routed, stored, pushed)


def messaging_attributes(
    op_type: str,
    op_name: str,
    destination: str,
    *,
    subscription: str | None = None,
    count: int | None = None,
    message_id: str | None = None,
) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": op_type,
        "messaging.operation.name": op_name,
        "messaging.destination.name": destination,
    }
    if subscription is not None:
        attrs["messaging.destination.subscription.name"] = subscription
    if count is not None:
        attrs["messaging.batch.message_count"] = count
    if message_id is not None:
        attrs["messaging.message.id"] = message_id
    return attrs


def _room_value(room: Any) -> AttrValue | None:
    if isinstance(room, str):
        return room
    if isinstance(room, (list, tuple)) and all(isinstance(r, str) for r in room):
        return [str(r) for r in room[:20]]
    return None


def socketio_attributes(body: Mapping[str, Any], ns: str | None = None) -> dict[str, AttrValue]:
    """Namespace, room and event of a python-socketio message dict: names only, never ``data``."""
    attrs: dict[str, AttrValue] = {}
    namespace = ns if ns is not None else body.get("namespace")
    if isinstance(namespace, str):
        attrs["socketio.namespace"] = namespace
    room = _room_value(body.get("room"))
    if room is not None:
        attrs["socketio.room"] = room
    event = body.get("event")
    if isinstance(event, str):
        attrs["socketio.event"] = event[:200]
    return attrs


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote context a ``traceparent`` names, or None when absent or invalid."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def context_from_headers(headers: Mapping[str, str]) -> Context | None:
    """The context of an incoming HTTP request's ``traceparent`` / ``tracestate`` headers."""
    lowered = {k.lower(): v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}
    return context_from(lowered.get("traceparent"), lowered.get("tracestate"))


def link_from(traceparent: str | None, tracestate: str | None = None) -> Link | None:
    ctx = context_from(traceparent, tracestate)
    if ctx is None:
        return None
    return Link(trace.get_current_span(ctx).get_span_context())


class Tracing:
    """Starts spans for one component (a manager, a function), or does nothing.

    ``tracer_provider`` defaults to the global one (``opentelemetry.trace``); ``enabled=False``
    turns this component's tracing off even when an SDK is configured in the process.
    """

    __slots__ = ("_provider", "_enabled", "_tracer", "_tracer_of")

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None, enabled: bool = True) -> None:
        self._provider = tracer_provider
        self._enabled = enabled
        self._tracer: trace.Tracer | None = None
        self._tracer_of: trace.TracerProvider | None = None

    @property
    def on(self) -> bool:
        """True when spans are recorded: enabled, and an SDK (not the API's no-op) is configured."""
        if not self._enabled:
            return False
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        return not isinstance(provider, _OFF_PROVIDERS)

    def _get_tracer(self) -> trace.Tracer:
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        if self._tracer is None or self._tracer_of is not provider:
            self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
            self._tracer_of = provider
        return self._tracer

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttrValue] | None = None,
        parent: Context | None = None,
        links: Iterable[Link] = (),
        root: bool = False,
    ) -> Iterator[Span | None]:
        """A span made current for the ``with`` block, or ``None`` when tracing is off.

        ``parent`` (a remote context) wins over the current one; ``root=True`` starts a new
        trace whatever is current (a batch send belongs to many traces: it links to them).
        Exceptions are recorded and re-raised.
        """
        if not self.on:
            yield None
            return
        ctx = parent
        if ctx is None and root:
            ctx = Context()
        with self._get_tracer().start_as_current_span(
            name, context=ctx, kind=kind, attributes=attributes, links=list(links),
            record_exception=True, set_status_on_exception=True,
        ) as span:
            yield span

    def inject(self) -> tuple[str | None, str | None]:
        """``(traceparent, tracestate)`` of the current span, or ``(None, None)`` when off.

        Sampled-out spans are propagated too (flag ``00``), so the rest of the path makes the
        same parent-based decision and a 1 % sample is 1 % of whole traces.
        """
        if not self.on:
            return None, None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent"), carrier.get("tracestate") or None


class _Traced(Protocol):
    @property
    def traceparent(self) -> str | None: ...
    @property
    def tracestate(self) -> str | None: ...


def parent_and_links(items: Iterable[_Traced]) -> tuple[Context | None, list[Link]]:
    """For a span over many envelopes: the first sampled one's context as parent (so the span is
    in that emit's trace), links to the other sampled ones (semantic conventions: batch spans
    link). Sampled-out emits are left out: parent-based sampling would drop their spans anyway,
    so a batch of only sampled-out emits gets no span at all (that is what 1 % sampling saves)."""
    parent: Context | None = None
    links: list[Link] = []
    for item in items:
        if not sampled(item.traceparent):  # cheap: no parsing for the 99 % sampled out
            continue
        ctx = context_from(item.traceparent, item.tracestate)
        if ctx is None:
            continue
        span_context = trace.get_current_span(ctx).get_span_context()
        if not span_context.trace_flags.sampled:
            continue
        if parent is None:
            parent = ctx
        else:
            links.append(Link(span_context))
    return parent, links


_ODD_HEX = frozenset("13579bdfBDF")


def sampled(traceparent: str | None) -> bool:
    """The W3C sampled flag of ``traceparent`` (``00-<trace>-<span>-<flags>``), read without
    parsing; False when absent or too short (``context_from`` validates the rest)."""
    return traceparent is not None and len(traceparent) >= 55 and traceparent[54] in _ODD_HEX


def trace_id_of(traceparent: str | None) -> int | None:
    ctx = context_from(traceparent)
    return None if ctx is None else trace.get_current_span(ctx).get_span_context().trace_id


#: links one batch-level span keeps at most (the rest are counted in ``socketio.links_dropped``)
MAX_LINKS = 128


class _Batch(Protocol):
    @property
    def envelopes(self) -> Sequence[Any]: ...


class MessagingSpans:
    """The spans of a node (the manager) around its topic: emit, send, receive, deliver.

    ``topic`` is the destination name in every span. All methods are no-ops (and cheap) while
    ``tracing.on`` is false.
    """

    __slots__ = ("tracing", "topic", "subscription")

    def __init__(self, tracing: Tracing, *, topic: str, subscription: str | None) -> None:
        self.tracing = tracing
        self.topic = topic
        self.subscription = subscription

    def envelope_context(self) -> tuple[str, str | None] | None:
        """``(traceparent, tracestate)`` for a new envelope, None when off or outside a span."""
        if not self.tracing.on:
            return None
        tp, ts = self.tracing.inject()
        return None if tp is None else (tp, ts)

    @contextmanager
    def emit(self, message: Mapping[str, Any], ns: str | None) -> Iterator[Span | None]:
        """``emit <topic>`` (PRODUCER, create): one emit on its origin node, local delivery and
        the envelope it becomes; envelopes made inside carry this span's context."""
        if not self.tracing.on:
            yield None
            return
        attrs = {**messaging_attributes(Op.CREATE, "emit", self.topic), **socketio_attributes(message, ns)}
        with self.tracing.span(f"emit {self.topic}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
            yield span

    @contextmanager
    def send(self, batches: Sequence[_Batch]) -> Iterator[Span | None]:
        """``send <topic>`` (PRODUCER, send): one send call of the outbox (one or more Service Bus
        messages). Parent: the first traced envelope's emit; links: the other emits. None when
        no envelope is traced (heartbeats, emits of untraced nodes): nothing to join it to."""
        if not self.tracing.on:
            yield None
            return
        envelopes = [e for b in batches for e in b.envelopes]
        parent, links = parent_and_links(envelopes)
        if parent is None:
            yield None
            return
        attrs = {**messaging_attributes(Op.SEND, "send", self.topic, count=len(envelopes)),
                 "socketio.servicebus_messages": len(batches)}
        if len(links) > MAX_LINKS:
            attrs["socketio.links_dropped"] = len(links) - MAX_LINKS
            links = links[:MAX_LINKS]
        with self.tracing.span(f"send {self.topic}", kind=SpanKind.PRODUCER, attributes=attrs, parent=parent,
                               links=links) as span:
            yield span

    @contextmanager
    def receive(self, batch: _Batch, message_id: str | None) -> Iterator[Span | None]:
        """``receive <topic>`` (CONSUMER, receive): one Service Bus message on this node; None
        when none of its envelopes is traced."""
        if not self.tracing.on:
            yield None
            return
        parent, links = parent_and_links(batch.envelopes)
        if parent is None:
            yield None
            return
        attrs = {**messaging_attributes(Op.RECEIVE, "receive", self.topic, subscription=self.subscription,
                                        count=len(batch.envelopes), message_id=message_id)}
        with self.tracing.span(f"receive {self.topic}", kind=SpanKind.CONSUMER, attributes=attrs, parent=parent,
                               links=links[:MAX_LINKS]) as span:
            yield span

    @contextmanager
    def deliver(self, env: Any, receive: Span | None, local_clients: int | None = None) -> Iterator[Span | None]:
        """``deliver <topic>`` (CONSUMER, process): one envelope handed to python-socketio here.
        Under the receive span when the envelope is of the receive span's trace, else under the
        envelope's own emit."""
        if not self.tracing.on:
            yield None
            return
        parent: Context | None = None
        tp = env.traceparent
        if receive is not None and tp is not None and tp[3:35] != format(receive.get_span_context().trace_id, "032x"):
            if not sampled(tp):
                yield None  # an emit of another trace, sampled out: parent-based sampling drops it
                return
            parent = context_from(tp, env.tracestate)
        attrs = {**messaging_attributes(Op.PROCESS, "deliver", self.topic, subscription=self.subscription,
                                        message_id=env.id),
                 **socketio_attributes(env.body, env.ns), "socketio.origin_node": env.origin_node}
        if local_clients is not None:
            attrs["socketio.local_clients"] = local_clients
        with self.tracing.span(f"deliver {self.topic}", kind=SpanKind.CONSUMER, attributes=attrs,
                               parent=parent) as span:
            yield span


def set_error(span: Span | None, description: str) -> None:
    """Mark ``span`` failed with a short reason (no payloads in it)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, description[:200]))


def _stamp(record: logging.LogRecord) -> None:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        record.trace_id = format(ctx.trace_id, "032x")
        record.span_id = format(ctx.span_id, "016x")
    else:
        record.trace_id = record.span_id = "-"


_installed_factory: Any = None


def install_log_correlation() -> None:
    """Make every log record of the process carry ``trace_id`` / ``span_id`` (idempotent):
    a log record factory, so records of every logger and handler get them."""
    global _installed_factory
    current = logging.getLogRecordFactory()
    if current is _installed_factory:
        return
    previous = current

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _stamp(record)
        return record

    _installed_factory = factory
    logging.setLogRecordFactory(factory)


class TraceLogFilter(logging.Filter):
    """Adds ``trace_id`` / ``span_id`` (hex, or ``-``) to every log record it sees, so a
    format like ``%(trace_id)s %(span_id)s`` joins log lines to traces."""

    def filter(self, record: logging.LogRecord) -> bool:
        _stamp(record)
        return True
