# ruff: noqa: F811
"""ServiceBusManager's spans over the emulator, with real python-socketio servers and clients:
emit -> send -> receive -> deliver across two nodes; tracing off writes nothing to the wire and
records nothing; a mixed fleet (one node traced, one not) delivers everything both ways.

Each node gets its own SDK provider (``tracing=Tracing(tracer_provider=...)``), so one test
process holds a traced and an untraced node and the spans say which node made them.
"""

from __future__ import annotations

from typing import Any

from azure.servicebus import ServiceBusReceiveMode
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from socketio_servicebus import Batch
from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.tracing import Tracing
from tests.library.test_manager import (  # noqa: F401 - fixtures
    Factory,
    cluster,
    eventually,
    meshed,
    sb,
    sb_conn,
    topic,
)


def _traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(tracer_provider=provider), exporter


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _raw_bodies(conn: str, topic: str, subscription: str, want: int) -> list[bytes]:
    """What reached ``subscription`` on the wire (a node id no manager runs as)."""
    out: list[bytes] = []
    async with servicebus_client(connection_string=conn) as client:
        receiver = client.get_subscription_receiver(topic, subscription,
                                                    receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE)
        async with receiver:
            for _ in range(20):
                for m in await receiver.receive_messages(max_message_count=50, max_wait_time=1):
                    out.append(b"".join(m.body))
                if len(out) >= want:
                    break
    return out


async def test_one_emit_is_one_trace_across_two_nodes(cluster: Factory) -> None:
    ta, ea = _traced()
    tb, eb = _traced()
    a, b = await cluster(tracing=ta), await cluster(tracing=tb)
    await meshed(a, b)
    cb = await b.client()
    await cb.join("lobby")
    with ta.span("request") as outer:  # the app's span (a chat handler): the emit hangs under it
        assert outer is not None
        await a.mgr.emit("msg", {"text": "secret payload"}, room="lobby", namespace="/")
    await eventually(lambda: cb.got["msg"] == [{"text": "secret payload"}], what="delivery on b")
    await eventually(lambda: bool(_named(eb, f"deliver {b.mgr.topic}")), what="b's deliver span")
    (emit,) = _named(ea, f"emit {a.mgr.topic}")
    sends = [s for s in _named(ea, f"send {a.mgr.topic}") if s.parent and s.parent.span_id == emit.context.span_id]
    (send,) = sends
    (receive,) = [s for s in _named(eb, f"receive {b.mgr.topic}")
                  if s.parent and s.parent.span_id == emit.context.span_id]
    (deliver,) = [s for s in _named(eb, f"deliver {b.mgr.topic}") if s.context.trace_id == emit.context.trace_id]
    assert emit.parent is not None and emit.parent.span_id == outer.get_span_context().span_id
    assert emit.kind is SpanKind.PRODUCER and send.kind is SpanKind.PRODUCER and receive.kind is SpanKind.CONSUMER
    ea_attrs, r_attrs, d_attrs = dict(emit.attributes or {}), dict(receive.attributes or {}), dict(deliver.attributes or {})
    assert (ea_attrs["messaging.system"], ea_attrs["messaging.operation.type"], ea_attrs["socketio.room"],
            ea_attrs["socketio.event"]) == ("servicebus", "create", "lobby", "msg")
    assert dict(send.attributes or {})["messaging.batch.message_count"] >= 1
    assert r_attrs["messaging.destination.subscription.name"] == b.mgr.subscription_name
    assert deliver.parent is not None and deliver.parent.span_id == receive.context.span_id
    assert d_attrs["socketio.local_clients"] == 1 and d_attrs["socketio.origin_node"] == a.mgr.node_id
    everything = repr([dict(s.attributes or {}) for e in (ea, eb) for s in e.get_finished_spans()])
    assert "secret payload" not in everything


async def test_tracing_off_no_traceparent_on_the_wire_and_no_spans(cluster: Factory, sb_conn: str,
                                                                  topic: str) -> None:
    off, exporter = _traced()
    a = await cluster(tracing=Tracing(tracer_provider=off._provider, enabled=False))  # an SDK, but off here
    b = await cluster(tracing=False)
    assert not a.mgr._spans.tracing.on and not b.mgr._spans.tracing.on
    with off.span("app") as app_span:  # even inside an app's span, an untraced node writes no context
        assert app_span is not None
        for i in range(5):
            await a.mgr.emit("msg", {"i": i}, namespace="/")
    assert await a.mgr.flush(10)
    bodies = await _raw_bodies(sb_conn, topic, "node-n3", want=1)
    emits = [e for body in bodies for e in Batch.decode(body).envelopes if e.kind.value == "emit"]
    assert len(emits) == 5
    assert all(e.traceparent is None for e in emits) and not any(b'"tp"' in body for body in bodies)
    assert [s.name for s in exporter.get_finished_spans()] == ["app"]  # the app's own span only


async def test_mixed_fleet_delivers_everything_both_ways(cluster: Factory) -> None:
    traced, exporter = _traced()
    a, b = await cluster(tracing=traced), await cluster(tracing=False)
    await meshed(a, b)
    ca, cb = await a.client(), await b.client()
    n = 20
    for i in range(n):
        await a.mgr.emit("msg", {"from": "a", "i": i}, namespace="/")
        await b.mgr.emit("msg", {"from": "b", "i": i}, namespace="/")
    await eventually(lambda: len(cb.got["msg"]) == 2 * n and len(ca.got["msg"]) == 2 * n, what="all delivered")

    def order(got: list[Any], origin: str) -> list[int]:
        return [m["i"] for m in got if m["from"] == origin]

    for c in (ca, cb):
        assert order(c.got["msg"], "a") == list(range(n)) and order(c.got["msg"], "b") == list(range(n))
    # a traces its own emits; b's envelopes carry no context, so a records no span for them
    assert len(_named(exporter, f"emit {a.mgr.topic}")) == n
    assert not _named(exporter, f"deliver {a.mgr.topic}") and not _named(exporter, f"receive {a.mgr.topic}")
