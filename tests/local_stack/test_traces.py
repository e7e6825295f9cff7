"""The stack's OTLP collector and trace API: the SDK's real OTLP/HTTP exporter posts protobuf to a
running dashboard; the API lists, searches and returns the trace with parents and linking spans."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind

from local_stack.dashboard import Collector, Dashboard
from local_stack.dashboard.traces import TraceStore, decode_request


def _provider(url: str, instance: str, compression: Compression = Compression.NoCompression) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": "relay-node", "service.instance.id": instance}))
    p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "v1/traces", compression=compression)))
    return p


def _spans(a1: TracerProvider, b1: TracerProvider) -> tuple[str, str]:
    with a1.get_tracer("t").start_as_current_span("chat chat:lobby", kind=SpanKind.SERVER,
                                                 attributes={"chat.message_id": "m-123",
                                                             "socketio.room": "chat:lobby"}) as chat:
        with a1.get_tracer("t").start_as_current_span("emit socketio", kind=SpanKind.PRODUCER) as emit:
            pass
    other = a1.get_tracer("t").start_span("send socketio", links=[Link(emit.get_span_context())])
    other.end()
    with b1.get_tracer("t").start_as_current_span(
            "deliver socketio", context=_ctx(emit), kind=SpanKind.CONSUMER, attributes={"socketio.region": "north"}):
        pass
    return f"{chat.get_span_context().trace_id:032x}", f"{emit.get_span_context().span_id:016x}"


def _ctx(span):  # type: ignore[no-untyped-def]
    from opentelemetry.trace import set_span_in_context

    return set_span_in_context(span)


async def test_sdk_exports_to_the_stack_collector_and_the_api_shows_the_trace() -> None:
    dash = Dashboard(Collector(lambda: [], lambda: [], interval=60), port=0)
    url = await dash.start()
    a1, b1 = _provider(url, "a1"), _provider(url, "b1", Compression.Gzip)
    try:
        trace_id, emit_id = await asyncio.to_thread(_spans, a1, b1)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "api/traces", params={"q": "M-123"}) as r:
                doc = await r.json()
            (summary,) = doc["traces"]
            assert summary["trace_id"] == trace_id and summary["root"] == "chat chat:lobby"
            assert summary["processes"] == ["relay-node/a1", "relay-node/b1"] and summary["spans"] == 3
            assert summary["chat_message_ids"] == ["m-123"] and doc["stats"]["spans_received"] == 4
            async with http.get(url + "api/traces", params={"q": "chat:lob"}) as r:
                assert [t["trace_id"] for t in (await r.json())["traces"]] == [trace_id]
            async with http.get(url + "api/traces", params={"q": "nothing-like-it"}) as r:
                assert (await r.json())["traces"] == []
            async with http.get(url + f"api/traces/{trace_id}") as r:
                t = await r.json()
            by_name = {s["name"]: s for s in t["span_list"]}
            assert by_name["emit socketio"]["parent_span_id"] == by_name["chat chat:lobby"]["span_id"]
            assert by_name["deliver socketio"]["parent_span_id"] == emit_id
            assert by_name["deliver socketio"]["instance"] == "b1" and by_name["deliver socketio"]["region"] == "north"
            assert by_name["deliver socketio"]["kind"] == "consumer"
            (linked,) = t["linked"]  # the batch send of another trace that carried this emit
            assert linked["name"] == "send socketio" and linked["links"][0]["span_id"] == emit_id
            async with http.post(url + "v1/traces", data=b"\xff\x00garbage",
                                 headers={"content-type": "application/x-protobuf"}) as r:
                assert r.status == 400
            async with http.get(url + "api/traces/" + "0" * 32) as r:
                assert r.status == 404
            async with http.get(url + "traces") as r:
                assert r.status == 200 and "waterfall" in (await r.text())
    finally:
        a1.shutdown()
        b1.shutdown()
        await dash.stop()


def test_store_is_bounded_and_counts_what_it_drops() -> None:
    store = TraceStore(max_traces=2, max_spans=2)

    def span(tid: str, sid: str) -> dict:  # type: ignore[type-arg]
        return {"trace_id": tid, "span_id": sid, "parent_span_id": None, "name": "x", "kind": "internal",
                "start_ns": 1, "end_ns": 2, "service": "s", "instance": "i", "region": "", "attributes": {},
                "links": [], "status": "unset", "status_message": ""}

    store.add([span("t1", "a"), span("t1", "b"), span("t1", "c"), span("t2", "a"), span("t3", "a")])
    assert [t["trace_id"] for t in store.search()] == ["t3", "t2"]
    assert store.stats()["spans_dropped"] == 1 and store.stats()["traces_evicted"] == 1


def test_json_and_gzip_requests_decode() -> None:
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "f"}}]},
                              "scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c",
                                                         "spanId": "b7ad6b7169203331", "name": "route socketio",
                                                         "kind": 5, "startTimeUnixNano": "1", "endTimeUnixNano": "5",
                                                         "attributes": [{"key": "messaging.batch.message_count",
                                                                         "value": {"intValue": "3"}}]}]}]}]}
    (s,) = decode_request(gzip.compress(json.dumps(doc).encode()), "application/json", "gzip")
    assert (s["name"], s["service"], s["kind"], s["attributes"]["messaging.batch.message_count"]) == (
        "route socketio", "f", "consumer", 3)
    assert s["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_stack_children_export_to_the_collector_and_keep_the_users_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import LocalStack, StackPorts
    from socketio_servicebus import otel

    stack = LocalStack(ports=StackPorts(dashboard=7999))
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    env = stack.tracing_env()
    assert env[otel.ENV_EXTRA_ENDPOINTS] == "http://127.0.0.1:7999"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"  # 100 % locally
    # a user's OTLP endpoint (inherited by the children) is exported to as well
    settings = otel.settings_from_env("relay-node", "a1", env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert settings is not None and settings.otlp_from_env and settings.extra_endpoints == ("http://127.0.0.1:7999",)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    assert "OTEL_TRACES_SAMPLER" not in stack.tracing_env()  # the user's sampler wins
    assert LocalStack(tracing=False).tracing_env() == {} and LocalStack(with_dashboard=False).tracing_env() == {}
