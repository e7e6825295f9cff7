"""socketio_servicebus.tracing (API only) and socketio_servicebus.otel (the [otel] extra's setup).

Real SDK, in-memory exporter; the global tracer provider is never set here (a test process can set
it only once), so every Tracing gets its provider explicitly, except where "off" is the point.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from socketio_servicebus import otel
from socketio_servicebus.tracing import (
    MessagingSpans,
    Op,
    TraceLogFilter,
    Tracing,
    context_from,
    context_from_headers,
    install_log_correlation,
    link_from,
    messaging_attributes,
    socketio_attributes,
)

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_off_without_sdk_no_span_and_no_traceparent_even_inside_a_remote_context() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing configured
    t = Tracing()
    assert not t.on
    with t.span("emit socketio", parent=context_from(TP)) as span:
        assert span is None
        assert t.inject() == (None, None)


def test_disabled_component_is_off_even_with_an_sdk(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = sdk
    t = Tracing(tracer_provider=provider, enabled=False)
    with t.span("x") as span:
        assert span is None
    assert t.inject() == (None, None) and exporter.get_finished_spans() == ()


def test_span_attributes_parent_and_inject(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = sdk
    t = Tracing(tracer_provider=provider)
    attrs = {**messaging_attributes(Op.CREATE, "emit", "socketio", message_id="e1"),
             **socketio_attributes({"event": "chat", "room": "lobby", "namespace": "/", "data": ["secret"],
                                    "method": "emit"})}
    with t.span("emit socketio", kind=SpanKind.PRODUCER, attributes=attrs, parent=context_from(TP)) as span:
        assert span is not None
        tp, ts = t.inject()
    (s,) = exporter.get_finished_spans()
    assert s.name == "emit socketio" and s.kind is SpanKind.PRODUCER
    assert s.context.trace_id == int(TP.split("-")[1], 16)
    assert s.parent is not None and s.parent.span_id == int(TP.split("-")[2], 16)
    assert tp == f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-01" and ts is None
    a = dict(s.attributes or {})
    assert a["messaging.system"] == "servicebus" and a["messaging.operation.type"] == "create"
    assert a["messaging.destination.name"] == "socketio" and a["messaging.message.id"] == "e1"
    assert (a["socketio.event"], a["socketio.room"], a["socketio.namespace"]) == ("chat", "lobby", "/")
    assert "secret" not in repr(a)


def test_root_span_ignores_the_current_context_and_links(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = sdk
    t = Tracing(tracer_provider=provider)
    link = link_from(TP)
    assert link is not None
    with t.span("outer"), t.span("send socketio", root=True, links=[link]):
        pass
    send, outer = exporter.get_finished_spans()
    assert send.parent is None and send.context.trace_id != outer.context.trace_id
    assert [lk.context.span_id for lk in send.links] == [int(TP.split("-")[2], 16)]


def test_exception_marks_the_span_failed(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = sdk
    with pytest.raises(ValueError), Tracing(tracer_provider=provider).span("x"):
        raise ValueError("boom")
    (s,) = exporter.get_finished_spans()
    assert not s.status.is_ok and s.events[0].name == "exception"


def test_sampled_out_context_still_propagates_unsampled() -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    t = Tracing(tracer_provider=provider)
    with t.span("emit") as span:
        assert span is not None and not span.is_recording()
        tp, _ = t.inject()
    assert tp is not None and int(tp.rsplit("-", 1)[1], 16) & 1 == 0  # sampled flag clear


@pytest.mark.parametrize("value", [None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"])
def test_invalid_context_is_none(value: str | None) -> None:
    assert context_from(value) is None and link_from(value) is None


def test_context_from_headers_any_case() -> None:
    ctx = context_from_headers({"TraceParent": TP, "X-Other": "1"})
    assert ctx is not None
    assert trace.get_current_span(ctx).get_span_context().span_id == int(TP.split("-")[2], 16)


def test_log_records_carry_trace_and_span_ids(sdk: tuple[TracerProvider, InMemorySpanExporter],
                                             caplog: pytest.LogCaptureFixture) -> None:
    provider, _ = sdk
    install_log_correlation()
    install_log_correlation()  # idempotent
    log = logging.getLogger("test.tracing")
    with caplog.at_level(logging.INFO, logger="test.tracing"):
        log.info("outside")
        with Tracing(tracer_provider=provider).span("x") as span:
            assert span is not None
            log.info("inside")
    outside, inside = caplog.records
    assert outside.trace_id == "-"
    assert inside.trace_id == f"{span.get_span_context().trace_id:032x}"
    assert inside.span_id == f"{span.get_span_context().span_id:016x}"
    rec = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
    assert TraceLogFilter().filter(rec) and rec.trace_id == "-"


def test_settings_from_env_off_unless_somewhere_to_export() -> None:
    assert otel.settings_from_env("relay-node", "a1", env={}) is None
    assert otel.settings_from_env("relay-node", "a1", env={"OTEL_SDK_DISABLED": "true",
                                                           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
    assert otel.settings_from_env("relay-node", "a1", env={"OTEL_TRACES_EXPORTER": "none",
                                                           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None


def test_settings_from_env_endpoints_and_sampler() -> None:
    s = otel.settings_from_env("relay-node", "a1", region="eu", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlp:4318", otel.ENV_EXTRA_ENDPOINTS: "http://127.0.0.1:1, ,http://b"})
    assert s is not None and s.otlp_from_env and s.extra_endpoints == ("http://127.0.0.1:1", "http://b")
    assert s.ratio == otel.DEFAULT_RATIO
    sampler = otel.sampler_for(s)
    assert isinstance(sampler, ParentBased) and "0.01" in sampler.get_description()
    s2 = otel.settings_from_env("f", "app/eu", env={otel.ENV_EXTRA_ENDPOINTS: "http://c",
                                                    "OTEL_TRACES_SAMPLER": "parentbased_always_on"})
    assert s2 is not None and not s2.otlp_from_env and s2.ratio is None and otel.sampler_for(s2) is None
    s3 = otel.settings_from_env("f", "i", env={"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
    assert s3 is not None and s3.azure_monitor_connection_string == "InstrumentationKey=x"
    assert isinstance(TraceIdRatioBased(0.5), TraceIdRatioBased)


def test_configure_names_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    s = otel.OtelSettings(service_name="relay-node", instance_id="a1", region="eu",
                          extra_endpoints=("http://127.0.0.1:9",))
    provider = otel.configure(s, set_global=False)
    try:
        attrs = dict(provider.resource.attributes)
        assert (attrs["service.name"], attrs["service.instance.id"], attrs["cloud.region"]) == ("relay-node", "a1", "eu")
        assert attrs["deployment.environment"] == "test"
        monkeypatch.setenv("OTEL_SERVICE_NAME", "chat-eu")
        assert otel.configure(s, set_global=False).resource.attributes["service.name"] == "chat-eu"
    finally:
        provider.shutdown()


def test_messaging_spans_emit_send_receive_deliver(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    from socketio_servicebus.wire.envelope import Batch, Envelope

    provider, exporter = sdk
    spans = MessagingSpans(Tracing(tracer_provider=provider), topic="socketio", subscription="node-b1")
    body = {"method": "emit", "event": "chat", "room": "lobby", "namespace": "/", "data": ["private"]}
    with spans.emit(body, "/"):
        ctx = spans.envelope_context()
        assert ctx is not None
        traced = Envelope(kind="emit", origin_node="a1", origin_region="eu", body=body, traceparent=ctx[0],
                          tracestate=ctx[1])
    other = Envelope(kind="emit", origin_node="a1", origin_region="eu", body=body, traceparent=TP)
    plain = Envelope(kind="emit", origin_node="a1", origin_region="eu", body=body)
    batch = Batch((traced, other, plain))
    with spans.send([batch]):
        pass
    with spans.receive(batch, traced.id) as receive:
        for env in batch.envelopes:
            with spans.deliver(env, receive, local_clients=2):
                pass
    by = {}
    for s in exporter.get_finished_spans():
        by.setdefault(s.name, []).append(s)
    (emit,) = by["emit socketio"]
    (send,) = by["send socketio"]
    (recv,) = by["receive socketio"]
    d_traced, d_other, d_plain = by["deliver socketio"]
    assert traced.traceparent is not None
    assert traced.traceparent.startswith(f"00-{emit.context.trace_id:032x}-{emit.context.span_id:016x}-")
    assert send.parent.span_id == emit.context.span_id and [lk.context.span_id for lk in send.links] == [
        0xB7AD6B7169203331]
    assert dict(send.attributes)["messaging.batch.message_count"] == 3
    assert recv.parent.span_id == emit.context.span_id and recv.kind is SpanKind.CONSUMER
    assert d_traced.parent.span_id == recv.context.span_id  # same trace: under the receive
    assert d_other.parent.span_id == 0xB7AD6B7169203331  # another trace: under its own emit
    assert d_plain.parent.span_id == recv.context.span_id  # untraced: under the receive
    assert dict(d_traced.attributes)["socketio.local_clients"] == 2
    assert "private" not in repr([dict(s.attributes) for s in exporter.get_finished_spans()])


def test_messaging_spans_off_cost_nothing_and_write_nothing() -> None:
    spans = MessagingSpans(Tracing(), topic="t", subscription=None)
    assert spans.envelope_context() is None
    with spans.emit({}, "/") as a, spans.send([]) as b:
        assert a is None and b is None


def test_messaging_spans_skip_batches_with_nothing_traced(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    from socketio_servicebus.wire.envelope import Batch, Envelope

    provider, exporter = sdk
    spans = MessagingSpans(Tracing(tracer_provider=provider), topic="t", subscription=None)
    batch = Batch((Envelope(kind="heartbeat", origin_node="n", origin_region="r", body={}),))
    with spans.send([batch]) as a, spans.receive(batch, "m") as b:
        assert a is None and b is None  # heartbeats, untraced nodes: no root trace per message
    assert exporter.get_finished_spans() == ()


def test_batch_spans_leave_sampled_out_emits_alone(sdk: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    from socketio_servicebus.tracing import parent_and_links
    from socketio_servicebus.wire.envelope import Envelope

    unsampled = "00-11111111111111111111111111111111-2222222222222222-00"

    def env(tp: str | None) -> Envelope:
        return Envelope(kind="emit", origin_node="n", origin_region="r", body={}, traceparent=tp)

    parent, links = parent_and_links([env(None), env(unsampled), env(TP)])
    assert parent is not None and links == []
    assert trace.get_current_span(parent).get_span_context().span_id == 0xB7AD6B7169203331
    assert parent_and_links([env(unsampled)]) == (None, [])
    provider, exporter = sdk
    spans = MessagingSpans(Tracing(tracer_provider=provider), topic="t", subscription=None)
    from socketio_servicebus.wire.envelope import Batch

    with spans.receive(Batch((env(unsampled),)), "m") as r:
        assert r is None
    assert exporter.get_finished_spans() == ()
