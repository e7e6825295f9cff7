"""The Function App's spans (shared/telemetry.py) with a real SDK and in-memory exporter, through the
real handlers and azure.functions objects; and none of it when tracing is off."""

from __future__ import annotations

import dataclasses
import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import handlers, telemetry
from socketio_servicebus.tracing import Tracing
from socketio_servicebus.wire.envelope import Batch

from .helpers import FakeContext, emit_envelope, http_request, sb_message

MESH = {"SIO_REGION": "eu", "SIO_REGION_MAP": json.dumps({"eu": {}, "us": {}})}
TRACE = "0af7651916cd43dd8448eb211c80319c"
TP = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    monkeypatch.setattr(telemetry, "TRACING", Tracing(tracer_provider=provider))
    return exp


def _by_name(exp: InMemorySpanExporter) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for s in exp.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


async def test_router_continues_the_emit_and_reparents_the_forwarded_envelope(exporter: InMemorySpanExporter) -> None:
    ctx = FakeContext(MESH)
    traced = dataclasses.replace(emit_envelope("us", data=1), traceparent=TP)
    other_tp = "00-11111111111111111111111111111111-2222222222222222-01"
    other = dataclasses.replace(emit_envelope("us", data=2), traceparent=other_tp)
    plain = emit_envelope("us", data=3)
    await handlers.router(ctx, "us", sb_message(Batch((traced, other, plain), 0, ("us",)), message_id="m-7"))
    spans = _by_name(exporter)
    (route,) = spans["route socketio"]
    (send,) = spans["send socketio"]
    assert route.kind is SpanKind.CONSUMER and f"{route.context.trace_id:032x}" == TRACE
    assert route.parent is not None and route.parent.span_id == 0xB7AD6B7169203331
    assert [lk.context.trace_id for lk in route.links] == [0x11111111111111111111111111111111]
    a = dict(route.attributes or {})
    assert (a["messaging.system"], a["messaging.operation.type"], a["messaging.batch.message_count"]) == (
        "servicebus", "process", 3)
    assert a["messaging.destination.subscription.name"] == "router" and a["socketio.region"] == "us"
    assert send.parent is not None and send.parent.span_id == route.context.span_id
    assert dict(send.attributes or {})["socketio.target_region"] == "eu"
    (out,) = ctx.senders["eu"].sent
    fwd = Batch.decode(b"".join(out.body)).envelopes
    assert fwd[0].traceparent == f"00-{TRACE}-{send.context.span_id:016x}-01"  # b1 hangs under the forward
    assert fwd[1].traceparent == other_tp and fwd[2].traceparent is None  # other traces keep theirs
    assert "data" not in json.dumps({k: str(v) for s in exporter.get_finished_spans() for k, v in s.attributes.items()})


async def test_emit_api_continues_the_callers_traceparent(exporter: InMemorySpanExporter) -> None:
    ctx = FakeContext(MESH)
    resp = await handlers.emit_http(ctx, http_request(
        "POST", "emit", body={"room": "lobby", "event": "chat", "data": "secret words"}, headers={"traceparent": TP}))
    assert resp.status_code == 202
    spans = _by_name(exporter)
    (server,) = spans["POST /api/emit"]
    (emit,) = spans["emit socketio"]
    assert server.kind is SpanKind.SERVER and server.parent is not None and server.parent.span_id == 0xB7AD6B7169203331
    assert emit.parent is not None and emit.parent.span_id == server.context.span_id
    assert dict(server.attributes or {})["http.response.status_code"] == 202
    assert dict(emit.attributes or {})["socketio.room"] == "lobby"
    (msg,) = ctx.senders["home:eu"].sent
    (env,) = Batch.decode(b"".join(msg.body)).envelopes
    assert env.traceparent == f"00-{TRACE}-{emit.context.span_id:016x}-01"
    assert "secret" not in repr([dict(s.attributes or {}) for s in exporter.get_finished_spans()])


async def test_history_api_span_has_the_status(exporter: InMemorySpanExporter) -> None:
    ctx = FakeContext({**MESH, "SIO_HISTORY_TOKEN_KEY": "history-token-key-for-the-telemetry-tests"})
    resp = await handlers.history_http(ctx, http_request("GET", "history", params={"room": "lobby"},
                                                         headers={"traceparent": TP}))
    assert resp.status_code == 401  # no token
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /api/history" and f"{span.context.trace_id:032x}" == TRACE
    a = dict(span.attributes or {})
    assert a["http.response.status_code"] == resp.status_code and a["socketio.room"] == "lobby"


async def test_tracing_off_no_traceparent_on_the_wire() -> None:
    assert not telemetry.TRACING.on  # no SDK configured in this process
    ctx = FakeContext(MESH)
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body={"room": "r", "event": "e"},
                                                      headers={"traceparent": TP}))
    assert resp.status_code == 202
    (msg,) = ctx.senders["home:eu"].sent
    assert b'"tp"' not in b"".join(msg.body)
    traced = emit_envelope("us")
    await handlers.router(ctx, "us", sb_message(Batch((traced,), 0, ("us",))))
    assert b'"tp"' not in b"".join(ctx.senders["eu"].sent[0].body)


def test_azure_wiring_host_json_and_bicep() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert json.loads((root / "host.json").read_text())["telemetryMode"] == "OpenTelemetry"
    api = (root / "infra" / "app" / "api.bicep").read_text()
    for setting in ("APPLICATIONINSIGHTS_CONNECTION_STRING:", "PYTHON_ENABLE_OPENTELEMETRY: 'true'",
                    "OTEL_TRACES_SAMPLER: 'parentbased_traceidratio'", "OTEL_TRACES_SAMPLER_ARG: traceSampleRatio"):
        assert setting in api
    reqs = (root / "requirements.txt").read_text()
    assert "opentelemetry-sdk" in reqs and "azure-monitor-opentelemetry-exporter" in reqs


def test_setup_reads_the_environment_and_names_app_and_region() -> None:
    assert telemetry.setup("eu", env={}) is None  # nowhere to export: stays off
    from socketio_servicebus import otel

    s = otel.settings_from_env(telemetry.SERVICE_NAME, "app-x/eu", region="eu",
                               env={"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"})
    assert s is not None and s.instance_id == "app-x/eu"
    assert otel._azure_monitor_credential("ClientId=abc;Authorization=AAD") is not None
    assert otel._azure_monitor_credential("") is None
